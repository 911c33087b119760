//! `Idempotency-Key` support for command endpoints: a keyed command is applied at most
//! once, whatever fails.
//!
//! A key row (hospital, user, key) names the command id its current attempt runs with. The
//! guarantee does not rest on timing but on two facts of the database (see ARCHITECTURE.md,
//! "At most once"):
//! - a command id commits events in at most one transaction (the event trigger's guard);
//! - a key moves to a new command id only after the old one was *fenced*
//!   ([`CommandBus::resolve`]): found committed (then its outcome is the answer) or made
//!   unable to ever commit.
//!
//! So at most one command id of a key can ever commit. The key is released (deleted, so
//! the client may send a corrected request) only when its command certainly persisted
//! nothing; when the outcome is unknown the key stays with its command id, and the retry
//! resolves the truth from the log.
//!
//! The key rows are written without waiting for their WAL flush ([`unflushed`]): a keyed
//! command's only fsync is its events' commit, which makes every earlier key write durable
//! with it (see [`unflushed`] for why nothing weaker than before can be observed).

use std::time::Duration;

use actix_web::HttpRequest;
use aggregates::types::{HospitalId, UserId};
use sha2::{Digest, Sha256};
use sqlx::postgres::{PgArguments, PgQueryResult};
use sqlx::{PgPool, Postgres, Row};
use uuid::Uuid;

use super::problem::ApiError;
use crate::command::{CommandBus, Resolution};

/// The request header.
pub const HEADER: &str = "Idempotency-Key";

/// Longest accepted key. UUIDs and ULIDs are far shorter; this refuses abuse.
pub const MAX_KEY_LEN: usize = 255;

/// How long an attempt counts as running: a retry inside it answers 409
/// `idempotency_key_in_flight` instead of resolving the attempt's command. An attempt is over
/// far sooner (pool wait 5 s, resolution 2 s); past this, a retry resolves (fences) the
/// command, which is safe even if the attempt were somehow still running: it then fails.
pub const IN_FLIGHT_WINDOW: Duration = Duration::from_secs(3);

/// Runs one write to `idempotency_keys` in a transaction that commits without waiting for its
/// WAL to reach the disk (`synchronous_commit = off`): three round trips on the local socket
/// instead of an fsync — a keyed command used to wait for three fsyncs (claim, events,
/// response), now for one.
///
/// Why a crash cannot make a key apply twice: PostgreSQL's WAL is one sequence, flushed in
/// order. A key write commits before its command starts, so the command's events commit
/// later in the WAL, synchronously, and their flush makes the key write durable too. A key
/// write a crash does lose was therefore followed by no durable commit of its command: a lost
/// claim or take-over leaves a key whose command never committed (the retry claims or
/// resolves it and runs, once); a lost response or release leaves a key whose outcome the
/// retry resolves from the log, as it does when storing the response failed. Tested by
/// crashing PostgreSQL (`pg_ctl stop -m immediate`) under keyed writers.
async fn unflushed(
    pool: &PgPool,
    write: sqlx::query::Query<'_, Postgres, PgArguments>,
) -> Result<PgQueryResult, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET LOCAL synchronous_commit = off")
        .execute(&mut *tx)
        .await?;
    let result = write.execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(result)
}

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
    /// Run the command with this id (the key's first attempt, or a new id after the previous
    /// one was resolved as never committed).
    Run { command_id: Uuid },
    /// Already done: answer with this.
    Replay {
        status: u16,
        body: serde_json::Value,
    },
}

/// The stored state of a claimed key.
struct Claim {
    request_hash: String,
    command_id: Uuid,
    success_status: Option<i16>,
    response: Option<(i16, serde_json::Value)>,
    /// Seconds since the running attempt started, if one is running.
    attempt_age: Option<f64>,
}

