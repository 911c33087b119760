//! Mapping a FHIR R4 `Bundle` of vital-sign `Observation`s to Vigil readings. Pure: no I/O,
//! no clock (the caller passes `now`), so every rule is unit-tested below.
//!
//! Bedside gateways speak FHIR; Vigil's domain speaks [`VitalSigns`]. This module is the one
//! place that knows both, and it refuses — naming the entry (index and `fullUrl`) and the
//! JSON path of the offending element — whatever it cannot map exactly, rather than guessing
//! with clinical data.
//!
//! # What is accepted
//!
//! - A `Bundle` of `type` `batch`, `transaction` or `collection`; each `entry.resource` an
//!   `Observation` (an `entry.request`, if present, must be a `POST`).
//! - `status` `final`, `amended`, `corrected` or `preliminary` (not `entered-in-error`,
//!   `cancelled`, `registered` or `unknown`: those are not readings to chart).
//! - `code.coding` with `system` `http://loinc.org` and one of the LOINC codes in
//!   [`LOINC_SIGNS`], or the blood-pressure panel `85354-9` whose `component`s carry
//!   `8480-6` (systolic) and `8462-4` (diastolic).
//! - `valueQuantity` with a UCUM `code` (or, failing that, `unit`), converted to the domain's
//!   unit by [`to_domain_unit`]: `[degF]` and `K` to °C, `kPa` to mmHg, a fraction (`1`) to
//!   percent for SpO2, `/s` to per minute.
//! - `effectiveDateTime` (or `effectiveInstant`), when given, as the time of the reading; it
//!   may not lie more than [`MAX_CLOCK_SKEW`] in the future.
//!
//! # Patients
//!
//! `subject.reference` must be a relative literal reference `Patient/{id}` (optionally with
//! `/_history/{version}`), and `{id}` — the FHIR logical id — *is* the Vigil patient id
//! (1..=64 of `[A-Za-z0-9._-]`, the same alphabet FHIR allows ids, minus nothing). So a
//! gateway configured with the hospital's patient ids as FHIR ids maps one to one. Absolute
//! references (`https://other-server/fhir/Patient/1`), `urn:uuid:` references, contained
//! resources and `subject.identifier` are refused: they would need a lookup Vigil does not
//! hold, and a wrong guess charts one patient's vitals on another. The hospital is the one
//! in the request path, never taken from the bundle.
//!
//! Each `Observation` becomes one reading (one event): a heart-rate observation and an SpO2
//! observation taken together are two readings.

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::Value;

use super::{VitalSign, VitalSigns};
use crate::types::PatientId;

/// The code system of LOINC codes.
pub const LOINC: &str = "http://loinc.org";

/// The LOINC blood-pressure panel, whose components hold systolic and diastolic pressure.
pub const BLOOD_PRESSURE_PANEL: &str = "85354-9";

/// The LOINC codes mapped, and the sign each measures.
pub const LOINC_SIGNS: [(&str, VitalSign); 7] = [
    ("8867-4", VitalSign::HeartRate),
    ("8480-6", VitalSign::Systolic),
    ("8462-4", VitalSign::Diastolic),
    ("59408-5", VitalSign::Spo2),
    ("2708-6", VitalSign::Spo2),
    ("8310-5", VitalSign::Temperature),
    ("9279-1", VitalSign::RespiratoryRate),
];

/// How far in the future an `effectiveDateTime` may lie: clocks of bedside devices drift,
/// but a reading stamped minutes ahead is a misconfigured device, and charting it would put
/// it after readings not yet taken.
pub const MAX_CLOCK_SKEW: TimeDelta = TimeDelta::seconds(60);

/// Observation statuses that are readings to chart.
const CHARTABLE_STATUSES: [&str; 4] = ["final", "amended", "corrected", "preliminary"];

/// Bundle types whose entries are independent resources to store.
const BUNDLE_TYPES: [&str; 3] = ["batch", "transaction", "collection"];

