//! Case-thread commands: open, assign, change status, post a message, mark messages read.
//!
//! A command on an existing case is first confined to the cases the caller may touch
//! ([`confined`]): a field worker's command on another worker's case answers exactly as one
//! on an unknown case, and nothing runs.

use actix_web::{web, HttpRequest, HttpResponse};
use aggregates::case_thread::{CaseCommand, CaseStatus, CaseThread};
use aggregates::types::{CaseTitle, MessageBody, Note, PatientId, UserId};
use chrono::Utc;
use serde::Deserialize;
use utoipa::ToSchema;

use super::commands::{dispatch, uuid_id, CommandCall, Target};
use super::extract::{Authenticated, JsonBody};
use super::problem::ApiError;
use super::reads_access::require_case;
use super::responses::CommandErrors;
use super::AppState;
use crate::access::authorize;
use crate::access::Action;
use crate::command::CommandOutcome;

/// Body of `POST /cases`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenCase {
    /// The patient the case is about.
    #[schema(value_type = String, example = "p-1001")]
    pub patient: PatientId,
    /// Title (1..200 characters).
    #[schema(value_type = String, example = "Fever for 3 days, village Rampur")]
    pub title: CaseTitle,
    /// Worker the case is assigned to.
    #[schema(value_type = Option<String>, example = "chw-7")]
    #[serde(default)]
    pub assignee: Option<UserId>,
}

/// Body of `POST /cases/{id}/assign`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignCase {
    /// The new assignee.
    #[schema(value_type = String, example = "asha-3")]
    pub assignee: UserId,
}

/// Body of `POST /cases/{id}/status`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeCaseStatus {
    /// `open`, `in_review`, `accepted`, `referred`, `prescribed` or `completed`; see the
    /// state machine in the README.
    #[schema(value_type = String, example = "in_review")]
    pub status: CaseStatus,
    /// Why (1..2000 characters).
    #[schema(value_type = Option<String>)]
    #[serde(default)]
    pub note: Option<Note>,
}

/// Body of `POST /cases/{id}/messages`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PostMessage {
    /// The message (1..4000 characters).
    #[schema(value_type = String, example = "Patient seen, temperature 38.9")]
    pub body: MessageBody,
}

/// Body of `POST /cases/{id}/read`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MarkRead {
    /// Marks every message up to and including this message id as read.
    #[schema(example = 3)]
    pub up_to: u64,
}

/// Authorizes `call` (hospital, role) and then confines it to the cases its caller may
/// touch, before the command is dispatched (so before an idempotency key is claimed or the
/// aggregate runs). The role check comes first: a refusal by role says nothing about the
/// case.
async fn confined(state: &AppState, call: &CommandCall<'_>, id: &str) -> Result<(), ApiError> {
    authorize(call.identity, &call.hospital, call.action)?;
    require_case(&state.pool, call.identity, &call.hospital, id).await
}

/// Open a case thread.
#[utoipa::path(post, path = "/api/hospitals/{hospital}/cases", tag = "cases",
    params(("hospital" = String, Path, description = "Hospital id")),
    request_body = OpenCase,
    responses((status = 201, description = "Case opened", body = CommandOutcome), CommandErrors),
    security(("bearer" = [])))]
pub async fn open(
    state: web::Data<AppState>,
    req: HttpRequest,
    auth: Authenticated,
    path: web::Path<String>,
    body: JsonBody<OpenCase>,
) -> Result<HttpResponse, ApiError> {
    let call = CommandCall::new(&req, &auth, &path, Action::OpenCase, body.digest)?;
    let b = body.value;
    let at = Utc::now();
    dispatch::<CaseThread>(&state, call, Target::Create, |ctx| CaseCommand::Open {
        patient: b.patient.clone(),
        title: b.title.clone(),
        assignee: b.assignee.clone(),
        by: ctx.user.clone(),
        at,
    })
    .await
}

/// Assign a case to a worker.
#[utoipa::path(post, path = "/api/hospitals/{hospital}/cases/{id}/assign", tag = "cases",
    params(("hospital" = String, Path, description = "Hospital id"), ("id" = String, Path, description = "Case id")),
    request_body = AssignCase,
    responses((status = 200, description = "Case assigned", body = CommandOutcome), CommandErrors),
    security(("bearer" = [])))]
