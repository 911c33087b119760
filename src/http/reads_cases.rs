//! Case reads over the `case_list` read model: a portal's case list with each case's unread
//! count for the caller, and one case thread with its messages and read receipts.
//!
//! Operators may not read cases; field workers (CHW, ASHA) see only the cases currently
//! assigned to them, and any other case answers 404 exactly as an unknown one would, so its
//! existence is not revealed (see `reads_access`).

use actix_web::{web, HttpResponse};
use aggregates::case_thread::CaseStatus;
use aggregates::routing::Category;
use projections::case_list::{self, CaseFilter, CaseRow, MessageRow, ReadReceipt};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use utoipa::{IntoParams, ToSchema};

use super::commands::uuid_id;
use super::extract::{hospital_from_path, Authenticated, Query};
use super::problem::ApiError;
use super::reads::{page, snapshot};
use super::reads_access::{confine, not_negative, one_of, user_param};
use super::responses::ReadErrors;
use super::AppState;
use crate::access::authorize;
use crate::access::Action;

/// The read model these endpoints read.
const MODEL: &str = "case_list";

/// Query of `GET /cases`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct CasesQuery {
    /// `open`, `in_review`, `accepted`, `referred`, `prescribed` or `completed`; default: all.
    pub status: Option<String>,
    /// Only cases assigned to this user. For field workers it narrows their own cases and
    /// never widens them.
    pub assignee: Option<String>,
    /// Page size (1..500, default 100).
    pub limit: Option<i64>,
    /// Rows to skip.
    pub offset: Option<i64>,
    /// Wait until the list reflects this stream position (read-your-writes).
    pub min_position: Option<i64>,
}

/// A page of the case list.
#[derive(Debug, Serialize, ToSchema)]
pub struct CaseListPage {
    /// Stream position the list reflects; subscribe with `last_event_id = as_of`.
    pub as_of: i64,
    /// Cases, most recently updated first: `case_id, patient, title, status, assignee,
    /// opened_by, opened_at, updated_at, message_count, last_message_id, last_message_body
    /// (at most 200 characters), last_message_by, last_message_at` and `unread`, the caller's
    /// unread messages (`message_count` minus their last read message).
    #[schema(value_type = Vec<Object>)]
    pub cases: Vec<CaseRow>,
}

/// Query of `GET /cases/{id}`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct CaseQuery {
    /// Messages after this message id (default 0: from the first). Page on with the last
    /// id received; `case.message_count` is the last id there is.
    pub messages_after: Option<i64>,
    /// Most messages returned (1..500, default 100).
    pub limit: Option<i64>,
    /// Wait until the case reflects this stream position (read-your-writes).
    pub min_position: Option<i64>,
}

/// One case thread.
#[derive(Debug, Serialize, ToSchema)]
pub struct CaseDetail {
    /// Stream position the case reflects; subscribe with `last_event_id = as_of`.
    pub as_of: i64,
    /// The case, as in the list (with the caller's `unread`).
    #[schema(value_type = Object)]
    pub case: CaseRow,
    /// Messages after `messages_after`, by id: `message_id, author, body, posted_at`.
    #[schema(value_type = Vec<Object>)]
    pub messages: Vec<MessageRow>,
    /// Every reader's last read message: `user, up_to, read_at`.
    #[schema(value_type = Vec<Object>)]
    pub read_receipts: Vec<ReadReceipt>,
}

fn statuses() -> Vec<&'static str> {
    CaseStatus::ALL.iter().map(|s| s.as_str()).collect()
}

/// A portal's case list, with the caller's unread count per case.
#[utoipa::path(get, path = "/api/hospitals/{hospital}/cases", tag = "cases",
    params(("hospital" = String, Path, description = "Hospital id"), CasesQuery),
    responses((status = 200, description = "The case list", body = CaseListPage), ReadErrors),
    security(("bearer" = [])))]
#[tracing::instrument(name = "read_cases", skip_all, fields(user = %auth.0.user))]
pub async fn list(
    state: web::Data<AppState>,
    auth: Authenticated,
    path: web::Path<String>,
    query: Query<CasesQuery>,
) -> Result<HttpResponse, ApiError> {
    let hospital = hospital_from_path(&path)?;
    authorize(&auth.0, &hospital, Action::ReadEvents)?;
    let visible_to = confine(&auth.0, Category::Cases)?;
    one_of("status", query.status.as_deref(), &statuses())?;
    let assignee = user_param("assignee", query.assignee.as_deref())?;
    let (limit, offset) = page(query.limit, query.offset)?;
    let filter = CaseFilter {
        status: query.status.clone(),
        assignee: assignee.map(String::from),
        visible_to: visible_to.map(|u| u.to_string()),
        reader: auth.0.user.to_string(),
        limit,
        offset,
    };
    let (mut tx, as_of) = snapshot(&state, MODEL, hospital.as_str(), query.min_position).await?;
    let cases = case_list::list(&mut tx, hospital.as_str(), &filter)
        .await
        .map_err(ApiError::database)?;
    tx.commit().await.map_err(ApiError::database)?;
    Ok(HttpResponse::Ok().json(CaseListPage { as_of, cases }))
}

/// One case thread: the case, a page of its messages, and its read receipts.
#[utoipa::path(get, path = "/api/hospitals/{hospital}/cases/{id}", tag = "cases",
    params(("hospital" = String, Path, description = "Hospital id"),
        ("id" = String, Path, description = "Case id"), CaseQuery),
    responses((status = 200, description = "The case thread", body = CaseDetail),
        (status = 404, description = "No such case (or not assigned to the calling field worker)",
            body = super::problem::Problem, content_type = "application/problem+json"),
        ReadErrors),
    security(("bearer" = [])))]
#[tracing::instrument(name = "read_case", skip_all, fields(user = %auth.0.user))]
pub async fn detail(
    state: web::Data<AppState>,
    auth: Authenticated,
    path: web::Path<(String, String)>,
    query: Query<CaseQuery>,
) -> Result<HttpResponse, ApiError> {
    let (hospital, id) = path.into_inner();
    let hospital = hospital_from_path(&hospital)?;
    authorize(&auth.0, &hospital, Action::ReadEvents)?;
    let visible_to = confine(&auth.0, Category::Cases)?;
    let id = uuid_id(&id)?;
    let after = not_negative("messages_after", query.messages_after.unwrap_or(0))?;
    let (limit, _) = page(query.limit, None)?;
    let (mut tx, as_of) = snapshot(&state, MODEL, hospital.as_str(), query.min_position).await?;
    let conn: &mut PgConnection = &mut tx;
    let case = case_list::get(
        conn,
        hospital.as_str(),
        &id,
        auth.0.user.as_str(),
        visible_to.map(|u| u.as_str()),
    )
    .await
    .map_err(ApiError::database)?
    .ok_or_else(|| ApiError::NotFound {
        code: "case_not_found",
        detail: format!("no case `{id}`"),
    })?;
    let messages = case_list::messages(conn, hospital.as_str(), &id, after, limit)
        .await
        .map_err(ApiError::database)?;
    let read_receipts = case_list::read_receipts(conn, hospital.as_str(), &id)
        .await
        .map_err(ApiError::database)?;
    tx.commit().await.map_err(ApiError::database)?;
    Ok(HttpResponse::Ok().json(CaseDetail {
        as_of,
        case,
        messages,
        read_receipts,
    }))
}