/// One reading mapped from an `Observation`.
#[derive(Clone, Debug, PartialEq)]
pub struct MappedReading {
    /// The entry's position in `Bundle.entry`.
    pub index: usize,
    /// The entry's `fullUrl`, echoed in answers and problems so the sender can match them.
    pub full_url: Option<String>,
    /// The patient, from `subject.reference`.
    pub patient: PatientId,
    /// The values, in the domain's units; not yet checked against physical limits (the
    /// caller validates, and reports a failure at [`MappedReading::path_of`]).
    pub signs: VitalSigns,
    /// `effectiveDateTime`, when given.
    pub at: Option<DateTime<Utc>>,
    /// Where each sign came from (JSON path), to name it when the value is refused.
    pub sources: Vec<(VitalSign, String)>,
}

impl MappedReading {
    /// The JSON path of the element that gave `sign` (the entry's resource if unknown).
    pub fn path_of(&self, sign: VitalSign) -> String {
        self.sources
            .iter()
            .find(|(s, _)| *s == sign)
            .map(|(_, path)| path.clone())
            .unwrap_or_else(|| format!("entry[{}].resource", self.index))
    }
}

/// Why a bundle, or one of its entries, cannot be mapped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct FhirError {
    /// The entry's index, or `None` for the bundle itself.
    pub index: Option<usize>,
    /// The entry's `fullUrl`, if it has one.
    pub full_url: Option<String>,
    /// JSON path of the offending element, e.g. `entry[2].resource.valueQuantity.code`.
    pub path: String,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// What is wrong, and what is accepted instead. Never echoes values (patient data).
    pub reason: String,
}

/// Maps `bundle` to readings, in entry order; the first entry that cannot be mapped fails
/// the whole bundle. `now` bounds `effectiveDateTime` (see [`MAX_CLOCK_SKEW`]).
pub fn map_bundle(bundle: &Value, now: DateTime<Utc>) -> Result<Vec<MappedReading>, FhirError> {
    let fail = |path: &str, code, reason: String| FhirError {
        index: None,
        full_url: None,
        path: path.to_owned(),
        code,
        reason,
    };
    if bundle.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return Err(fail(
            "resourceType",
            "fhir_not_a_bundle",
            "must be \"Bundle\"".into(),
        ));
    }
    let kind = bundle.get("type").and_then(Value::as_str);
    if !kind.is_some_and(|k| BUNDLE_TYPES.contains(&k)) {
        return Err(fail(
            "type",
            "fhir_bundle_type",
            "must be one of batch, transaction, collection".into(),
        ));
    }
    let entries = match bundle.get("entry") {
        None => return Ok(Vec::new()),
        Some(Value::Array(entries)) => entries,
        Some(_) => {
            return Err(fail(
                "entry",
                "fhir_invalid_element",
                "must be an array".into(),
            ))
        }
    };
    entries
        .iter()
        .enumerate()
        .map(|(index, entry)| map_entry(index, entry, now))
        .collect()
}

/// An entry's context while mapping it, so every failure names the entry.
struct Entry {
    index: usize,
    full_url: Option<String>,
}

impl Entry {
    fn error(&self, path: &str, code: &'static str, reason: impl Into<String>) -> FhirError {
        FhirError {
            index: Some(self.index),
            full_url: self.full_url.clone(),
            path: format!("entry[{}].{path}", self.index),
            code,
            reason: reason.into(),
        }
    }

    fn path(&self, path: &str) -> String {
        format!("entry[{}].{path}", self.index)
    }
}

/// One entry as a reading: the envelope checked, then who, when and which signs.
fn map_entry(index: usize, entry: &Value, now: DateTime<Utc>) -> Result<MappedReading, FhirError> {
    let ctx = Entry {
        index,
        full_url: entry
            .get("fullUrl")
            .and_then(Value::as_str)
            .map(str::to_owned),
    };
    let resource = chartable_observation(&ctx, entry)?;
    let patient = subject(&ctx, resource)?;
    let at = effective(&ctx, resource, now)?;
    let (signs, sources) = match loinc_code(resource.get("code")) {
        Some(code) if code == BLOOD_PRESSURE_PANEL => panel_signs(&ctx, resource)?,
        Some(code) => single_sign(&ctx, resource, code)?,
        None => {
            return Err(ctx.error(
                "resource.code",
                "fhir_unmapped_code",
                "needs a coding with system http://loinc.org",
            ))
        }
    };
    Ok(MappedReading {
        index,
        full_url: ctx.full_url,
        patient,
        signs,
        at,
        sources,
    })
}

