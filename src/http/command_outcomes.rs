//! `GET /api/hospitals/{hospital}/commands/{command_id}`: the outcome of a command whose
//! answer was lost or was `503 outcome_unknown`.
//!
//! The answer is final: the bus [resolves](crate::command::CommandBus::resolve) the id
//! first, so a 404 means the command did not commit *and never will* (a late commit of it is
//! refused by the event trigger), and a 200 gives the events and positions it committed, the
//! same body the command would have answered.

use std::time::Instant;

use actix_web::{web, HttpResponse};
use uuid::Uuid;

use super::extract::{hospital_from_path, Authenticated};
use super::problem::ApiError;
use super::AppState;
use crate::access::authorize;
use crate::access::Action;
use crate::command::{CommandOutcome, Resolution};

/// Errors of `GET commands/{command_id}`.
#[allow(dead_code)] // Only read by the OpenAPI generator.
#[derive(utoipa::IntoResponses)]
pub enum OutcomeErrors {
    /// The command id is not a UUID.
    #[response(status = 400, content_type = "application/problem+json")]
    BadRequest(#[to_schema] super::problem::Problem),
    /// Missing, invalid or expired token.
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(#[to_schema] super::problem::Problem),
    /// Another hospital.
    #[response(status = 403, content_type = "application/problem+json")]
    Forbidden(#[to_schema] super::problem::Problem),
    /// `command_not_found`: no command of yours with this id committed in this hospital,
    /// and none ever will.
    #[response(status = 404, content_type = "application/problem+json")]
    NotFound(#[to_schema] super::problem::Problem),
    /// Rate limited (the same per-user limit as commands); see `Retry-After`.
    #[response(status = 429, content_type = "application/problem+json")]
    RateLimited(#[to_schema] super::problem::Problem),
    /// The database cannot be asked now; the question stays open. Retry.
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(#[to_schema] super::problem::Problem),
}

/// What a command committed, decided for good.
#[utoipa::path(get, path = "/api/hospitals/{hospital}/commands/{command_id}", tag = "commands",
    operation_id = "get_command_outcome",
    params(("hospital" = String, Path, description = "Hospital id"),
           ("command_id" = Uuid, Path, description = "The command id (from a `503 outcome_unknown` body, or the aggregate id of a command that creates one)")),
    responses((status = 200, description = "The command committed: its aggregate, version and the position of every event, as the command itself answers", body = CommandOutcome), OutcomeErrors),
    security(("bearer" = [])))]
#[tracing::instrument(name = "command_outcome", skip_all, fields(user = %auth.0.user))]
pub async fn outcome(
    state: web::Data<AppState>,
    auth: Authenticated,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (hospital, raw_id) = path.into_inner();
    let hospital = hospital_from_path(&hospital)?;
    authorize(&auth.0, &hospital, Action::ReadEvents)?;
    let command_id = Uuid::parse_str(&raw_id)
        .map_err(|_| ApiError::invalid_field("command_id", format!("`{raw_id}` is not a UUID")))?;
    // Resolving may write a fence row: as costly as a command, limited like one.
    state
        .command_limiter
        .check(&(hospital.clone(), auth.0.user.clone()), Instant::now())
        .map_err(|wait| ApiError::RateLimited {
            retry_after: wait.as_secs().max(1),
        })?;
    let not_found = || {
        ApiError::NotFound {
        code: "command_not_found",
        detail: format!(
            "no command {command_id} of yours committed in this hospital, and none can commit any more"
        ),
    }
    };
    // Read-only first: a committed command (the common question) writes no fence.
    let outcome = match state.bus.outcome_of(command_id, &hospital).await {
        Ok(Some(outcome)) => outcome,
        Ok(None) | Err(_) => match state.bus.resolve(command_id, &hospital).await {
            Ok(Resolution::Committed(outcome)) => outcome,
            Ok(Resolution::NeverCommitted) => return Err(not_found()),
            Err(error) => return Err(ApiError::database(error)),
        },
    };
    // Only the issuer learns about a command; to anyone else it does not exist.
    match state.bus.issuer_of(command_id).await {
        Ok(Some(user)) if user == auth.0.user.as_str() => Ok(HttpResponse::Ok().json(outcome)),
        Ok(_) => Err(not_found()),
        Err(error) => Err(ApiError::database(error)),
    }
}
