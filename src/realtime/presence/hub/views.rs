//! Typing and viewing from this node's sessions: applied here at once and announced to the
//! other nodes; views expire without a refresh and are re-announced periodically so every
//! node's copy stays fresh while the session lives.

use std::time::Instant;

use actix::{Context, Handler};
use aggregates::types::HospitalId;

use super::PresenceHub;
use crate::realtime::presence::note::{Note, ViewEntry};
use crate::realtime::presence::state::SessionKey;
use crate::realtime::presence::thread::{ChangeKind, TargetKey};
use crate::realtime::presence::{Touch, Typing, Unview, View, ViewTarget, MAX_VIEWS_PER_SESSION};
use crate::realtime::SessionId;

impl PresenceHub {
    /// This node's live views, for re-announcement.
    pub(super) fn live_views(&self) -> Vec<ViewEntry> {
        self.sessions
            .iter()
            .flat_map(|(&session, s)| {
                s.views.keys().map(move |target| ViewEntry {
                    session,
                    hospital: s.hospital.clone(),
                    target: target.clone(),
                    user: s.user.clone(),
                    role: s.role,
                })
            })
            .collect()
    }

    pub(super) fn reannounce_views(&mut self) {
        for note in Note::views(self.node, self.live_views()) {
            self.announce(note);
        }
    }

    /// Every `view_ttl / 3`: releases views not refreshed for `view_ttl`, and refreshes the
    /// others here and on every node.
    pub(super) fn refresh_views(&mut self, ctx: &mut Context<Self>) {
        let now = Instant::now();
        let ttl = self.settings.view_ttl;
        let mut expired = Vec::new();
        for (&session, s) in &mut self.sessions {
            s.views.retain(|target, refreshed| {
                let live = now.saturating_duration_since(*refreshed) < ttl;
                if !live {
                    expired.push((session, s.hospital.clone(), target.clone()));
                }
                live
            });
        }
        for (session, hospital, target) in expired {
            tracing::debug!(session, %target, "view expired");
            self.release_view(session, hospital, target, ctx);
        }
        let live = self.live_views();
        for view in &live {
            let key = TargetKey {
                hospital: view.hospital.clone(),
                target: view.target.clone(),
            };
            let kind = ChangeKind::View {
                key: view.key(self.node),
                who: view.participant(),
            };
            self.send_thread(key, kind, true, ctx);
        }
        for note in Note::views(self.node, live) {
            self.announce(note);
        }
    }

    pub(super) fn release_view(
        &mut self,
        session: SessionId,
        hospital: HospitalId,
        target: ViewTarget,
        ctx: &mut Context<Self>,
    ) {
        let key = TargetKey {
            hospital: hospital.clone(),
            target: target.clone(),
        };
        let session_key = self.key(session);
        self.send_thread(key, ChangeKind::Unview { key: session_key }, false, ctx);
        self.announce(Note::Unview {
            node: self.node,
            session,
            hospital,
            target,
        });
    }
}

impl Handler<Typing> for PresenceHub {
    type Result = ();

    fn handle(&mut self, msg: Typing, ctx: &mut Context<Self>) {
        let Some(s) = self.sessions.get(&msg.session) else {
            return;
        };
        let note = Note::Typing {
            node: self.node,
            session: msg.session,
            hospital: s.hospital.clone(),
            case: msg.case,
            user: s.user.clone(),
            role: s.role,
        };
        let key = TargetKey {
            hospital: s.hospital.clone(),
            target: ViewTarget::Case(msg.case),
        };
        let kind = ChangeKind::Typing {
            key: self.key(msg.session),
            who: s.participant(),
        };
        self.send_thread(key, kind, true, ctx);
        self.announce(note);
    }
}

impl Handler<View> for PresenceHub {
    type Result = ();

    fn handle(&mut self, msg: View, ctx: &mut Context<Self>) {
        let node = self.node;
        let Some(s) = self.sessions.get_mut(&msg.session) else {
            return;
        };
        if !s.views.contains_key(&msg.target) && s.views.len() >= MAX_VIEWS_PER_SESSION {
            tracing::warn!(
                session = msg.session,
                max = MAX_VIEWS_PER_SESSION,
                "too many views; ignoring one"
            );
            return;
        }
        s.views.insert(msg.target.clone(), Instant::now());
        let note = Note::View {
            node,
            session: msg.session,
            hospital: s.hospital.clone(),
            target: msg.target.clone(),
            user: s.user.clone(),
            role: s.role,
        };
        let key = TargetKey {
            hospital: s.hospital.clone(),
            target: msg.target,
        };
        let kind = ChangeKind::View {
            key: SessionKey {
                node,
                session: msg.session,
            },
            who: s.participant(),
        };
        self.send_thread(key, kind, true, ctx);
        self.announce(note);
    }
}

impl Handler<Unview> for PresenceHub {
    type Result = ();

    fn handle(&mut self, msg: Unview, ctx: &mut Context<Self>) {
        let Some(s) = self.sessions.get_mut(&msg.session) else {
            return;
        };
        if s.views.remove(&msg.target).is_some() {
            let hospital = s.hospital.clone();
            self.release_view(msg.session, hospital, msg.target, ctx);
        }
    }
}

impl Handler<Touch> for PresenceHub {
    type Result = ();

    fn handle(&mut self, msg: Touch, _: &mut Context<Self>) {
        if let Some(s) = self.sessions.get_mut(&msg.session) {
            let now = Instant::now();
            for refreshed in s.views.values_mut() {
                *refreshed = now;
            }
        }
    }
}