/// Each sign read, with the full JSON path of the element that gave it.
type Signs = (VitalSigns, Vec<(VitalSign, String)>);

/// The entry's resource when it is something to chart: a create (if the entry says how),
/// of an `Observation`, in a status that belongs in the record.
fn chartable_observation<'a>(ctx: &Entry, entry: &'a Value) -> Result<&'a Value, FhirError> {
    if let Some(request) = entry.get("request") {
        if request.get("method").and_then(Value::as_str) != Some("POST") {
            return Err(ctx.error(
                "request.method",
                "fhir_unsupported_request",
                "only POST (create) is accepted",
            ));
        }
    }
    let resource = entry
        .get("resource")
        .ok_or_else(|| ctx.error("resource", "fhir_missing_element", "is required"))?;
    if resource.get("resourceType").and_then(Value::as_str) != Some("Observation") {
        return Err(ctx.error(
            "resource.resourceType",
            "fhir_unsupported_resource",
            "must be \"Observation\"",
        ));
    }
    let status = resource.get("status").and_then(Value::as_str);
    if !status.is_some_and(|s| CHARTABLE_STATUSES.contains(&s)) {
        return Err(ctx.error(
            "resource.status",
            "fhir_unsupported_status",
            "must be final, amended, corrected or preliminary",
        ));
    }
    Ok(resource)
}

/// A blood-pressure panel (85354-9): systolic and/or diastolic from its components.
fn panel_signs(ctx: &Entry, resource: &Value) -> Result<Signs, FhirError> {
    let components = resource
        .get("component")
        .and_then(Value::as_array)
        .filter(|c| !c.is_empty())
        .ok_or_else(|| {
            ctx.error(
                "resource.component",
                "fhir_missing_element",
                "a blood-pressure panel needs components 8480-6 and/or 8462-4",
            )
        })?;
    let mut signs = VitalSigns::default();
    let mut sources = Vec::new();
    for (i, component) in components.iter().enumerate() {
        let base = format!("resource.component[{i}]");
        let sign = match loinc_code(component.get("code")).and_then(sign_of) {
            Some(sign @ (VitalSign::Systolic | VitalSign::Diastolic)) => sign,
            _ => {
                return Err(ctx.error(
                    &format!("{base}.code"),
                    "fhir_unmapped_code",
                    "a blood-pressure component must be LOINC 8480-6 or 8462-4",
                ))
            }
        };
        let path = format!("{base}.valueQuantity");
        set(ctx, &mut signs, sign, component.get("valueQuantity"), &path)?;
        sources.push((sign, ctx.path(&path)));
    }
    Ok((signs, sources))
}

/// One sign from the resource's own `valueQuantity`, named by its LOINC `code`.
fn single_sign(ctx: &Entry, resource: &Value, code: &str) -> Result<Signs, FhirError> {
    let sign = sign_of(code).ok_or_else(|| {
        ctx.error(
            "resource.code",
            "fhir_unmapped_code",
            "no mapped LOINC vital sign (8867-4, 8480-6, 8462-4, 85354-9, 59408-5, \
             2708-6, 8310-5, 9279-1)",
        )
    })?;
    let path = "resource.valueQuantity";
    let mut signs = VitalSigns::default();
    set(ctx, &mut signs, sign, resource.get("valueQuantity"), path)?;
    Ok((signs, vec![(sign, ctx.path(path))]))
}

