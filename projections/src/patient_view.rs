//! The patient view: every vitals reading of every patient, with each sign's value and
//! whether the reading had any sign outside its reference range.
//!
//! Table `patient_vitals` (migration `*_create_more_read_models.sql`), one row per reading,
//! keyed by (hospital, patient, reading) — read backwards for "the latest N readings" — and
//! indexed by recorder for field workers, who see only the readings they took.
//!
//! The out-of-range flags are those the aggregate recorded in the event, so this model never
//! re-derives the reference ranges (they could change; a past reading's flags must not).

use std::collections::BTreeMap;

use aggregates::vitals::{Deviation, OutOfRange, VitalSign, VitalsEvent};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::types::Json;
use sqlx::{PgConnection, Row};

use crate::engine::{ApplyFuture, ReadModel, Tables};
use crate::event::{DomainEvent, Envelope};

/// The patient view read model.
pub struct PatientView;

/// Its code version: bump when `apply` changes, and the server rebuilds it at start.
pub const VERSION: i32 = 1;

impl ReadModel for PatientView {
    fn name(&self) -> &'static str {
        "patient_view"
    }

    fn version(&self) -> i32 {
        VERSION
    }

    fn tables(&self) -> &'static [&'static str] {
        &["patient_vitals"]
    }

    fn kinds(&self) -> Option<&'static [&'static str]> {
        Some(&[crate::event::kinds::PATIENT_VITALS])
    }

    fn apply<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        tables: &'a Tables,
        e: &'a Envelope,
    ) -> ApplyFuture<'a> {
        Box::pin(async move {
            let DomainEvent::Vitals(event) = &e.event else {
                return Ok(());
            };
            let table = tables.get("patient_vitals")?;
            match event {
                VitalsEvent::VitalsRecorded {
                    patient,
                    reading,
                    signs,
                    out_of_range,
                    by,
                    at,
                } => {
                    sqlx::query(&format!(
                        "INSERT INTO {table} (hospital, patient, reading, heart_rate, systolic, \
                         diastolic, spo2, temperature_c, respiratory_rate, out_of_range, \
                         any_out_of_range, recorded_by, recorded_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
                         ON CONFLICT (hospital, patient, reading) DO NOTHING"
                    ))
                    .bind(&e.hospital)
                    .bind(patient.as_str())
                    // Readings count one patient's readings: far below i64::MAX.
                    .bind(i64::try_from(*reading).unwrap_or(i64::MAX))
                    .bind(signs.heart_rate.map(i32::from))
                    .bind(signs.systolic.map(i32::from))
                    .bind(signs.diastolic.map(i32::from))
                    .bind(signs.spo2.map(i32::from))
                    .bind(signs.temperature_c)
                    .bind(signs.respiratory_rate.map(i32::from))
                    .bind(Json(out_of_range))
                    .bind(!out_of_range.is_empty())
                    .bind(by.as_str())
                    .bind(at)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            Ok(())
        })
    }

    /// A batch's readings in one `INSERT ... SELECT FROM unnest(...)`: a vitals batch of 500
    /// readings was 500 round trips here, one per event. Same rows, same `ON CONFLICT DO
    /// NOTHING`, as [`PatientView::apply`] one by one (a reading is inserted once and never
    /// changed, so order within the batch does not matter).
    fn apply_all<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        tables: &'a Tables,
        events: &'a [Envelope],
    ) -> ApplyFuture<'a> {
        Box::pin(async move {
            let table = tables.get("patient_vitals")?;
            let mut rows = Columns::default();
            for e in events {
                let DomainEvent::Vitals(VitalsEvent::VitalsRecorded {
                    patient,
                    reading,
                    signs,
                    out_of_range,
                    by,
                    at,
                }) = &e.event
                else {
                    continue;
                };
                rows.hospital.push(e.hospital.as_str());
                rows.patient.push(patient.as_str());
                // Readings count one patient's readings: far below i64::MAX.
                rows.reading
                    .push(i64::try_from(*reading).unwrap_or(i64::MAX));
                rows.heart_rate.push(signs.heart_rate.map(i32::from));
                rows.systolic.push(signs.systolic.map(i32::from));
                rows.diastolic.push(signs.diastolic.map(i32::from));
                rows.spo2.push(signs.spo2.map(i32::from));
                rows.temperature_c.push(signs.temperature_c);
                rows.respiratory_rate
                    .push(signs.respiratory_rate.map(i32::from));
                rows.out_of_range.push(
                    serde_json::to_string(out_of_range)
                        .map_err(|e| sqlx::Error::Encode(Box::new(e)))?,
                );
                rows.any_out_of_range.push(!out_of_range.is_empty());
                rows.recorded_by.push(by.as_str());
                rows.recorded_at.push(*at);
            }
            if rows.hospital.is_empty() {
                return Ok(());
            }
            sqlx::query(&format!(
                "INSERT INTO {table} (hospital, patient, reading, heart_rate, systolic, \
                 diastolic, spo2, temperature_c, respiratory_rate, out_of_range, \
                 any_out_of_range, recorded_by, recorded_at) \
                 SELECT hospital, patient, reading, heart_rate, systolic, diastolic, spo2, \
                        temperature_c, respiratory_rate, out_of_range::jsonb, any_out_of_range, \
                        recorded_by, recorded_at \
                 FROM unnest($1::text[], $2::text[], $3::bigint[], $4::int[], $5::int[], \
                             $6::int[], $7::int[], $8::float8[], $9::int[], $10::text[], \
                             $11::bool[], $12::text[], $13::timestamptz[]) \
                      AS t(hospital, patient, reading, heart_rate, systolic, diastolic, spo2, \
                           temperature_c, respiratory_rate, out_of_range, any_out_of_range, \
                           recorded_by, recorded_at) \
                 ON CONFLICT (hospital, patient, reading) DO NOTHING"
            ))
            .bind(&rows.hospital)
            .bind(&rows.patient)
            .bind(&rows.reading)
            .bind(&rows.heart_rate)
            .bind(&rows.systolic)
            .bind(&rows.diastolic)
            .bind(&rows.spo2)
            .bind(&rows.temperature_c)
            .bind(&rows.respiratory_rate)
            .bind(&rows.out_of_range)
            .bind(&rows.any_out_of_range)
            .bind(&rows.recorded_by)
            .bind(&rows.recorded_at)
            .execute(&mut *tx)
            .await?;
            Ok(())
        })
    }
}