/// Claims the key, or finds the earlier result. `success_status` is what the command
/// answers when it commits (kept so an outcome recovered from the log answers the same).
pub async fn begin(
    pool: &PgPool,
    bus: &CommandBus,
    hospital: &HospitalId,
    user: &UserId,
    keyed: &Keyed,
    success_status: u16,
) -> Result<Begin, ApiError> {
    // A row purged between the claim and the read is claimed again; twice is enough.
    for _ in 0..2 {
        let command_id = Uuid::new_v4();
        let claim = sqlx::query(
            "INSERT INTO idempotency_keys \
               (hospital, user_id, key, request_hash, command_id, success_status, attempt_started_at) \
             VALUES ($1, $2, $3, $4, $5, $6, clock_timestamp()) ON CONFLICT DO NOTHING",
        )
        .bind(hospital.as_str())
        .bind(user.as_str())
        .bind(&keyed.key)
        .bind(&keyed.request_hash)
        .bind(command_id)
        .bind(success_status as i16);
        let inserted = unflushed(pool, claim)
            .await
            .map_err(ApiError::database)?
            .rows_affected();
        if inserted == 1 {
            return Ok(Begin::Run { command_id });
        }
        if let Some(claim) = read_claim(pool, hospital, user, &keyed.key).await? {
            return retry(pool, bus, hospital, user, keyed, claim, success_status).await;
        }
    }
    Err(ApiError::KeyInFlight { retry_after: 1 })
}

async fn read_claim(
    pool: &PgPool,
    hospital: &HospitalId,
    user: &UserId,
    key: &str,
) -> Result<Option<Claim>, ApiError> {
    let row = sqlx::query(
        "SELECT request_hash, command_id, success_status, response_status, response_body, \
                extract(epoch FROM clock_timestamp() - attempt_started_at)::float8 AS attempt_age \
         FROM idempotency_keys WHERE hospital = $1 AND user_id = $2 AND key = $3",
    )
    .bind(hospital.as_str())
    .bind(user.as_str())
    .bind(key)
    .fetch_optional(pool)
    .await
    .map_err(ApiError::database)?;
    let Some(row) = row else {
        return Ok(None);
    };
    let get = |e: sqlx::Error| ApiError::Internal(e.to_string());
    let status: Option<i16> = row.try_get("response_status").map_err(get)?;
    let body: Option<serde_json::Value> = row.try_get("response_body").map_err(get)?;
    Ok(Some(Claim {
        request_hash: row.try_get("request_hash").map_err(get)?,
        command_id: row.try_get("command_id").map_err(get)?,
        success_status: row.try_get("success_status").map_err(get)?,
        response: status.zip(body),
        attempt_age: row.try_get("attempt_age").map_err(get)?,
    }))
}

/// A request whose key is already claimed: replay, wait, or take over.
async fn retry(
    pool: &PgPool,
    bus: &CommandBus,
    hospital: &HospitalId,
    user: &UserId,
    keyed: &Keyed,
    claim: Claim,
    success_status: u16,
) -> Result<Begin, ApiError> {
    let (command_id, claimed_status) = match triage(claim, keyed)? {
        Triage::Answer(begin) => return Ok(begin),
        Triage::Resolve {
            command_id,
            success_status,
        } => (command_id, success_status),
    };
    // No attempt is running: decide the last one's command for good.
    let resolution = bus
        .resolve(command_id, hospital)
        .await
        .map_err(|_| ApiError::OutcomeUnknown { command_id })?;
    match resolution {
        Resolution::Committed(outcome) => {
            let status = claimed_status.map_or(success_status, |status| status as u16);
            let body =
                serde_json::to_value(&outcome).map_err(|e| ApiError::Internal(e.to_string()))?;
            store_response(pool, hospital, user, &keyed.key, command_id, status, &body).await;
            Ok(Begin::Replay { status, body })
        }
        Resolution::NeverCommitted => take_over(pool, hospital, user, keyed, command_id).await,
    }
}

