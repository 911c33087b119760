//! Vital-sign values, their physical limits and their clinical reference ranges.

use std::fmt;
use std::ops::RangeInclusive;

use serde::{Deserialize, Serialize};

use super::VitalsError;

// Physical limits are plausibility bounds that catch device and data-entry errors (a probe
// reading room air, Fahrenheit typed as Celsius, a slipped digit). They are not claims about
// the limits of human physiology: isolated case reports exist beyond several of them, but a
// charted reading that far out is far likelier an error than a patient.

/// Plausible heart rate (beats per minute): wide enough for profound bradycardia and extreme
/// tachyarrhythmias, narrow enough to catch slipped digits (e.g. 720 for 72).
pub const PHYSICAL_HEART_RATE: RangeInclusive<u16> = 20..=300;
/// Plausible systolic pressure (mmHg): below 40 a cuff cannot measure a pressure, and values
/// above 300 are beyond cuff and monitor scales.
pub const PHYSICAL_SYSTOLIC: RangeInclusive<u16> = 40..=300;
/// Plausible diastolic pressure (mmHg), by the same reasoning as systolic.
pub const PHYSICAL_DIASTOLIC: RangeInclusive<u16> = 20..=200;
/// Plausible oxygen saturation (%): 100 is the ceiling, and pulse oximeters are not
/// calibrated for meaningful readings far below 70, let alone 50.
pub const PHYSICAL_SPO2: RangeInclusive<u8> = 50..=100;
/// Plausible body temperature (°C): covers severe hypothermia and hyperpyrexia, and refuses
/// Fahrenheit values typed into the Celsius field (98.6 would otherwise be charted).
pub const PHYSICAL_TEMPERATURE_C: RangeInclusive<f64> = 25.0..=45.0;
/// Plausible respiratory rate (breaths per minute): below 4 is apnoea needing resuscitation,
/// not charting; above 80 cannot be counted.
pub const PHYSICAL_RESPIRATORY_RATE: RangeInclusive<u16> = 4..=80;

// Reference ranges are the conventional adult resting ranges taught in nursing and medical
// curricula. They flag readings for attention; they are not an early-warning score (NEWS2 and
// similar weigh bands differently and belong in a later, separate component).

/// Normal adult resting heart rate (bpm): the conventional 60–100 reference range used in
/// nursing and medical textbooks (and by the American Heart Association).
pub const NORMAL_HEART_RATE: RangeInclusive<u16> = 60..=100;
/// Normal adult systolic pressure (mmHg): below 90 is the usual definition of hypotension,
/// and 140 the threshold of hypertension in NICE and ESC guidelines.
pub const NORMAL_SYSTOLIC: RangeInclusive<u16> = 90..=140;
/// Normal adult diastolic pressure (mmHg): below 60 is hypotensive, and 90 the hypertension
/// threshold matching the systolic 140.
pub const NORMAL_DIASTOLIC: RangeInclusive<u16> = 60..=90;
/// Normal oxygen saturation (%) breathing room air: 95 and above is the usual reference for
/// healthy adults at low altitude.
pub const NORMAL_SPO2: RangeInclusive<u8> = 95..=100;
/// Normal body temperature (°C): 36.1 is the lower bound of normal in common references
/// (and of NEWS2's zero-score band); 37.8 °C (100 °F) is a fever threshold used in many
/// hospital protocols, lower than the 38.0 °C of others so that early fever is flagged.
pub const NORMAL_TEMPERATURE_C: RangeInclusive<f64> = 36.1..=37.8;
/// Normal adult respiratory rate (breaths per minute): 12–20, the conventional reference range
/// and NEWS2's zero-score band.
pub const NORMAL_RESPIRATORY_RATE: RangeInclusive<u16> = 12..=20;

/// One set of vital signs taken together. Any subset may be given (a nurse may only have a
/// pulse oximeter at hand), but at least one.
///
/// Fields are public so the HTTP layer can deserialize a request into it; [`VitalSigns::parse`]
/// then proves it physically plausible, and the aggregate checks again, since commands can be
/// built directly. Unknown fields are refused when deserializing: a misspelled sign
/// (`"heartrate"`) silently dropped from a clinical record would be worse than an error.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VitalSigns {
    /// Heart rate, beats per minute.
    pub heart_rate: Option<u16>,
    /// Systolic blood pressure, mmHg.
    pub systolic: Option<u16>,
    /// Diastolic blood pressure, mmHg.
    pub diastolic: Option<u16>,
    /// Peripheral oxygen saturation, percent.
    pub spo2: Option<u8>,
    /// Body temperature, degrees Celsius.
    pub temperature_c: Option<f64>,
    /// Respiratory rate, breaths per minute.
    pub respiratory_rate: Option<u16>,
}

impl VitalSigns {
    /// Accepts `raw` only if it holds at least one value, every value is physically possible,
    /// and the diastolic pressure is below the systolic one.
    pub fn parse(raw: VitalSigns) -> Result<VitalSigns, VitalsError> {
        raw.validate()?;
        Ok(raw)
    }