/// The first LOINC code of a `CodeableConcept` that Vigil maps, else its first LOINC code.
fn loinc_code(concept: Option<&Value>) -> Option<&str> {
    let codes: Vec<&str> = concept?
        .get("coding")?
        .as_array()?
        .iter()
        .filter(|c| c.get("system").and_then(Value::as_str) == Some(LOINC))
        .filter_map(|c| c.get("code").and_then(Value::as_str))
        .collect();
    codes
        .iter()
        .find(|c| **c == BLOOD_PRESSURE_PANEL || sign_of(c).is_some())
        .or(codes.first())
        .copied()
}

fn sign_of(code: &str) -> Option<VitalSign> {
    LOINC_SIGNS
        .iter()
        .find(|(loinc, _)| *loinc == code)
        .map(|(_, sign)| *sign)
}

/// `subject.reference` `Patient/{id}[/_history/{v}]` → the patient id.
fn subject(ctx: &Entry, resource: &Value) -> Result<PatientId, FhirError> {
    let path = "resource.subject.reference";
    let reference = resource
        .get("subject")
        .and_then(|s| s.get("reference"))
        .and_then(Value::as_str)
        .ok_or_else(|| {
            ctx.error(
                path,
                "fhir_unmapped_subject",
                "a literal reference Patient/{id} is required",
            )
        })?;
    let unmapped = || {
        ctx.error(
            path,
            "fhir_unmapped_subject",
            "must be a relative reference Patient/{id} whose id is a Vigil patient id \
             (1..=64 of letters, digits, '.', '_', '-'); absolute, urn: and contained \
             references are not mapped",
        )
    };
    let rest = reference.strip_prefix("Patient/").ok_or_else(unmapped)?;
    let id = match rest.split_once("/_history/") {
        Some((id, version)) if !version.is_empty() && !version.contains('/') => id,
        Some(_) => return Err(unmapped()),
        None => rest,
    };
    PatientId::parse(id).map_err(|_| unmapped())
}

/// `effectiveDateTime` / `effectiveInstant`, if given, not too far in the future.
fn effective(
    ctx: &Entry,
    resource: &Value,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, FhirError> {
    let (field, raw) = match (
        resource.get("effectiveDateTime"),
        resource.get("effectiveInstant"),
    ) {
        (Some(raw), _) => ("resource.effectiveDateTime", raw),
        (None, Some(raw)) => ("resource.effectiveInstant", raw),
        (None, None) => return Ok(None),
    };
    let at = raw
        .as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| {
            ctx.error(
                field,
                "fhir_invalid_element",
                "must be a date-time with seconds and a time zone (RFC 3339)",
            )
        })?;
    if at > now + MAX_CLOCK_SKEW {
        return Err(ctx.error(
            field,
            "fhir_effective_in_future",
            format!(
                "lies more than {} s in the future",
                MAX_CLOCK_SKEW.num_seconds()
            ),
        ));
    }
    Ok(Some(at))
}

