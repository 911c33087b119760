//! `GET /api/hospitals/{hospital}/events?after=N&limit=M`: the hospital's stream, in order,
//! filtered by entitlement. The polling fallback for clients and the reference read that
//! the realtime transports mirror.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::extract::{hospital_from_path, Authenticated, Query};
use super::problem::ApiError;
use super::responses::ReadErrors;
use super::AppState;
use crate::access::authorize;
use crate::access::entitlement::{may_see, Viewer};
use crate::access::Action;
use crate::config::{DEFAULT_EVENTS_PAGE, MAX_EVENTS_PAGE};
use crate::stream::read::{head, read_after, ReadError};
use crate::stream::{EventMetadata, Position, StreamEvent};

/// Query of the events endpoint.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Return events with a position greater than this (default 0: from the start).
    #[param(minimum = 0)]
    pub after: Option<i64>,
    /// Largest number of stream positions to scan (1..1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

/// One event on the wire.
#[derive(Debug, Serialize, ToSchema)]
pub struct WireEvent {
    /// The position as a string: what a client sends back as its last-event-id.
    pub id: String,
    /// Position in the hospital's stream.
    pub position: Position,
    /// Event name, e.g. `AlertRaised`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// `alert`, `case_thread`, `patient_vitals`, `appointment` or `notification`.
    pub aggregate_type: String,
    /// The aggregate's id.
    pub aggregate_id: String,
    /// The aggregate's version after this event.
    pub sequence: i64,
    /// The event's fields.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
    /// Who did it and why.
    #[schema(value_type = Object)]
    pub metadata: EventMetadata,
    /// When it was written (RFC 3339).
    pub ts: chrono::DateTime<chrono::Utc>,
}

impl From<StreamEvent> for WireEvent {
    fn from(e: StreamEvent) -> Self {
        Self {
            id: e.position.to_string(),
            position: e.position,
            event_type: e.event_type,
            aggregate_type: e.aggregate_type,
            aggregate_id: e.aggregate_id,
            sequence: e.sequence,
            data: e.data,
            metadata: e.metadata,
            ts: e.recorded_at,
        }
    }
}

/// A page of the stream.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventsPage {
    /// The events you may see, in position order.
    pub events: Vec<WireEvent>,
    /// Pass as `after` for the next page. It advances past events you may not see, so
    /// filtered positions are never re-scanned.
    pub next_after: Position,
    /// The stream's last position when this page was read.
    pub head: Position,
    /// The stream's epoch; if it changes, positions you hold belong to another history.
    pub epoch: Option<Uuid>,
}

/// Read the hospital's event stream after a position.
#[utoipa::path(get, path = "/api/hospitals/{hospital}/events", tag = "events",
    params(("hospital" = String, Path, description = "Hospital id"), EventsQuery),
    responses((status = 200, description = "Events in order", body = EventsPage), ReadErrors),
    security(("bearer" = [])))]
#[tracing::instrument(name = "read_events", skip_all, fields(hospital = %path, user = %auth.0.user))]
pub async fn list(
    state: web::Data<AppState>,
    auth: Authenticated,
    path: web::Path<String>,
    query: Query<EventsQuery>,
) -> Result<HttpResponse, ApiError> {
    let identity = &auth.0;
    let hospital = hospital_from_path(&path)?;
    authorize(identity, &hospital, Action::ReadEvents)?;
    let after = query.after.unwrap_or(0);
    if after < 0 {
        return Err(ApiError::invalid_field(
            "after",
            "`after` must be 0 or more",
        ));
    }
    let limit = query.limit.unwrap_or(DEFAULT_EVENTS_PAGE);
    if !(1..=MAX_EVENTS_PAGE).contains(&limit) {
        return Err(ApiError::invalid_field(
            "limit",
            format!("`limit` must be between 1 and {MAX_EVENTS_PAGE}"),
        ));
    }
    // The head is read after the events, so it is never behind the page returned.
    let events = read_after(&state.pool, &hospital, after, limit)
        .await
        .map_err(|e| match e {
            ReadError::Database(e) => ApiError::database(e),
            corrupt => ApiError::Internal(corrupt.to_string()),
        })?;
    let stream_head = head(&state.pool, &hospital)
        .await
        .map_err(ApiError::database)?;
    let next_after = events.last().map(|e| e.position).unwrap_or(after);
    let viewer = Viewer {
        user: &identity.user,
        role: identity.role,
    };
    let visible = events
        .into_iter()
        .filter(|e| may_see(viewer, e))
        .map(WireEvent::from)
        .collect();
    Ok(HttpResponse::Ok().json(EventsPage {
        events: visible,
        next_after,
        head: stream_head.position.max(next_after),
        epoch: stream_head.epoch,
    }))
}