/// A batch of readings as one array per column, for [`PatientView::apply_all`].
#[derive(Default)]
struct Columns<'e> {
    hospital: Vec<&'e str>,
    patient: Vec<&'e str>,
    reading: Vec<i64>,
    heart_rate: Vec<Option<i32>>,
    systolic: Vec<Option<i32>>,
    diastolic: Vec<Option<i32>>,
    spo2: Vec<Option<i32>>,
    temperature_c: Vec<Option<f64>>,
    respiratory_rate: Vec<Option<i32>>,
    out_of_range: Vec<String>,
    any_out_of_range: Vec<bool>,
    recorded_by: Vec<&'e str>,
    recorded_at: Vec<DateTime<Utc>>,
}

/// One reading. Signs not measured are `null`.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct VitalsRow {
    /// The reading's number for this patient: 1, 2, 3...
    pub reading: i64,
    pub heart_rate: Option<i32>,
    pub systolic: Option<i32>,
    pub diastolic: Option<i32>,
    pub spo2: Option<i32>,
    pub temperature_c: Option<f64>,
    pub respiratory_rate: Option<i32>,
    /// The signs outside their reference ranges, as recorded.
    pub out_of_range: Vec<OutOfRange>,
    pub any_out_of_range: bool,
    pub recorded_by: String,
    pub recorded_at: DateTime<Utc>,
}

/// Where one measured sign stands against its reference range.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SignFlag {
    /// Below the range.
    Low,
    /// Within it.
    Normal,
    /// Above it.
    High,
}

