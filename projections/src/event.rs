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

/// Stored aggregate types (`events.aggregate_type`), for consumers that read only some.
pub mod kinds {
    pub const ALERT: &str = "alert";
    pub const CASE_THREAD: &str = "case_thread";
    pub const PATIENT_VITALS: &str = "patient_vitals";
    pub const APPOINTMENT: &str = "appointment";
    pub const NOTIFICATION: &str = "notification";
}

/// Decodes one stored event of `hospital` (its payload as JSON text).
fn decode(
    hospital: &str,
    prefix: &str,
    row: &sqlx::postgres::PgRow,
) -> Result<Envelope, ProjectionError> {
    let position: i64 = row.try_get("position")?;
    let aggregate_type: &str = row.try_get("aggregate_type")?;
    let payload: &str = row.try_get("payload")?;
    let corrupt = |e: serde_json::Error| ProjectionError::Corrupt {
        position,
        reason: e.to_string(),
    };
    // Straight from the text into the typed event: no `serde_json::Value` tree in between
    // (what decoding cost most when every consumer read every event of a vitals batch).
    let event = match aggregate_type {
        kinds::ALERT => DomainEvent::Alert(serde_json::from_str(payload).map_err(corrupt)?),
        kinds::CASE_THREAD => DomainEvent::Case(serde_json::from_str(payload).map_err(corrupt)?),
        kinds::PATIENT_VITALS => {
            DomainEvent::Vitals(serde_json::from_str(payload).map_err(corrupt)?)
        }
        kinds::APPOINTMENT => {
            DomainEvent::Appointment(serde_json::from_str(payload).map_err(corrupt)?)
        }
        kinds::NOTIFICATION => {
            DomainEvent::Notification(serde_json::from_str(payload).map_err(corrupt)?)
        }
        other => {
            return Err(ProjectionError::Corrupt {
                position,
                reason: format!("unknown aggregate type `{other}`"),
            })
        }
    };
    let stored: &str = row.try_get("aggregate_id")?;
    Ok(Envelope {
        hospital: hospital.to_owned(),
        position,
        aggregate_id: stored.strip_prefix(prefix).unwrap_or(stored).to_owned(),
        sequence: row.try_get("sequence")?,
        event,
        recorded_at: row.try_get("recorded_at")?,
    })
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
        "SELECT position, aggregate_type, aggregate_id, sequence, payload::text AS payload, \
                recorded_at \
         FROM events WHERE hospital = $1 AND position > $2 ORDER BY position LIMIT $3",
    )
    .bind(hospital)
    .bind(after)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    let prefix = format!("{hospital}/");
    rows.iter()
        .map(|row| decode(hospital, &prefix, row))
        .collect()
}

/// What a consumer that reads only some kinds of events got from one batch
/// ([`read_batch_of`]).
#[derive(Debug)]
pub struct Batch {
    /// The batch's events of the kinds asked for, in position order.
    pub events: Vec<Envelope>,
    /// The batch's last position, whatever its kind: the consumer's next checkpoint.
    pub last: i64,
    /// When that last event was recorded (the checkpoint's `event_time`).
    pub last_recorded_at: Option<DateTime<Utc>>,
    /// How many positions the batch covered (`last - after`), of every kind.
    pub covered: i64,
}

/// The batch [`read_batch`] would read (up to `limit` positions after `after`), but only its
/// events of the aggregate types `kinds`; `None` when nothing is pending.
///
/// A consumer of alerts has nothing to do with a vitals batch's 500 readings, yet reading
/// them all (every column, from every consumer) was a large share of a batch's cost. Positions
/// are dense, so the batch is the range (`after`, `min(after + limit, head)`], where `head` is
/// the hospital's stream head *in the same statement's snapshot*: commit order is position
/// order, so every position up to that head is visible to it, and the range's events of the
/// other kinds need not be read at all to know where the batch ends.
pub async fn read_batch_of(
    conn: &mut PgConnection,
    hospital: &str,
    after: i64,
    limit: i64,
    kinds: &[&str],
) -> Result<Option<Batch>, ProjectionError> {
    let rows = sqlx::query(
        "SELECT h.last, \
                (SELECT recorded_at FROM events WHERE hospital = $1 AND position = h.last) \
                    AS last_recorded_at, \
                e.position, e.aggregate_type, e.aggregate_id, e.sequence, e.payload, \
                e.recorded_at \
         FROM (SELECT least($2 + $3, position) AS last FROM stream_heads \
               WHERE hospital = $1 AND position > $2) AS h \
         LEFT JOIN LATERAL ( \
             SELECT position, aggregate_type, aggregate_id, sequence, payload::text AS payload, \
                    recorded_at \
             FROM events \
             WHERE hospital = $1 AND position > $2 AND position <= h.last \
               AND aggregate_type = ANY($4) \
             ORDER BY position) AS e ON true \
         ORDER BY e.position",
    )
    .bind(hospital)
    .bind(after)
    .bind(limit)
    .bind(kinds)
    .fetch_all(&mut *conn)
    .await?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let last: i64 = first.try_get("last")?;
    let last_recorded_at: Option<DateTime<Utc>> = first.try_get("last_recorded_at")?;
    let prefix = format!("{hospital}/");
    let mut events = Vec::with_capacity(rows.len());
    for row in &rows {
        // The LEFT JOIN's one empty row when the range holds none of `kinds`.
        if row.try_get::<Option<i64>, _>("position")?.is_some() {
            events.push(decode(hospital, &prefix, row)?);
        }
    }
    Ok(Some(Batch {
        events,
        last,
        last_recorded_at,
        covered: last - after,
    }))
}
