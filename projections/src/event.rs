//! Events as projectors see them: typed domain events with their stream position.

use aggregates::alert::AlertEvent;
use aggregates::appointment::AppointmentEvent;
use aggregates::case_thread::CaseEvent;
use aggregates::notification::NotificationEvent;
use aggregates::vitals::VitalsEvent;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Row};

use crate::engine::ProjectionError;

/// A stored event, decoded.
#[derive(Clone, Debug, PartialEq)]
pub enum DomainEvent {
    Alert(AlertEvent),
    Case(CaseEvent),
    Vitals(VitalsEvent),
    Appointment(AppointmentEvent),
    Notification(NotificationEvent),
}

/// One event of a hospital's stream.
#[derive(Clone, Debug, PartialEq)]
pub struct Envelope {
    /// The hospital.
    pub hospital: String,
    /// Position in its stream.
    pub position: i64,
    /// Aggregate id as the API shows it (tenant prefix removed).
    pub aggregate_id: String,
    /// The aggregate's version after this event.
    pub sequence: i64,
    /// The event.
    pub event: DomainEvent,
    /// Commit time.
    pub recorded_at: DateTime<Utc>,
}

/// Reads up to `limit` events of `hospital` after `after`, in order, inside the caller's
/// transaction (so the read and the checkpoint update see the same snapshot).
pub async fn read_batch(
    conn: &mut PgConnection,
    hospital: &str,
    after: i64,
    limit: i64,
) -> Result<Vec<Envelope>, ProjectionError> {
    let rows = sqlx::query(
        "SELECT position, aggregate_type, aggregate_id, sequence, payload, recorded_at \
         FROM events WHERE hospital = $1 AND position > $2 ORDER BY position LIMIT $3",
    )
    .bind(hospital)
    .bind(after)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    let prefix = format!("{hospital}/");
    rows.iter()
        .map(|row| {
            let position: i64 = row.try_get("position")?;
            let aggregate_type: String = row.try_get("aggregate_type")?;
            let payload: serde_json::Value = row.try_get("payload")?;
            let corrupt = |e: serde_json::Error| ProjectionError::Corrupt {
                position,
                reason: e.to_string(),
            };
            let event = match aggregate_type.as_str() {
                "alert" => DomainEvent::Alert(serde_json::from_value(payload).map_err(corrupt)?),
                "case_thread" => {
                    DomainEvent::Case(serde_json::from_value(payload).map_err(corrupt)?)
                }
                "patient_vitals" => {
                    DomainEvent::Vitals(serde_json::from_value(payload).map_err(corrupt)?)
                }
                "appointment" => {
                    DomainEvent::Appointment(serde_json::from_value(payload).map_err(corrupt)?)
                }
                "notification" => {
                    DomainEvent::Notification(serde_json::from_value(payload).map_err(corrupt)?)
                }
                other => {
                    return Err(ProjectionError::Corrupt {
                        position,
                        reason: format!("unknown aggregate type `{other}`"),
                    })
                }
            };
            let stored: String = row.try_get("aggregate_id")?;
            Ok(Envelope {
                hospital: hospital.to_owned(),
                position,
                aggregate_id: stored.strip_prefix(&prefix).unwrap_or(&stored).to_owned(),
                sequence: row.try_get("sequence")?,
                event,
                recorded_at: row.try_get("recorded_at")?,
            })
        })
        .collect()
}
