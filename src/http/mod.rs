//! The HTTP edge: routes, extractors, and the mapping of every failure to problem+json.
//!
//! One module per resource holds its request bodies and handlers; [`commands`] is the
//! shared path every command takes (authorize, rate-limit, idempotency, execute).

pub mod admin;
pub mod alerts;
pub mod appointments;
pub mod cases;
pub mod command_outcomes;
pub mod commands;
pub mod console;
pub mod cors;
pub mod escalation_deadlines;
pub mod events;
pub mod extract;
pub mod health;
pub mod idempotency;
pub mod notifications;
pub mod openapi;
pub mod openapi_contract;
pub mod openapi_events;
pub mod problem;
pub mod reads;
pub mod reads_access;
pub mod reads_cases;
pub mod reads_metrics;
pub mod reads_notifications;
pub mod reads_patients;
pub mod reads_schedule;
pub mod responses;
pub mod sse;
pub mod vitals;
pub mod vitals_batch;
pub mod ws;

use actix_web::{web, HttpRequest, HttpResponse};
use aggregates::types::{HospitalId, UserId};
use sqlx::PgPool;

use crate::auth::JwtKeys;
use crate::command::CommandBus;
use crate::rate_limit::KeyedLimiter;
use crate::stream::listener::StreamListener;
use problem::ApiError;

/// What every handler shares.
pub struct AppState {
    /// Database pool (commands, reads).
    pub pool: PgPool,
    /// Token verification keys.
    pub keys: JwtKeys,
    /// Runs commands through the aggregates.
    pub bus: CommandBus,
    /// Per-user command rate limit.
    pub command_limiter: KeyedLimiter<(HospitalId, UserId)>,
    /// Wakes stream readers on commit.
    pub listener: StreamListener,
    /// The realtime gateway's shared parts.
    pub realtime: std::sync::Arc<crate::realtime::Realtime>,
    /// Counters exposed at `/metrics`.
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
    /// Read-model rebuilds started on this node (see [`admin`]).
    pub rebuilds: crate::projection::rebuilds::Rebuilds,
    /// Limits of the batch ingest endpoints (see [`vitals_batch`]).
    pub ingest: crate::config::IngestSettings,
}

async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(format!(
            "{}{}",
            state.metrics.render(),
            state.bus.commit_stats().render(state.bus.commits_waiting())
        ))
}

fn bad_request(code: &'static str, detail: String) -> actix_web::Error {
    ApiError::BadRequest {
        code,
        detail,
        field: None,
    }
    .into()
}

async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound {
        code: "route_not_found",
        detail: format!("no route for {} {}", req.method(), req.path()),
    })
}

/// A resource whose routes are the methods in `allow`: any other method is a 405 problem
/// with `Allow: <allow>` (RFC 9110 §15.5.6), never a 404, since the resource exists.
fn resource(path: &str, allow: &'static str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(move || async move {
        Err::<HttpResponse, _>(ApiError::MethodNotAllowed { allow })
    }))
}

/// A resource whose only route is `POST`.
fn post(path: &str) -> actix_web::Resource {
    resource(path, "POST")
}

/// Registers every route.
///
/// Long by design: it is the route table, one entry per endpoint, read top to bottom.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::PathConfig::default().error_handler(|err, _| {
        bad_request("invalid_path", format!("invalid path parameter: {err}"))
    }))
    .service(resource("/healthz", "GET").route(web::get().to(health::healthz)))
    .service(resource("/readyz", "GET").route(web::get().to(health::readyz)))
    .service(resource("/api/openapi.json", "GET").route(web::get().to(openapi::serve)))
    .service(resource("/metrics", "GET").route(web::get().to(metrics)))
    .service(resource("/api/admin/projections", "GET").route(web::get().to(admin::status)))
    .configure(console::configure)
    .service(
        resource("/api/admin/projections/{name}/rebuild", "POST, DELETE")
            .route(web::post().to(admin::start_rebuild))
            .route(web::delete().to(admin::cancel_rebuild)),
    )
    .service(
        web::scope("/api/hospitals/{hospital}")
            .service(
                resource("/alerts", "GET, POST")
                    .route(web::post().to(alerts::raise))
                    .route(web::get().to(reads::alert_board)),
            )
            .service(post("/alerts/{id}/acknowledge").route(web::post().to(alerts::acknowledge)))
            .service(post("/alerts/{id}/escalate").route(web::post().to(alerts::escalate)))
            .service(post("/alerts/{id}/resolve").route(web::post().to(alerts::resolve)))
            .service(
                resource("/cases", "GET, POST")
                    .route(web::post().to(cases::open))
                    .route(web::get().to(reads_cases::list)),
            )
            .service(resource("/cases/{id}", "GET").route(web::get().to(reads_cases::detail)))
            .service(post("/cases/{id}/assign").route(web::post().to(cases::assign)))
            .service(post("/cases/{id}/status").route(web::post().to(cases::change_status)))
            .service(post("/cases/{id}/messages").route(web::post().to(cases::post_message)))
            .service(post("/cases/{id}/read").route(web::post().to(cases::mark_read)))
            .service(post("/patients/{patient}/vitals").route(web::post().to(vitals::record)))
            .service(post("/vitals:batch").route(web::post().to(vitals_batch::record_batch)))
            .service(
                resource("/patients/{patient}", "GET").route(web::get().to(reads_patients::view)),
            )
            .service(
                resource("/appointments", "GET, POST")
                    .route(web::post().to(appointments::schedule))
                    .route(web::get().to(reads_schedule::list)),
            )
            .service(
                post("/appointments/{id}/reschedule")
                    .route(web::post().to(appointments::reschedule)),
            )
            .service(
                post("/appointments/{id}/check-in").route(web::post().to(appointments::check_in)),
            )
            .service(post("/appointments/{id}/cancel").route(web::post().to(appointments::cancel)))
            .service(
                resource("/notifications", "GET, POST")
                    .route(web::post().to(notifications::send))
                    .route(web::get().to(reads_notifications::inbox)),
            )
            .service(
                resource("/policies/escalation", "GET, PUT")
                    .route(web::get().to(escalation_deadlines::get_escalation))
                    .route(web::put().to(escalation_deadlines::put_escalation)),
            )
            .service(
                post("/notifications/{id}/read").route(web::post().to(notifications::mark_read)),
            )
            .service(resource("/metrics", "GET").route(web::get().to(reads_metrics::metrics)))
            .service(
                resource("/commands/{command_id}", "GET")
                    .route(web::get().to(command_outcomes::outcome)),
            )
            .service(resource("/events", "GET").route(web::get().to(events::list)))
            .service(resource("/events/stream", "GET").route(web::get().to(sse::stream)))
            .service(post("/events/stream/tickets").route(web::post().to(sse::issue_ticket)))
            .service(resource("/ws", "GET").route(web::get().to(ws::connect))),
    )
    .default_service(web::to(not_found));
}
