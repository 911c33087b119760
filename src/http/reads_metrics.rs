//! Hospital metrics: open alerts per severity, mean times to acknowledge and to resolve,
//! cases per status, and users online per role.
//!
//! No table of its own: the counts come from the `alert_board` and `case_list` read models,
//! read in one snapshot, and the online users from the presence hub (all nodes).
//! [`hospital_metrics`] computes it once for both the REST endpoint and the realtime
//! `metrics` topic, so the two always agree.
//!
//! Readable by admins, physicians, nurses and operators — the roles that run the hospital's
//! dashboards and see all of its alerts. Field workers are refused. The figures are
//! aggregates: operators see case counts per status, never a case.

use std::collections::HashMap;
use std::time::Duration;

use actix::Addr;
use actix_web::{web, HttpResponse};
use aggregates::types::{HospitalId, Role};
use projections::alert_board::{self, SeverityCounts};
use projections::case_list::{self, StatusCounts};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa::{IntoParams, ToSchema};

use super::commands::authorize;
use super::extract::{hospital_from_path, Authenticated, Query};
use super::problem::ApiError;
use super::reads::MIN_POSITION_WAIT;
use super::reads_access::refused;
use super::responses::ReadErrors;
use super::AppState;
use crate::auth::{Action, Identity};
use crate::realtime::presence::{OnlineByRole, PresenceHub};

/// The read models metrics are computed from; `as_of` is the least of their checkpoints.
pub const MODELS: [&str; 2] = ["alert_board", "case_list"];

/// Users online in a hospital per role (each user once, under their latest connection's
/// role; every role present, 0 when none).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct RoleCounts {
    pub admin: u32,
    pub physician: u32,
    pub nurse: u32,
    pub operator: u32,
    pub chw: u32,
    pub asha: u32,
}

impl From<&HashMap<Role, u32>> for RoleCounts {
    fn from(online: &HashMap<Role, u32>) -> Self {
        let n = |role| online.get(&role).copied().unwrap_or(0);
        RoleCounts {
            admin: n(Role::Admin),
            physician: n(Role::Physician),
            nurse: n(Role::Nurse),
            operator: n(Role::Operator),
            chw: n(Role::Chw),
            asha: n(Role::Asha),
        }
    }
}

/// A hospital's metrics at one moment: the body of `GET /metrics` and the `data` of a
/// `metrics` frame.
#[derive(Clone, Debug, Serialize, PartialEq, ToSchema)]
pub struct MetricsSnapshot {
    /// Stream position the counts reflect (the least of the models' checkpoints).
    pub as_of: i64,
    /// Open (raised or acknowledged) alerts per severity: `critical, high, medium, low`.
    #[schema(value_type = Object)]
    pub open_alerts: SeverityCounts,
    /// Mean seconds from raise to acknowledgement over acknowledged alerts; `null` if none.
    pub mean_seconds_to_acknowledge: Option<f64>,
    /// Mean seconds from raise to resolution over resolved alerts; `null` if none.
    pub mean_seconds_to_resolve: Option<f64>,
    /// Cases per status: `open, in_review, accepted, referred, prescribed, completed`.
    #[schema(value_type = Object)]
    pub cases_by_status: StatusCounts,
    /// Users online per role, over every node.
    pub connected_users_by_role: RoleCounts,
}

/// Why metrics could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("presence hub unavailable: {0}")]
    Presence(#[from] actix::MailboxError),
}

impl From<MetricsError> for ApiError {
    fn from(error: MetricsError) -> Self {
        match error {
            MetricsError::Database(e) => ApiError::database(e),
            MetricsError::Presence(e) => ApiError::Unavailable(format!("presence: {e}")),
        }
    }
}

/// Computes `hospital`'s metrics: the read models in one read-only REPEATABLE READ snapshot
/// (so counts and `as_of` agree), and users online from the presence hub. Call it for the
/// realtime `metrics` topic too; it reads from PostgreSQL and never blocks an actor.
pub async fn hospital_metrics(
    pool: &PgPool,
    presence: &Addr<PresenceHub>,
    hospital: &HospitalId,
) -> Result<MetricsSnapshot, MetricsError> {
    let online = presence
        .send(OnlineByRole {
            hospital: hospital.clone(),
        })
        .await??;
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    let as_of: i64 = sqlx::query_scalar(
        "SELECT coalesce(min(coalesce(c.position, 0)), 0)::bigint \
         FROM unnest($1::text[]) AS m(projector) \
         LEFT JOIN projection_checkpoints c ON c.projector = m.projector AND c.hospital = $2",
    )
    .bind(&MODELS[..])
    .bind(hospital.as_str())
    .fetch_one(&mut *tx)
    .await?;
    let open_alerts = alert_board::counts(&mut tx, hospital.as_str()).await?;
    let (to_acknowledge, to_resolve) =
        alert_board::response_times(&mut tx, hospital.as_str()).await?;
    let cases_by_status = case_list::counts_by_status(&mut tx, hospital.as_str()).await?;
    tx.commit().await?;
    Ok(MetricsSnapshot {
        as_of,
        open_alerts,
        mean_seconds_to_acknowledge: to_acknowledge,
        mean_seconds_to_resolve: to_resolve,
        cases_by_status,
        connected_users_by_role: RoleCounts::from(&online),
    })
}

/// Whether `identity` may read metrics.
fn may_read_metrics(identity: &Identity) -> bool {
    matches!(
        identity.role,
        Role::Admin | Role::Physician | Role::Nurse | Role::Operator
    )
}

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
    if !may_read_metrics(&auth.0) {
        return Err(refused(&auth.0, "metrics"));
    }
    if let Some(wanted) = query.min_position {
        wait_for_models(&state, &hospital, wanted).await?;
    }
    let snapshot = hospital_metrics(&state.pool, &state.realtime.presence, &hospital).await?;
    Ok(HttpResponse::Ok().json(snapshot))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_role_is_counted_even_when_nobody_of_it_is_online() {
        let online = HashMap::from([(Role::Nurse, 2), (Role::Asha, 1)]);
        let counts = RoleCounts::from(&online);
        assert_eq!(
            counts,
            RoleCounts {
                nurse: 2,
                asha: 1,
                ..RoleCounts::default()
            }
        );
        let json = serde_json::to_value(&counts).unwrap();
        for role in Role::ALL {
            assert!(json[role.as_str()].is_u64(), "{role}");
        }
    }
}
