//! Notification commands: send one to a user, and mark it read (recipient only).

use actix_web::{web, HttpRequest, HttpResponse};
use aggregates::notification::{Notification, NotificationCommand, NotificationContent};
use aggregates::types::UserId;
use chrono::Utc;
use serde::Deserialize;
use utoipa::ToSchema;

use super::commands::{dispatch, uuid_id, CommandCall, Target};
use super::extract::{Authenticated, JsonBody};
use super::problem::ApiError;
use super::responses::CommandErrors;
use super::AppState;
use crate::access::Action;
use crate::command::CommandOutcome;

/// Body of `POST /notifications`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendNotification {
    /// Who receives it; only they will ever see it.
    #[schema(value_type = String, example = "dr-rao")]
    pub recipient: UserId,
    /// What it says, tagged by `kind`: `task_assigned` {title, case_id?}, `lab_result`
    /// {patient, test, summary, urgent}, or `prior_authorization` {patient, request, status:
    /// submitted|pending|approved|denied|info_requested}.
    #[schema(value_type = Object, example = json!({"kind": "lab_result", "patient": "p-1001", "test": "CBC", "summary": "Hb 7.1 g/dL", "urgent": true}))]
    pub content: NotificationContent,
}

/// Send a notification to one user.
#[utoipa::path(post, path = "/api/hospitals/{hospital}/notifications", tag = "notifications",
    params(("hospital" = String, Path, description = "Hospital id")),
    request_body = SendNotification,
    responses((status = 201, description = "Notification sent", body = CommandOutcome), CommandErrors),
    security(("bearer" = [])))]
pub async fn send(
    state: web::Data<AppState>,
    req: HttpRequest,
    auth: Authenticated,
    path: web::Path<String>,
    body: JsonBody<SendNotification>,
) -> Result<HttpResponse, ApiError> {
    let call = CommandCall::new(&req, &auth, &path, Action::SendNotification, body.digest)?;
    let b = body.value;
    let at = Utc::now();
    dispatch::<Notification>(&state, call, Target::Create, |ctx| {
        NotificationCommand::Send {
            recipient: b.recipient.clone(),
            content: b.content.clone(),
            by: ctx.user.clone(),
            at,
        }
    })
    .await
}

/// Mark a notification read (only its recipient may; no body).
#[utoipa::path(post, path = "/api/hospitals/{hospital}/notifications/{id}/read", tag = "notifications",
    params(("hospital" = String, Path, description = "Hospital id"), ("id" = String, Path, description = "Notification id")),
    responses((status = 200, description = "Notification read", body = CommandOutcome), CommandErrors),
    security(("bearer" = [])))]
pub async fn mark_read(
    state: web::Data<AppState>,
    req: HttpRequest,
    auth: Authenticated,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (hospital, id) = path.into_inner();
    let call = CommandCall::new(
        &req,
        &auth,
        &hospital,
        Action::MarkNotificationRead,
        [0; 32],
    )?;
    let id = uuid_id(&id)?;
    let at = Utc::now();
    dispatch::<Notification>(&state, call, Target::Existing(id), |ctx| {
        NotificationCommand::MarkRead {
            by: ctx.user.clone(),
            at,
        }
    })
    .await
}
