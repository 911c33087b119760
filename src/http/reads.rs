//! Read endpoints over the read models, and what they share: a consistent `as_of` and
//! read-your-writes through `min_position`.
//!
//! Every read answers with `as_of`, the stream position the read model had reached, read in
//! the same snapshot as the rows: load the snapshot, subscribe with `last_event_id = as_of`,
//! and exactly the later events follow. `min_position=N` (e.g. a position a command just
//! returned) makes the server wait, bounded, until the model has reached N.

use std::time::Duration;

use actix_web::{web, HttpResponse};
use aggregates::alert::Severity;
use aggregates::types::Role;
use projections::alert_board::{self, AlertRow, BoardFilter, EscalationSeconds, SeverityCounts};

use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, Postgres, Transaction};
use utoipa::{IntoParams, ToSchema};

use super::extract::{hospital_from_path, Authenticated, Query};
use super::problem::ApiError;
use super::responses::ReadErrors;
use super::AppState;
use crate::access::authorize;
use crate::access::Action;
use crate::auth::Identity;
use crate::policy::escalation::Deadlines;

/// Longest a read waits for `min_position`.
pub const MIN_POSITION_WAIT: Duration = Duration::from_secs(3);

/// Largest page of a list read.
pub const MAX_PAGE: i64 = 500;

/// Refuses a `min_position` beyond the stream's head at once (400 `position_beyond_head`,
/// naming the head): no command has returned it yet, so waiting cannot reach it. The head is
/// read after the command that returned a position committed, so a position a client was
/// given is never refused.
pub async fn refuse_beyond_head(
    state: &AppState,
    hospital: &str,
    wanted: i64,
) -> Result<(), ApiError> {
    let hospital_id = aggregates::types::HospitalId::parse(hospital)
        .map_err(|e| ApiError::invalid_field("hospital", e.to_string()))?;
    let head = crate::stream::read::head(&state.pool, &hospital_id)
        .await
        .map_err(ApiError::database)?;
    if wanted > head.position {
        return Err(ApiError::BadRequest {
            code: "position_beyond_head",
            detail: format!(
                "min_position {wanted} is beyond the head of the stream (position {}); use a position a command or read returned",
                head.position
            ),
            field: Some("min_position".into()),
        });
    }
    Ok(())
}

/// Opens a read-only snapshot in which `model`'s checkpoint for `hospital` is at least
/// `min_position` (after waiting, bounded), and returns it with that checkpoint (`as_of`).
pub async fn snapshot(
    state: &AppState,
    model: &str,
    hospital: &str,
    min_position: Option<i64>,
) -> Result<(Transaction<'static, Postgres>, i64), ApiError> {
    if let Some(wanted) = min_position {
        if wanted < 0 {
            return Err(ApiError::invalid_field("min_position", "must be 0 or more"));
        }
        refuse_beyond_head(state, hospital, wanted).await?;
        let reached =
            crate::projection::wait_for(&state.pool, model, hospital, wanted, MIN_POSITION_WAIT)
                .await
                .map_err(ApiError::database)?;
        if reached < wanted {
            return Err(ApiError::Unavailable(format!(
                "the {model} read model has reached position {reached}, not yet {wanted}; retry"
            )));
        }
    }
    let mut tx = state.pool.begin().await.map_err(ApiError::database)?;
    // The model's tables are locked (ACCESS SHARE) *before* the first query fixes the
    // snapshot. A rebuild swaps its shadow tables in with DROP + RENAME, which is not
    // MVCC-safe: a snapshot taken before the swap committed would read the swapped-in tables
    // as of that older snapshot, without the events the swap's own transaction applied, while
    // `as_of` (from the old checkpoints) claims them. With the lock taken first, the swap
    // waits for this read, or this read waits for the swap and then sees it whole — the
    // ordering PostgreSQL documents for LOCK TABLE in a REPEATABLE READ transaction. One
    // round trip with the SET. Test: projections_engine.rs, `a_read_racing_the_rebuild_swap_*`.
    let mut begin = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY".to_owned();
    if let Some(read_model) = crate::projection::model(model) {
        begin.push_str(&format!(
            "; LOCK TABLE {} IN ACCESS SHARE MODE",
            read_model.tables().join(", ")
        ));
    }
    sqlx::raw_sql(&begin)
        .execute(&mut *tx)
        .await
        .map_err(ApiError::database)?;
    let as_of: i64 = sqlx::query_scalar(
        "SELECT coalesce((SELECT position FROM projection_checkpoints WHERE projector = $1 AND hospital = $2), 0)",
    )
    .bind(model)
    .bind(hospital)
    .fetch_one(&mut *tx)
    .await
    .map_err(ApiError::database)?;
    Ok((tx, as_of))
}

/// Whether a role sees only what its user raised/wrote (field workers).
pub fn own_only(identity: &Identity) -> bool {
    matches!(identity.role, Role::Chw | Role::Asha)
}

