//! `Idempotency-Key` support for command endpoints.
//!
//! A retried command (same key, same hospital and user, same request) returns the first
//! result and writes nothing new. The command id of a keyed request is derived from the key,
//! so the committed events can always be found again: if the process dies after committing
//! but before storing the response, the retry recovers the response from the events.

use std::time::Duration;

use actix_web::HttpRequest;
use aggregates::types::{HospitalId, UserId};
use sha2::{Digest, Sha256};
use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::problem::ApiError;
use crate::command::CommandBus;

/// The request header.
pub const HEADER: &str = "Idempotency-Key";

/// Longest accepted key. UUIDs and ULIDs are far shorter; this refuses abuse.
pub const MAX_KEY_LEN: usize = 255;

/// How long a first request may be in flight before a retry with the same key is allowed to
/// take it over (it crashed without committing). Far longer than any command takes.
pub const IN_FLIGHT_TIMEOUT: Duration = Duration::from_secs(30);

/// A keyed request.
#[derive(Clone, Debug)]
pub struct Keyed {
    /// The client's key.
    pub key: String,
    /// Hash of method, path and body.
    pub request_hash: String,
}

/// Reads and validates the key header, if present.
pub fn from_request(req: &HttpRequest, body_digest: &[u8; 32]) -> Result<Option<Keyed>, ApiError> {
    let Some(raw) = req.headers().get(HEADER) else {
        return Ok(None);
    };
    let key = raw
        .to_str()
        .ok()
        .filter(|k| {
            !k.is_empty() && k.len() <= MAX_KEY_LEN && k.bytes().all(|b| b.is_ascii_graphic())
        })
        .ok_or_else(|| {
            ApiError::invalid_field(
                HEADER,
                format!("{HEADER} must be 1..={MAX_KEY_LEN} visible ASCII characters"),
            )
        })?;
    let mut hasher = Sha256::new();
    hasher.update(req.method().as_str());
    hasher.update([0]);
    hasher.update(req.path());
    hasher.update([0]);
    hasher.update(body_digest);
    Ok(Some(Keyed {
        key: key.to_owned(),
        request_hash: hex::encode(hasher.finalize()),
    }))
}

/// What to do with a keyed request.
#[derive(Debug)]
pub enum Begin {
    /// First time (or the previous attempt is known dead): run the command with this id.
    Run { command_id: Uuid },
    /// Already done: answer with this.
    Replay {
        status: u16,
        body: serde_json::Value,
    },
}

