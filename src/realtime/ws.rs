//! `GET /api/hospitals/{hospital}/ws`: the WebSocket endpoint.
//!
//! The token comes from the `Authorization: Bearer` header, or — because browsers cannot
//! set headers on a WebSocket — from a first `auth` frame. Tokens are never accepted in the
//! URL (URLs end up in logs).

use std::sync::Arc;

use actix::{Actor, AsyncContext};
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use bytestring::ByteString;
use tokio::sync::{mpsc, watch};

use super::hospital::SessionProgress;
use super::protocol::CloseReason;
use super::session::SessionActor;
use super::window::WindowEvent;
use super::writer::{self, closing_frame, Closed, Sink, WriterContext, COMMAND_QUEUE};
use crate::auth::Action;
use crate::http::commands::authorize;
use crate::http::extract::{bearer_token, hospital_from_path};
use crate::http::problem::ApiError;
use crate::http::AppState;

/// Frames above this size are a protocol error that closes the connection (1009); frames
/// between the configured limit and this one get an error frame and the connection stays.
pub fn hard_frame_limit(soft: usize) -> usize {
    soft.saturating_mul(8).max(64 * 1024)
}

/// Writes to a WebSocket.
pub struct WsSink {
    session: actix_ws::Session,
}

impl Sink for WsSink {
    async fn send(&mut self, frame: ByteString) -> Result<(), Closed> {
        self.session.text(frame).await.map_err(|_| Closed)
    }

    async fn send_event(&mut self, event: &WindowEvent) -> Result<(), Closed> {
        self.session
            .text(event.frame.clone())
            .await
            .map_err(|_| Closed)
    }

    async fn ping(&mut self) -> Result<(), Closed> {
        self.session.ping(b"").await.map_err(|_| Closed)
    }

    async fn pong(&mut self, payload: Bytes) -> Result<(), Closed> {
        self.session.pong(&payload).await.map_err(|_| Closed)
    }

    async fn close(mut self, reason: Option<CloseReason>) {
        match reason {
            Some(reason) => {
                let _ = self.session.text(closing_frame(reason)).await;
                let _ = self
                    .session
                    .close(Some(actix_ws::CloseReason {
                        code: reason.code().into(),
                        description: Some(reason.as_str().to_owned()),
                    }))
                    .await;
            }
            None => {
                let _ = self.session.close(None).await;
            }
        }
    }
}

/// Upgrades to a WebSocket and starts the connection's session actor and writer.
pub async fn connect(
    req: HttpRequest,
    body: web::Payload,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let hospital = hospital_from_path(&path)?;
    let rt = state.realtime.clone();
    let identity = match bearer_token(&req) {
        Some(token) => {
            let identity = rt.keys.verify(token)?;
            authorize(&identity, &hospital, Action::ReadEvents)?;
            Some(identity)
        }
        None => None,
    };
    let (response, session, stream) =
        actix_ws::handle(&req, body).map_err(|e| ApiError::BadRequest {
            code: "websocket_upgrade_required",
            detail: format!("this endpoint speaks WebSocket: {e}"),
            field: None,
        })?;
    let stream = stream.max_frame_size(hard_frame_limit(rt.settings.max_frame_bytes));
    let (commands, receiver) = mpsc::channel(COMMAND_QUEUE);
    let (kill, kill_receiver) = watch::channel(None);
    let progress = Arc::new(SessionProgress::default());
    let context = WriterContext {
        pool: rt.pool.clone(),
        progress: progress.clone(),
        metrics: rt.metrics.clone(),
        kill: kill_receiver,
        shutdown: rt.shutdown.clone(),
    };
    actix_web::rt::spawn(writer::run(WsSink { session }, receiver, context));
    SessionActor::create(move |ctx| {
        ctx.add_stream(stream);
        SessionActor::new(hospital, rt, identity, commands, kill, progress)
    });
    Ok(response)
}