    /// The checks of [`parse`](Self::parse), for values already held (the aggregate re-checks
    /// commands that were built without `parse`).
    pub fn validate(&self) -> Result<(), VitalsError> {
        let VitalSigns {
            heart_rate,
            systolic,
            diastolic,
            spo2,
            temperature_c,
            respiratory_rate,
        } = *self;
        if heart_rate.is_none()
            && systolic.is_none()
            && diastolic.is_none()
            && spo2.is_none()
            && temperature_c.is_none()
            && respiratory_rate.is_none()
        {
            return Err(VitalsError::NoValues);
        }
        within(heart_rate, &PHYSICAL_HEART_RATE, VitalSign::HeartRate)?;
        within(systolic, &PHYSICAL_SYSTOLIC, VitalSign::Systolic)?;
        within(diastolic, &PHYSICAL_DIASTOLIC, VitalSign::Diastolic)?;
        within(spo2, &PHYSICAL_SPO2, VitalSign::Spo2)?;
        // `contains` is false for NaN, so a non-finite temperature is refused here too.
        within(
            temperature_c,
            &PHYSICAL_TEMPERATURE_C,
            VitalSign::Temperature,
        )?;
        within(
            respiratory_rate,
            &PHYSICAL_RESPIRATORY_RATE,
            VitalSign::RespiratoryRate,
        )?;
        if let (Some(systolic), Some(diastolic)) = (systolic, diastolic) {
            if diastolic >= systolic {
                return Err(VitalsError::DiastolicNotBelowSystolic);
            }
        }
        Ok(())
    }

    /// Every given sign outside its adult reference range, in field order; empty when all
    /// are normal.
    pub fn out_of_range(&self) -> Vec<OutOfRange> {
        let classified = [
            (
                VitalSign::HeartRate,
                deviation(self.heart_rate, &NORMAL_HEART_RATE),
            ),
            (
                VitalSign::Systolic,
                deviation(self.systolic, &NORMAL_SYSTOLIC),
            ),
            (
                VitalSign::Diastolic,
                deviation(self.diastolic, &NORMAL_DIASTOLIC),
            ),
            (VitalSign::Spo2, deviation(self.spo2, &NORMAL_SPO2)),
            (
                VitalSign::Temperature,
                deviation(self.temperature_c, &NORMAL_TEMPERATURE_C),
            ),
            (
                VitalSign::RespiratoryRate,
                deviation(self.respiratory_rate, &NORMAL_RESPIRATORY_RATE),
            ),
        ];
        classified
            .into_iter()
            .filter_map(|(sign, deviation)| {
                deviation.map(|deviation| OutOfRange { sign, deviation })
            })
            .collect()
    }
}

/// Refuses a given value outside its physical limits.
fn within<T: PartialOrd>(
    value: Option<T>,
    limits: &RangeInclusive<T>,
    sign: VitalSign,
) -> Result<(), VitalsError> {
    match value {
        Some(value) if !limits.contains(&value) => Err(VitalsError::OutOfPhysicalRange { sign }),
        _ => Ok(()),
    }
}

/// Which side of its reference range a given value falls on, if outside it.
fn deviation<T: PartialOrd>(value: Option<T>, normal: &RangeInclusive<T>) -> Option<Deviation> {
    let value = value?;
    if value < *normal.start() {
        Some(Deviation::Low)
    } else if value > *normal.end() {
        Some(Deviation::High)
    } else {
        None
    }
}

/// Names one vital sign, so errors and out-of-range flags can say which one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VitalSign {
    /// [`VitalSigns::heart_rate`].
    HeartRate,
    /// [`VitalSigns::systolic`].
    Systolic,
    /// [`VitalSigns::diastolic`].
    Diastolic,
    /// [`VitalSigns::spo2`].
    Spo2,
    /// [`VitalSigns::temperature_c`].
    Temperature,
    /// [`VitalSigns::respiratory_rate`].
    RespiratoryRate,
}

impl VitalSign {
    /// Every sign, in field order.
    pub const ALL: [VitalSign; 6] = [
        VitalSign::HeartRate,
        VitalSign::Systolic,
        VitalSign::Diastolic,
        VitalSign::Spo2,
        VitalSign::Temperature,
        VitalSign::RespiratoryRate,
    ];

    /// The name of the [`VitalSigns`] field holding this sign, which the HTTP edge reports as
    /// the invalid field (note `temperature_c`, with its unit).
    pub fn field(self) -> &'static str {
        match self {
            VitalSign::HeartRate => "heart_rate",
            VitalSign::Systolic => "systolic",
            VitalSign::Diastolic => "diastolic",
            VitalSign::Spo2 => "spo2",
            VitalSign::Temperature => "temperature_c",
            VitalSign::RespiratoryRate => "respiratory_rate",
        }
    }

    /// The sign's physical limits with their unit, for error messages.
    pub fn physical_limits(self) -> String {
        match self {
            VitalSign::HeartRate => limits(&PHYSICAL_HEART_RATE, "bpm"),
            VitalSign::Systolic => limits(&PHYSICAL_SYSTOLIC, "mmHg"),
            VitalSign::Diastolic => limits(&PHYSICAL_DIASTOLIC, "mmHg"),
            VitalSign::Spo2 => limits(&PHYSICAL_SPO2, "%"),
            VitalSign::Temperature => limits(&PHYSICAL_TEMPERATURE_C, "°C"),
            VitalSign::RespiratoryRate => limits(&PHYSICAL_RESPIRATORY_RATE, "breaths/min"),
        }
    }
}

fn limits<T: fmt::Display>(range: &RangeInclusive<T>, unit: &str) -> String {
    format!("{} to {} {unit}", range.start(), range.end())
}

impl fmt::Display for VitalSign {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.field())
    }
}

/// Which side of its reference range a value falls on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Deviation {
    /// Below the range (e.g. hypotension, hypoxaemia, bradycardia).
    Low,
    /// Above the range (e.g. fever, tachycardia).
    High,
}

/// One sign of a reading outside its adult reference range, recorded with the reading so
/// consumers need not know the ranges.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OutOfRange {
    /// Which sign.
    pub sign: VitalSign,
    /// Too low or too high.
    pub deviation: Deviation,
}