impl VitalsRow {
    fn measured(&self, sign: VitalSign) -> bool {
        match sign {
            VitalSign::HeartRate => self.heart_rate.is_some(),
            VitalSign::Systolic => self.systolic.is_some(),
            VitalSign::Diastolic => self.diastolic.is_some(),
            VitalSign::Spo2 => self.spo2.is_some(),
            VitalSign::Temperature => self.temperature_c.is_some(),
            VitalSign::RespiratoryRate => self.respiratory_rate.is_some(),
        }
    }

    /// A flag per measured sign, keyed by its field name (`heart_rate`, `temperature_c`...):
    /// `low` or `high` if the reading recorded it out of range, `normal` otherwise.
    pub fn flags(&self) -> BTreeMap<&'static str, SignFlag> {
        VitalSign::ALL
            .into_iter()
            .filter(|sign| self.measured(*sign))
            .map(|sign| {
                let flag = match self.out_of_range.iter().find(|o| o.sign == sign) {
                    Some(OutOfRange {
                        deviation: Deviation::Low,
                        ..
                    }) => SignFlag::Low,
                    Some(OutOfRange {
                        deviation: Deviation::High,
                        ..
                    }) => SignFlag::High,
                    None => SignFlag::Normal,
                };
                (sign.field(), flag)
            })
            .collect()
    }
}

/// The latest `limit` readings of `patient`, newest first; with `recorded_by`, only those
/// that user took.
pub async fn history(
    conn: &mut PgConnection,
    hospital: &str,
    patient: &str,
    recorded_by: Option<&str>,
    limit: i64,
) -> Result<Vec<VitalsRow>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT reading, heart_rate, systolic, diastolic, spo2, temperature_c, respiratory_rate, \
         out_of_range, any_out_of_range, recorded_by, recorded_at FROM patient_vitals \
         WHERE hospital = $1 AND patient = $2 AND ($3::text IS NULL OR recorded_by = $3) \
         ORDER BY reading DESC LIMIT $4",
    )
    .bind(hospital)
    .bind(patient)
    .bind(recorded_by)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            let Json(out_of_range) = r.try_get::<Json<Vec<OutOfRange>>, _>("out_of_range")?;
            Ok(VitalsRow {
                reading: r.try_get("reading")?,
                heart_rate: r.try_get("heart_rate")?,
                systolic: r.try_get("systolic")?,
                diastolic: r.try_get("diastolic")?,
                spo2: r.try_get("spo2")?,
                temperature_c: r.try_get("temperature_c")?,
                respiratory_rate: r.try_get("respiratory_rate")?,
                out_of_range,
                any_out_of_range: r.try_get("any_out_of_range")?,
                recorded_by: r.try_get("recorded_by")?,
                recorded_at: r.try_get("recorded_at")?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(out_of_range: Vec<OutOfRange>) -> VitalsRow {
        VitalsRow {
            reading: 1,
            heart_rate: Some(118),
            systolic: Some(120),
            diastolic: None,
            spo2: Some(91),
            temperature_c: None,
            respiratory_rate: None,
            any_out_of_range: !out_of_range.is_empty(),
            out_of_range,
            recorded_by: "nurse-1".into(),
            recorded_at: Utc::now(),
        }
    }

    #[test]
    fn each_measured_sign_is_flagged_low_normal_or_high_as_recorded() {
        let flags = row(vec![
            OutOfRange {
                sign: VitalSign::HeartRate,
                deviation: Deviation::High,
            },
            OutOfRange {
                sign: VitalSign::Spo2,
                deviation: Deviation::Low,
            },
        ])
        .flags();
        assert_eq!(
            flags,
            BTreeMap::from([
                ("heart_rate", SignFlag::High),
                ("spo2", SignFlag::Low),
                ("systolic", SignFlag::Normal),
            ])
        );
    }

    #[test]
    fn signs_not_measured_have_no_flag() {
        let flags = row(vec![]).flags();
        assert!(!flags.contains_key("diastolic"));
        assert!(!flags.contains_key("temperature_c"));
        assert!(flags.values().all(|f| *f == SignFlag::Normal));
    }

    #[test]
    fn flags_serialize_by_field_name() {
        let json = serde_json::to_value(row(vec![]).flags()).unwrap();
        assert_eq!(json["heart_rate"], "normal");
    }
}
