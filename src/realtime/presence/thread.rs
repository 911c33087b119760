//! The `CaseThreadActor`: one per (hospital, target) that has watchers or typing/viewing
//! state on this node. It applies changes from this node's sessions and from other nodes
//! alike (the hub routes both), expires them on time, and pushes `typing` and `viewing`
//! frames to the target's watchers when the lists change.
//!
//! Only the hub creates and stops these actors. When one has neither watchers nor state it
//! tells the hub, with the number of messages it has handled; the hub stops it only if it
//! sent no more than that (nothing is in flight), otherwise the next message keeps it alive.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use actix::{
    Actor, ActorContext, Addr, AsyncContext, Context, Handler, Message, Recipient, SpawnHandle,
};
use aggregates::types::HospitalId;
use uuid::Uuid;

use super::hub::PresenceHub;
use super::state::{SessionKey, TargetState};
use super::{ViewTarget, RESYNC_GRACE};
use crate::config::PresenceSettings;
use crate::realtime::protocol::{Participant, ServerFrame};
use crate::realtime::{Push, SessionId};

/// A target within its hospital: the same case id in two hospitals is two targets.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TargetKey {
    /// The hospital of every session that watches, types in or views it.
    pub hospital: HospitalId,
    /// The case or patient.
    pub target: ViewTarget,
}

/// A change for a target, from the hub.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Change {
    /// What happened.
    pub kind: ChangeKind,
}

/// What happened to a target.
pub enum ChangeKind {
    /// A local session starts watching: push it the current state, then changes.
    Watch {
        session: SessionId,
        recipient: Recipient<Push>,
    },
    /// A local session stops watching.
    Unwatch { session: SessionId },
    /// A session (here or on another node) typed.
    Typing { key: SessionKey, who: Participant },
    /// A session views the target, or still does.
    View { key: SessionKey, who: Participant },
    /// A session released its view.
    Unview { key: SessionKey },
    /// A session disconnected.
    SessionLeft { key: SessionKey },
    /// A node died.
    NodeDown { node: Uuid },
    /// This node may have missed notifications: remote entries must be re-announced within
    /// [`RESYNC_GRACE`].
    Resync,
}

/// The hub stops an idle actor.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stop;

/// An actor has neither watchers nor state (to the hub).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Idle {
    /// Which actor.
    pub key: TargetKey,
    /// How many [`Change`]s it had handled when it found itself idle.
    pub handled: u64,
}

/// Typing and viewing of one case thread or patient, on this node.
pub struct CaseThreadActor {
    /// Which target, in which hospital.
    key: TargetKey,
    /// This node, whose own entries never need re-announcing after a resync.
    node: Uuid,
    /// Who types and views, until when.
    state: TargetState,
    /// Local sessions watching the target.
    watchers: BTreeMap<SessionId, Recipient<Push>>,
    /// The typing users last pushed, so that a refresh that changes nothing sends nothing.
    pushed_typing: Vec<Participant>,
    /// The viewers last pushed, likewise.
    pushed_viewers: Vec<Participant>,
    /// The hub, told when this actor is idle.
    hub: Addr<PresenceHub>,
    /// Changes handled, for the idle handshake.
    handled: u64,
    /// The pending expiry timer and when it fires.
    timer: Option<(Instant, SpawnHandle)>,
}

impl CaseThreadActor {
    pub(super) fn new(
        key: TargetKey,
        node: Uuid,
        settings: &PresenceSettings,
        hub: Addr<PresenceHub>,
    ) -> Self {
        Self {
            key,
            node,
            state: TargetState::new(settings.typing_ttl, settings.view_ttl),
            watchers: BTreeMap::new(),
            pushed_typing: Vec::new(),
            pushed_viewers: Vec::new(),
            hub,
            handled: 0,
            timer: None,
        }
    }

    fn typing_frame(&self, users: Vec<Participant>) -> Option<ServerFrame> {
        match &self.key.target {
            ViewTarget::Case(case) => Some(ServerFrame::Typing { case: *case, users }),
            ViewTarget::Patient(_) => None,
        }
    }

