//! Who the connection is: the `auth` frame (or the token that came with the upgrade),
//! admission under the per-user connection limit (across nodes), joining the hospital's
//! reader, the token's warning and expiry timers, and `refresh`.

use std::time::Duration;

use actix::prelude::*;
use chrono::{DateTime, Utc};

use super::SessionActor;
use crate::auth::Identity;
use crate::realtime::hospital::{ConnectionSlot, Join};
use crate::realtime::presence;
use crate::realtime::protocol::{CloseReason, FrameId, ServerFrame};
use crate::realtime::writer::WriterCommand;

impl SessionActor {
    /// `auth`: the first token of a connection that did not send one with the upgrade.
    pub(super) fn auth(&mut self, id: Option<FrameId>, token: &str, ctx: &mut Context<Self>) {
        if self.identity.is_some() {
            return self.error(
                id,
                "already_authenticated",
                "use `refresh` to replace the token",
                ctx,
            );
        }
        match self.rt.keys.verify(token) {
            Ok(identity) => self.authenticated(identity, id, ctx),
            Err(error) => {
                self.error(id, error.code(), error.to_string(), ctx);
                self.close(CloseReason::AuthenticationFailed, ctx);
            }
        }
    }

    pub(super) fn authenticated(
        &mut self,
        identity: Identity,
        id: Option<FrameId>,
        ctx: &mut Context<Self>,
    ) {
        if identity.hospital != self.hospital {
            self.error(
                id,
                "wrong_hospital",
                format!("the token is for hospital `{}`", identity.hospital),
                ctx,
            );
            self.close(CloseReason::AuthenticationFailed, ctx);
            return;
        }
        let Some(slot) = self
            .rt
            .directory
            .open_connection(&identity.hospital, &identity.user)
        else {
            self.too_many_connections(id, ctx);
            return;
        };
        match self.rt.cluster_admission(&slot) {
            None => self.admitted(identity, slot, id, ctx),
            // Nothing else is handled until the other nodes' count is known (a `subscribe`
            // pipelined behind `auth` waits for the admission).
            Some(check) => ctx.wait(check.into_actor(self).map(move |admitted, act, ctx| {
                if admitted {
                    act.admitted(identity, slot, id, ctx);
                } else {
                    drop(slot);
                    act.too_many_connections(id, ctx);
                }
            })),
        }
    }

    pub(super) fn too_many_connections(&mut self, id: Option<FrameId>, ctx: &mut Context<Self>) {
        self.error(
            id,
            "too_many_connections",
            format!(
                "at most {} connections per user",
                self.rt.settings.max_connections_per_user
            ),
            ctx,
        );
        self.close(CloseReason::TooManyConnections, ctx);
    }

    /// The connection is authenticated and within the per-user limit.
    pub(super) fn admitted(
        &mut self,
        identity: Identity,
        slot: ConnectionSlot,
        id: Option<FrameId>,
        ctx: &mut Context<Self>,
    ) {
        tracing::info!(session = self.id, hospital = %identity.hospital, user = %identity.user, role = identity.role.as_str(), "websocket admitted");
        self.slot = Some(slot);
        self.identity = Some(identity.clone());
        self.schedule_token_timers(ctx);
        self.join_hospital(ctx, 0);
        self.rt.presence.do_send(presence::Connect {
            session: self.id,
            hospital: identity.hospital.clone(),
            user: identity.user.clone(),
            role: identity.role,
            recipient: ctx.address().recipient(),
        });
        self.frame(
            ServerFrame::Authenticated {
                id,
                user: identity.user.to_string(),
                role: identity.role.as_str().to_owned(),
                hospital: identity.hospital.to_string(),
                expires_at: identity.expires_at,
            },
            ctx,
        );
    }

