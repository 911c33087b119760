//! `typing`, `view` and `unview`: the session's side of presence, throttled and confined by
//! the same role and case rules as subscriptions before the presence hub hears of them.

use std::time::Instant;

use actix::prelude::*;
use uuid::Uuid;

use super::SessionActor;
use crate::access::topics::may_subscribe;
use crate::auth::Identity;
use crate::realtime::presence::{self, ViewTarget};
use crate::realtime::protocol::{CloseReason, FrameId, ServerFrame};
use crate::realtime::topics::Topic;

impl SessionActor {
    /// `typing`: throttled per case, then confined by the case rule before it is announced.
    pub(super) fn typing(
        &mut self,
        identity: &Identity,
        id: Option<FrameId>,
        case: Uuid,
        ctx: &mut Context<Self>,
    ) {
        if !may_subscribe(identity.role, &Topic::Case(case)) {
            return self.error(
                id,
                "forbidden_topic",
                "your role may not follow case threads",
                ctx,
            );
        }
        let now = Instant::now();
        let throttle = self.rt.settings.typing_throttle;
        if self
            .typing_sent
            .get(&case)
            .is_some_and(|t| now.saturating_duration_since(*t) < throttle)
        {
            let frame = ServerFrame::error(
                id,
                "typing_throttled",
                format!(
                    "send `typing` at most once every {} ms per case",
                    throttle.as_millis()
                ),
            );
            return self.violation(CloseReason::RateLimited, frame, ctx);
        }
        if self.typing_sent.len() > self.rt.settings.max_subscriptions {
            self.typing_sent
                .retain(|_, t| now.saturating_duration_since(*t) < throttle);
        }
        // Throttled before the entitlement check, so typing cannot flood the log.
        self.typing_sent.insert(case, now);
        self.with_cases(identity, id, vec![case], ctx, move |act, _, _| {
            act.rt.presence.do_send(presence::Typing {
                session: act.id,
                case,
            });
        });
    }

    /// `view`: the "currently viewing" soft lock, confined like a subscription.
    pub(super) fn view(
        &mut self,
        identity: &Identity,
        id: Option<FrameId>,
        target: ViewTarget,
        ctx: &mut Context<Self>,
    ) {
        if !may_subscribe(identity.role, &view_topic(&target)) {
            return self.error(
                id,
                "forbidden_topic",
                format!("your role may not view `{target}`"),
                ctx,
            );
        }
        if !self.views.contains(&target) && self.views.len() >= self.rt.settings.max_subscriptions {
            let frame = ServerFrame::error(id, "too_many_views", "release a view first");
            return self.violation(CloseReason::PolicyViolation, frame, ctx);
        }
        let cases = match &target {
            ViewTarget::Case(case) => vec![*case],
            ViewTarget::Patient(_) => vec![],
        };
        self.with_cases(identity, id, cases, ctx, move |act, _, _| {
            act.views.insert(target.clone());
            act.rt.presence.do_send(presence::View {
                session: act.id,
                target,
            });
        });
    }

    /// `unview`: releases a view this connection holds.
    pub(super) fn unview(&mut self, target: ViewTarget) {
        if self.views.remove(&target) {
            self.rt.presence.do_send(presence::Unview {
                session: self.id,
                target,
            });
        }
    }
}

fn view_topic(target: &ViewTarget) -> Topic {
    match target {
        ViewTarget::Case(id) => Topic::Case(*id),
        ViewTarget::Patient(p) => Topic::Patient(p.clone()),
    }
}
