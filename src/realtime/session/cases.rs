//! Case entitlement inside a connection: a frame naming cases (a `case:<id>` subscription,
//! `typing`, `view`) waits for the log to say they are the user's, and a field worker's
//! connection re-checks the cases it follows, dropping those reassigned away from them.

use std::collections::BTreeSet;
use std::time::Duration;

use actix::prelude::*;
use uuid::Uuid;

use super::subscribe::watch_topic;
use super::SessionActor;
use crate::access::entitlement::{case_access, depends_on_the_case, Viewer};
use crate::auth::Identity;
use crate::metrics::Metrics;
use crate::realtime::presence::{self, ViewTarget};
use crate::realtime::protocol::FrameId;
use crate::realtime::topics::Topic;
use crate::realtime::writer::WriterCommand;

/// How long a session waits for the log to say whether a case is the user's (subscribing to
/// `case:<id>`, `typing`, `view`) before answering `unavailable`. The session handles
/// nothing else meanwhile (so a `view` and the `unview` after it stay in order); the
/// connection's events keep flowing, as its writer reads the stream itself.
pub const CASE_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// How often a field worker's connection re-checks the cases it follows (its `case:<id>`
/// topics and case views) against their current assignee: a case reassigned away from them
/// is dropped from the connection (unsubscribed, unviewed, with a `case_not_found` error
/// frame) within this time. Their stream events stop at once regardless (each is filtered by
/// `may_see`); this bounds how long they still see, and appear in, the case's typing and
/// viewing. One indexed query per followed case per interval, and only for field workers.
pub const CASE_RECHECK_INTERVAL: Duration = Duration::from_secs(5);

/// What the log said about the cases a frame names.
enum CaseCheck {
    /// The user may touch every one of them.
    Granted,
    /// The user may not touch this one (or it does not exist: the same answer).
    Refused(Uuid),
    /// The log could not be read in time.
    Unavailable,
}

impl SessionActor {
    /// Runs `then` once the log confirms that the user may touch every case in `cases`
    /// (`access::entitlement::case_access`, the rule every path shares); otherwise answers
    /// `case_not_found` — the same for a case assigned to someone else as for one that does
    /// not exist — or `unavailable`. Without cases, `then` runs at once. Nothing else is
    /// handled while the log is asked, so frames keep their order.
    pub(super) fn with_cases(
        &mut self,
        identity: &Identity,
        id: Option<FrameId>,
        cases: Vec<Uuid>,
        ctx: &mut Context<Self>,
        then: impl FnOnce(&mut Self, Option<FrameId>, &mut Context<Self>) + 'static,
    ) {
        if cases.is_empty() {
            return then(self, id, ctx);
        }
        let pool = self.rt.pool.clone();
        let (user, role, hospital) = (
            identity.user.clone(),
            identity.role,
            identity.hospital.clone(),
        );
        let check = async move {
            let viewer = Viewer { user: &user, role };
            for case in cases {
                let granted = tokio::time::timeout(
                    CASE_CHECK_TIMEOUT,
                    case_access(&pool, viewer, &hospital, &case),
                )
                .await;
                match granted {
                    Ok(Ok(true)) => {}
                    Ok(Ok(false)) => return CaseCheck::Refused(case),
                    Ok(Err(error)) => {
                        tracing::debug!(%error, "cannot check a case's assignee");
                        return CaseCheck::Unavailable;
                    }
                    Err(_) => return CaseCheck::Unavailable,
                }
            }
            CaseCheck::Granted
        };
        ctx.wait(check.into_actor(self).map(move |check, act, ctx| {
            if act.closing {
                return;
            }
            match check {
                CaseCheck::Granted => then(act, id, ctx),
                CaseCheck::Refused(case) => {
                    act.error(id, "case_not_found", format!("no case `{case}`"), ctx)
                }
                CaseCheck::Unavailable => {
                    act.error(id, "unavailable", "cannot check the case now; retry", ctx)
                }
            }
        }));
    }

    /// Re-checks the cases a field worker's connection follows ([`CASE_RECHECK_INTERVAL`]),
    /// dropping those no longer theirs. Runs beside other frames (nothing waits for it).
    pub(super) fn recheck_cases(&mut self, ctx: &mut Context<Self>) {
        let Some(identity) = self.identity.clone() else {
            return;
        };
        if self.closing || !depends_on_the_case(identity.role) {
            return;
        }
        let mut cases: BTreeSet<Uuid> = self
            .subscriptions
            .topics()
            .filter_map(|t| match t {
                Topic::Case(case) => Some(*case),
                _ => None,
            })
            .collect();
        cases.extend(self.views.iter().filter_map(|v| match v {
            ViewTarget::Case(case) => Some(*case),
            ViewTarget::Patient(_) => None,
        }));
        if cases.is_empty() {
            return;
        }
        let pool = self.rt.pool.clone();
        let check = async move {
            let viewer = Viewer {
                user: &identity.user,
                role: identity.role,
            };
            let mut refused = Vec::new();
            for case in cases {
                let granted = tokio::time::timeout(
                    CASE_CHECK_TIMEOUT,
                    case_access(&pool, viewer, &identity.hospital, &case),
                )
                .await;
                // Only a definite refusal revokes: an unreachable database is not a reason
                // to drop a worker's own case (the next round checks again).
                if let Ok(Ok(false)) = granted {
                    refused.push(case);
                }
            }
            refused
        };
        ctx.spawn(check.into_actor(self).map(|refused, act, ctx| {
            for case in refused {
                act.revoke_case(case, ctx);
            }
        }));
    }

    /// Drops everything the connection follows of `case`: its topic, its view, its typing
    /// throttle; tells the client why.
    pub(super) fn revoke_case(&mut self, case: Uuid, ctx: &mut Context<Self>) {
        if self.closing {
            return;
        }
        let topic = Topic::Case(case);
        let mut dropped = false;
        if self.subscriptions.contains(&topic) {
            dropped = true;
            Metrics::dec(&self.rt.metrics.subscriptions);
            self.subscriptions.remove([&topic]);
            if let Some(watch) = watch_topic(&topic) {
                self.rt.presence.do_send(presence::Watch {
                    session: self.id,
                    topic: watch,
                    on: false,
                });
            }
            if let Some(filter) = self.filter() {
                self.send(WriterCommand::Filter(Box::new(filter)), ctx);
            }
        }
        let target = ViewTarget::Case(case);
        if self.views.remove(&target) {
            dropped = true;
            self.rt.presence.do_send(presence::Unview {
                session: self.id,
                target,
            });
        }
        self.typing_sent.remove(&case);
        if dropped {
            self.error(
                None,
                "case_not_found",
                format!("case `{case}` is no longer assigned to you: no longer followed"),
                ctx,
            );
        }
    }
}
