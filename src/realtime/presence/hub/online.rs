//! Who is online: the snapshot of each hospital watched here, read from PostgreSQL (one
//! read in flight per hospital, debounced after the first) and pushed to its watchers when
//! it changes; and the per-role count for metrics.

use std::collections::HashMap;
use std::time::Duration;

use actix::{ActorFutureExt, AsyncContext, Context, Handler, ResponseFuture, WrapFuture};
use aggregates::types::{HospitalId, Role};

use super::PresenceHub;
use crate::realtime::presence::state::{count_by_role, presence_entries, OnlineUser};
use crate::realtime::presence::store;
use crate::realtime::presence::{OnlineByRole, PRESENCE_DEBOUNCE};
use crate::realtime::protocol::ServerFrame;
use crate::realtime::{Push, SessionId};

impl PresenceHub {
    pub(super) fn watch_presence(
        &mut self,
        hospital: HospitalId,
        session: SessionId,
        ctx: &mut Context<Self>,
    ) {
        let entry = self.presence.entry(hospital.clone()).or_default();
        entry.watchers.insert(session);
        match &entry.snapshot {
            // Kept current by notifications while anyone here watches.
            Some(snapshot) => {
                let frame = ServerFrame::Presence {
                    online: snapshot.clone(),
                };
                if let Some(s) = self.sessions.get(&session) {
                    s.recipient.do_send(Push { frame });
                }
            }
            None => {
                entry.awaiting_first.insert(session);
                self.fetch_presence(&hospital, ctx);
            }
        }
    }

    pub(super) fn unwatch_presence(&mut self, hospital: &HospitalId, session: SessionId) {
        if let Some(entry) = self.presence.get_mut(hospital) {
            entry.watchers.remove(&session);
            entry.awaiting_first.remove(&session);
            if entry.watchers.is_empty() {
                // Without watchers nothing keeps the snapshot current: forget it.
                self.presence.remove(hospital);
            }
        }
    }

    /// Reads the hospital's presence (one read in flight per hospital, after
    /// [`PRESENCE_DEBOUNCE`] unless it is the first) if anyone here watches it.
    pub(super) fn fetch_presence(&mut self, hospital: &HospitalId, ctx: &mut Context<Self>) {
        let Some(entry) = self.presence.get_mut(hospital) else {
            return;
        };
        if entry.fetching.is_some() {
            entry.again = true;
            return;
        }
        self.last_fetch += 1;
        let fetch = self.last_fetch;
        entry.fetching = Some(fetch);
        let (pool, timeout, h) = (
            self.pool.clone(),
            self.settings.node_timeout,
            hospital.clone(),
        );
        // The first read serves new watchers: no reason to wait. Later ones follow changes,
        // which come in bursts.
        let debounce = if entry.snapshot.is_some() {
            PRESENCE_DEBOUNCE
        } else {
            Duration::ZERO
        };
        let read = async move {
            tokio::time::sleep(debounce).await;
            store::online(&pool, &h, timeout).await
        };
        let hospital = hospital.clone();
        ctx.spawn(
            read.into_actor(self)
                .map(move |result, act, ctx| act.presence_fetched(hospital, fetch, result, ctx)),
        );
    }

    pub(super) fn presence_fetched(
        &mut self,
        hospital: HospitalId,
        fetch: u64,
        result: Result<Vec<OnlineUser>, sqlx::Error>,
        ctx: &mut Context<Self>,
    ) {
        let Some(entry) = self.presence.get_mut(&hospital) else {
            return;
        };
        if entry.fetching != Some(fetch) {
            return;
        }
        entry.fetching = None;
        let online = match result {
            Ok(online) => presence_entries(&online),
            Err(error) => {
                tracing::warn!(%error, %hospital, "cannot read presence; retrying");
                entry.again = false;
                let retry = self.settings.node_heartbeat;
                ctx.run_later(retry, move |act, ctx| act.fetch_presence(&hospital, ctx));
                return;
            }
        };
        let changed = entry.snapshot.as_ref() != Some(&online);
        let recipients: Vec<SessionId> = if changed {
            entry.watchers.iter().copied().collect()
        } else {
            entry.awaiting_first.iter().copied().collect()
        };
        entry.awaiting_first.clear();
        entry.snapshot = Some(online.clone());
        let again = std::mem::take(&mut entry.again);
        for session in recipients {
            if let Some(s) = self.sessions.get(&session) {
                s.recipient.do_send(Push {
                    frame: ServerFrame::Presence {
                        online: online.clone(),
                    },
                });
            }
        }
        if again {
            self.fetch_presence(&hospital, ctx);
        }
    }
}

impl Handler<OnlineByRole> for PresenceHub {
    type Result = ResponseFuture<Result<HashMap<Role, u32>, sqlx::Error>>;

    fn handle(&mut self, msg: OnlineByRole, _: &mut Context<Self>) -> Self::Result {
        let (pool, timeout) = (self.pool.clone(), self.settings.node_timeout);
        Box::pin(async move {
            let online = store::online(&pool, &msg.hospital, timeout).await?;
            Ok(count_by_role(&online))
        })
    }
}