/// What a retry of a claimed key does, decided from the claim alone.
#[derive(Debug)]
enum Triage {
    /// Answer now (replay the stored response).
    Answer(Begin),
    /// No attempt is running and none answered: resolve the last attempt's command from the
    /// log. `success_status` is the one the claim recorded.
    Resolve {
        command_id: Uuid,
        success_status: Option<i16>,
    },
}

/// Refuses a key reused for another request, replays a stored response, asks the client to
/// wait while an attempt is younger than [`IN_FLIGHT_WINDOW`], else sends it to resolution.
fn triage(claim: Claim, keyed: &Keyed) -> Result<Triage, ApiError> {
    if claim.request_hash != keyed.request_hash {
        return Err(ApiError::Unprocessable {
            code: "idempotency_key_reused",
            detail: format!("{HEADER} was already used with a different request"),
        });
    }
    // Rows past retention are purged by `purge_expired`; until then they answer.
    if let Some((status, body)) = claim.response {
        return Ok(Triage::Answer(Begin::Replay {
            status: status as u16,
            body,
        }));
    }
    if let Some(age) = claim.attempt_age {
        let window = IN_FLIGHT_WINDOW.as_secs_f64();
        if age < window {
            return Err(ApiError::KeyInFlight {
                retry_after: (window - age).ceil().max(1.0) as u64,
            });
        }
    }
    Ok(Triage::Resolve {
        command_id: claim.command_id,
        success_status: claim.success_status,
    })
}

/// Takes the key over after its last attempt was resolved as never committed, under a new
/// command id; the old id is fenced, so a new one cannot make the key apply twice.
async fn take_over(
    pool: &PgPool,
    hospital: &HospitalId,
    user: &UserId,
    keyed: &Keyed,
    fenced: Uuid,
) -> Result<Begin, ApiError> {
    let command_id = Uuid::new_v4();
    let take = sqlx::query(
        "UPDATE idempotency_keys SET command_id = $5, attempt_started_at = clock_timestamp() \
         WHERE hospital = $1 AND user_id = $2 AND key = $3 AND command_id = $4 \
         AND response_status IS NULL",
    )
    .bind(hospital.as_str())
    .bind(user.as_str())
    .bind(&keyed.key)
    .bind(fenced)
    .bind(command_id);
    let taken = unflushed(pool, take)
        .await
        .map_err(ApiError::database)?
        .rows_affected();
    if taken == 1 {
        Ok(Begin::Run { command_id })
    } else {
        // Another retry took it over first.
        Err(ApiError::KeyInFlight { retry_after: 1 })
    }
}

/// Stores the response of a keyed command that committed. Best effort: if it cannot be
/// stored (the database went away after the commit), a retry recovers the same outcome from
/// the log, so the client still gets its success now.
pub async fn store_response(
    pool: &PgPool,
    hospital: &HospitalId,
    user: &UserId,
    key: &str,
    command_id: Uuid,
    status: u16,
    body: &serde_json::Value,
) {
    let result = sqlx::query(
        "UPDATE idempotency_keys SET response_status = $5, response_body = $6, \
                attempt_started_at = NULL \
         WHERE hospital = $1 AND user_id = $2 AND key = $3 AND command_id = $4",
    )
    .bind(hospital.as_str())
    .bind(user.as_str())
    .bind(key)
    .bind(command_id)
    .bind(status as i16)
    .bind(body);
    let result = unflushed(pool, result).await;
    if let Err(error) = result {
        tracing::info!(%error, %command_id, "could not store a keyed response; a retry recovers it from the log");
    }
}

/// Forgets a key whose command certainly persisted nothing (rejected, or resolved as never
/// committed), so the client may retry, even with a corrected request. Only the attempt's own
/// command id is released: a key another retry has moved on is left alone.
pub async fn release(
    pool: &PgPool,
    hospital: &HospitalId,
    user: &UserId,
    key: &str,
    command_id: Uuid,
) {
    let result = sqlx::query(
        "DELETE FROM idempotency_keys WHERE hospital = $1 AND user_id = $2 AND key = $3 \
         AND command_id = $4 AND response_status IS NULL",
    )
    .bind(hospital.as_str())
    .bind(user.as_str())
    .bind(key)
    .bind(command_id);
    let result = unflushed(pool, result).await;
    if let Err(error) = result {
        // The key then stays claimed: a retry resolves its command (never committed) and
        // runs again. Harmless.
        tracing::info!(%error, "could not release an idempotency key");
    }
}

