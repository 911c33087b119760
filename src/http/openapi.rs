//! The OpenAPI document, generated from the handlers' annotations and served at
//! `/api/openapi.json`.

use actix_web::HttpResponse;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{
    admin, alerts, appointments, cases, escalation_deadlines, events, health, notifications,
    problem, reads, vitals,
};
use super::{
    command_outcomes, reads_cases, reads_metrics, reads_notifications, reads_patients,
    reads_schedule,
};
use crate::command::{CommandOutcome, CommittedEvent};

/// Declares the bearer-JWT security scheme the endpoints refer to.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "HS256/RS256/ES256 JWT with claims sub, hospital, role, exp",
                    ))
                    .build(),
            ),
        );
    }
}

/// Vigil's HTTP API.
#[derive(OpenApi)]
#[openapi(
    info(title = "Vigil", description = "Realtime event-sourced engine for hospital software. Errors are RFC 9457 application/problem+json with a machine-readable `code`."),
    paths(
        alerts::raise, alerts::acknowledge, alerts::escalate, alerts::resolve,
        cases::open, cases::assign, cases::change_status, cases::post_message, cases::mark_read,
        vitals::record,
        appointments::schedule, appointments::reschedule, appointments::check_in, appointments::cancel,
        notifications::send, notifications::mark_read,
        events::list, command_outcomes::outcome,
        reads::alert_board,
        reads_cases::list, reads_cases::detail, reads_patients::view, reads_schedule::list,
        reads_notifications::inbox, reads_metrics::metrics,
        super::sse::stream, super::sse::issue_ticket,
        health::healthz, health::readyz,
        admin::status, admin::start_rebuild, admin::cancel_rebuild,
        escalation_deadlines::get_escalation, escalation_deadlines::put_escalation,
        super::vitals_batch::record_batch,
    ),
    components(schemas(
        problem::Problem, CommandOutcome, CommittedEvent, events::EventsPage, events::WireEvent,
        super::sse::Ticket, reads::AlertBoardPage,
        reads_cases::CaseListPage, reads_cases::CaseDetail, reads_patients::PatientPage,
        reads_schedule::SchedulePage, reads_notifications::InboxPage,
        crate::projection::metrics::MetricsSnapshot, crate::projection::metrics::RoleCounts,
        admin::ProjectionsStatus, admin::ProjectorView, admin::RebuildView, admin::RebuildRequest, admin::RebuildScope,
        escalation_deadlines::EscalationPolicy, escalation_deadlines::DeadlineSeconds,
        super::vitals_batch::VitalsBatch, super::vitals_batch::BatchEntry,
        super::vitals_batch::BatchOutcome, super::vitals_batch::RecordedEntry,
        super::vitals_batch::FlaggedSign,
    )),
    modifiers(&BearerAuth),
)]
pub struct ApiDoc;

/// The served document: utoipa's, with the contract utoipa cannot express applied
/// ([`super::openapi_contract`]).
pub fn document() -> Result<serde_json::Value, super::openapi_contract::ContractError> {
    let mut doc = serde_json::to_value(ApiDoc::openapi())
        .map_err(|e| super::openapi_contract::ContractError::from_generation(e.to_string()))?;
    super::openapi_contract::apply(&mut doc)?;
    Ok(doc)
}

/// The document, built once.
static DOCUMENT: std::sync::LazyLock<Result<serde_json::Value, String>> =
    std::sync::LazyLock::new(|| document().map_err(|e| e.to_string()));

/// `GET /api/openapi.json`.
pub async fn serve() -> Result<HttpResponse, super::problem::ApiError> {
    match &*DOCUMENT {
        Ok(doc) => Ok(HttpResponse::Ok().json(doc)),
        Err(error) => Err(super::problem::ApiError::Internal(error.clone())),
    }
}
