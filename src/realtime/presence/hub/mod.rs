//! The `PresenceHub`: one actor per node. It knows this node's connections, keeps the
//! presence of hospitals watched here up to date and pushes it, routes typing and viewing
//! (local and remote) to the per-target [`CaseThreadActor`]s, and hands every write and
//! announcement to the store writer. It never waits on PostgreSQL itself.
//!
//! One file per idea, each an `impl PresenceHub` block over the state declared here:
//! - [`sessions`] — this node's connections coming and going, what each watches, and the
//!   periodic maintenance (sessions gone without a word, the writer's resync);
//! - [`online`] — who is online, the per-hospital snapshot fetched from PostgreSQL and
//!   pushed to watchers;
//! - [`views`] — typing, viewing and the views' expiry and periodic re-announcement;
//! - [`threads`] — the per-target actors, created on demand and stopped when idle;
//! - [`cluster`] — notes from other nodes, the LISTEN connection coming back, leaving.

mod cluster;
mod online;
mod sessions;
mod threads;
mod views;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use actix::{Actor, Addr, AsyncContext, Context, Recipient};
use aggregates::types::{HospitalId, Role, UserId};
use sqlx::PgPool;
use tokio::sync::mpsc::{self, error::TrySendError};
use uuid::Uuid;

use super::listener;
use super::note::{participant, Note};
use super::state::SessionKey;
use super::store::{self, Op};
use super::thread::CaseThreadActor;
use super::{Peers, ViewTarget, WatchTopic};
use crate::config::PresenceSettings;
use crate::realtime::protocol::{Participant, PresenceEntry};
use crate::realtime::{Push, SessionId};

/// Messages the hub's mailbox holds for senders that wait (`send`), such as the listener.
/// Senders that do not wait (`do_send`) are not limited by it; sessions' messages are
/// already rate-limited by the sessions.
const MAILBOX_CAPACITY: usize = 1024;

/// Presence, typing and viewing for this node's connections, in the cluster.
pub struct PresenceHub {
    /// For presence snapshots and metrics (reads); writes go through `outbox`.
    pool: PgPool,
    /// This process in the cluster: keys its sessions everywhere, and lets it recognise its
    /// own notifications.
    node: Uuid,
    /// Timers.
    settings: PresenceSettings,
    /// Other live nodes (see [`Peers`]).
    peers: Arc<Peers>,
    /// The store writer's ordered, bounded queue.
    outbox: mpsc::Sender<Op>,
    /// Tells the store writer the node is leaving, so it skips what is queued before the
    /// leave.
    leaving: Arc<AtomicBool>,
    /// The node left the cluster ([`Leave`]): nothing is shared any more, and the writer
    /// has stopped.
    left: bool,
    /// A connect or disconnect could not be queued: the writer must get the full set of
    /// connections at the next maintenance tick.
    needs_resync: bool,
    /// Notifications dropped because the queue was full since the last maintenance tick
    /// (logged there, once, rather than once each).
    dropped_notes: u64,
    /// This node's connections.
    sessions: HashMap<SessionId, LocalSession>,
    /// Hospitals with presence watchers on this node.
    presence: HashMap<HospitalId, HospitalPresence>,
    /// Per-target actors, by hospital then target.
    threads: HashMap<HospitalId, HashMap<ViewTarget, ThreadHandle>>,
    /// Number of actors in `threads`, for [`MAX_TARGETS`].
    thread_count: usize,
    /// Last presence fetch id handed out.
    last_fetch: u64,
}

/// A connection on this node.
struct LocalSession {
    /// Its hospital: scopes everything it watches, types and views.
    hospital: HospitalId,
    /// Who it is, as shown to others.
    user: UserId,
    role: Role,
    /// Where its frames go.
    recipient: Recipient<Push>,
    /// What it watches.
    watches: BTreeSet<WatchTopic>,
    /// What it views, and when the view was last refreshed (by `View` or `Touch`).
    views: BTreeMap<ViewTarget, Instant>,
}

impl LocalSession {
    fn participant(&self) -> Participant {
        participant(&self.user, self.role)
    }
}

/// A hospital whose presence someone here watches.
#[derive(Default)]
struct HospitalPresence {
    /// Local sessions watching it.
    watchers: BTreeSet<SessionId>,
    /// The last snapshot pushed (none before the first fetch ends).
    snapshot: Option<Vec<PresenceEntry>>,
    /// Watchers that have not received any snapshot yet.
    awaiting_first: BTreeSet<SessionId>,
    /// The fetch in flight, if any; answers to other fetches are stale.
    fetching: Option<u64>,
    /// A change was announced during the fetch: fetch again when it ends.
    again: bool,
}

/// A per-target actor and how many changes the hub sent it.
struct ThreadHandle {
    /// The actor.
    addr: Addr<CaseThreadActor>,
    /// Changes sent to it, compared with what it handled before it may be stopped.
    sent: u64,
}

impl PresenceHub {
    /// Starts the hub on the current arbiter. `node_id` identifies this process in the
    /// cluster. It also starts, on the same arbiter, the store writer (which registers the
    /// node at once) and the LISTEN connection (`listen_config` is a tokio-postgres
    /// connection string); stopping the arbiter stops all three.
    /// `peers` is kept up to date with the number of other live nodes.
    pub fn start(
        pool: PgPool,
        listen_config: String,
        node_id: Uuid,
        settings: PresenceSettings,
        peers: Arc<Peers>,
    ) -> Addr<PresenceHub> {
        if settings.node_timeout <= settings.node_heartbeat {
            tracing::warn!(
                ?settings,
                "the node timeout should be several heartbeats; live nodes will be swept"
            );
        }
        PresenceHub::create(move |ctx| {
            let leaving = Arc::new(AtomicBool::new(false));
            let outbox = store::spawn_writer(
                pool.clone(),
                node_id,
                &settings,
                peers.clone(),
                leaving.clone(),
            );
            listener::spawn(listen_config, ctx.address());
            PresenceHub {
                pool,
                node: node_id,
                settings,
                peers,
                outbox,
                leaving,
                left: false,
                needs_resync: false,
                dropped_notes: 0,
                sessions: HashMap::new(),
                presence: HashMap::new(),
                threads: HashMap::new(),
                thread_count: 0,
                last_fetch: 0,
            }
        })
    }

    fn key(&self, session: SessionId) -> SessionKey {
        SessionKey {
            node: self.node,
            session,
        }
    }

    /// Queues `op` for the store writer, never waiting.
    fn queue(&mut self, op: Op) {
        if self.left {
            return;
        }
        match self.outbox.try_send(op) {
            Ok(()) => {}
            Err(TrySendError::Full(op)) => {
                if op.is_essential() {
                    self.needs_resync = true;
                } else {
                    self.dropped_notes += 1;
                }
            }
            Err(TrySendError::Closed(_)) => {
                tracing::error!("the presence writer stopped; presence is no longer shared");
            }
        }
    }

    fn announce(&mut self, note: Note) {
        self.queue(Op::Notify(note));
    }
}

impl Actor for PresenceHub {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        ctx.run_interval(self.settings.node_heartbeat, |act, ctx| act.maintain(ctx));
        ctx.run_interval(self.settings.view_refresh_interval(), |act, ctx| {
            act.refresh_views(ctx)
        });
        // A previous process may have run with this node id (a configured one): the other
        // nodes drop its typing and views, which would otherwise mix with this process's
        // sessions (session ids restart at 1). With a fresh id this is a no-op.
        self.announce(Note::NodeDown { node: self.node });
        tracing::info!(node = %self.node, "presence hub started");
    }
}
