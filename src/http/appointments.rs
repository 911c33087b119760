//! Appointment commands: schedule, reschedule, check in, cancel.

use actix_web::{web, HttpRequest, HttpResponse};
use aggregates::appointment::{Appointment, AppointmentCommand};
use aggregates::types::{PatientId, Reason, ShortText, UserId};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::ToSchema;

use super::commands::{dispatch, uuid_id, CommandCall, Target};
use super::extract::{Authenticated, JsonBody};
use super::problem::ApiError;
use super::responses::CommandErrors;
use super::AppState;
use crate::access::Action;
use crate::command::CommandOutcome;

/// Body of `POST /appointments`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleAppointment {
    /// The patient.
    #[schema(value_type = String, example = "p-1001")]
    pub patient: PatientId,
    /// The clinician seeing them.
    #[schema(value_type = String, example = "dr-rao")]
    pub clinician: UserId,
    /// Start (RFC 3339).
    pub start: DateTime<Utc>,
    /// End (RFC 3339), after start, at most 24 h later.
    pub end: DateTime<Utc>,
    /// Why (1..200 characters).
    #[schema(value_type = Option<String>, example = "follow-up")]
    #[serde(default)]
    pub reason: Option<ShortText>,
}

/// Body of `POST /appointments/{id}/reschedule`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RescheduleAppointment {
    /// New start (RFC 3339).
    pub start: DateTime<Utc>,
    /// New end (RFC 3339).
    pub end: DateTime<Utc>,
}

/// Body of `POST /appointments/{id}/cancel`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelAppointment {
    /// Why (1..1000 characters).
    #[schema(value_type = String, example = "patient unwell, rebooking")]
    pub reason: Reason,
}

/// Schedule an appointment.
#[utoipa::path(post, path = "/api/hospitals/{hospital}/appointments", tag = "appointments",
    params(("hospital" = String, Path, description = "Hospital id")),
    request_body = ScheduleAppointment,
    responses((status = 201, description = "Appointment scheduled", body = CommandOutcome), CommandErrors),
    security(("bearer" = [])))]
pub async fn schedule(
    state: web::Data<AppState>,
    req: HttpRequest,
    auth: Authenticated,
    path: web::Path<String>,
    body: JsonBody<ScheduleAppointment>,
) -> Result<HttpResponse, ApiError> {
    let call = CommandCall::new(&req, &auth, &path, Action::ScheduleAppointment, body.digest)?;
    let b = body.value;
    let at = Utc::now();
    dispatch::<Appointment>(&state, call, Target::Create, |ctx| {
        AppointmentCommand::Schedule {
            patient: b.patient.clone(),
            clinician: b.clinician.clone(),
            start: b.start,
            end: b.end,
            reason: b.reason.clone(),
            by: ctx.user.clone(),
            at,
        }
    })
    .await
}

/// Move an appointment to new times.
#[utoipa::path(post, path = "/api/hospitals/{hospital}/appointments/{id}/reschedule", tag = "appointments",
    params(("hospital" = String, Path, description = "Hospital id"), ("id" = String, Path, description = "Appointment id")),
    request_body = RescheduleAppointment,
    responses((status = 200, description = "Appointment rescheduled", body = CommandOutcome), CommandErrors),
    security(("bearer" = [])))]
pub async fn reschedule(
    state: web::Data<AppState>,
    req: HttpRequest,
    auth: Authenticated,
    path: web::Path<(String, String)>,
    body: JsonBody<RescheduleAppointment>,
) -> Result<HttpResponse, ApiError> {
    let (hospital, id) = path.into_inner();
    let call = CommandCall::new(
        &req,
        &auth,
        &hospital,
        Action::RescheduleAppointment,
        body.digest,
    )?;
    let id = uuid_id(&id)?;
    let at = Utc::now();
    let b = body.value;
    dispatch::<Appointment>(&state, call, Target::Existing(id), |ctx| {
        AppointmentCommand::Reschedule {
            start: b.start,
            end: b.end,
            by: ctx.user.clone(),
            at,
        }
    })
    .await
}

/// Check the patient in (no body).
#[utoipa::path(post, path = "/api/hospitals/{hospital}/appointments/{id}/check-in", tag = "appointments",
    params(("hospital" = String, Path, description = "Hospital id"), ("id" = String, Path, description = "Appointment id")),
    responses((status = 200, description = "Patient checked in", body = CommandOutcome), CommandErrors),
    security(("bearer" = [])))]
pub async fn check_in(
    state: web::Data<AppState>,
    req: HttpRequest,
    auth: Authenticated,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (hospital, id) = path.into_inner();
    let call = CommandCall::new(&req, &auth, &hospital, Action::CheckInAppointment, [0; 32])?;
    let id = uuid_id(&id)?;
    let at = Utc::now();
    dispatch::<Appointment>(&state, call, Target::Existing(id), |ctx| {
        AppointmentCommand::CheckIn {
            by: ctx.user.clone(),
            at,
        }
    })
    .await
}

/// Cancel an appointment.
#[utoipa::path(post, path = "/api/hospitals/{hospital}/appointments/{id}/cancel", tag = "appointments",
    params(("hospital" = String, Path, description = "Hospital id"), ("id" = String, Path, description = "Appointment id")),
    request_body = CancelAppointment,
    responses((status = 200, description = "Appointment cancelled", body = CommandOutcome), CommandErrors),
    security(("bearer" = [])))]
pub async fn cancel(
    state: web::Data<AppState>,
    req: HttpRequest,
    auth: Authenticated,
    path: web::Path<(String, String)>,
    body: JsonBody<CancelAppointment>,
) -> Result<HttpResponse, ApiError> {
    let (hospital, id) = path.into_inner();
    let call = CommandCall::new(
        &req,
        &auth,
        &hospital,
        Action::CancelAppointment,
        body.digest,
    )?;
    let id = uuid_id(&id)?;
    let at = Utc::now();
    let reason = body.value.reason;
    dispatch::<Appointment>(&state, call, Target::Existing(id), |ctx| {
        AppointmentCommand::Cancel {
            reason: reason.clone(),
            by: ctx.user.clone(),
            at,
        }
    })
    .await
}
