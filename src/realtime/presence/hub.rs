//! The `PresenceHub`: one actor per node. It knows this node's connections, keeps the
//! presence of hospitals watched here up to date and pushes it, routes typing and viewing
//! (local and remote) to the per-target [`CaseThreadActor`]s, and hands every write and
//! announcement to the store writer. It never waits on PostgreSQL itself.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{
    Actor, ActorFutureExt, Addr, AsyncContext, Context, Handler, Recipient, ResponseFuture,
    WrapFuture,
};
use aggregates::types::{HospitalId, Role, UserId};
use sqlx::PgPool;
use tokio::sync::mpsc::{self, error::TrySendError};
use uuid::Uuid;

use super::listener::{self, ListenerUp, Remote};
use super::note::{participant, Note, ViewEntry};
use super::state::{count_by_role, presence_entries, OnlineUser, SessionKey};
use super::store::{self, Op, SessionRow};
use super::thread::{CaseThreadActor, Change, ChangeKind, Idle, Stop, TargetKey};
use super::{
    Connect, Disconnect, Leave, OnlineByRole, Peers, Touch, Typing, Unview, View, ViewTarget,
    Watch, WatchTopic, MAX_TARGETS, MAX_VIEWS_PER_SESSION, MAX_WATCHES_PER_SESSION,
    PRESENCE_DEBOUNCE,
};
use crate::config::PresenceSettings;
use crate::realtime::protocol::{Participant, PresenceEntry, ServerFrame};
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

    /// Sends `kind` to the target's actor, creating it if `create` (changes that only
    /// remove something never need a new actor).
    fn send_thread(
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
    fn send_all_threads(&mut self, hospital: Option<&HospitalId>, kind: impl Fn() -> ChangeKind) {
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

    // --- presence -----------------------------------------------------------------------

    fn watch_presence(
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

    fn unwatch_presence(&mut self, hospital: &HospitalId, session: SessionId) {
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
    fn fetch_presence(&mut self, hospital: &HospitalId, ctx: &mut Context<Self>) {
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

    fn presence_fetched(
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

    // --- sessions -----------------------------------------------------------------------

    fn remove_session(&mut self, session: SessionId, ctx: &mut Context<Self>) {
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

    /// This node's live views, for re-announcement.
    fn live_views(&self) -> Vec<ViewEntry> {
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

    fn reannounce_views(&mut self) {
        for note in Note::views(self.node, self.live_views()) {
            self.announce(note);
        }
    }

    /// Every `view_ttl / 3`: releases views not refreshed for `view_ttl`, and refreshes the
    /// others here and on every node.
    fn refresh_views(&mut self, ctx: &mut Context<Self>) {
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

    fn release_view(
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

    /// Every `node_heartbeat`: forgets sessions whose actor is gone without a
    /// `Disconnect`, repairs the writer after an overflow, reports dropped notifications.
    fn maintain(&mut self, ctx: &mut Context<Self>) {
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

    // --- notifications ------------------------------------------------------------------

    // Long by design: one arm per kind of note from another node, each a few lines.
    fn on_note(&mut self, note: Note, ctx: &mut Context<Self>) {
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
