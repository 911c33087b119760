//! Vitals → alert: a reading with a sign outside its reference range raises an alert for that
//! patient, one per sign, unless an alert this policy raised for the same patient and sign is
//! still open (raised or acknowledged, not yet resolved).
//!
//! # Deduplication
//!
//! Table `vitals_alerts` records each alert the policy raised with the position of the
//! reading that raised it and, once it is resolved, the position of its `AlertResolved`
//! (the policy reads alert events too). "Open at position `x`" means raised before `x` and
//! not resolved before `x`, so the decision depends only on the stream up to the reading:
//! handling the stream again from any checkpoint decides exactly as the first time. The
//! alert's id is derived from the reading's (hospital, position) and the sign, so re-raising
//! it after a retried batch is refused (`AlreadyRaised`) and counted as done.
//!
//! Only alerts raised by this policy deduplicate: an alert a nurse raised by hand about the
//! same patient does not silence the automatic one (the policy cannot tell what it is about).
//!
//! # Severity
//!
//! **Critical** when a value crosses one of the limits below, which are round, conservative
//! values of the kind rapid-response (medical emergency team) calling criteria use — a
//! reading that warrants bringing a team to the bedside now; **high** for any other value
//! outside the reference range, because a flagged reading still needs a clinician to look at
//! it now, not this shift. The limits are a product decision to be reviewed with clinicians;
//! an early-warning score (NEWS2 and similar) belongs in a separate component.

use aggregates::alert::{AlertEvent, Severity};
use aggregates::types::{AlertMessage, PatientId};
use aggregates::vitals::{Deviation, OutOfRange, VitalSign, VitalSigns, VitalsEvent};
use projections::event::{DomainEvent, Envelope};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{derived_id, kinds, Cause, Effect, HandleFuture, Planned, Policy};

/// The vitals policy.
pub struct VitalsPolicy;

/// SpO2 (%) below which an alert is critical: severe hypoxaemia.
pub const CRITICAL_SPO2_BELOW: u8 = 90;
/// Heart rate (bpm) below which an alert is critical.
pub const CRITICAL_HEART_RATE_BELOW: u16 = 40;
/// Heart rate (bpm) above which an alert is critical.
pub const CRITICAL_HEART_RATE_ABOVE: u16 = 140;
/// Systolic pressure (mmHg) below which an alert is critical (shock range).
pub const CRITICAL_SYSTOLIC_BELOW: u16 = 80;
/// Systolic pressure (mmHg) above which an alert is critical (hypertensive crisis).
pub const CRITICAL_SYSTOLIC_ABOVE: u16 = 180;
/// Diastolic pressure (mmHg) above which an alert is critical (hypertensive crisis).
pub const CRITICAL_DIASTOLIC_ABOVE: u16 = 120;
/// Respiratory rate (breaths/min) below which an alert is critical.
pub const CRITICAL_RESPIRATORY_RATE_BELOW: u16 = 8;
/// Respiratory rate (breaths/min) above which an alert is critical.
pub const CRITICAL_RESPIRATORY_RATE_ABOVE: u16 = 30;
/// Temperature (°C) below which an alert is critical (moderate hypothermia).
pub const CRITICAL_TEMPERATURE_BELOW: f64 = 35.0;
/// Temperature (°C) above which an alert is critical (hyperpyrexia).
pub const CRITICAL_TEMPERATURE_ABOVE: f64 = 40.0;

/// One alert the policy would raise for a reading, before deduplication.
#[derive(Clone, Debug, PartialEq)]
pub struct VitalsAlert {
    /// The sign it is about (the deduplication key, with the patient).
    pub sign: VitalSign,
    /// How urgent.
    pub severity: Severity,
    /// What the responders read, e.g. `SpO2 82% (low) for patient p-1`.
    pub message: AlertMessage,
}