/// Reads a `Quantity` at `path`, converts it, and sets `sign` (refusing a second value).
fn set(
    ctx: &Entry,
    signs: &mut VitalSigns,
    sign: VitalSign,
    quantity: Option<&Value>,
    path: &str,
) -> Result<(), FhirError> {
    let quantity = quantity.ok_or_else(|| {
        ctx.error(
            path,
            "fhir_missing_element",
            "a valueQuantity is required (valueString, valueCodeableConcept and missing \
             values are not mapped)",
        )
    })?;
    let value = quantity
        .get("value")
        .and_then(Value::as_f64)
        .filter(|v| v.is_finite())
        .ok_or_else(|| {
            ctx.error(
                &format!("{path}.value"),
                "fhir_missing_element",
                "a numeric value is required",
            )
        })?;
    let unit = quantity
        .get("code")
        .or_else(|| quantity.get("unit"))
        .and_then(Value::as_str)
        .ok_or_else(|| {
            ctx.error(
                &format!("{path}.code"),
                "fhir_missing_element",
                "a UCUM unit code is required",
            )
        })?;
    let converted = to_domain_unit(sign, value, unit).ok_or_else(|| {
        ctx.error(
            &format!("{path}.code"),
            "fhir_unsupported_unit",
            format!("unit not accepted for {sign}: use {}", accepted_units(sign)),
        )
    })?;
    let out_of_type = || {
        ctx.error(
            &format!("{path}.value"),
            "vitals_out_of_physical_range",
            format!("{sign} must be within {}", sign.physical_limits()),
        )
    };
    let already = match sign {
        VitalSign::HeartRate => signs.heart_rate.replace(whole(converted, out_of_type)?),
        VitalSign::Systolic => signs.systolic.replace(whole(converted, out_of_type)?),
        VitalSign::Diastolic => signs.diastolic.replace(whole(converted, out_of_type)?),
        VitalSign::RespiratoryRate => signs
            .respiratory_rate
            .replace(whole(converted, out_of_type)?),
        VitalSign::Spo2 => signs
            .spo2
            .replace(whole::<u8>(converted, out_of_type)?)
            .map(u16::from),
        VitalSign::Temperature => {
            // Two decimals: °F → °C leaves a tail (98.6 °F = 37.000000000000004 °C) that
            // would be charted as noise.
            let celsius = (converted * 100.0).round() / 100.0;
            signs.temperature_c.replace(celsius).map(|_| 0)
        }
    };
    if already.is_some() {
        return Err(ctx.error(
            path,
            "fhir_duplicate_sign",
            format!("{sign} is given twice in one observation"),
        ));
    }
    Ok(())
}

/// `value` rounded to the nearest whole number of type `T`, if it fits.
fn whole<T: TryFrom<i64>>(value: f64, out_of_type: impl Fn() -> FhirError) -> Result<T, FhirError> {
    let rounded = value.round();
    // Bounded before the cast: every value in this range is exactly an i64.
    if !(0.0..=1_000_000.0).contains(&rounded) {
        return Err(out_of_type());
    }
    T::try_from(rounded as i64).map_err(|_| out_of_type())
}

/// UCUM units accepted per sign, and the factor and offset to the domain's unit
/// (`domain = value × factor + offset`).
fn units(sign: VitalSign) -> &'static [(&'static str, f64, f64)] {
    match sign {
        VitalSign::HeartRate | VitalSign::RespiratoryRate => &[
            ("/min", 1.0, 0.0),
            ("1/min", 1.0, 0.0),
            ("{beats}/min", 1.0, 0.0),
            ("{beat}/min", 1.0, 0.0),
            ("{breaths}/min", 1.0, 0.0),
            ("{breath}/min", 1.0, 0.0),
            ("/s", 60.0, 0.0),
        ],
        VitalSign::Systolic | VitalSign::Diastolic => {
            &[("mm[Hg]", 1.0, 0.0), ("kPa", 7.500_617, 0.0)]
        }
        VitalSign::Spo2 => &[("%", 1.0, 0.0), ("1", 100.0, 0.0)],
        VitalSign::Temperature => &[
            ("Cel", 1.0, 0.0),
            ("[degF]", 5.0 / 9.0, -32.0 * 5.0 / 9.0),
            ("K", 1.0, -273.15),
        ],
    }
}