pub async fn assign(
    state: web::Data<AppState>,
    req: HttpRequest,
    auth: Authenticated,
    path: web::Path<(String, String)>,
    body: JsonBody<AssignCase>,
) -> Result<HttpResponse, ApiError> {
    let (hospital, id) = path.into_inner();
    let call = CommandCall::new(&req, &auth, &hospital, Action::AssignCase, body.digest)?;
    let id = uuid_id(&id)?;
    confined(&state, &call, &id).await?;
    let at = Utc::now();
    let assignee = body.value.assignee;
    dispatch::<CaseThread>(&state, call, Target::Existing(id), |ctx| {
        CaseCommand::Assign {
            assignee: assignee.clone(),
            by: ctx.user.clone(),
            at,
        }
    })
    .await
}

/// Move a case along its state machine.
#[utoipa::path(post, path = "/api/hospitals/{hospital}/cases/{id}/status", tag = "cases",
    params(("hospital" = String, Path, description = "Hospital id"), ("id" = String, Path, description = "Case id")),
    request_body = ChangeCaseStatus,
    responses((status = 200, description = "Status changed", body = CommandOutcome), CommandErrors),
    security(("bearer" = [])))]
pub async fn change_status(
    state: web::Data<AppState>,
    req: HttpRequest,
    auth: Authenticated,
    path: web::Path<(String, String)>,
    body: JsonBody<ChangeCaseStatus>,
) -> Result<HttpResponse, ApiError> {
    let (hospital, id) = path.into_inner();
    let call = CommandCall::new(
        &req,
        &auth,
        &hospital,
        Action::ChangeCaseStatus,
        body.digest,
    )?;
    let id = uuid_id(&id)?;
    confined(&state, &call, &id).await?;
    let at = Utc::now();
    let b = body.value;
    dispatch::<CaseThread>(&state, call, Target::Existing(id), |ctx| {
        CaseCommand::ChangeStatus {
            to: b.status,
            note: b.note.clone(),
            by: ctx.user.clone(),
            at,
        }
    })
    .await
}

/// Post a message to a case thread.
#[utoipa::path(post, path = "/api/hospitals/{hospital}/cases/{id}/messages", tag = "cases",
    params(("hospital" = String, Path, description = "Hospital id"), ("id" = String, Path, description = "Case id")),
    request_body = PostMessage,
    responses((status = 200, description = "Message posted", body = CommandOutcome), CommandErrors),
    security(("bearer" = [])))]
pub async fn post_message(
    state: web::Data<AppState>,
    req: HttpRequest,
    auth: Authenticated,
    path: web::Path<(String, String)>,
    body: JsonBody<PostMessage>,
) -> Result<HttpResponse, ApiError> {
    let (hospital, id) = path.into_inner();
    let call = CommandCall::new(&req, &auth, &hospital, Action::PostCaseMessage, body.digest)?;
    let id = uuid_id(&id)?;
    confined(&state, &call, &id).await?;
    let at = Utc::now();
    let text = body.value.body;
    dispatch::<CaseThread>(&state, call, Target::Existing(id), |ctx| {
        CaseCommand::PostMessage {
            body: text.clone(),
            by: ctx.user.clone(),
            at,
        }
    })
    .await
}

/// Mark a thread's messages read up to a message id (a read receipt).
#[utoipa::path(post, path = "/api/hospitals/{hospital}/cases/{id}/read", tag = "cases",
    params(("hospital" = String, Path, description = "Hospital id"), ("id" = String, Path, description = "Case id")),
    request_body = MarkRead,
    responses((status = 200, description = "Read receipt recorded", body = CommandOutcome), CommandErrors),
    security(("bearer" = [])))]
pub async fn mark_read(
    state: web::Data<AppState>,
    req: HttpRequest,
    auth: Authenticated,
    path: web::Path<(String, String)>,
    body: JsonBody<MarkRead>,
) -> Result<HttpResponse, ApiError> {
    let (hospital, id) = path.into_inner();
    let call = CommandCall::new(&req, &auth, &hospital, Action::MarkCaseRead, body.digest)?;
    let id = uuid_id(&id)?;
    confined(&state, &call, &id).await?;
    let at = Utc::now();
    let up_to = body.value.up_to;
    dispatch::<CaseThread>(&state, call, Target::Existing(id), |ctx| {
        CaseCommand::MarkRead {
            up_to,
            by: ctx.user.clone(),
            at,
        }
    })
    .await
}
