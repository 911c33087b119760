//! Everything a session writes goes through its connection's one ordered writer, over a
//! bounded queue: a full queue means the client reads too slowly, and the connection is
//! closed at once (a slow consumer) rather than buffered without bound.

use std::time::Instant;

use actix::prelude::*;
use bytestring::ByteString;
use tokio::sync::mpsc;

use super::SessionActor;
use crate::metrics::Metrics;
use crate::realtime::protocol::{CloseReason, FrameId, ServerFrame};
use crate::realtime::writer::{Filter, WriterCommand};
use crate::realtime::Push;

impl SessionActor {
    pub(super) fn send(&mut self, command: WriterCommand, ctx: &mut Context<Self>) {
        // Counted before it is queued: the writer's direct lane stops writing events as soon
        // as a command waits, so no event overtakes a reply or a new filter.
        self.progress.command_sent();
        match self.writer.try_send(command) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                if !self.closing {
                    Metrics::inc(&self.rt.metrics.slow_consumer_disconnects);
                    self.kill(CloseReason::SlowConsumer, ctx);
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => ctx.stop(),
        }
    }

    pub(super) fn frame(&mut self, frame: ServerFrame, ctx: &mut Context<Self>) {
        self.send(WriterCommand::Frame(ByteString::from(frame.to_text())), ctx);
    }

    pub(super) fn error(
        &mut self,
        id: Option<FrameId>,
        code: &'static str,
        message: impl Into<String>,
        ctx: &mut Context<Self>,
    ) {
        self.frame(ServerFrame::error(id, code, message), ctx);
    }

    /// An error frame for a limit violation; closes the connection on repeated abuse.
    pub(super) fn violation(
        &mut self,
        reason: CloseReason,
        frame: ServerFrame,
        ctx: &mut Context<Self>,
    ) {
        self.frame(frame, ctx);
        if self
            .violations
            .record(Instant::now(), self.rt.settings.max_violations)
        {
            self.close(reason, ctx);
        }
    }

    /// Closes after the frames already queued, with a `closing` frame stating why.
    pub(super) fn close(&mut self, reason: CloseReason, ctx: &mut Context<Self>) {
        if self.closing {
            return;
        }
        self.closing = true;
        tracing::debug!(
            session = self.id,
            reason = reason.as_str(),
            "closing connection"
        );
        self.progress.command_sent();
        if self.writer.try_send(WriterCommand::Close(reason)).is_err() {
            let _ = self.kill.send(Some(reason));
        }
        // If the peer never completes the close, stop anyway.
        ctx.run_later(crate::realtime::writer::CLOSE_TIMEOUT * 2, |_, ctx| {
            ctx.stop()
        });
    }

    /// Closes at once, interrupting a blocked write.
    pub(super) fn kill(&mut self, reason: CloseReason, ctx: &mut Context<Self>) {
        self.closing = true;
        let _ = self.kill.send(Some(reason));
        ctx.run_later(crate::realtime::writer::CLOSE_TIMEOUT * 2, |_, ctx| {
            ctx.stop()
        });
    }

    pub(super) fn filter(&self) -> Option<Filter> {
        let identity = self.identity.as_ref()?;
        Some(Filter {
            topics: self.subscriptions.clone(),
            user: identity.user.clone(),
            role: identity.role,
        })
    }
}

impl Handler<Push> for SessionActor {
    type Result = ();

    fn handle(&mut self, msg: Push, ctx: &mut Self::Context) {
        if !self.closing {
            self.frame(msg.frame, ctx);
        }
    }
}
