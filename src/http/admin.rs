//! Operating the read models: `GET /api/admin/projections` (every projector's version, state,
//! lag and rebuild progress), and starting or cancelling an online rebuild
//! (`POST`/`DELETE /api/admin/projections/{name}/rebuild`).
//!
//! Admin only. An admin token is for one hospital, so every per-hospital figure in a response
//! is the caller's hospital's. A rebuild re-projects every hospital's stream (the shadow
//! tables it swaps in hold all of them), or with `"scope": "hospital"` only the caller's
//! hospital's rows, which it replaces in one transaction.
//!
//! A rebuild runs in a background task of the node that accepted the request, guarded by the
//! node's registry and the advisory lock of `projection::rebuilds`. Cancelling sets the task's
//! cancel flag: the shadow tables and their `#rebuild` checkpoints stay, so the next rebuild
//! resumes where this one stopped.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use projections::engine::{self, ProjectionError, ProjectorStatus, ReadModel, Scope};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa::ToSchema;

use super::extract::{Authenticated, JsonBody};
use super::problem::{ApiError, Problem};
use super::AppState;
use crate::access::authorize;
use crate::access::Action;
use crate::auth::Identity;
use crate::projection;
use crate::projection::rebuilds::{locked, Outcome, RebuildLock, Snapshot, Task};

/// Body of `POST /api/admin/projections/{name}/rebuild` (optional).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RebuildRequest {
    /// Drop the shadow tables of an interrupted rebuild and start from position 0, instead of
    /// resuming it. Default `false`.
    #[serde(default)]
    pub restart: bool,
    /// `all` (default): every hospital's rows are rebuilt. `hospital`: only the caller's
    /// hospital's rows are rebuilt and replaced; the other hospitals' rows are not touched.
    #[serde(default)]
    pub scope: RebuildScope,
}

/// What `POST /api/admin/projections/{name}/rebuild` rebuilds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RebuildScope {
    /// Every hospital.
    #[default]
    All,
    /// The caller's hospital only.
    Hospital,
}

/// A rebuild of a read model, as the caller's hospital sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct RebuildView {
    /// `running` (here), `completed`, `cancelled` or `failed` (the last one started on this
    /// node), or `pending`: shadow checkpoints exist but no rebuild runs on this node (it runs
    /// on another node, or was interrupted and resumes with the next rebuild).
    pub status: &'static str,
    /// `all` or `hospital` (only this hospital's rows), while shadow checkpoints exist.
    pub scope: Option<&'static str>,
    /// This hospital's events projected into the shadow tables, while shadow checkpoints exist.
    pub done: Option<i64>,
    /// This hospital's stream head, while shadow checkpoints exist.
    pub total: Option<i64>,
    /// Throughput of the rebuild running on this node (all hospitals), in events per second.
    pub events_per_second: Option<f64>,
    /// When the rebuild on this node started.
    pub started_at: Option<DateTime<Utc>>,
    /// When the rebuild on this node ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// Why it failed.
    pub error: Option<String>,
}

/// One projector's status for the caller's hospital.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectorView {
    /// The read model (`alert_board`).
    pub name: &'static str,
    /// The code version this node runs.
    pub version: i32,
    /// `caught_up` or `catching_up` (this hospital), `rebuilding` (shadow checkpoints exist)
    /// or `stale_version` (the tables were built by another version; a rebuild is due).
    pub state: &'static str,
    /// Last stream position of this hospital the model has applied.
    pub checkpoint: i64,
    /// This hospital's stream head.
    pub head: i64,
    /// Events not yet applied.
    pub lag_events: i64,
    /// Age of the oldest event not yet applied, in seconds (0 when caught up).
    pub lag_seconds: f64,
    /// The rebuild in progress, or the last one this node ran.
    pub rebuild: Option<RebuildView>,
}

/// `GET /api/admin/projections`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectionsStatus {
    /// The caller's hospital: every per-hospital figure is this hospital's.
    pub hospital: String,
    /// Every read model.
    pub projectors: Vec<ProjectorView>,
}