    /// Joins the hospital actor before handling any other message (so a `subscribe` right
    /// after `auth` finds the feed).
    pub(super) fn join_hospital(&mut self, ctx: &mut Context<Self>, attempt: u8) {
        let Some(identity) = self.identity.clone() else {
            return;
        };
        let addr = self.rt.directory.hospital(&self.hospital);
        let join = addr.send(Join {
            session: self.id,
            user: identity.user,
            progress: self.progress.clone(),
            kick: ctx.address().recipient(),
        });
        ctx.wait(
            join.into_actor(self)
                .map(move |result, act, ctx| match result {
                    Ok(feed) => {
                        act.feed = Some(feed);
                        act.hospital_actor = Some(addr);
                    }
                    // The actor stopped between lookup and join (its last session just left).
                    Err(_) if attempt < 3 => act.join_hospital(ctx, attempt + 1),
                    Err(_) => {
                        tracing::error!(session = act.id, "could not join the hospital reader");
                        act.kill(CloseReason::ServerShutdown, ctx);
                    }
                }),
        );
    }

    /// Arms the token's timer: a warning shortly before it expires, then the close at
    /// expiry. One timer at a time (the warning arms the expiry), as each costs memory for as
    /// long as the connection lives.
    pub(super) fn schedule_token_timers(&mut self, ctx: &mut Context<Self>) {
        if let Some(handle) = self.token_timer.take() {
            ctx.cancel_future(handle);
        }
        let Some(expires_at) = self.identity.as_ref().map(|i| i.expires_at) else {
            return;
        };
        let left = (expires_at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
        let warning = self.rt.settings.token_warning;
        if left > warning {
            self.token_timer = Some(ctx.run_later(left - warning, move |act, ctx| {
                let seconds_left = (expires_at - Utc::now()).num_seconds().max(0);
                act.frame(
                    ServerFrame::TokenExpiring {
                        expires_at,
                        seconds_left,
                    },
                    ctx,
                );
                act.arm_expiry(expires_at, ctx);
            }));
            return;
        }
        if !left.is_zero() {
            let seconds_left = left.as_secs() as i64;
            self.frame(
                ServerFrame::TokenExpiring {
                    expires_at,
                    seconds_left,
                },
                ctx,
            );
        }
        self.arm_expiry(expires_at, ctx);
    }

    /// Closes the connection when the token expires, unless it was refreshed by then.
    pub(super) fn arm_expiry(&mut self, expires_at: DateTime<Utc>, ctx: &mut Context<Self>) {
        let left = (expires_at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
        self.token_timer = Some(ctx.run_later(left, |act, ctx| {
            let expired = act
                .identity
                .as_ref()
                .is_none_or(|i| i.expires_at <= Utc::now());
            if expired {
                act.close(CloseReason::TokenExpired, ctx);
            }
        }));
    }

    /// `refresh`: a new token for the same user, hospital and role.
    pub(super) fn refresh(
        &mut self,
        identity: &Identity,
        id: Option<FrameId>,
        token: &str,
        ctx: &mut Context<Self>,
    ) {
        match self.rt.keys.verify(token) {
            // A refresh extends the connection's life, never what it may receive: the
            // subscriptions were authorized for this user, hospital and role, so a token
            // for another role is refused (either way: a downgrade must reconnect too).
            Ok(fresh)
                if fresh.user == identity.user
                    && fresh.hospital == identity.hospital
                    && fresh.role == identity.role =>
            {
                self.identity = Some(fresh.clone());
                self.schedule_token_timers(ctx);
                if let Some(filter) = self.filter() {
                    self.send(WriterCommand::Filter(Box::new(filter)), ctx);
                }
                self.frame(
                    ServerFrame::Authenticated {
                        id,
                        user: fresh.user.to_string(),
                        role: fresh.role.as_str().to_owned(),
                        hospital: fresh.hospital.to_string(),
                        expires_at: fresh.expires_at,
                    },
                    ctx,
                );
            }
            Ok(_) => self.error(
                id,
                "refresh_mismatch",
                "a refresh token must be for the same user, hospital and role; reconnect to change role",
                ctx,
            ),
            Err(error) => self.error(id, error.code(), error.to_string(), ctx),
                }
    }
}
