//! `GET`/`PUT /api/hospitals/{hospital}/policies/escalation`: a hospital's auto-escalation
//! deadlines (the settings the escalation process manager in `crate::policy` reads; the file
//! is named for what it holds so the two meanings of "policy" do not meet) — how long an alert of each severity may stay unacknowledged before the system
//! pages the next tier.
//!
//! Admins of the hospital only (another hospital's admin gets 403, like every hospital
//! route). A change applies to deadlines armed after it: an alert already waiting keeps the
//! due time it was given, so changing the policy never escalates a batch of alerts at once.

use std::time::Duration;

use actix_web::{web, HttpResponse};
use aggregates::alert::Severity;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::{hospital_from_path, Authenticated, JsonBody};
use super::problem::ApiError;
use super::AppState;
use crate::access::authorize;
use crate::access::Action;
use crate::policy::escalation::{self, Deadlines};

/// Shortest deadline accepted: below this the scheduler's tick (half a second) and a
/// person's reaction time make "unacknowledged" meaningless.
pub const MIN_DEADLINE_SECONDS: u32 = 10;

/// Longest deadline accepted: a week. Longer is "never", which is not a deadline.
pub const MAX_DEADLINE_SECONDS: u32 = 7 * 24 * 3600;

/// A deadline in whole seconds, within [`MIN_DEADLINE_SECONDS`]..=[`MAX_DEADLINE_SECONDS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(try_from = "u64", into = "u32")]
#[schema(value_type = u32, example = 120)]
pub struct DeadlineSeconds(u32);

impl TryFrom<u64> for DeadlineSeconds {
    type Error = String;

    fn try_from(seconds: u64) -> Result<Self, String> {
        u32::try_from(seconds)
            .ok()
            .filter(|s| (MIN_DEADLINE_SECONDS..=MAX_DEADLINE_SECONDS).contains(s))
            .map(Self)
            .ok_or_else(|| {
                format!(
                    "a deadline is {MIN_DEADLINE_SECONDS} to {MAX_DEADLINE_SECONDS} seconds, not {seconds}"
                )
            })
    }
}

impl From<DeadlineSeconds> for u32 {
    fn from(seconds: DeadlineSeconds) -> u32 {
        seconds.0
    }
}

impl DeadlineSeconds {
    fn of(deadlines: &Deadlines, severity: Severity) -> Self {
        Self(u32::try_from(deadlines.of(severity).as_secs()).unwrap_or(u32::MAX))
    }

    fn duration(self) -> Duration {
        Duration::from_secs(u64::from(self.0))
    }
}

/// A hospital's escalation deadlines, in seconds, one per severity (all four, always).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EscalationPolicy {
    /// Critical alerts (default 120).
    pub critical: DeadlineSeconds,
    /// High alerts (default 600).
    pub high: DeadlineSeconds,
    /// Medium alerts (default 1800).
    pub medium: DeadlineSeconds,
    /// Low alerts (default 3600).
    pub low: DeadlineSeconds,
}

impl EscalationPolicy {
    fn from_deadlines(deadlines: &Deadlines) -> Self {
        Self {
            critical: DeadlineSeconds::of(deadlines, Severity::Critical),
            high: DeadlineSeconds::of(deadlines, Severity::High),
            medium: DeadlineSeconds::of(deadlines, Severity::Medium),
            low: DeadlineSeconds::of(deadlines, Severity::Low),
        }
    }

    fn by_severity(&self) -> [(Severity, DeadlineSeconds); 4] {
        [
            (Severity::Critical, self.critical),
            (Severity::High, self.high),
            (Severity::Medium, self.medium),
            (Severity::Low, self.low),
        ]
    }
}

async fn current(state: &AppState, hospital: &str) -> Result<EscalationPolicy, ApiError> {
    let mut conn = state.pool.acquire().await.map_err(ApiError::database)?;
    let deadlines = Deadlines::load(&mut conn, hospital)
        .await
        .map_err(ApiError::database)?;
    Ok(EscalationPolicy::from_deadlines(&deadlines))
}

/// The hospital's escalation deadlines (its own, or the defaults where it set none).
#[utoipa::path(get, path = "/api/hospitals/{hospital}/policies/escalation", tag = "operations",
    params(("hospital" = String, Path, description = "Hospital id")),
    responses((status = 200, description = "Deadlines in seconds", body = EscalationPolicy),
        (status = 401, description = "Missing or invalid token"),
        (status = 403, description = "Not an admin of this hospital")),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(user = %auth.0.user))]
pub async fn get_escalation(
    state: web::Data<AppState>,
    auth: Authenticated,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let hospital = hospital_from_path(&path)?;
    authorize(&auth.0, &hospital, Action::Administer)?;
    Ok(HttpResponse::Ok().json(current(&state, hospital.as_str()).await?))
}

/// Sets the hospital's escalation deadlines (all four severities). Alerts already waiting
/// keep their due time; the new deadlines apply from the next arming.
#[utoipa::path(put, path = "/api/hospitals/{hospital}/policies/escalation", tag = "operations",
    params(("hospital" = String, Path, description = "Hospital id")),
    request_body = EscalationPolicy,
    responses((status = 200, description = "The deadlines now in force", body = EscalationPolicy),
        (status = 400, description = "A deadline out of range, a missing severity or an unknown field"),
        (status = 401, description = "Missing or invalid token"),
        (status = 403, description = "Not an admin of this hospital")),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(user = %auth.0.user))]
pub async fn put_escalation(
    state: web::Data<AppState>,
    auth: Authenticated,
    path: web::Path<String>,
    body: JsonBody<EscalationPolicy>,
) -> Result<HttpResponse, ApiError> {
    let hospital = hospital_from_path(&path)?;
    authorize(&auth.0, &hospital, Action::Administer)?;
    let mut tx = state.pool.begin().await.map_err(ApiError::database)?;
    for (severity, seconds) in body.value.by_severity() {
        escalation::set_deadline(&mut tx, hospital.as_str(), severity, seconds.duration())
            .await
            .map_err(ApiError::database)?;
    }
    tx.commit().await.map_err(ApiError::database)?;
    tracing::info!(
        hospital = %hospital,
        critical = u32::from(body.value.critical),
        high = u32::from(body.value.high),
        medium = u32::from(body.value.medium),
        low = u32::from(body.value.low),
        "escalation deadlines changed"
    );
    Ok(HttpResponse::Ok().json(current(&state, hospital.as_str()).await?))
}
