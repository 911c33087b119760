//! Reading a hospital's stream in position order.

use aggregates::routing::scope_of;
use aggregates::types::HospitalId;
use chrono::{DateTime, Utc};
use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::{EventMetadata, Position, StreamEvent, StreamHead};

/// Why a stream read failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("event at position {position} cannot be decoded: {reason}")]
    Corrupt { position: Position, reason: String },
}

/// Reads up to `limit` events of `hospital` with a position greater than `after`, in order.
///
/// Correct under concurrent writers because positions are assigned under a per-hospital row
/// lock held to commit: a snapshot that sees position N sees every position below N.
pub async fn read_after(
    pool: &PgPool,
    hospital: &HospitalId,
    after: Position,
    limit: i64,
) -> Result<Vec<StreamEvent>, ReadError> {
    let rows = sqlx::query(&format!(
        "SELECT {EVENT_COLUMNS} FROM events \
         WHERE hospital = $1 AND position > $2 ORDER BY position LIMIT $3"
    ))
    .bind(hospital.as_str())
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let prefix = format!("{hospital}/");
    rows.into_iter()
        .map(|row| decode_row(&row, &prefix))
        .collect()
}

/// The columns [`decode_row`] reads, for every query that yields stream events.
pub const EVENT_COLUMNS: &str = "position, aggregate_type, aggregate_id, sequence, event_type, \
     event_version, payload, metadata, recorded_at";

/// Decodes one row holding [`EVENT_COLUMNS`] of an event of the hospital whose store-key
/// prefix is `prefix` (`"<hospital>/"`). The one decoder of stream events: the command
/// bus's handoff decodes with it too, so a handed-off event equals its read-back.
pub fn decode_row(row: &sqlx::postgres::PgRow, prefix: &str) -> Result<StreamEvent, ReadError> {
    let position: i64 = row.try_get("position")?;
    let aggregate_type: String = row.try_get("aggregate_type")?;
    let stored_id: String = row.try_get("aggregate_id")?;
    let event_type: String = row.try_get("event_type")?;
    let payload: serde_json::Value = row.try_get("payload")?;
    let metadata: serde_json::Value = row.try_get("metadata")?;
    let corrupt = |reason: String| ReadError::Corrupt { position, reason };
    let scope = scope_of(&aggregate_type, &payload).map_err(|e| corrupt(e.to_string()))?;
    let data = match payload {
        serde_json::Value::Object(mut map) => map
            .remove(&event_type)
            .ok_or_else(|| corrupt(format!("payload is not tagged `{event_type}`")))?,
        _ => return Err(corrupt("payload is not an object".into())),
    };
    let metadata: EventMetadata =
        serde_json::from_value(metadata).map_err(|e| corrupt(e.to_string()))?;
    Ok(StreamEvent {
        position,
        aggregate_id: stored_id
            .strip_prefix(prefix)
            .unwrap_or(&stored_id)
            .to_owned(),
        aggregate_type,
        sequence: row.try_get("sequence")?,
        event_type,
        event_version: row.try_get("event_version")?,
        data,
        metadata,
        recorded_at: row.try_get::<DateTime<Utc>, _>("recorded_at")?,
        scope,
    })
}

/// The head of `hospital`'s stream (position 0 and no epoch if it has no events yet).
pub async fn head(pool: &PgPool, hospital: &HospitalId) -> Result<StreamHead, sqlx::Error> {
    let row = sqlx::query("SELECT position, epoch FROM stream_heads WHERE hospital = $1")
        .bind(hospital.as_str())
        .fetch_optional(pool)
        .await?;
    Ok(match row {
        Some(row) => StreamHead {
            position: row.try_get("position")?,
            epoch: Some(row.try_get::<Uuid, _>("epoch")?),
        },
        None => StreamHead {
            position: 0,
            epoch: None,
        },
    })
}