/// The severity of an out-of-range `sign` with the reading's values: see the module docs.
pub fn severity(sign: VitalSign, signs: &VitalSigns) -> Severity {
    let critical = match sign {
        VitalSign::Spo2 => signs.spo2.is_some_and(|v| v < CRITICAL_SPO2_BELOW),
        VitalSign::HeartRate => signs
            .heart_rate
            .is_some_and(|v| !(CRITICAL_HEART_RATE_BELOW..=CRITICAL_HEART_RATE_ABOVE).contains(&v)),
        VitalSign::Systolic => signs
            .systolic
            .is_some_and(|v| !(CRITICAL_SYSTOLIC_BELOW..=CRITICAL_SYSTOLIC_ABOVE).contains(&v)),
        VitalSign::Diastolic => signs
            .diastolic
            .is_some_and(|v| v > CRITICAL_DIASTOLIC_ABOVE),
        VitalSign::RespiratoryRate => signs.respiratory_rate.is_some_and(|v| {
            !(CRITICAL_RESPIRATORY_RATE_BELOW..=CRITICAL_RESPIRATORY_RATE_ABOVE).contains(&v)
        }),
        VitalSign::Temperature => signs.temperature_c.is_some_and(|v| {
            !(CRITICAL_TEMPERATURE_BELOW..=CRITICAL_TEMPERATURE_ABOVE).contains(&v)
        }),
    };
    if critical {
        Severity::Critical
    } else {
        Severity::High
    }
}

/// The value of `sign` with its unit, as clinicians write it; `None` if the reading lacks it.
fn reading(sign: VitalSign, signs: &VitalSigns) -> Option<String> {
    Some(match sign {
        VitalSign::HeartRate => format!("Heart rate {} bpm", signs.heart_rate?),
        VitalSign::Systolic => format!("Systolic BP {} mmHg", signs.systolic?),
        VitalSign::Diastolic => format!("Diastolic BP {} mmHg", signs.diastolic?),
        VitalSign::Spo2 => format!("SpO2 {}%", signs.spo2?),
        VitalSign::Temperature => format!("Temperature {:.1} °C", signs.temperature_c?),
        VitalSign::RespiratoryRate => {
            format!("Respiratory rate {}/min", signs.respiratory_rate?)
        }
    })
}

/// The alerts a reading calls for, one per out-of-range sign, before deduplication.
pub fn alerts_for(
    patient: &PatientId,
    signs: &VitalSigns,
    out_of_range: &[OutOfRange],
) -> Vec<VitalsAlert> {
    out_of_range
        .iter()
        .filter_map(|flag| {
            let value = reading(flag.sign, signs)?;
            let side = match flag.deviation {
                Deviation::Low => "low",
                Deviation::High => "high",
            };
            let message =
                AlertMessage::parse(&format!("{value} ({side}) for patient {patient}")).ok()?;
            Some(VitalsAlert {
                sign: flag.sign,
                severity: severity(flag.sign, signs),
                message,
            })
        })
        .collect()
}

/// The id of the alert raised for `sign` by the reading at (`hospital`, `position`).
pub fn alert_id(hospital: &str, position: i64, sign: VitalSign) -> Uuid {
    derived_id(
        hospital,
        position,
        &format!("vitals-alert/{}", sign.field()),
    )
}

/// Whether an alert this policy raised for (`patient`, `sign`) was open at `position`.
async fn open_at(
    conn: &mut PgConnection,
    hospital: &str,
    patient: &PatientId,
    sign: VitalSign,
    position: i64,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM vitals_alerts WHERE hospital = $1 AND patient = $2 \
         AND sign = $3 AND raised_position < $4 \
         AND (resolved_position IS NULL OR resolved_position > $4))",
    )
    .bind(hospital)
    .bind(patient.as_str())
    .bind(sign.field())
    .bind(position)
    .fetch_one(&mut *conn)
    .await
}

