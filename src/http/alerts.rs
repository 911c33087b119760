//! Alert commands: raise, acknowledge, escalate, resolve.

use actix_web::{web, HttpRequest, HttpResponse};
use aggregates::alert::{Alert, AlertCommand, EscalationGuard, Severity};
use aggregates::types::{AlertMessage, Department, Note, PatientId, Reason};
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

/// Body of `POST /alerts`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RaiseAlert {
    /// `low`, `medium`, `high` or `critical`.
    #[schema(value_type = String, example = "critical")]
    pub severity: Severity,
    /// What is happening (1..2000 characters).
    #[schema(value_type = String, example = "Bed 12: SpO2 82%")]
    pub message: AlertMessage,
    /// Department concerned (1..100 characters).
    #[schema(value_type = Option<String>, example = "icu")]
    #[serde(default)]
    pub department: Option<Department>,
    /// Patient concerned.
    #[schema(value_type = Option<String>, example = "p-1001")]
    #[serde(default)]
    pub patient: Option<PatientId>,
}

/// Body of `POST /alerts/{id}/escalate`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EscalateAlert {
    /// Why (1..1000 characters).
    #[schema(value_type = String, example = "no response from ward")]
    pub reason: Reason,
    /// The escalation level the caller saw (0 = never escalated). When given, the
    /// escalation applies only if the alert is still at that level, and is refused with 409
    /// `alert_escalation_level_changed` otherwise: two people pressing "escalate" on the
    /// same screen page the next tier once, not twice.
    #[serde(default)]
    #[schema(example = 1)]
    pub expected_level: Option<u8>,
}

/// Body of `POST /alerts/{id}/resolve`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveAlert {
    /// How it was resolved (1..2000 characters).
    #[schema(value_type = String, example = "oxygen increased, SpO2 95%")]
    pub note: Note,
}

/// Raise an alert.
#[utoipa::path(post, path = "/api/hospitals/{hospital}/alerts", tag = "alerts",
    params(("hospital" = String, Path, description = "Hospital id")),
    request_body = RaiseAlert,
    responses((status = 201, description = "Alert raised", body = CommandOutcome), CommandErrors),
    security(("bearer" = [])))]
pub async fn raise(
    state: web::Data<AppState>,
    req: HttpRequest,
    auth: Authenticated,
    path: web::Path<String>,
    body: JsonBody<RaiseAlert>,
) -> Result<HttpResponse, ApiError> {
    let call = CommandCall::new(&req, &auth, &path, Action::RaiseAlert, body.digest)?;
    let b = body.value;
    let at = Utc::now();
    dispatch::<Alert>(&state, call, Target::Create, |ctx| AlertCommand::Raise {
        severity: b.severity,
        message: b.message.clone(),
        department: b.department.clone(),
        patient: b.patient.clone(),
        by: ctx.user.clone(),
        at,
    })
    .await
}

/// Acknowledge an alert (no body).
#[utoipa::path(post, path = "/api/hospitals/{hospital}/alerts/{id}/acknowledge", tag = "alerts",
    params(("hospital" = String, Path, description = "Hospital id"), ("id" = String, Path, description = "Alert id")),
    responses((status = 200, description = "Alert acknowledged", body = CommandOutcome), CommandErrors),
    security(("bearer" = [])))]
pub async fn acknowledge(
    state: web::Data<AppState>,
    req: HttpRequest,
    auth: Authenticated,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (hospital, id) = path.into_inner();
    let call = CommandCall::new(&req, &auth, &hospital, Action::AcknowledgeAlert, [0; 32])?;
    let id = uuid_id(&id)?;
    let at = Utc::now();
    dispatch::<Alert>(&state, call, Target::Existing(id), |ctx| {
        AlertCommand::Acknowledge {
            by: ctx.user.clone(),
            at,
        }
    })
    .await
}

/// Escalate an alert one level.
#[utoipa::path(post, path = "/api/hospitals/{hospital}/alerts/{id}/escalate", tag = "alerts",
    params(("hospital" = String, Path, description = "Hospital id"), ("id" = String, Path, description = "Alert id")),
    request_body = EscalateAlert,
    responses((status = 200, description = "Alert escalated", body = CommandOutcome), CommandErrors),
    security(("bearer" = [])))]
pub async fn escalate(
    state: web::Data<AppState>,
    req: HttpRequest,
    auth: Authenticated,
    path: web::Path<(String, String)>,
    body: JsonBody<EscalateAlert>,
) -> Result<HttpResponse, ApiError> {
    let (hospital, id) = path.into_inner();
    let call = CommandCall::new(&req, &auth, &hospital, Action::EscalateAlert, body.digest)?;
    let id = uuid_id(&id)?;
    let at = Utc::now();
    let reason = body.value.reason;
    let guard = match body.value.expected_level {
        Some(level) => EscalationGuard::FromLevel(level),
        None => EscalationGuard::Always,
    };
    dispatch::<Alert>(&state, call, Target::Existing(id), |ctx| {
        AlertCommand::Escalate {
            reason: reason.clone(),
            guard,
            by: ctx.user.clone(),
            at,
        }
    })
    .await
}

/// Resolve an alert.
#[utoipa::path(post, path = "/api/hospitals/{hospital}/alerts/{id}/resolve", tag = "alerts",
    params(("hospital" = String, Path, description = "Hospital id"), ("id" = String, Path, description = "Alert id")),
    request_body = ResolveAlert,
    responses((status = 200, description = "Alert resolved", body = CommandOutcome), CommandErrors),
    security(("bearer" = [])))]
pub async fn resolve(
    state: web::Data<AppState>,
    req: HttpRequest,
    auth: Authenticated,
    path: web::Path<(String, String)>,
    body: JsonBody<ResolveAlert>,
) -> Result<HttpResponse, ApiError> {
    let (hospital, id) = path.into_inner();
    let call = CommandCall::new(&req, &auth, &hospital, Action::ResolveAlert, body.digest)?;
    let id = uuid_id(&id)?;
    let at = Utc::now();
    let note = body.value.note;
    dispatch::<Alert>(&state, call, Target::Existing(id), |ctx| {
        AlertCommand::Resolve {
            note: note.clone(),
            by: ctx.user.clone(),
            at,
        }
    })
    .await
}
