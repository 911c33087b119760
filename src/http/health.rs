//! Liveness and readiness probes.

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::problem::ApiError;
use super::AppState;
use crate::store::migrations_applied;

/// `GET /healthz`: the process is up (no dependencies checked).
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Process is up")))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// `GET /readyz`: the database is reachable and every migration is applied.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "Ready"),
              (status = 503, description = "Database unreachable or migrations missing", body = super::problem::Problem, content_type = "application/problem+json")))]
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    match migrations_applied(&state.pool).await {
        Ok(true) => Ok(HttpResponse::Ok().json(json!({ "status": "ready" }))),
        Ok(false) => Err(ApiError::Unavailable("migrations are not applied".into())),
        Err(error) => {
            tracing::warn!(%error, "readiness check failed");
            Err(ApiError::Unavailable("database unreachable".into()))
        }
    }
}
