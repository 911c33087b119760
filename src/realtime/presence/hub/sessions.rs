//! This node's connections: [`Connect`] and [`Disconnect`], what each watches ([`Watch`]),
//! and the periodic maintenance that forgets sessions gone without a word and repairs the
//! store writer after its queue overflowed.

use std::collections::{BTreeMap, BTreeSet};

use actix::{Context, Handler};

use super::{LocalSession, PresenceHub};
use crate::realtime::presence::note::Note;
use crate::realtime::presence::store::{Op, SessionRow};
use crate::realtime::presence::thread::{ChangeKind, TargetKey};
use crate::realtime::presence::{Connect, Disconnect, Watch, WatchTopic, MAX_WATCHES_PER_SESSION};
use crate::realtime::SessionId;

impl PresenceHub {
    pub(super) fn remove_session(&mut self, session: SessionId, ctx: &mut Context<Self>) {
        let Some(s) = self.sessions.remove(&session) else {
            return;
        };
        for topic in &s.watches {
            match topic {
                WatchTopic::Presence => self.unwatch_presence(&s.hospital, session),
                WatchTopic::Target(target) => {
                    let key = TargetKey {
                        hospital: s.hospital.clone(),
                        target: target.clone(),
                    };
                    self.send_thread(key, ChangeKind::Unwatch { session }, false, ctx);
                }
            }
        }
        let key = self.key(session);
        self.send_all_threads(Some(&s.hospital), || ChangeKind::SessionLeft { key });
        self.queue(Op::Disconnect { session });
        self.announce(Note::Left {
            node: self.node,
            session,
            hospital: s.hospital,
        });
    }

    /// Every `node_heartbeat`: forgets sessions whose actor is gone without a
    /// `Disconnect`, repairs the writer after an overflow, reports dropped notifications.
    pub(super) fn maintain(&mut self, ctx: &mut Context<Self>) {
        let gone: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| !s.recipient.connected())
            .map(|(&id, _)| id)
            .collect();
        for session in gone {
            tracing::debug!(
                session,
                "session actor gone without disconnecting; cleaning up"
            );
            self.remove_session(session, ctx);
        }
        if self.needs_resync && !self.left {
            let rows = self
                .sessions
                .iter()
                .map(|(&session, s)| SessionRow {
                    session,
                    hospital: s.hospital.clone(),
                    user: s.user.clone(),
                    role: s.role,
                })
                .collect();
            if self.outbox.try_send(Op::Resync(rows)).is_ok() {
                tracing::warn!("the presence queue overflowed; rewriting this node's sessions");
                self.needs_resync = false;
            }
        }
        if self.dropped_notes > 0 {
            tracing::warn!(
                dropped = self.dropped_notes,
                "the presence queue was full; typing or viewing notifications were dropped"
            );
            self.dropped_notes = 0;
        }
    }
}

impl Handler<Connect> for PresenceHub {
    type Result = ();

    #[tracing::instrument(skip_all, fields(session = msg.session, hospital = %msg.hospital))]
    fn handle(&mut self, msg: Connect, ctx: &mut Context<Self>) {
        let same_identity = self
            .sessions
            .get(&msg.session)
            .is_some_and(|s| s.hospital == msg.hospital && s.user == msg.user);
        if !same_identity {
            // A reused id for someone else replaces the old connection entirely.
            self.remove_session(msg.session, ctx);
        }
        self.queue(Op::Connect(SessionRow {
            session: msg.session,
            hospital: msg.hospital.clone(),
            user: msg.user.clone(),
            role: msg.role,
        }));
        match self.sessions.get_mut(&msg.session) {
            // The same user again (a token refresh): keep its watches and views.
            Some(s) => {
                s.role = msg.role;
                s.recipient = msg.recipient;
            }
            None => {
                self.sessions.insert(
                    msg.session,
                    LocalSession {
                        hospital: msg.hospital,
                        user: msg.user,
                        role: msg.role,
                        recipient: msg.recipient,
                        watches: BTreeSet::new(),
                        views: BTreeMap::new(),
                    },
                );
            }
        }
    }
}

impl Handler<Disconnect> for PresenceHub {
    type Result = ();

    #[tracing::instrument(skip_all, fields(session = msg.session))]
    fn handle(&mut self, msg: Disconnect, ctx: &mut Context<Self>) {
        self.remove_session(msg.session, ctx);
    }
}

impl Handler<Watch> for PresenceHub {
    type Result = ();

    fn handle(&mut self, msg: Watch, ctx: &mut Context<Self>) {
        let Some(s) = self.sessions.get_mut(&msg.session) else {
            return;
        };
        let hospital = s.hospital.clone();
        if msg.on {
            if !s.watches.contains(&msg.topic) && s.watches.len() >= MAX_WATCHES_PER_SESSION {
                tracing::warn!(
                    session = msg.session,
                    "too many presence watches; ignoring one"
                );
                return;
            }
            // Watching again is allowed: it pushes the current state again.
            s.watches.insert(msg.topic.clone());
            let recipient = s.recipient.clone();
            match msg.topic {
                WatchTopic::Presence => self.watch_presence(hospital, msg.session, ctx),
                WatchTopic::Target(target) => {
                    let kind = ChangeKind::Watch {
                        session: msg.session,
                        recipient,
                    };
                    self.send_thread(TargetKey { hospital, target }, kind, true, ctx);
                }
            }
        } else if s.watches.remove(&msg.topic) {
            match msg.topic {
                WatchTopic::Presence => self.unwatch_presence(&hospital, msg.session),
                WatchTopic::Target(target) => {
                    let kind = ChangeKind::Unwatch {
                        session: msg.session,
                    };
                    self.send_thread(TargetKey { hospital, target }, kind, false, ctx);
                }
            }
        }
    }
}
