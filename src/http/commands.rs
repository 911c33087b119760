//! The path every command request takes: authorize, rate-limit, claim the idempotency key,
//! run the aggregate, record the response. Resource modules only say how to build the
//! command from the request.

use std::time::Instant;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};
use aggregates::rejection::{Rejection, RejectionKind};
use aggregates::types::HospitalId;
use cqrs_es::Aggregate;
use uuid::Uuid;

use super::extract::{hospital_from_path, Authenticated};
use super::idempotency::{self, Begin};
use super::problem::ApiError;
use super::AppState;
use crate::access::{authorize, Action};
use crate::auth::Identity;
use crate::command::{CommandBus, CommandContext, CommandError, Routes};

/// Header a client may send to group related commands; defaults to the command id.
pub const CORRELATION_HEADER: &str = "X-Correlation-Id";

/// Which aggregate a command addresses.
#[derive(Debug)]
pub enum Target {
    /// A new aggregate; its id is the command id.
    Create,
    /// An existing aggregate with this id.
    Existing(String),
    /// An aggregate with a client-chosen id that the command creates or extends (a
    /// patient's vitals); answered with 201 because it records something new.
    Record(String),
}

impl Target {
    /// The aggregate a command with `command_id` acts on.
    fn aggregate_id(&self, command_id: Uuid) -> String {
        match self {
            Target::Create => command_id.to_string(),
            Target::Existing(id) | Target::Record(id) => id.clone(),
        }
    }

    /// What an accepted command answers: 201 when it records something new.
    fn success_status(&self) -> StatusCode {
        match self {
            Target::Existing(_) => StatusCode::OK,
            Target::Create | Target::Record(_) => StatusCode::CREATED,
        }
    }
}

/// Parses an aggregate id from the path (a UUID, canonicalized).
pub fn uuid_id(raw: &str) -> Result<String, ApiError> {
    Uuid::parse_str(raw)
        .map(|id| id.to_string())
        .map_err(|_| ApiError::invalid_field("id", format!("`{raw}` is not a UUID")))
}

/// Maps a domain rejection to its HTTP error.
pub fn rejection<E: Rejection + std::fmt::Display>(error: E) -> ApiError {
    let code = error.code();
    let detail = error.to_string();
    match error.kind() {
        RejectionKind::NotFound => ApiError::NotFound { code, detail },
        RejectionKind::Conflict => ApiError::Conflict { code, detail },
        RejectionKind::Forbidden => ApiError::Forbidden { code, detail },
        RejectionKind::Invalid { field } => ApiError::BadRequest {
            code,
            detail,
            field: Some(field.to_owned()),
        },
    }
}

fn command_error<E: Rejection + std::error::Error>(error: CommandError<E>) -> ApiError {
    api_error(
        error,
        rejection,
        "the record was changed concurrently; retry",
    )
}

/// A failed command as an HTTP problem: `refused` answers the aggregate's refusal, `conflict`
/// says what to retry after a concurrency conflict; unavailable, outcome unknown and store
/// failures answer the same for single commands and batches.
pub(super) fn api_error<E: std::error::Error>(
    error: CommandError<E>,
    refused: impl FnOnce(E) -> ApiError,
    conflict: &str,
) -> ApiError {
    match error {
        CommandError::Rejected(e) => refused(e),
        CommandError::Conflict => ApiError::Conflict {
            code: "concurrency_conflict",
            detail: conflict.into(),
        },
        CommandError::Unavailable(e) => ApiError::Unavailable(e),
        CommandError::OutcomeUnknown { command_id, reason } => {
            tracing::warn!(%command_id, %reason, "command outcome unknown");
            ApiError::OutcomeUnknown { command_id }
        }
        CommandError::Store(e) => ApiError::Internal(e),
    }
}

/// Everything about a command request that is not specific to its aggregate.
pub struct CommandCall<'a> {
    pub req: &'a HttpRequest,
    pub identity: &'a Identity,
    pub hospital: HospitalId,
    pub action: Action,
    /// SHA-256 of the raw body (zeroes for body-less commands).
    pub body_digest: [u8; 32],
}

impl<'a> CommandCall<'a> {
    /// Gathers a command request's parts; fails on an invalid `{hospital}` path segment.
    pub fn new(
        req: &'a HttpRequest,
        auth: &'a Authenticated,
        hospital: &str,
        action: Action,
        body_digest: [u8; 32],
    ) -> Result<Self, ApiError> {
        Ok(Self {
            req,
            identity: &auth.0,
            hospital: hospital_from_path(hospital)?,
            action,
            body_digest,
        })
    }
}

