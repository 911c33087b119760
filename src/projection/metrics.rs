//! Hospital metrics, computed on the read side: open alerts per severity, mean times to
//! acknowledge and to resolve, cases per status (from the `alert_board` and `case_list` read
//! models, read in one snapshot), and users online per role (given by the caller, from the
//! presence hub). [`hospital_metrics`] serves both the REST endpoint (`http::reads_metrics`)
//! and the realtime `metrics` topic (`realtime::hospital`), so the two always agree.

use std::collections::HashMap;

use aggregates::types::{HospitalId, Role};
use projections::alert_board::{self, SeverityCounts};
use projections::case_list::{self, StatusCounts};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa::ToSchema;

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

/// Computes `hospital`'s metrics: the read models in one read-only REPEATABLE READ snapshot
/// (so counts and `as_of` agree), with `online` (users online per role, which the caller asks
/// the presence hub for). It reads from PostgreSQL and never blocks an actor.
pub async fn hospital_metrics(
    pool: &PgPool,
    hospital: &HospitalId,
    online: &HashMap<Role, u32>,
) -> Result<MetricsSnapshot, sqlx::Error> {
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
        connected_users_by_role: RoleCounts::from(online),
    })
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