/// Query of `GET /alerts`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AlertsQuery {
    /// `raised`, `acknowledged` or `resolved`; default: open (raised or acknowledged).
    pub status: Option<String>,
    /// `low`, `medium`, `high` or `critical`.
    pub severity: Option<String>,
    /// Department.
    pub department: Option<String>,
    /// Patient id.
    pub patient: Option<String>,
    /// Page size (1..500, default 100).
    pub limit: Option<i64>,
    /// Rows to skip.
    pub offset: Option<i64>,
    /// Wait until the board reflects this stream position (read-your-writes).
    pub min_position: Option<i64>,
}

/// The alert board.
#[derive(Debug, Serialize, ToSchema)]
pub struct AlertBoardPage {
    /// Stream position the board reflects; subscribe with `last_event_id = as_of`.
    pub as_of: i64,
    /// Open alerts per severity.
    #[schema(value_type = Object)]
    pub counts: SeverityCounts,
    /// Alerts, most severe and oldest first. Each row: `alert_id`, `severity`, `status`,
    /// `message`, `department`, `patient`, `level`, `raised_by`, `raised_at`,
    /// `acknowledged_by`, `acknowledged_at`, `resolved_at`, `age_seconds`, and
    /// `escalation_due_at` — when the system escalates the alert unless it is acknowledged
    /// first (null once acknowledged or resolved, or at the last level).
    #[schema(value_type = Vec<Object>)]
    pub alerts: Vec<AlertRow>,
}

fn one_of(field: &str, value: &Option<String>, allowed: &[&str]) -> Result<(), ApiError> {
    match value {
        Some(v) if !allowed.contains(&v.as_str()) => Err(ApiError::invalid_field(
            field,
            format!("`{field}` must be one of {}", allowed.join(", ")),
        )),
        _ => Ok(()),
    }
}

/// Validates a page: (limit, offset).
pub fn page(limit: Option<i64>, offset: Option<i64>) -> Result<(i64, i64), ApiError> {
    let limit = limit.unwrap_or(100);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::invalid_field(
            "limit",
            format!("must be between 1 and {MAX_PAGE}"),
        ));
    }
    let offset = offset.unwrap_or(0);
    if offset < 0 {
        return Err(ApiError::invalid_field("offset", "must be 0 or more"));
    }
    Ok((limit, offset))
}

/// The alert board: open alerts by severity, department, status, age, escalation level.
#[utoipa::path(get, path = "/api/hospitals/{hospital}/alerts", tag = "alerts",
    params(("hospital" = String, Path, description = "Hospital id"), AlertsQuery),
    responses((status = 200, description = "The alert board", body = AlertBoardPage), ReadErrors),
    security(("bearer" = [])))]
pub async fn alert_board(
    state: web::Data<AppState>,
    auth: Authenticated,
    path: web::Path<String>,
    query: Query<AlertsQuery>,
) -> Result<HttpResponse, ApiError> {
    let hospital = hospital_from_path(&path)?;
    authorize(&auth.0, &hospital, Action::ReadEvents)?;
    one_of(
        "status",
        &query.status,
        &["raised", "acknowledged", "resolved"],
    )?;
    one_of(
        "severity",
        &query.severity,
        &["low", "medium", "high", "critical"],
    )?;
    let (limit, offset) = page(query.limit, query.offset)?;
    // Filters are parsed like the values they match, so a value no alert can have (a NUL,
    // which PostgreSQL text cannot even hold) is a 400, not a database error.
    let patient = match &query.patient {
        Some(raw) => Some(
            aggregates::types::PatientId::parse(raw)
                .map_err(|e| ApiError::invalid_field("patient", e.to_string()))?
                .to_string(),
        ),
        None => None,
    };
    let department = match &query.department {
        Some(raw) => Some(
            aggregates::types::Department::parse(raw)
                .map_err(|e| ApiError::invalid_field("department", e.to_string()))?
                .to_string(),
        ),
        None => None,
    };
    let (mut tx, as_of) =
        snapshot(&state, "alert_board", hospital.as_str(), query.min_position).await?;
    let conn: &mut PgConnection = &mut tx;
    // The deadlines give each raised alert its escalation due time on the row, for every
    // role that reads the board (the deadlines endpoint itself is for admins).
    let deadlines = Deadlines::load(conn, hospital.as_str())
        .await
        .map_err(ApiError::database)?;
    let seconds = |s: Severity| deadlines.of(s).as_secs_f64();
    let filter = BoardFilter {
        status: query.status.clone(),
        severity: query.severity.clone(),
        department,
        patient,
        raised_by: own_only(&auth.0).then(|| auth.0.user.to_string()),
        limit,
        offset,
        deadlines: Some(EscalationSeconds {
            critical: seconds(Severity::Critical),
            high: seconds(Severity::High),
            medium: seconds(Severity::Medium),
            low: seconds(Severity::Low),
        }),
    };
    let alerts = alert_board::list(conn, hospital.as_str(), &filter)
        .await
        .map_err(ApiError::database)?;
    let counts = alert_board::counts(conn, hospital.as_str())
        .await
        .map_err(ApiError::database)?;
    tx.commit().await.map_err(ApiError::database)?;
    Ok(HttpResponse::Ok().json(AlertBoardPage {
        as_of,
        counts,
        alerts,
    }))
}
