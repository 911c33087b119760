//! The hub in the cluster: notes from other nodes (typing, views, departures, dead nodes),
//! the LISTEN connection coming back (re-read, resync, `hello`), and this node leaving.

use actix::{Context, Handler, ResponseFuture};
use aggregates::types::HospitalId;

use super::PresenceHub;
use crate::realtime::presence::listener::{ListenerUp, Remote};
use crate::realtime::presence::note::{participant, Note};
use crate::realtime::presence::state::SessionKey;
use crate::realtime::presence::store::Op;
use crate::realtime::presence::thread::{ChangeKind, TargetKey};
use crate::realtime::presence::{Leave, ViewTarget};

impl PresenceHub {
    // --- notifications ------------------------------------------------------------------

    // Long by design: one arm per kind of note from another node, each a few lines.
    pub(super) fn on_note(&mut self, note: Note, ctx: &mut Context<Self>) {
        if note.origin() == Some(self.node) {
            // Applied when it happened; the echo adds nothing.
            return;
        }
        match note {
            Note::Presence { hospital } => self.fetch_presence(&hospital, ctx),
            Note::Typing {
                node,
                session,
                hospital,
                case,
                user,
                role,
            } => {
                let key = TargetKey {
                    hospital,
                    target: ViewTarget::Case(case),
                };
                let kind = ChangeKind::Typing {
                    key: SessionKey { node, session },
                    who: participant(&user, role),
                };
                self.send_thread(key, kind, true, ctx);
            }
            Note::View {
                node,
                session,
                hospital,
                target,
                user,
                role,
            } => {
                let kind = ChangeKind::View {
                    key: SessionKey { node, session },
                    who: participant(&user, role),
                };
                self.send_thread(TargetKey { hospital, target }, kind, true, ctx);
            }
            Note::Unview {
                node,
                session,
                hospital,
                target,
            } => {
                let kind = ChangeKind::Unview {
                    key: SessionKey { node, session },
                };
                self.send_thread(TargetKey { hospital, target }, kind, false, ctx);
            }
            Note::Views { node, views } => {
                for view in views {
                    let kind = ChangeKind::View {
                        key: view.key(node),
                        who: view.participant(),
                    };
                    let key = TargetKey {
                        hospital: view.hospital,
                        target: view.target,
                    };
                    self.send_thread(key, kind, true, ctx);
                }
            }
            Note::Left {
                node,
                session,
                hospital,
            } => {
                let key = SessionKey { node, session };
                self.send_all_threads(Some(&hospital), || ChangeKind::SessionLeft { key });
            }
            Note::Hello { .. } => {
                self.peers.saw_one();
                self.reannounce_views();
            }
            // Its own departure, heard back: nothing to repair.
            Note::NodeDown { node } if node == self.node && self.left => {}
            Note::NodeDown { node } if node == self.node => {
                // Presumed dead while alive: the others dropped this node's views. The writer
                // re-registers the sessions at its next heartbeat. (Also heard once at start,
                // from this hub's own announcement, with no sessions yet: not worth a warning.)
                if self.sessions.is_empty() {
                    tracing::debug!("this node's own node-down notification heard back");
                } else {
                    tracing::warn!("the cluster presumed this node dead; re-announcing its views");
                }
                self.reannounce_views();
            }
            Note::NodeDown { node } => {
                tracing::debug!(%node, "dropping the typing and views of a dead (or restarted) node");
                self.send_all_threads(None, || ChangeKind::NodeDown { node });
            }
        }
    }
}

impl Handler<Leave> for PresenceHub {
    type Result = ResponseFuture<()>;

    /// The writer skips the database work of whatever is queued before the leave (the leave
    /// deletes every row of the node), so it is carried out at once however much is queued.
    fn handle(&mut self, _: Leave, _: &mut Context<Self>) -> Self::Result {
        let outbox = self.outbox.clone();
        let first = !std::mem::replace(&mut self.left, true);
        self.leaving
            .store(true, std::sync::atomic::Ordering::Release);
        Box::pin(async move {
            if !first {
                return;
            }
            let (done, left) = tokio::sync::oneshot::channel();
            if outbox.send(Op::Leave(done)).await.is_ok() {
                let _ = left.await;
            }
        })
    }
}

impl Handler<Remote> for PresenceHub {
    type Result = ();

    fn handle(&mut self, msg: Remote, ctx: &mut Context<Self>) {
        self.on_note(msg.note, ctx);
    }
}

impl Handler<ListenerUp> for PresenceHub {
    type Result = ();

    fn handle(&mut self, _: ListenerUp, ctx: &mut Context<Self>) {
        // Notifications may have been missed while the connection was down: re-read the
        // presence shown here, let remote typing and views lapse unless re-announced, and ask
        // the other nodes to re-announce.
        let hospitals: Vec<HospitalId> = self.presence.keys().cloned().collect();
        for hospital in hospitals {
            self.fetch_presence(&hospital, ctx);
        }
        self.send_all_threads(None, || ChangeKind::Resync);
        self.announce(Note::Hello { node: self.node });
        // And re-announce this node's views: a `hello` another node sent while this one was
        // not listening went unheard, so this node's views made meanwhile (their notes lost
        // on nodes not yet listening) would otherwise wait for the periodic refresh
        // (`view_ttl / 3`: 11-15 s measured after PostgreSQL restarts).
        self.reannounce_views();
    }
}