    fn viewing_frame(&self, viewers: Vec<Participant>) -> ServerFrame {
        ServerFrame::Viewing {
            target: self.key.target.to_string(),
            viewers,
        }
    }

    /// Pushes the lists that differ from the last ones pushed to every watcher.
    fn publish(&mut self) {
        let typing = self.state.typing_users();
        if typing != self.pushed_typing {
            if let Some(frame) = self.typing_frame(typing.clone()) {
                self.broadcast(frame);
            }
            self.pushed_typing = typing;
        }
        let viewers = self.state.viewers();
        if viewers != self.pushed_viewers {
            let frame = self.viewing_frame(viewers.clone());
            self.broadcast(frame);
            self.pushed_viewers = viewers;
        }
    }

    fn broadcast(&self, frame: ServerFrame) {
        for recipient in self.watchers.values() {
            recipient.do_send(Push {
                frame: frame.clone(),
            });
        }
    }

    /// Expires what is due and publishes the result.
    fn catch_up(&mut self, now: Instant) {
        self.state.expire(now);
        self.publish();
    }

    /// Arms the timer for the next expiry (or disarms it when nothing can expire).
    fn schedule(&mut self, ctx: &mut Context<Self>) {
        let next = self.state.next_deadline();
        if let Some((at, handle)) = self.timer {
            if next.is_some_and(|n| n >= at) {
                // The armed timer fires first; it re-arms for whatever is due then.
                return;
            }
            ctx.cancel_future(handle);
            self.timer = None;
        }
        let Some(deadline) = next else {
            return;
        };
        // Tokio rounds sleeps up to the millisecond; the extra one keeps the timer from
        // waking a hair early and finding nothing due.
        let delay = deadline.saturating_duration_since(Instant::now()) + Duration::from_millis(1);
        let handle = ctx.run_later(delay, |act, ctx| {
            act.timer = None;
            act.catch_up(Instant::now());
            act.schedule(ctx);
            act.report_if_idle();
        });
        self.timer = Some((deadline, handle));
    }

    fn report_if_idle(&self) {
        if self.watchers.is_empty() && self.state.is_empty() {
            self.hub.do_send(Idle {
                key: self.key.clone(),
                handled: self.handled,
            });
        }
    }
}

impl Actor for CaseThreadActor {
    type Context = Context<Self>;
}

impl Handler<Change> for CaseThreadActor {
    type Result = ();

    fn handle(&mut self, msg: Change, ctx: &mut Context<Self>) {
        self.handled += 1;
        let now = Instant::now();
        // Whatever expired before this change is published first, so that a new watcher
        // does not get the same state twice.
        self.catch_up(now);
        match msg.kind {
            ChangeKind::Watch { session, recipient } => {
                if let Some(frame) = self.typing_frame(self.pushed_typing.clone()) {
                    recipient.do_send(Push { frame });
                }
                recipient.do_send(Push {
                    frame: self.viewing_frame(self.pushed_viewers.clone()),
                });
                self.watchers.insert(session, recipient);
            }
            ChangeKind::Unwatch { session } => {
                self.watchers.remove(&session);
            }
            ChangeKind::Typing { key, who } => {
                self.state.typing(key, who, now);
            }
            ChangeKind::View { key, who } => {
                self.state.view(key, who, now);
            }
            ChangeKind::Unview { key } => {
                self.state.unview(key);
            }
            ChangeKind::SessionLeft { key } => {
                self.state.remove_session(key);
            }
            ChangeKind::NodeDown { node } => {
                self.state.remove_node(node);
            }
            ChangeKind::Resync => {
                self.state.cap_remote(self.node, now + RESYNC_GRACE);
            }
        }
        self.publish();
        self.schedule(ctx);
        self.report_if_idle();
    }
}

impl Handler<Stop> for CaseThreadActor {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
