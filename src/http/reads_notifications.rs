//! The notification inbox over the `notification_inbox` read model: the caller's own
//! notifications, unread first and newest first, with their unread count.
//!
//! Every role, administrators included, reads only the notifications addressed to them (see
//! `reads_access`); no parameter names another recipient.

use actix_web::{web, HttpResponse};
use aggregates::routing::Category;
use projections::notification_inbox::{self, NotificationRow};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{hospital_from_path, Authenticated, Query};
use super::problem::ApiError;
use super::reads::{page, snapshot};
use super::reads_access::confine;
use super::responses::ReadErrors;
use super::AppState;
use crate::access::authorize;
use crate::access::Action;

/// The read model this endpoint reads.
const MODEL: &str = "notification_inbox";

/// Query of `GET /notifications`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct NotificationsQuery {
    /// Only unread notifications (`true` or `false`, default `false`).
    pub unread_only: Option<bool>,
    /// Page size (1..500, default 100).
    pub limit: Option<i64>,
    /// Rows to skip.
    pub offset: Option<i64>,
    /// Wait until the inbox reflects this stream position (read-your-writes).
    pub min_position: Option<i64>,
}

/// The caller's inbox.
#[derive(Debug, Serialize, ToSchema)]
pub struct InboxPage {
    /// Stream position the inbox reflects; subscribe with `last_event_id = as_of`.
    pub as_of: i64,
    /// How many of the caller's notifications are unread (all of them, not just this page).
    pub unread_count: i64,
    /// Unread first, then read, each newest first: `notification_id, kind, urgent, patient,
    /// content (as sent, tagged by kind), sent_by, sent_at, read_at`.
    #[schema(value_type = Vec<Object>)]
    pub notifications: Vec<NotificationRow>,
}

/// The caller's notifications and unread count.
#[utoipa::path(get, path = "/api/hospitals/{hospital}/notifications", tag = "notifications",
    params(("hospital" = String, Path, description = "Hospital id"), NotificationsQuery),
    responses((status = 200, description = "The caller's inbox", body = InboxPage), ReadErrors),
    security(("bearer" = [])))]
#[tracing::instrument(name = "read_notifications", skip_all, fields(user = %auth.0.user))]
pub async fn inbox(
    state: web::Data<AppState>,
    auth: Authenticated,
    path: web::Path<String>,
    query: Query<NotificationsQuery>,
) -> Result<HttpResponse, ApiError> {
    let hospital = hospital_from_path(&path)?;
    authorize(&auth.0, &hospital, Action::ReadEvents)?;
    // Every role is confined to its own notifications.
    let recipient = confine(&auth.0, Category::Notifications)?.unwrap_or(&auth.0.user);
    let (limit, offset) = page(query.limit, query.offset)?;
    let (mut tx, as_of) = snapshot(&state, MODEL, hospital.as_str(), query.min_position).await?;
    let notifications = notification_inbox::list(
        &mut tx,
        hospital.as_str(),
        recipient.as_str(),
        query.unread_only.unwrap_or(false),
        limit,
        offset,
    )
    .await
    .map_err(ApiError::database)?;
    let unread_count =
        notification_inbox::unread_count(&mut tx, hospital.as_str(), recipient.as_str())
            .await
            .map_err(ApiError::database)?;
    tx.commit().await.map_err(ApiError::database)?;
    Ok(HttpResponse::Ok().json(InboxPage {
        as_of,
        unread_count,
        notifications,
    }))
}
