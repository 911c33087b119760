//! `GET /api/hospitals/{hospital}/ws`: the WebSocket endpoint.
//!
//! The token comes from the `Authorization: Bearer` header, or — because browsers cannot
//! set headers on a WebSocket — from a first `auth` frame. Tokens are never accepted in the
//! URL (URLs end up in logs).

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use actix::{Actor, AsyncContext};
use actix_codec::Encoder;
use actix_http::ws::{handshake, Codec, Message};
use actix_web::body::{BodyStream, MessageBody};
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use futures_util::Stream;
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

/// Most encoded bytes a connection's writer queues before it waits for the connection to
/// take them: with actix-http's own write buffer, what one connection can hold in memory.
pub const OUTGOING_HIGH_WATER: usize = 64 * 1024;

/// Frames encoded by the writer and not yet taken by the connection.
struct Outgoing {
    buf: BytesMut,
    codec: Codec,
    /// The writer, waiting for the connection to take `buf`.
    waiting: Option<Waker>,
}

/// Writes to a WebSocket: encodes frames into the buffer its [`WriterBody`] hands to the
/// connection.
pub struct WsSink {
    out: Rc<RefCell<Outgoing>>,
}

impl WsSink {
    /// Waits until the connection has taken enough of what is queued.
    async fn room(&self) {
        std::future::poll_fn(|cx| {
            let mut out = self.out.borrow_mut();
            if out.buf.len() < OUTGOING_HIGH_WATER {
                Poll::Ready(())
            } else {
                out.waiting = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }

    async fn write(&mut self, message: Message) -> Result<(), Closed> {
        self.room().await;
        let mut out = self.out.borrow_mut();
        let Outgoing { buf, codec, .. } = &mut *out;
        codec.encode(message, buf).map_err(|_| Closed)
    }
}

impl Sink for WsSink {
    async fn send(&mut self, frame: ByteString) -> Result<(), Closed> {
        self.write(Message::Text(frame)).await
    }

    async fn send_event(&mut self, event: &WindowEvent) -> Result<(), Closed> {
        self.write(Message::Text(event.frame.clone())).await
    }

    async fn ping(&mut self) -> Result<(), Closed> {
        self.write(Message::Ping(Bytes::new())).await
    }

    async fn pong(&mut self, payload: Bytes) -> Result<(), Closed> {
        // A control frame carries at most 125 bytes.
        let payload = payload.slice(..payload.len().min(125));
        self.write(Message::Pong(payload)).await
    }

    async fn close(mut self, reason: Option<CloseReason>) {
        let close = match reason {
            Some(reason) => {
                let _ = self.write(Message::Text(closing_frame(reason))).await;
                Some(actix_ws::CloseReason {
                    code: reason.code().into(),
                    description: Some(reason.as_str().to_owned()),
                })
            }
            None => None,
        };
        let _ = self.write(Message::Close(close)).await;
    }
}

/// The WebSocket response body, which *is* the connection's writer: actix-http polls it when
/// the connection can take more bytes, and each poll runs the writer (a cursor over the
/// hospital's stream, see [`writer`]) until it waits, then hands over every frame it encoded
/// as one chunk — one `write` for all the events pending, no task or channel between the
/// stream and the socket. The writer's waits (the hospital's head, its commands, the kill
/// signals, room in the buffer) wake the connection's own task.
struct WriterBody {
    writer: Option<Pin<Box<dyn Future<Output = ()>>>>,
    out: Rc<RefCell<Outgoing>>,
}

impl Stream for WriterBody {
    type Item = Result<Bytes, std::convert::Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(writer) = self.writer.as_mut() {
            if writer.as_mut().poll(cx).is_ready() {
                // The writer closed the connection (its close frame is in the buffer).
                self.writer = None;
            }
        }
        let mut out = self.out.borrow_mut();
        if !out.buf.is_empty() {
            let chunk = out.buf.split().freeze();
            if let Some(writer) = out.waiting.take() {
                writer.wake();
            }
            return Poll::Ready(Some(Ok(chunk)));
        }
        if self.writer.is_none() {
            return Poll::Ready(None);
        }
        Poll::Pending
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
    // actix-ws parses what the client sends; what the server sends is the writer's own body
    // (below), so actix-ws's response and session are not used.
    let (_, _, stream) = actix_ws::handle(&req, body).map_err(|e| ApiError::BadRequest {
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
    let out = Rc::new(RefCell::new(Outgoing {
        buf: BytesMut::new(),
        codec: Codec::new(),
        waiting: None,
    }));
    let sink = WsSink { out: out.clone() };
    let body = WriterBody {
        writer: Some(Box::pin(writer::run(sink, receiver, context))),
        out,
    };
    let response: HttpResponse = handshake(req.head())
        .map_err(|e| ApiError::BadRequest {
            code: "websocket_upgrade_required",
            detail: format!("this endpoint speaks WebSocket: {e}"),
            field: None,
        })?
        .message_body(BodyStream::new(body).boxed())
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .into();
    SessionActor::create(move |ctx| {
        ctx.add_stream(stream);
        SessionActor::new(hospital, rt, identity, commands, kill, progress)
    });
    Ok(response)
}