impl Policy for VitalsPolicy {
    fn name(&self) -> &'static str {
        "vitals"
    }

    fn kinds(&self) -> Option<&'static [&'static str]> {
        Some(&[kinds::PATIENT_VITALS, kinds::ALERT])
    }

    fn handle<'a>(&'a self, tx: &'a mut PgConnection, e: &'a Envelope) -> HandleFuture<'a> {
        Box::pin(async move {
            match &e.event {
                DomainEvent::Vitals(VitalsEvent::VitalsRecorded {
                    patient,
                    signs,
                    out_of_range,
                    ..
                }) => {
                    let mut planned = Vec::new();
                    // The reading's ids, read once, only if it raises anything.
                    let mut reading_cause: Option<Cause> = None;
                    for alert in alerts_for(patient, signs, out_of_range) {
                        if open_at(tx, &e.hospital, patient, alert.sign, e.position).await? {
                            continue;
                        }
                        let id = alert_id(&e.hospital, e.position, alert.sign);
                        sqlx::query(
                            "INSERT INTO vitals_alerts (hospital, alert_id, patient, sign, raised_position) \
                             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                        )
                        .bind(&e.hospital)
                        .bind(id)
                        .bind(patient.as_str())
                        .bind(alert.sign.field())
                        .bind(e.position)
                        .execute(&mut *tx)
                        .await?;
                        let cause = match &reading_cause {
                            Some(cause) => cause.clone(),
                            None => reading_cause.insert(Cause::of(tx, e).await?).clone(),
                        };
                        planned.push(Planned {
                            cause,
                            effect: Effect::RaiseAlert {
                                id,
                                severity: alert.severity,
                                message: alert.message,
                                patient: patient.clone(),
                            },
                        });
                    }
                    Ok(planned)
                }
                DomainEvent::Alert(AlertEvent::AlertResolved { .. }) => {
                    // Only alerts this policy raised have rows (and uuid ids).
                    if let Ok(id) = Uuid::parse_str(&e.aggregate_id) {
                        sqlx::query(
                            "UPDATE vitals_alerts SET resolved_position = $3 \
                             WHERE hospital = $1 AND alert_id = $2 AND resolved_position IS NULL",
                        )
                        .bind(&e.hospital)
                        .bind(id)
                        .bind(e.position)
                        .execute(&mut *tx)
                        .await?;
                    }
                    Ok(vec![])
                }
                _ => Ok(vec![]),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patient() -> PatientId {
        PatientId::parse("p-1").unwrap()
    }

    fn flags(signs: &VitalSigns) -> Vec<VitalsAlert> {
        alerts_for(&patient(), signs, &signs.out_of_range())
    }

    #[test]
    fn a_normal_reading_calls_for_no_alert() {
        let signs = VitalSigns {
            heart_rate: Some(72),
            spo2: Some(98),
            ..Default::default()
        };
        assert!(flags(&signs).is_empty());
    }

    #[test]
    fn severe_hypoxaemia_is_a_critical_alert_naming_value_side_and_patient() {
        let signs = VitalSigns {
            spo2: Some(82),
            ..Default::default()
        };
        let alerts = flags(&signs);
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].sign, VitalSign::Spo2);
        assert_eq!(alerts[0].severity, Severity::Critical);
        assert_eq!(alerts[0].message.as_str(), "SpO2 82% (low) for patient p-1");
    }

    #[test]
    fn a_mildly_abnormal_value_is_a_high_alert() {
        let signs = VitalSigns {
            spo2: Some(93),
            temperature_c: Some(38.2),
            ..Default::default()
        };
        let alerts = flags(&signs);
        assert_eq!(alerts.len(), 2);
        assert!(alerts.iter().all(|a| a.severity == Severity::High));
        assert_eq!(
            alerts[1].message.as_str(),
            "Temperature 38.2 °C (high) for patient p-1"
        );
    }

    #[test]
    fn each_out_of_range_sign_calls_for_its_own_alert() {
        let signs = VitalSigns {
            heart_rate: Some(150),
            systolic: Some(75),
            diastolic: Some(40),
            respiratory_rate: Some(32),
            ..Default::default()
        };
        let alerts = flags(&signs);
        let got: Vec<(VitalSign, Severity)> = alerts.iter().map(|a| (a.sign, a.severity)).collect();
        assert_eq!(
            got,
            vec![
                (VitalSign::HeartRate, Severity::Critical),
                (VitalSign::Systolic, Severity::Critical),
                (VitalSign::Diastolic, Severity::High),
                (VitalSign::RespiratoryRate, Severity::Critical),
            ]
        );
    }

    #[test]
    fn the_critical_limits_themselves_are_high() {
        let at_limits = VitalSigns {
            heart_rate: Some(CRITICAL_HEART_RATE_ABOVE),
            spo2: Some(CRITICAL_SPO2_BELOW),
            systolic: Some(CRITICAL_SYSTOLIC_ABOVE),
            ..Default::default()
        };
        for sign in [VitalSign::HeartRate, VitalSign::Spo2, VitalSign::Systolic] {
            assert_eq!(severity(sign, &at_limits), Severity::High, "{sign}");
        }
    }

    #[test]
    fn alert_ids_differ_per_reading_and_sign_and_repeat_per_run() {
        let a = alert_id("h", 3, VitalSign::Spo2);
        assert_eq!(a, alert_id("h", 3, VitalSign::Spo2));
        assert_ne!(a, alert_id("h", 3, VitalSign::HeartRate));
        assert_ne!(a, alert_id("h", 4, VitalSign::Spo2));
    }
}
