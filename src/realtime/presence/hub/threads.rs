//! The per-target actors ([`CaseThreadActor`]), one per (hospital, target) with watchers or
//! state on this node: created by the first change that needs one (within [`MAX_TARGETS`]),
//! and stopped once idle with every change sent to them handled.

use actix::{Actor, AsyncContext, Context, Handler};
use aggregates::types::HospitalId;

use super::{PresenceHub, ThreadHandle};
use crate::realtime::presence::thread::{
    CaseThreadActor, Change, ChangeKind, Idle, Stop, TargetKey,
};
use crate::realtime::presence::MAX_TARGETS;

impl PresenceHub {
    /// Sends `kind` to the target's actor, creating it if `create` (changes that only
    /// remove something never need a new actor).
    pub(super) fn send_thread(
        &mut self,
        key: TargetKey,
        kind: ChangeKind,
        create: bool,
        ctx: &mut Context<Self>,
    ) {
        let exists = self
            .threads
            .get(&key.hospital)
            .is_some_and(|t| t.contains_key(&key.target));
        if !exists {
            if !create {
                return;
            }
            if self.thread_count >= MAX_TARGETS {
                tracing::warn!(
                    max = MAX_TARGETS,
                    "too many presence targets on this node; ignoring a new one"
                );
                return;
            }
            let addr =
                CaseThreadActor::new(key.clone(), self.node, &self.settings, ctx.address()).start();
            self.threads
                .entry(key.hospital.clone())
                .or_default()
                .insert(key.target.clone(), ThreadHandle { addr, sent: 0 });
            self.thread_count += 1;
        }
        if let Some(handle) = self
            .threads
            .get_mut(&key.hospital)
            .and_then(|t| t.get_mut(&key.target))
        {
            handle.sent += 1;
            handle.addr.do_send(Change { kind });
        }
    }

    /// Sends a change to every target actor of `hospital` (or of every hospital).
    pub(super) fn send_all_threads(
        &mut self,
        hospital: Option<&HospitalId>,
        kind: impl Fn() -> ChangeKind,
    ) {
        let handles: Box<dyn Iterator<Item = &mut ThreadHandle>> = match hospital {
            Some(h) => match self.threads.get_mut(h) {
                Some(targets) => Box::new(targets.values_mut()),
                None => return,
            },
            None => Box::new(self.threads.values_mut().flat_map(|t| t.values_mut())),
        };
        for handle in handles {
            handle.sent += 1;
            handle.addr.do_send(Change { kind: kind() });
        }
    }
}

impl Handler<Idle> for PresenceHub {
    type Result = ();

    fn handle(&mut self, msg: Idle, _: &mut Context<Self>) {
        let Some(targets) = self.threads.get_mut(&msg.key.hospital) else {
            return;
        };
        let in_flight = targets
            .get(&msg.key.target)
            .is_none_or(|handle| handle.sent != msg.handled);
        if in_flight {
            // It will handle more changes and report again if it is still idle then.
            return;
        }
        if let Some(handle) = targets.remove(&msg.key.target) {
            handle.addr.do_send(Stop);
            self.thread_count -= 1;
        }
        if targets.is_empty() {
            self.threads.remove(&msg.key.hospital);
        }
    }
}