/// Runs one command request end to end.
#[tracing::instrument(
    name = "command",
    skip_all,
    fields(hospital = %call.hospital, user = %call.identity.user, action = ?call.action, command_id)
)]
pub async fn dispatch<A>(
    state: &AppState,
    call: CommandCall<'_>,
    target: Target,
    make_command: impl Fn(&CommandContext) -> A::Command,
) -> Result<HttpResponse, ApiError>
where
    CommandBus: Routes<A>,
    A: Aggregate,
    A::Error: Rejection,
{
    let identity = call.identity;
    authorize(identity, &call.hospital, call.action)?;
    state
        .command_limiter
        .check(
            &(call.hospital.clone(), identity.user.clone()),
            Instant::now(),
        )
        .map_err(|wait| ApiError::RateLimited {
            retry_after: wait.as_secs().max(1),
        })?;

    let status = target.success_status();
    let keyed = idempotency::from_request(call.req, &call.body_digest)?;
    let command_id = match claim(state, &call, keyed.as_ref(), status).await? {
        Begin::Run { command_id } => command_id,
        Begin::Replay { status, body } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            return Ok(HttpResponse::build(status)
                .insert_header(("Idempotent-Replayed", "true"))
                .json(body));
        }
    };
    tracing::Span::current().record("command_id", tracing::field::display(command_id));

    let correlation_id = correlation_id(call.req, command_id);
    let ctx = CommandContext {
        hospital: call.hospital.clone(),
        user: identity.user.clone(),
        role: identity.role,
        command_id,
        correlation_id,
        causation_id: command_id,
    };
    let result = state
        .bus
        .execute::<A>(&ctx, &target.aggregate_id(command_id), || {
            make_command(&ctx)
        })
        .await;
    answer(state, &call, keyed.as_ref(), command_id, status, result).await
}

/// The request's `X-Correlation-Id` when it is a UUID, else the command's own id (a command
/// that starts a chain correlates with itself).
pub(super) fn correlation_id(req: &HttpRequest, command_id: Uuid) -> Uuid {
    req.headers()
        .get(CORRELATION_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Uuid::parse_str(v).ok())
        .unwrap_or(command_id)
}

/// The command id to run with: a fresh one without a key, else what the key's state says
/// (run, or replay an earlier answer).
async fn claim(
    state: &AppState,
    call: &CommandCall<'_>,
    keyed: Option<&idempotency::Keyed>,
    status: StatusCode,
) -> Result<Begin, ApiError> {
    match keyed {
        None => Ok(Begin::Run {
            command_id: Uuid::new_v4(),
        }),
        Some(keyed) => {
            idempotency::begin(
                &state.pool,
                &state.bus,
                &call.hospital,
                &call.identity.user,
                keyed,
                status.as_u16(),
            )
            .await
        }
    }
}

/// Answers a run and settles its key: the response stored on success, the key kept (for the
/// retry to resolve) when the outcome is unknown, released when nothing persisted.
async fn answer<E: Rejection + std::error::Error>(
    state: &AppState,
    call: &CommandCall<'_>,
    keyed: Option<&idempotency::Keyed>,
    command_id: Uuid,
    status: StatusCode,
    result: Result<crate::command::CommandOutcome, CommandError<E>>,
) -> Result<HttpResponse, ApiError> {
    let (pool, hospital, user) = (&state.pool, &call.hospital, &call.identity.user);
    match result {
        Ok(outcome) => {
            let body =
                serde_json::to_value(&outcome).map_err(|e| ApiError::Internal(e.to_string()))?;
            if let Some(keyed) = keyed {
                idempotency::store_response(
                    pool,
                    hospital,
                    user,
                    &keyed.key,
                    command_id,
                    status.as_u16(),
                    &body,
                )
                .await;
            }
            Ok(HttpResponse::build(status).json(body))
        }
        Err(error) => {
            if let Some(keyed) = keyed {
                if matches!(error, CommandError::OutcomeUnknown { .. }) {
                    // Not released: the retry resolves this command id from the log.
                    idempotency::end_attempt(pool, hospital, user, &keyed.key, command_id).await;
                } else {
                    // Certain: nothing persisted, ever (the bus resolved database failures).
                    idempotency::release(pool, hospital, user, &keyed.key, command_id).await;
                }
            }
            Err(command_error(error))
        }
    }
}
