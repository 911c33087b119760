//! Hospital metrics: open alerts per severity, mean times to acknowledge and to resolve,
//! cases per status, and users online per role.
//!
//! No table of its own: the counts come from the `alert_board` and `case_list` read models,
//! read in one snapshot, and the online users from the presence hub (all nodes).
//! `projection::metrics::hospital_metrics` computes it for both the REST endpoint and the
//! realtime `metrics` topic, so the two always agree.
//!
//! Readable by admins, physicians, nurses and operators — the roles that run the hospital's
//! dashboards and see all of its alerts. Field workers are refused. The figures are
//! aggregates: operators see case counts per status, never a case.

use std::time::Duration;

use actix_web::{web, HttpResponse};
use aggregates::types::HospitalId;
use serde::Deserialize;
use utoipa::IntoParams;

use super::extract::{hospital_from_path, Authenticated, Query};
use super::problem::ApiError;
use super::reads::MIN_POSITION_WAIT;
use super::reads_access::refused;
use super::responses::ReadErrors;
use super::AppState;
use crate::access::authorize;
use crate::access::reads::may_read_metrics;
use crate::access::Action;
use crate::projection::metrics::{hospital_metrics, MetricsSnapshot, MODELS};
use crate::realtime::presence::OnlineByRole;

/// Waits (bounded by [`MIN_POSITION_WAIT`] in all) until every model in [`MODELS`] has
/// reached `wanted` for `hospital`.
async fn wait_for_models(
    state: &AppState,
    hospital: &HospitalId,
    wanted: i64,
) -> Result<(), ApiError> {
    if wanted < 0 {
        return Err(ApiError::invalid_field("min_position", "must be 0 or more"));
    }
    super::reads::refuse_beyond_head(state, hospital.as_str(), wanted).await?;
    let deadline = tokio::time::Instant::now() + MIN_POSITION_WAIT;
    for model in MODELS {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let reached = crate::projection::wait_for(
            &state.pool,
            model,
            hospital.as_str(),
            wanted,
            left.max(Duration::from_millis(1)),
        )
        .await
        .map_err(ApiError::database)?;
        if reached < wanted {
            return Err(ApiError::Unavailable(format!(
                "the {model} read model has reached position {reached}, not yet {wanted}; retry"
            )));
        }
    }
    Ok(())
}

/// Query of `GET /metrics`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct MetricsQuery {
    /// Wait until the metrics reflect this stream position (read-your-writes).
    pub min_position: Option<i64>,
}

/// The hospital's operational metrics.
#[utoipa::path(get, path = "/api/hospitals/{hospital}/metrics", tag = "metrics",
    params(("hospital" = String, Path, description = "Hospital id"), MetricsQuery),
    responses((status = 200, description = "The hospital's metrics", body = MetricsSnapshot), ReadErrors),
    security(("bearer" = [])))]
#[tracing::instrument(name = "read_metrics", skip_all, fields(user = %auth.0.user))]
pub async fn metrics(
    state: web::Data<AppState>,
    auth: Authenticated,
    path: web::Path<String>,
    query: Query<MetricsQuery>,
) -> Result<HttpResponse, ApiError> {
    let hospital = hospital_from_path(&path)?;
    authorize(&auth.0, &hospital, Action::ReadEvents)?;
    if !may_read_metrics(auth.0.role) {
        return Err(refused(&auth.0, "metrics"));
    }
    if let Some(wanted) = query.min_position {
        wait_for_models(&state, &hospital, wanted).await?;
    }
    let online = state
        .realtime
        .presence
        .send(OnlineByRole {
            hospital: hospital.clone(),
        })
        .await
        .map_err(|e| ApiError::Unavailable(format!("presence: {e}")))?
        .map_err(ApiError::database)?;
    let snapshot = hospital_metrics(&state.pool, &hospital, &online)
        .await
        .map_err(ApiError::database)?;
    Ok(HttpResponse::Ok().json(snapshot))
}