/// Claims the key, or finds the earlier result.
pub async fn begin(
    pool: &PgPool,
    bus: &CommandBus,
    hospital: &HospitalId,
    user: &UserId,
    keyed: &Keyed,
) -> Result<Begin, ApiError> {
    let command_id = Uuid::new_v4();
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (hospital, user_id, key, request_hash, command_id) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
    )
    .bind(hospital.as_str())
    .bind(user.as_str())
    .bind(&keyed.key)
    .bind(&keyed.request_hash)
    .bind(command_id)
    .execute(pool)
    .await
    .map_err(ApiError::database)?
    .rows_affected();
    if inserted == 1 {
        return Ok(Begin::Run { command_id });
    }
    let row = sqlx::query(
        "SELECT request_hash, command_id, response_status, response_body, \
                extract(epoch FROM clock_timestamp() - created_at)::float8 AS age \
         FROM idempotency_keys WHERE hospital = $1 AND user_id = $2 AND key = $3",
    )
    .bind(hospital.as_str())
    .bind(user.as_str())
    .bind(&keyed.key)
    .fetch_optional(pool)
    .await
    .map_err(ApiError::database)?;
    let Some(row) = row else {
        // Purged between the two statements: treat as new.
        return Box::pin(begin(pool, bus, hospital, user, keyed)).await;
    };
    let get_err = |e: sqlx::Error| ApiError::Internal(e.to_string());
    let stored_hash: String = row.try_get("request_hash").map_err(get_err)?;
    let command_id: Uuid = row.try_get("command_id").map_err(get_err)?;
    let status: Option<i16> = row.try_get("response_status").map_err(get_err)?;
    let body: Option<serde_json::Value> = row.try_get("response_body").map_err(get_err)?;
    let age = Duration::from_secs_f64(row.try_get::<f64, _>("age").map_err(get_err)?.max(0.0));
    if stored_hash != keyed.request_hash {
        return Err(ApiError::Unprocessable {
            code: "idempotency_key_reused",
            detail: format!("{HEADER} was already used with a different request"),
        });
    }
    if let (Some(status), Some(body)) = (status, body) {
        // Rows past retention are purged by `purge_expired`; until then they answer.
        return Ok(Begin::Replay {
            status: status as u16,
            body,
        });
    }
    // No stored response: either in flight, or the first attempt died. Its events, if it
    // committed any, carry the derived command id.
    if let Some(outcome) = bus
        .outcome_of(command_id, hospital)
        .await
        .map_err(ApiError::database)?
    {
        let body = serde_json::to_value(&outcome).map_err(|e| ApiError::Internal(e.to_string()))?;
        // The status of the first attempt is unknown here; a created aggregate has version 1.
        let status = if outcome.version == 1 { 201 } else { 200 };
        complete(pool, hospital, user, &keyed.key, status, &body).await?;
        return Ok(Begin::Replay { status, body });
    }
    if age < IN_FLIGHT_TIMEOUT {
        return Err(ApiError::Conflict {
            code: "idempotency_key_in_flight",
            detail: "a request with this Idempotency-Key is still being processed".into(),
        });
    }
    let taken = sqlx::query(
        "UPDATE idempotency_keys SET created_at = clock_timestamp(), response_status = NULL, \
         response_body = NULL WHERE hospital = $1 AND user_id = $2 AND key = $3 \
         AND clock_timestamp() - created_at >= make_interval(secs => $4)",
    )
    .bind(hospital.as_str())
    .bind(user.as_str())
    .bind(&keyed.key)
    .bind(IN_FLIGHT_TIMEOUT.as_secs_f64())
    .execute(pool)
    .await
    .map_err(ApiError::database)?
    .rows_affected();
    if taken == 1 {
        Ok(Begin::Run { command_id })
    } else {
        Err(ApiError::Conflict {
            code: "idempotency_key_in_flight",
            detail: "a request with this Idempotency-Key is still being processed".into(),
        })
    }
}

/// Stores the response of a completed keyed request.
pub async fn complete(
    pool: &PgPool,
    hospital: &HospitalId,
    user: &UserId,
    key: &str,
    status: u16,
    body: &serde_json::Value,
) -> Result<(), ApiError> {
    sqlx::query(
        "UPDATE idempotency_keys SET response_status = $4, response_body = $5 \
         WHERE hospital = $1 AND user_id = $2 AND key = $3",
    )
    .bind(hospital.as_str())
    .bind(user.as_str())
    .bind(key)
    .bind(status as i16)
    .bind(body)
    .execute(pool)
    .await
    .map_err(ApiError::database)?;
    Ok(())
}

/// Forgets a key whose command was rejected, so nothing at all is persisted for it and the
/// client may retry after fixing the request.
pub async fn release(pool: &PgPool, hospital: &HospitalId, user: &UserId, key: &str) {
    let result = sqlx::query(
        "DELETE FROM idempotency_keys WHERE hospital = $1 AND user_id = $2 AND key = $3 \
         AND response_status IS NULL",
    )
    .bind(hospital.as_str())
    .bind(user.as_str())
    .bind(key)
    .execute(pool)
    .await;
    if let Err(error) = result {
        // The key then stays "in flight" until IN_FLIGHT_TIMEOUT; harmless.
        tracing::warn!(%error, "could not release idempotency key");
    }
}

/// Deletes keys older than `retention`. Run periodically by the server.
pub async fn purge_expired(pool: &PgPool, retention: Duration) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "DELETE FROM idempotency_keys WHERE created_at < clock_timestamp() - make_interval(secs => $1)",
    )
    .bind(retention.as_secs_f64())
    .execute(pool)
    .await?
    .rows_affected())
}
