//! The actor's life: on start the authentication deadline, the idle timer (a connection that
//! never subscribes), the heartbeat and the case re-check; on stop it leaves its hospital's
//! reader and the presence hub. A `Kick` (a slot taken back) ends it at once.

use std::time::Instant;

use actix::prelude::*;

use super::cases::CASE_RECHECK_INTERVAL;
use super::limits::{heartbeat, Heartbeat};
use super::SessionActor;
use crate::metrics::Metrics;
use crate::realtime::hospital::{Kick, Leave};
use crate::realtime::presence;
use crate::realtime::protocol::CloseReason;
use crate::realtime::writer::WriterCommand;

impl Actor for SessionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        Metrics::inc(&self.rt.metrics.ws_connections);
        // `debug` until authenticated: anyone can open connections without credentials, and
        // the log must not be a way to fill the disk (`admitted` logs at `info`).
        tracing::debug!(session = self.id, hospital = %self.hospital, authenticated = self.identity.is_some(), "websocket connected");
        let settings = self.rt.settings.clone();
        match self.identity.take() {
            Some(identity) => self.authenticated(identity, None, ctx),
            None => {
                ctx.run_later(settings.auth_timeout, |act, ctx| {
                    if act.identity.is_none() {
                        act.error(
                            None,
                            "authentication_timeout",
                            "no `auth` frame in time",
                            ctx,
                        );
                        act.close(CloseReason::AuthenticationFailed, ctx);
                    }
                });
            }
        }
        self.idle_timer = Some(ctx.run_later(settings.idle_timeout, |act, ctx| {
            if !act.ever_subscribed {
                act.close(CloseReason::Idle, ctx);
            }
        }));
        ctx.run_interval(CASE_RECHECK_INTERVAL, |act, ctx| act.recheck_cases(ctx));
        ctx.run_interval(settings.heartbeat, move |act, ctx| {
            match heartbeat(act.last_seen, Instant::now(), settings.heartbeat) {
                Heartbeat::Ping => act.send(WriterCommand::Ping, ctx),
                Heartbeat::TimedOut => act.kill(CloseReason::HeartbeatTimeout, ctx),
            }
        });
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        Metrics::dec(&self.rt.metrics.ws_connections);
        if self.slot.is_some() {
            tracing::info!(session = self.id, hospital = %self.hospital, "websocket closed");
        } else {
            tracing::debug!(session = self.id, hospital = %self.hospital, "websocket closed before admission");
        }
        for _ in 0..self.subscriptions.len() {
            Metrics::dec(&self.rt.metrics.subscriptions);
        }
        if let Some(addr) = &self.hospital_actor {
            addr.do_send(Leave { session: self.id });
        }
        if self.identity.is_some() {
            self.rt
                .presence
                .do_send(presence::Disconnect { session: self.id });
        }
        self.slot = None;
    }
}

impl Handler<Kick> for SessionActor {
    type Result = ();

    fn handle(&mut self, msg: Kick, ctx: &mut Self::Context) {
        self.kill(msg.reason, ctx);
    }
}