fn accepted_units(sign: VitalSign) -> String {
    units(sign)
        .iter()
        .map(|(unit, _, _)| *unit)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Converts `value` in UCUM `unit` to the unit [`VitalSigns`] holds for `sign` (per minute,
/// mmHg, percent, °C); `None` for a unit not accepted for that sign. A heart-rate unit given
/// to a temperature is refused rather than converted: it is a mislabelled observation.
pub fn to_domain_unit(sign: VitalSign, value: f64, unit: &str) -> Option<f64> {
    units(sign)
        .iter()
        .find(|(accepted, _, _)| *accepted == unit)
        .map(|(_, factor, offset)| value * factor + offset)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::test_support::at;

    fn observation(code: &str, value: f64, unit: &str) -> Value {
        json!({
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": LOINC, "code": code}]},
            "subject": {"reference": "Patient/mrn-3"},
            "valueQuantity": {"value": value, "system": "http://unitsofmeasure.org", "code": unit}
        })
    }

    fn bundle(resources: Vec<Value>) -> Value {
        let entry: Vec<Value> = resources
            .into_iter()
            .enumerate()
            .map(|(i, r)| json!({"fullUrl": format!("urn:uuid:00000000-0000-0000-0000-00000000000{i}"), "resource": r, "request": {"method": "POST", "url": "Observation"}}))
            .collect();
        json!({"resourceType": "Bundle", "type": "transaction", "entry": entry})
    }

    fn one(resource: Value) -> Result<MappedReading, FhirError> {
        map_bundle(&bundle(vec![resource]), at(0)).map(|mut r| r.remove(0))
    }

    #[test]
    fn a_heart_rate_observation_maps_to_a_reading_of_its_patient() {
        let reading = one(observation("8867-4", 72.0, "/min")).unwrap();
        assert_eq!(reading.patient, PatientId::parse("mrn-3").unwrap());
        assert_eq!(reading.signs.heart_rate, Some(72));
        assert_eq!(
            reading.full_url.as_deref(),
            Some("urn:uuid:00000000-0000-0000-0000-000000000000")
        );
        assert_eq!(
            reading.path_of(VitalSign::HeartRate),
            "entry[0].resource.valueQuantity"
        );
    }

    #[test]
    fn fahrenheit_is_converted_to_celsius() {
        let reading = one(observation("8310-5", 101.3, "[degF]")).unwrap();
        assert_eq!(reading.signs.temperature_c, Some(38.5));
        let reading = one(observation("8310-5", 98.6, "[degF]")).unwrap();
        assert_eq!(reading.signs.temperature_c, Some(37.0));
    }

    #[test]
    fn kelvin_is_converted_to_celsius() {
        let reading = one(observation("8310-5", 310.15, "K")).unwrap();
        assert_eq!(reading.signs.temperature_c, Some(37.0));
    }

    #[test]
    fn an_spo2_fraction_is_converted_to_percent() {
        let reading = one(observation("2708-6", 0.97, "1")).unwrap();
        assert_eq!(reading.signs.spo2, Some(97));
        let reading = one(observation("59408-5", 93.0, "%")).unwrap();
        assert_eq!(reading.signs.spo2, Some(93));
    }

    #[test]
    fn kilopascals_are_converted_to_mmhg() {
        let reading = one(observation("8480-6", 16.0, "kPa")).unwrap();
        assert_eq!(reading.signs.systolic, Some(120));
    }

    #[test]
    fn per_second_rates_are_converted_to_per_minute() {
        let reading = one(observation("9279-1", 0.25, "/s")).unwrap();
        assert_eq!(reading.signs.respiratory_rate, Some(15));
    }

    #[test]
    fn a_blood_pressure_panel_maps_both_components() {
        let panel = json!({
            "resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": LOINC, "code": "85354-9"}]},
            "subject": {"reference": "Patient/mrn-3/_history/2"},
            "effectiveDateTime": "2025-03-14T08:58:00Z",
            "component": [
                {"code": {"coding": [{"system": LOINC, "code": "8480-6"}]},
                 "valueQuantity": {"value": 150, "unit": "mmHg", "code": "mm[Hg]"}},
                {"code": {"coding": [{"system": LOINC, "code": "8462-4"}]},
                 "valueQuantity": {"value": 95, "unit": "mmHg", "code": "mm[Hg]"}}
            ]
        });
        let reading = one(panel).unwrap();
        assert_eq!(reading.signs.systolic, Some(150));
        assert_eq!(reading.signs.diastolic, Some(95));
        assert_eq!(reading.at, Some(at(-2)));
        assert_eq!(
            reading.path_of(VitalSign::Diastolic),
            "entry[0].resource.component[1].valueQuantity"
        );
    }

    #[test]
    fn a_unit_of_another_sign_is_refused_naming_the_entry() {
        let mut b = bundle(vec![
            observation("8867-4", 72.0, "/min"),
            observation("8310-5", 37.0, "/min"),
        ]);
        b["entry"][1]["fullUrl"] = json!("https://gw.example/Observation/t1");
        let error = map_bundle(&b, at(0)).unwrap_err();
        assert_eq!(error.index, Some(1));
        assert_eq!(
            error.full_url.as_deref(),
            Some("https://gw.example/Observation/t1")
        );
        assert_eq!(error.path, "entry[1].resource.valueQuantity.code");
        assert_eq!(error.code, "fhir_unsupported_unit");
    }

    #[test]
    fn an_unmapped_loinc_code_is_refused() {
        let error = one(observation("29463-7", 70.0, "kg")).unwrap_err();
        assert_eq!(error.code, "fhir_unmapped_code");
        assert_eq!(error.path, "entry[0].resource.code");
    }

    #[test]
    fn a_code_of_another_system_is_refused() {
        let mut o = observation("8867-4", 72.0, "/min");
        o["code"]["coding"][0]["system"] = json!("http://snomed.info/sct");
        assert_eq!(one(o).unwrap_err().code, "fhir_unmapped_code");
    }

    #[test]
    fn absolute_urn_and_malformed_subjects_are_refused() {
        for reference in [
            "https://other.example/fhir/Patient/mrn-3",
            "urn:uuid:6a1c9b3e-0000-4000-8000-000000000001",
            "#contained",
            "Patient/",
            "Patient/mrn 3",
            "Practitioner/mrn-3",
            "Patient/mrn-3/_history/",
        ] {
            let mut o = observation("8867-4", 72.0, "/min");
            o["subject"]["reference"] = json!(reference);
            let error = one(o).unwrap_err();
            assert_eq!(error.code, "fhir_unmapped_subject", "{reference}");
            assert_eq!(error.path, "entry[0].resource.subject.reference");
        }
    }

    #[test]
    fn an_observation_entered_in_error_is_refused() {
        let mut o = observation("8867-4", 72.0, "/min");
        o["status"] = json!("entered-in-error");
        assert_eq!(one(o).unwrap_err().code, "fhir_unsupported_status");
    }

    #[test]
    fn a_reading_stamped_in_the_future_is_refused() {
        let mut o = observation("8867-4", 72.0, "/min");
        o["effectiveDateTime"] = json!("2025-03-14T09:05:00Z");
        assert_eq!(one(o).unwrap_err().code, "fhir_effective_in_future");
    }

    #[test]
    fn a_value_that_cannot_be_a_whole_rate_is_refused_at_its_value() {
        let error = one(observation("8867-4", -5.0, "/min")).unwrap_err();
        assert_eq!(error.path, "entry[0].resource.valueQuantity.value");
        assert_eq!(error.code, "vitals_out_of_physical_range");
    }

    #[test]
    fn other_bundle_types_and_resources_are_refused() {
        let mut b = bundle(vec![observation("8867-4", 72.0, "/min")]);
        b["type"] = json!("searchset");
        let error = map_bundle(&b, at(0)).unwrap_err();
        assert_eq!((error.index, error.code), (None, "fhir_bundle_type"));

        let mut b = bundle(vec![json!({"resourceType": "Patient", "id": "mrn-3"})]);
        b["type"] = json!("batch");
        assert_eq!(
            map_bundle(&b, at(0)).unwrap_err().code,
            "fhir_unsupported_resource"
        );
    }

    #[test]
    fn every_mapped_loinc_code_lands_in_its_sign() {
        for (code, sign) in LOINC_SIGNS {
            let (value, unit) = match sign {
                VitalSign::Temperature => (37.0, "Cel"),
                VitalSign::Spo2 => (97.0, "%"),
                VitalSign::Systolic | VitalSign::Diastolic => (90.0, "mm[Hg]"),
                _ => (30.0, "/min"),
            };
            let reading = one(observation(code, value, unit)).unwrap();
            assert_eq!(reading.sources[0].0, sign, "{code}");
        }
    }
}