/// Marks the attempt of a command whose outcome is unknown as over, so a retry need not wait
/// for [`IN_FLIGHT_WINDOW`] before resolving it. Best effort: the database just failed.
pub async fn end_attempt(
    pool: &PgPool,
    hospital: &HospitalId,
    user: &UserId,
    key: &str,
    command_id: Uuid,
) {
    let result = sqlx::query(
        "UPDATE idempotency_keys SET attempt_started_at = NULL \
         WHERE hospital = $1 AND user_id = $2 AND key = $3 AND command_id = $4",
    )
    .bind(hospital.as_str())
    .bind(user.as_str())
    .bind(key)
    .bind(command_id);
    let result = unflushed(pool, result).await;
    if let Err(error) = result {
        tracing::debug!(%error, "could not end the attempt of a keyed command");
    }
}

/// Deletes keys older than `retention`, and fences older than `retention` (no attempt of
/// their command can still be running, and no key can still name them). Run periodically by
/// the server.
pub async fn purge_expired(pool: &PgPool, retention: Duration) -> Result<u64, sqlx::Error> {
    let keys = sqlx::query(
        "DELETE FROM idempotency_keys WHERE created_at < clock_timestamp() - make_interval(secs => $1)",
    )
    .bind(retention.as_secs_f64())
    .execute(pool)
    .await?
    .rows_affected();
    sqlx::query(
        "DELETE FROM command_ids WHERE fenced \
         AND recorded_at < clock_timestamp() - make_interval(secs => $1)",
    )
    .bind(retention.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyed() -> Keyed {
        Keyed {
            key: "k".into(),
            request_hash: "same".into(),
        }
    }

    fn claim() -> Claim {
        Claim {
            request_hash: "same".into(),
            command_id: Uuid::nil(),
            success_status: Some(201),
            response: None,
            attempt_age: None,
        }
    }

    #[test]
    fn a_key_reused_for_another_request_is_refused_before_anything_else() {
        let claim = Claim {
            request_hash: "other".into(),
            response: Some((201, serde_json::json!({}))),
            ..claim()
        };
        assert!(matches!(
            triage(claim, &keyed()),
            Err(ApiError::Unprocessable {
                code: "idempotency_key_reused",
                ..
            })
        ));
    }

    #[test]
    fn a_stored_response_is_replayed_with_its_status() {
        let claim = Claim {
            response: Some((201, serde_json::json!({"ok": true}))),
            ..claim()
        };
        match triage(claim, &keyed()) {
            Ok(Triage::Answer(Begin::Replay { status, body })) => {
                assert_eq!(status, 201);
                assert_eq!(body, serde_json::json!({"ok": true}));
            }
            other => panic!("expected a replay, got {other:?}"),
        }
    }

    #[test]
    fn an_attempt_younger_than_the_window_asks_the_client_to_wait_out_the_rest() {
        let claim = Claim {
            attempt_age: Some(0.5),
            ..claim()
        };
        assert!(matches!(
            triage(claim, &keyed()),
            Err(ApiError::KeyInFlight { retry_after: 3 })
        ));
    }

    #[test]
    fn an_attempt_past_the_window_or_none_at_all_goes_to_resolution() {
        for age in [Some(IN_FLIGHT_WINDOW.as_secs_f64()), None] {
            let claim = Claim {
                attempt_age: age,
                ..claim()
            };
            assert!(matches!(
                triage(claim, &keyed()),
                Ok(Triage::Resolve {
                    success_status: Some(201),
                    ..
                })
            ));
        }
    }
}
