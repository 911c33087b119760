//! Frames from the socket: control frames, the frame size and rate limits, parsing, and
//! dispatch by kind to the file that handles it.

use std::time::Instant;

use actix::prelude::*;
use actix_ws::Message as WsMessage;

use super::SessionActor;
use crate::metrics::Metrics;
use crate::realtime::assemble::Failure;
use crate::realtime::presence::{self, ViewTarget};
use crate::realtime::protocol::{parse_client_frame, ClientFrame, CloseReason, ServerFrame};
use crate::realtime::writer::WriterCommand;

impl SessionActor {
    pub(super) fn on_text(&mut self, text: &str, ctx: &mut Context<Self>) {
        if self.closing {
            return;
        }
        let now = Instant::now();
        if text.len() > self.rt.settings.max_frame_bytes {
            let frame = ServerFrame::error(
                None,
                "frame_too_large",
                format!(
                    "frames are limited to {} bytes",
                    self.rt.settings.max_frame_bytes
                ),
            );
            return self.violation(CloseReason::PolicyViolation, frame, ctx);
        }
        if let Err(wait) = self.limiter.try_take(now) {
            Metrics::inc(&self.rt.metrics.rate_limit_hits);
            let frame = ServerFrame::error(
                None,
                "rate_limited",
                format!("too many frames; retry in {} ms", wait.as_millis().max(1)),
            );
            return self.violation(CloseReason::RateLimited, frame, ctx);
        }
        match parse_client_frame(text) {
            Ok(frame) => self.dispatch(frame, ctx),
            Err(error) => self.violation(CloseReason::PolicyViolation, error, ctx),
        }
    }

    pub(super) fn dispatch(&mut self, frame: ClientFrame, ctx: &mut Context<Self>) {
        if let ClientFrame::Auth { id, token } = frame {
            return self.auth(id, &token, ctx);
        }
        let Some(identity) = self.identity.clone() else {
            return self.error(
                frame.id().cloned(),
                "not_authenticated",
                "send an `auth` frame first",
                ctx,
            );
        };
        match frame {
            ClientFrame::Auth { .. } => {}
            ClientFrame::Ping { id } => self.frame(ServerFrame::Pong { id }, ctx),
            ClientFrame::Subscribe {
                id,
                topics,
                last_event_id,
                epoch,
            } => self.subscribe(id, topics, last_event_id.map(|l| l.0), epoch, ctx),
            ClientFrame::Unsubscribe { id, topics } => self.unsubscribe(id, topics, ctx),
            ClientFrame::Typing { id, case } => self.typing(&identity, id, case, ctx),
            ClientFrame::View { id, target } | ClientFrame::Unview { id, target }
                if target.parse::<ViewTarget>().is_err() =>
            {
                self.error(
                    id,
                    "invalid_target",
                    format!(
                        "`{}` is not `case:<uuid>` or `patient:<id>`",
                        target.chars().take(80).collect::<String>()
                    ),
                    ctx,
                )
            }
            ClientFrame::View { id, target } => {
                if let Ok(target) = target.parse::<ViewTarget>() {
                    self.view(&identity, id, target, ctx);
                }
            }
            ClientFrame::Unview { target, .. } => {
                if let Ok(target) = target.parse::<ViewTarget>() {
                    self.unview(target);
                }
            }
            ClientFrame::Refresh { id, token } => self.refresh(&identity, id, &token, ctx),
        }
    }
}

/// Whole messages from the socket: fragments arrive reassembled (a `Continuation` never
/// does), and a frame sequence that breaks RFC 6455 arrives as the [`Failure`] whose close
/// code ends the connection.
impl StreamHandler<Result<WsMessage, Failure>> for SessionActor {
    fn handle(&mut self, item: Result<WsMessage, Failure>, ctx: &mut Self::Context) {
        self.last_seen = Instant::now();
        match item {
            Ok(WsMessage::Text(text)) => self.on_text(&text, ctx),
            Ok(WsMessage::Ping(payload)) => self.send(WriterCommand::Pong(payload), ctx),
            Ok(WsMessage::Pong(_)) => {
                if self.identity.is_some() {
                    self.rt
                        .presence
                        .do_send(presence::Touch { session: self.id });
                }
            }
            Ok(WsMessage::Binary(_)) | Ok(WsMessage::Continuation(_)) => {
                let frame = ServerFrame::error(
                    None,
                    "unsupported_frame",
                    "only JSON text frames are accepted",
                );
                self.violation(CloseReason::PolicyViolation, frame, ctx);
            }
            Ok(WsMessage::Close(_)) => ctx.stop(),
            Ok(WsMessage::Nop) => {}
            Err(failure) => {
                tracing::debug!(session = self.id, %failure, "websocket protocol error");
                self.kill(failure.reason(), ctx);
            }
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