/// Errors of the admin endpoints.
#[allow(dead_code)] // Only read by the OpenAPI generator.
#[derive(utoipa::IntoResponses)]
pub enum AdminErrors {
    /// Invalid body or path.
    #[response(status = 400, content_type = "application/problem+json")]
    BadRequest(#[to_schema] Problem),
    /// Missing, invalid or expired token.
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(#[to_schema] Problem),
    /// Not an admin.
    #[response(status = 403, content_type = "application/problem+json")]
    Forbidden(#[to_schema] Problem),
    /// Unknown read model.
    #[response(status = 404, content_type = "application/problem+json")]
    NotFound(#[to_schema] Problem),
    /// A rebuild of this model is already running (start), or none runs on this node (cancel).
    #[response(status = 409, content_type = "application/problem+json")]
    Conflict(#[to_schema] Problem),
    /// Database unreachable.
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(#[to_schema] Problem),
}

/// The admin's identity, or 403.
fn admin(auth: &Authenticated) -> Result<&Identity, ApiError> {
    let identity = &auth.0;
    authorize(identity, &identity.hospital, Action::Administer)?;
    Ok(identity)
}

/// The model called `name`, or 404.
fn known_model(name: &str) -> Result<Arc<dyn ReadModel>, ApiError> {
    projection::model(name).ok_or_else(|| ApiError::NotFound {
        code: "unknown_projection",
        detail: format!(
            "no read model is called `{name}`; known: {}",
            projection::models()
                .iter()
                .map(|m| m.name())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    })
}

/// Every projector's status for `hospital`, with this node's rebuilds.
async fn projectors(
    state: &AppState,
    hospital: &str,
    only: Option<&str>,
) -> Result<Vec<ProjectorView>, ApiError> {
    let models: Vec<Arc<dyn ReadModel>> = projection::models()
        .into_iter()
        .filter(|m| only.is_none_or(|name| m.name() == name))
        .collect();
    let refs: Vec<&dyn ReadModel> = models.iter().map(|m| m.as_ref()).collect();
    // This node's rebuilds are read before the database: a rebuild that ended before the
    // status query has its end visible in it (read after, a rebuild ending in between would
    // look finished with its shadow checkpoints still there).
    let tasks: HashMap<&'static str, Snapshot> = refs
        .iter()
        .filter_map(|m| {
            let task = state.rebuilds.get(m.name())?;
            let ended = locked(&task.outcome).clone();
            Some((m.name(), (task, ended)))
        })
        .collect();
    let statuses = engine::status(&state.pool, &refs)
        .await
        .map_err(ApiError::database)?;
    let mut out = Vec::with_capacity(statuses.len());
    for status in statuses {
        out.push(projector_view(state, hospital, status, &tasks).await?);
    }
    Ok(out)
}

/// One projector's status as `hospital` sees it: its own lag, and a rebuild only if it is
/// for every hospital or for this one (reading this hospital's shadow checkpoint).
async fn projector_view(
    state: &AppState,
    hospital: &str,
    status: ProjectorStatus,
    tasks: &HashMap<&'static str, Snapshot>,
) -> Result<ProjectorView, ApiError> {
    let own = status.hospitals.iter().find(|h| h.hospital == hospital);
    let (checkpoint, head, lag_events, lag_seconds) = own
        .map(|h| (h.checkpoint, h.head, h.lag_events, h.lag_seconds))
        .unwrap_or((0, 0, 0, 0.0));
    // `rebuilding` and `stale_version` are facts about the model's tables (all
    // hospitals); being caught up is this hospital's.
    // A rebuild scoped to another hospital is none of this hospital's business (nor is
    // that hospital's name): it is shown as no rebuild at all.
    let elsewhere = status
        .rebuild
        .as_ref()
        .and_then(|r| r.hospital.as_deref())
        .is_some_and(|h| h != hospital);
    let state_name = match status.state {
        "rebuilding" if !elsewhere => status.state,
        "stale_version" => status.state,
        _ if lag_events > 0 => "catching_up",
        _ => "caught_up",
    };
    let scope = match &status.rebuild {
        Some(_) if elsewhere => None,
        Some(r) if r.hospital.is_some() => Some("hospital"),
        Some(_) => Some("all"),
        None => None,
    };
    let shadow = match scope {
        Some(_) => Some(
            engine::checkpoint(&state.pool, &format!("{}#rebuild", status.name), hospital)
                .await
                .map_err(ApiError::database)?,
        ),
        None => None,
    };
    let (task, ended) = match tasks.get(status.name) {
        Some(_) if elsewhere => (None, None),
        Some((task, ended)) => (Some(task), ended.clone()),
        None => (None, None),
    };
    Ok(ProjectorView {
        name: status.name,
        version: status.version,
        state: state_name,
        checkpoint,
        head,
        lag_events,
        lag_seconds,
        rebuild: rebuild_view(task, ended, shadow, scope, head),
    })
}

/// A rebuild as one hospital sees it, from this node's task for the model (if any, with how
/// it ended) and the hospital's shadow checkpoint (while one exists); none when neither is.
fn rebuild_view(
    task: Option<&Arc<Task>>,
    ended: Option<(Outcome, DateTime<Utc>)>,
    shadow: Option<i64>,
    scope: Option<&'static str>,
    head: i64,
) -> Option<RebuildView> {
    if task.is_none() && shadow.is_none() {
        return None;
    }
    let (status_name, finished_at, error) = match (task, ended.clone()) {
        (Some(_), None) => ("running", None, None),
        (_, Some((Outcome::Completed(_), at))) if shadow.is_none() => ("completed", Some(at), None),
        (_, Some((Outcome::Cancelled, at))) => ("cancelled", Some(at), None),
        (_, Some((Outcome::Failed(e), at))) => ("failed", Some(at), Some(e)),
        // Shadow checkpoints with no rebuild running here: another node's, or
        // an interrupted one (a crash, an automatic rebuild that failed).
        _ => ("pending", None, None),
    };
    let events_per_second = task.and_then(|t| match &ended {
        Some((Outcome::Completed(report), _)) => Some(report.events_per_second),
        _ => t.events_per_second(),
    });
    Some(RebuildView {
        status: status_name,
        scope,
        done: shadow,
        total: shadow.map(|_| head),
        events_per_second,
        started_at: task.map(|t| t.started_at),
        finished_at,
        error,
    })
}

/// Every read model's version, state, lag (this hospital's) and rebuild progress.
#[utoipa::path(get, path = "/api/admin/projections", tag = "operations",
    responses((status = 200, description = "Projector status", body = ProjectionsStatus), AdminErrors),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all)]
pub async fn status(
    state: web::Data<AppState>,
    auth: Authenticated,
) -> Result<HttpResponse, ApiError> {
    let identity = admin(&auth)?;
    let hospital = identity.hospital.to_string();
    let projectors = projectors(&state, &hospital, None).await?;
    Ok(HttpResponse::Ok().json(ProjectionsStatus {
        hospital,
        projectors,
    }))
}

/// Whether the request carries a body to parse (`POST` with no body means the defaults).
fn has_body(req: &HttpRequest) -> bool {
    let length = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match length {
        Some(n) => n > 0,
        None => {
            req.headers().contains_key(header::TRANSFER_ENCODING)
                || req.headers().contains_key(header::CONTENT_TYPE)
        }
    }
}

/// Starts an online rebuild of a read model (all hospitals, or with `"scope": "hospital"` the
/// caller's) in the background; poll
/// `GET /api/admin/projections` for its progress.
#[utoipa::path(post, path = "/api/admin/projections/{name}/rebuild", tag = "operations",
    params(("name" = String, Path, description = "Read model, e.g. alert_board")),
    request_body(content = RebuildRequest, description = "Optional (no body: the defaults); `{\"restart\": true}` starts over instead of resuming, `{\"scope\": \"hospital\"}` rebuilds only the caller's hospital"),
    responses((status = 202, description = "Rebuild started", body = ProjectorView), AdminErrors),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(model = %path.as_str()))]
pub async fn start_rebuild(
    state: web::Data<AppState>,
    req: HttpRequest,
    auth: Authenticated,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let identity = admin(&auth)?;
    let model = known_model(&path)?;
    let request = if has_body(&req) {
        JsonBody::<RebuildRequest>::from_request(&req, &mut payload.into_inner())
            .await?
            .value
    } else {
        RebuildRequest::default()
    };
    let name = model.name();
    let scope = match request.scope {
        RebuildScope::All => Scope::All,
        RebuildScope::Hospital => Scope::Hospital(identity.hospital.as_str().to_owned()),
    };
    let (task, lock) = claim_rebuild(&state, name).await?;
    // An interrupted rebuild of another scope: refuse now rather than fail in the background.
    if !request.restart {
        if let Err(error) = check_pending_scope(&state, model.as_ref(), &scope, identity).await {
            lock.release().await;
            state.rebuilds.abandon(name, &task);
            return Err(error);
        }
    }
    tracing::info!(
        model = name,
        %scope,
        restart = request.restart,
        by = %identity.user,
        hospital = %identity.hospital,
        "rebuild requested"
    );
    spawn_rebuild(
        state.pool.clone(),
        model,
        scope,
        request.restart,
        task,
        lock,
    );
    let view = projectors(&state, identity.hospital.as_str(), Some(name))
        .await?
        .into_iter()
        .next();
    Ok(HttpResponse::Accepted().json(view))
}

/// Claims the rebuild of `name`: this node's registry first, then the cluster's advisory
/// lock (the registry's claim is given back if the lock cannot be had).
async fn claim_rebuild(
    state: &AppState,
    name: &'static str,
) -> Result<(Arc<Task>, RebuildLock), ApiError> {
    let busy = || ApiError::Conflict {
        code: "rebuild_in_progress",
        detail: format!("a rebuild of `{name}` is already running"),
    };
    let task = state.rebuilds.start(name).ok_or_else(busy)?;
    match RebuildLock::try_acquire(&state.pool, name).await {
        Ok(Some(lock)) => Ok((task, lock)),
        Ok(None) => {
            state.rebuilds.abandon(name, &task);
            Err(busy())
        }
        Err(error) => {
            state.rebuilds.abandon(name, &task);
            Err(ApiError::database(error))
        }
    }
}

/// Refuses a rebuild whose scope differs from that of the interrupted rebuild holding the
/// shadow tables (naming never another hospital).
async fn check_pending_scope(
    state: &AppState,
    model: &dyn ReadModel,
    scope: &Scope,
    identity: &Identity,
) -> Result<(), ApiError> {
    let pending = engine::pending_rebuild(&state.pool, model)
        .await
        .map_err(ApiError::database)?;
    match pending {
        Some(pending) if pending != *scope => {
            // Never another hospital's name.
            let whose = match &pending {
                Scope::All => "every hospital",
                Scope::Hospital(h) if h == identity.hospital.as_str() => "this hospital",
                Scope::Hospital(_) => "another hospital",
            };
            Err(ApiError::Conflict {
                code: "rebuild_scope_conflict",
                detail: format!(
                    "an interrupted rebuild of `{}` for {whose} holds the shadow tables: \
                     resume it with its scope, or pass \"restart\": true to drop it",
                    model.name()
                ),
            })
        }
        _ => Ok(()),
    }
}

/// Runs the claimed rebuild in the background, then releases the lock and records how it
/// ended for the status endpoint.
fn spawn_rebuild(
    pool: PgPool,
    model: Arc<dyn ReadModel>,
    scope: Scope,
    restart: bool,
    running: Arc<Task>,
    lock: RebuildLock,
) {
    // On this worker's runtime: the rebuild stops with the node, and the next rebuild
    // resumes from its checkpoints.
    actix_web::rt::spawn(async move {
        let result = engine::rebuild_scoped(
            &pool,
            model.as_ref(),
            &scope,
            restart,
            &running.cancel,
            |done, _| running.progress(done),
        )
        .await;
        lock.release().await;
        let outcome = match result {
            Ok(report) => {
                tracing::info!(
                    model = model.name(),
                    events = report.events,
                    events_per_second = report.events_per_second,
                    "rebuild completed"
                );
                Outcome::Completed(report)
            }
            Err(ProjectionError::Cancelled) => {
                tracing::info!(model = model.name(), "rebuild cancelled; resumable");
                Outcome::Cancelled
            }
            Err(error) => {
                tracing::error!(model = model.name(), %error, "rebuild failed");
                Outcome::Failed(error.to_string())
            }
        };
        *locked(&running.outcome) = Some((outcome, Utc::now()));
    });
}

/// Cancels the rebuild of a read model running on this node. Its shadow tables and
/// checkpoints stay: the next rebuild resumes from them.
#[utoipa::path(delete, path = "/api/admin/projections/{name}/rebuild", tag = "operations",
    params(("name" = String, Path, description = "Read model, e.g. alert_board")),
    responses((status = 202, description = "Cancellation requested; the rebuild stops after its current batch", body = ProjectorView), AdminErrors),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(model = %path.as_str()))]
pub async fn cancel_rebuild(
    state: web::Data<AppState>,
    auth: Authenticated,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let identity = admin(&auth)?;
    let model = known_model(&path)?;
    let name = model.name();
    match state.rebuilds.get(name) {
        Some(task) if task.running() => {
            task.cancel.store(true, Ordering::Relaxed);
            tracing::info!(model = name, by = %identity.user, "rebuild cancellation requested");
        }
        _ => {
            return Err(ApiError::Conflict {
                code: "rebuild_not_running",
                detail: format!("no rebuild of `{name}` is running on this node"),
            })
        }
    }
    let view = projectors(&state, identity.hospital.as_str(), Some(name))
        .await?
        .into_iter()
        .next();
    Ok(HttpResponse::Accepted().json(view))
}
