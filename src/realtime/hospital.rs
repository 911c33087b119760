//! The `HospitalActor`: one per hospital with live sessions on this node.
//!
//! It owns the hospital's stream reader. Events reach its window two ways, both turned into
//! their wire frame once by the same [`prepare`]:
//!
//! - **handed off**: this node's command path, once a transaction has committed, publishes
//!   the committed events, decoded from the committed rows exactly as a read decodes them
//!   ([`crate::stream::announce`]). When they continue the window (first position = head
//!   + 1) the actor appends them at once, without reading back what was just written;
//! - **read**: woken by a NOTIFY or the head poll (through [`StreamListener`]) for a
//!   position beyond its head — another node's commit, or a gap before a handoff (commits
//!   are position-ordered per hospital, so the read finds the missing ones) — it reads the
//!   events after its last position from the store.
//!
//! Either way it appends to the shared [`Window`] and publishes the new head. Sessions'
//! writers then pull what they are owed from the window.
//!
//! It also decides resumes (is a last-event-id recoverable?) and watches every session's
//! progress: a live session that lags too far, or makes no progress, is kicked as a slow
//! consumer instead of being allowed to grow server memory. It stops when its last session
//! leaves.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use actix::prelude::*;
use aggregates::types::{HospitalId, UserId};
use sqlx::PgPool;
use tokio::sync::watch;
use tokio_stream::wrappers::BroadcastStream;
use uuid::Uuid;

use super::presence::PresenceHub;
use super::protocol::{CloseReason, ServerFrame};
use super::window::{prepare, Batch, Window, WindowEvent};
use super::{Push, SessionId};
use crate::config::RealtimeSettings;
use crate::metrics::Metrics;
use crate::stream::announce::{Announcer, Handoff};
use crate::stream::listener::{StreamListener, Wakeup};
use crate::stream::read::{head, read_after};
use crate::stream::Position;

/// Events read from the store per query. Large enough to catch up quickly after a burst,
/// small enough to keep one query short.
pub const READ_BATCH: i64 = 512;

/// How often the actor checks sessions for stalls and evicts old window entries.
pub const SUPERVISION_TICK: Duration = Duration::from_secs(1);

/// Delay before re-reading after a failed read (PostgreSQL restarting, network blip).
pub const READ_RETRY: Duration = Duration::from_millis(500);

/// What sessions' writers share with their hospital's reader.
#[derive(Debug)]
pub struct HospitalFeed {
    /// The hospital.
    pub hospital: HospitalId,
    window: RwLock<Window>,
    head: watch::Sender<Position>,
    epoch: RwLock<Option<Uuid>>,
}

impl HospitalFeed {
    /// Last position read into the window.
    pub fn head(&self) -> Position {
        *self.head.borrow()
    }

    /// A receiver woken whenever the head moves.
    pub fn watch_head(&self) -> watch::Receiver<Position> {
        self.head.subscribe()
    }

    /// The stream's epoch, if it has events.
    pub fn epoch(&self) -> Option<Uuid> {
        *self.epoch.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Up to `max` events after `after` from memory, or `None` if the window does not reach
    /// back that far (the caller reads the store).
    pub fn events_after(&self, after: Position, max: usize) -> Option<Batch> {
        self.window
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .after(after, max)
    }
}

/// A session's progress through the stream, written by its writer, read by the actor.
#[derive(Debug)]
pub struct SessionProgress {
    cursor: AtomicI64,
    live: AtomicBool,
    last_progress_ms: AtomicU64,
    origin: Instant,
    /// Commands the session has put on its writer's queue: compared with those the writer
    /// has taken, it tells the direct lane a command is waiting (see `writer::Lane`).
    commands_sent: AtomicU64,
}

/// `cursor` value of a session that is not streaming (yet).
const NOT_STREAMING: i64 = i64::MIN;

impl Default for SessionProgress {
    fn default() -> Self {
        Self {
            cursor: AtomicI64::new(NOT_STREAMING),
            live: AtomicBool::new(false),
            last_progress_ms: AtomicU64::new(0),
            origin: Instant::now(),
            commands_sent: AtomicU64::new(0),
        }
    }
}

impl SessionProgress {
    /// Records that the writer has handled everything up to `position`.
    pub fn advance(&self, position: Position, head: Position) {
        self.cursor.store(position, Ordering::Release);
        self.touch();
        if position >= head {
            self.live.store(true, Ordering::Release);
        }
    }

    /// [`advance`](Self::advance) at a time the caller read once for many connections (the
    /// fan-out reads the clock once per event, not once per recipient).
    pub fn advance_at(&self, position: Position, head: Position, now: Instant) {
        self.cursor.store(position, Ordering::Release);
        let ms = now.saturating_duration_since(self.origin).as_millis() as u64;
        self.last_progress_ms.store(ms, Ordering::Release);
        if position >= head {
            self.live.store(true, Ordering::Release);
        }
    }

    /// Counts a command the session is about to queue for its writer.
    pub fn command_sent(&self) {
        self.commands_sent.fetch_add(1, Ordering::AcqRel);
    }

    /// Commands the session has queued for its writer so far.
    pub fn commands_sent(&self) -> u64 {
        self.commands_sent.load(Ordering::Acquire)
    }

    /// Marks progress without moving the cursor (e.g. a frame was sent).
    pub fn touch(&self) {
        let ms = self.origin.elapsed().as_millis() as u64;
        self.last_progress_ms.store(ms, Ordering::Release);
    }

    /// The writer's position, if streaming.
    pub fn cursor(&self) -> Option<Position> {
        let c = self.cursor.load(Ordering::Acquire);
        (c != NOT_STREAMING).then_some(c)
    }

    fn since_progress(&self) -> Duration {
        let last = Duration::from_millis(self.last_progress_ms.load(Ordering::Acquire));
        self.origin.elapsed().saturating_sub(last)
    }
}

/// Told to a session the actor wants gone (slow consumer).
#[derive(Clone, Copy, Debug, Message)]
#[rtype(result = "()")]
pub struct Kick {
    /// Why.
    pub reason: CloseReason,
}

/// A session joins its hospital (once authenticated).
#[derive(Message)]
#[rtype(result = "Arc<HospitalFeed>")]
pub struct Join {
    /// The session.
    pub session: SessionId,
    /// Its user, for logs.
    pub user: UserId,
    /// Its progress, watched for lag and stalls.
    pub progress: Arc<SessionProgress>,
    /// Where to send a kick.
    pub kick: Recipient<Kick>,
}

/// A session leaves (connection closed).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Leave {
    /// The session.
    pub session: SessionId,
}

/// Where a session starts streaming, decided from its last-event-id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResumeDecision {
    /// Whether everything after the client's last-event-id will be delivered.
    pub recovered: bool,
    /// The cursor the writer starts at (events after it are sent).
    pub start: Position,
    /// The head when deciding (reported to the client).
    pub position: Position,
    /// The stream's epoch.
    pub epoch: Option<Uuid>,
    /// Why not recovered, when a last-event-id was given.
    pub reason: Option<&'static str>,
}

/// A session starts (`Some`) or stops (`None`) receiving the `metrics` topic.
#[derive(Message)]
#[rtype(result = "()")]
pub struct WatchMetrics {
    /// The session.
    pub session: SessionId,
    /// Where to push metrics frames; `None` to stop.
    pub recipient: Option<Recipient<Push>>,
}

/// Asks where to start streaming.
#[derive(Message)]
#[rtype(result = "ResumeDecision")]
pub struct Resume {
    /// The client's last-event-id, if resuming.
    pub last_event_id: Option<Position>,
    /// The epoch the client believes that id belongs to.
    pub epoch: Option<Uuid>,
}

/// Decides a resume from the reader's state; `db_head` is consulted only when the client
/// claims a position beyond what this node has read. Pure, so every branch is unit-tested.
pub fn decide_resume(
    last_event_id: Option<Position>,
    client_epoch: Option<Uuid>,
    head: Position,
    epoch: Option<Uuid>,
    db_head: Option<Position>,
    replay_cap: i64,
) -> ResumeDecision {
    let fresh = |reason| ResumeDecision {
        recovered: false,
        start: head,
        position: head,
        epoch,
        reason,
    };
    let Some(n) = last_event_id else {
        return fresh(None);
    };
    if client_epoch.is_some() && client_epoch != epoch {
        return fresh(Some("epoch_changed"));
    }
    if n > head && db_head.is_none_or(|db| n > db) {
        return fresh(Some("unknown_position"));
    }
    if head - n > replay_cap {
        return fresh(Some("too_old"));
    }
    ResumeDecision {
        recovered: true,
        start: n,
        position: head.max(n),
        epoch,
        reason: None,
    }
}

struct Member {
    progress: Arc<SessionProgress>,
    kick: Recipient<Kick>,
    kicked: bool,
}

impl Member {
    /// Disconnects this session as a slow consumer. Counted here, when decided: a client
    /// that stopped reading may not let its writer run again to count it.
    fn kick_slow(&mut self, metrics: &Metrics) {
        self.kicked = true;
        Metrics::inc(&metrics.slow_consumer_disconnects);
        self.kick.do_send(Kick {
            reason: CloseReason::SlowConsumer,
        });
    }
}

/// The reader and fan-out of one hospital on this node.
pub struct HospitalActor {
    feed: Arc<HospitalFeed>,
    pool: PgPool,
    listener: StreamListener,
    /// Source of this node's committed events (the same-node handoff).
    announcer: Announcer,
    settings: Arc<RealtimeSettings>,
    metrics: Arc<Metrics>,
    directory: Arc<Directory>,
    generation: u64,
    members: HashMap<SessionId, Member>,
    reading: bool,
    /// The read in flight, cancelled and started afresh on a resync (see `resync`).
    read: Option<SpawnHandle>,
    pending: bool,
    presence: Addr<PresenceHub>,
    /// Sessions subscribed to `metrics`; the snapshot is computed once per interval for all.
    metrics_watchers: HashMap<SessionId, Recipient<Push>>,
    metrics_timer: Option<SpawnHandle>,
}

impl HospitalActor {
    /// Computes the hospital's metrics once and pushes them to every watcher.
    fn push_metrics(&mut self, ctx: &mut Context<Self>) {
        if self.metrics_watchers.is_empty() {
            return;
        }
        let pool = self.pool.clone();
        let presence = self.presence.clone();
        let hospital = self.feed.hospital.clone();
        let compute = async move {
            let online = presence
                .send(super::presence::OnlineByRole {
                    hospital: hospital.clone(),
                })
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            crate::projection::metrics::hospital_metrics(&pool, &hospital, &online)
                .await
                .map_err(|e| e.to_string())
        };
        ctx.spawn(compute.into_actor(self).map(|result, act, _| match result {
            Ok(snapshot) => {
                let data = serde_json::to_value(&snapshot).unwrap_or_default();
                let frame = ServerFrame::Metrics { data };
                for recipient in act.metrics_watchers.values() {
                    recipient.do_send(Push {
                        frame: frame.clone(),
                    });
                }
            }
            Err(error) => {
                tracing::warn!(hospital = %act.feed.hospital, %error, "metrics snapshot failed")
            }
        }));
    }

    fn wake(&mut self, ctx: &mut Context<Self>) {
        if self.reading {
            self.pending = true;
            return;
        }
        self.reading = true;
        self.pending = false;
        let pool = self.pool.clone();
        let hospital = self.feed.hospital.clone();
        let after = self.feed.head();
        let need_epoch = self.feed.epoch().is_none();
        let read = async move {
            let events = read_after(&pool, &hospital, after, READ_BATCH).await?;
            let epoch = if need_epoch && !events.is_empty() {
                head(&pool, &hospital).await.ok().and_then(|h| h.epoch)
            } else {
                None
            };
            // Serialize outside the actor's critical path: each event becomes its frame once.
            let prepared: Vec<Arc<WindowEvent>> = events.into_iter().map(prepare).collect();
            Ok::<_, crate::stream::read::ReadError>((prepared, epoch))
        };
        let handle = ctx.spawn(read.into_actor(self).map(|result, act, ctx| {
            act.reading = false;
            act.read = None;
            match result {
                Ok((events, epoch)) => {
                    let full = events.len() as i64 >= READ_BATCH;
                    let appended = act.append(events, epoch);
                    act.metrics
                        .stream_events_read
                        .fetch_add(appended, Ordering::Relaxed);
                    if full || act.pending {
                        act.wake(ctx);
                    }
                }
                Err(error) => {
                    tracing::warn!(hospital = %act.feed.hospital, %error, "stream read failed; retrying");
                    ctx.run_later(READ_RETRY, |act, ctx| act.wake(ctx));
                }
            }
        }));
        // A read that completes at once has already cleared `reading`: nothing to keep.
        if self.reading {
            self.read = Some(handle);
        }
    }

    /// Reads after the head now, even if a read is in flight: the listener has just
    /// (re)connected, so PostgreSQL is back. A read begun during the outage may be waiting
    /// in the pool's connect back-off (up to a fifth of the acquire timeout between
    /// attempts over TCP), which would hold up live delivery after PostgreSQL's return; a
    /// read has no effect until its result is appended, so dropping it is harmless.
    fn resync(&mut self, ctx: &mut Context<Self>) {
        if let Some(read) = self.read.take() {
            ctx.cancel_future(read);
            self.reading = false;
        }
        self.wake(ctx);
    }

    /// Takes events this node has just committed: appended at once when they continue the
    /// window; on a gap (commits of other writers not seen yet), or before the stream's
    /// epoch is known, read from the store instead, which finds the missing ones.
    fn take_handoff(&mut self, handoff: &Handoff, ctx: &mut Context<Self>) {
        let head = self.feed.head();
        let fresh = handoff.events.iter().filter(|e| e.position > head);
        let Some(first) = fresh.clone().next() else {
            // Already read (a wake-up raced the handoff): nothing to do.
            return;
        };
        if first.position != head + 1 || self.feed.epoch().is_none() {
            self.wake(ctx);
            return;
        }
        let events: Vec<Arc<WindowEvent>> = fresh.cloned().map(prepare).collect();
        let appended = self.append(events, None);
        self.metrics
            .stream_events_handed_off
            .fetch_add(appended, Ordering::Relaxed);
    }

    /// Appends the events beyond the head (a read begun before a handoff may return events
    /// the handoff has appended since) and publishes the new head; returns how many.
    fn append(&mut self, events: Vec<Arc<WindowEvent>>, epoch: Option<Uuid>) -> u64 {
        if let Some(epoch) = epoch {
            *self.feed.epoch.write().unwrap_or_else(|p| p.into_inner()) = Some(epoch);
        }
        let head = self.feed.head();
        let mut appended = 0;
        let mut last = head;
        {
            let mut window = self.feed.window.write().unwrap_or_else(|p| p.into_inner());
            let now = chrono::Utc::now();
            for event in events.into_iter().filter(|e| e.position > head) {
                let waited = (now - event.recorded_at)
                    .num_microseconds()
                    .unwrap_or(0)
                    .max(0);
                self.metrics.window_latency.observe_ms(waited as u64 / 1000);
                self.metrics
                    .window_latency_us_sum
                    .fetch_add(waited as u64, Ordering::Relaxed);
                last = event.position;
                window.push(event);
                appended += 1;
            }
        }
        if appended == 0 {
            return 0;
        }
        self.feed.head.send_replace(last);
        self.check_lag();
        appended
    }

    /// Kicks live sessions that lag too far behind the head (checked after every append).
    fn check_lag(&mut self) {
        let head = self.feed.head();
        // One read lock for the whole pass: right after an append every live session lags
        // by the new events, so each one's backlog in bytes is looked up.
        let window = self.feed.window.read().unwrap_or_else(|p| p.into_inner());
        for (id, member) in self.members.iter_mut() {
            if member.kicked || !member.progress.live.load(Ordering::Acquire) {
                continue;
            }
            let Some(cursor) = member.progress.cursor() else {
                continue;
            };
            let lag = head - cursor;
            if lag > self.settings.max_lag_events
                || (lag > 0 && window.bytes_after(cursor) > self.settings.max_lag_bytes)
            {
                tracing::info!(hospital = %self.feed.hospital, session = id, lag, "slow consumer");
                member.kick_slow(&self.metrics);
            }
        }
    }

    /// Kicks sessions that have a backlog but made no progress for the stall timeout, and
    /// evicts old window entries.
    fn supervise(&mut self) {
        self.feed
            .window
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .evict_older_than(chrono::Utc::now());
        let head = self.feed.head();
        for (id, member) in self.members.iter_mut() {
            if member.kicked {
                continue;
            }
            let Some(cursor) = member.progress.cursor() else {
                continue;
            };
            if cursor < head && member.progress.since_progress() > self.settings.stall_timeout {
                tracing::info!(hospital = %self.feed.hospital, session = id, "stalled consumer");
                member.kick_slow(&self.metrics);
            }
        }
        self.metrics.window_events.store(
            self.feed.window.read().map(|w| w.len()).unwrap_or(0) as u64,
            Ordering::Relaxed,
        );
    }
}

impl Actor for HospitalActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Load the head and prefill the window before handling any message, so joins and
        // resumes see a consistent state (and reconnect storms after a restart are served
        // from memory).
        let pool = self.pool.clone();
        let hospital = self.feed.hospital.clone();
        let prefill = self.settings.window_events as i64;
        let load = async move {
            let mut delay = READ_RETRY;
            loop {
                let attempt = async {
                    let h = head(&pool, &hospital).await?;
                    let from = (h.position - prefill).max(0);
                    let events = read_after(&pool, &hospital, from, prefill.max(1))
                        .await
                        .map_err(|e| match e {
                            crate::stream::read::ReadError::Database(e) => e,
                            other => sqlx::Error::Protocol(other.to_string()),
                        })?;
                    Ok::<_, sqlx::Error>((h, events))
                };
                match attempt.await {
                    Ok(loaded) => return loaded,
                    Err(error) => {
                        tracing::warn!(%hospital, %error, "hospital stream load failed; retrying");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(5));
                    }
                }
            }
        };
        ctx.wait(load.into_actor(self).map(|(h, events), act, ctx| {
            let prepared: Vec<Arc<WindowEvent>> = events.into_iter().map(prepare).collect();
            let last = prepared.last().map(|e| e.position).unwrap_or(h.position);
            {
                let mut window = act.feed.window.write().unwrap_or_else(|p| p.into_inner());
                for event in prepared {
                    window.push(event);
                }
            }
            *act.feed.epoch.write().unwrap_or_else(|p| p.into_inner()) = h.epoch;
            act.feed.head.send_replace(last);
            // Anything committed since the load is picked up by a first read.
            act.wake(ctx);
        }));
        let receiver = self.listener.subscribe();
        ctx.add_stream(BroadcastStream::new(receiver));
        if let Some(handoffs) = self.announcer.subscribe_handoffs() {
            ctx.add_stream(BroadcastStream::new(handoffs));
        }
        ctx.run_interval(SUPERVISION_TICK, |act, _| act.supervise());
        self.metrics.hospitals.fetch_add(1, Ordering::Relaxed);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.directory.remove(&self.feed.hospital, self.generation);
        self.metrics.hospitals.fetch_sub(1, Ordering::Relaxed);
    }
}

type WakeItem = Result<Wakeup, tokio_stream::wrappers::errors::BroadcastStreamRecvError>;

impl StreamHandler<WakeItem> for HospitalActor {
    fn handle(&mut self, item: WakeItem, ctx: &mut Self::Context) {
        match item {
            Ok(Wakeup::Committed { hospital, position }) => {
                if hospital == self.feed.hospital && position > self.feed.head() {
                    self.wake(ctx);
                }
            }
            // The listener (re)connected: PostgreSQL is back, read after the head now.
            Ok(Wakeup::Resync) => self.resync(ctx),
            // Lagging behind the listener: read after our position anyway.
            Err(_) => self.wake(ctx),
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        // The listener never ends while the server runs; if it does, so do we.
        ctx.stop();
    }
}

type HandoffItem = Result<Arc<Handoff>, tokio_stream::wrappers::errors::BroadcastStreamRecvError>;

impl StreamHandler<HandoffItem> for HospitalActor {
    fn handle(&mut self, item: HandoffItem, ctx: &mut Self::Context) {
        match item {
            Ok(handoff) if handoff.hospital == self.feed.hospital => {
                self.take_handoff(&handoff, ctx)
            }
            Ok(_) => {}
            // Handoffs were dropped while this actor lagged: read what they held.
            Err(_) => self.wake(ctx),
        }
    }

    fn finished(&mut self, _: &mut Self::Context) {
        // The announcer is gone (the server is stopping): reads still deliver everything.
    }
}

impl Handler<Join> for HospitalActor {
    type Result = MessageResult<Join>;

    fn handle(&mut self, msg: Join, _: &mut Self::Context) -> Self::Result {
        tracing::debug!(hospital = %self.feed.hospital, session = msg.session, user = %msg.user, "session joined");
        self.members.insert(
            msg.session,
            Member {
                progress: msg.progress,
                kick: msg.kick,
                kicked: false,
            },
        );
        MessageResult(self.feed.clone())
    }
}

impl Handler<Leave> for HospitalActor {
    type Result = ();

    fn handle(&mut self, msg: Leave, ctx: &mut Self::Context) {
        self.members.remove(&msg.session);
        self.metrics_watchers.remove(&msg.session);
        if self.members.is_empty() {
            // Deregister first, so a session arriving now starts a fresh actor.
            self.directory.remove(&self.feed.hospital, self.generation);
            ctx.stop();
        }
    }
}

impl Handler<WatchMetrics> for HospitalActor {
    type Result = ();

    fn handle(&mut self, msg: WatchMetrics, ctx: &mut Self::Context) {
        match msg.recipient {
            Some(recipient) => {
                self.metrics_watchers.insert(msg.session, recipient);
                if self.metrics_timer.is_none() {
                    let interval = self.settings.metrics_interval;
                    self.metrics_timer =
                        Some(ctx.run_interval(interval, |act, ctx| act.push_metrics(ctx)));
                }
                // A new watcher gets a snapshot at once, not after a full interval.
                self.push_metrics(ctx);
            }
            None => {
                self.metrics_watchers.remove(&msg.session);
                if self.metrics_watchers.is_empty() {
                    if let Some(timer) = self.metrics_timer.take() {
                        ctx.cancel_future(timer);
                    }
                }
            }
        }
    }
}

impl Handler<Resume> for HospitalActor {
    type Result = ResponseActFuture<Self, ResumeDecision>;

    fn handle(&mut self, msg: Resume, _: &mut Self::Context) -> Self::Result {
        let head_now = self.feed.head();
        let beyond = msg.last_event_id.is_some_and(|n| n > head_now);
        let pool = self.pool.clone();
        let hospital = self.feed.hospital.clone();
        let db_head = async move {
            if beyond {
                head(&pool, &hospital).await.ok().map(|h| h.position)
            } else {
                None
            }
        };
        Box::pin(db_head.into_actor(self).map(move |db_head, act, _| {
            decide_resume(
                msg.last_event_id,
                msg.epoch,
                act.feed.head(),
                act.feed.epoch(),
                db_head,
                act.settings.replay_cap,
            )
        }))
    }
}

/// The hospitals with live sessions on this node, and per-user connection counts.
pub struct Directory {
    pool: PgPool,
    listener: StreamListener,
    announcer: Announcer,
    settings: Arc<RealtimeSettings>,
    metrics: Arc<Metrics>,
    presence: Addr<PresenceHub>,
    hospitals: Mutex<HashMap<HospitalId, (u64, Addr<HospitalActor>)>>,
    next_generation: AtomicU64,
    connections: Mutex<HashMap<(HospitalId, UserId), u32>>,
}

impl Directory {
    /// An empty directory. Its hospital actors take this node's commits from `announcer`'s
    /// handoffs and everything else from reads woken by `listener`.
    pub fn new(
        pool: PgPool,
        listener: StreamListener,
        announcer: Announcer,
        settings: Arc<RealtimeSettings>,
        metrics: Arc<Metrics>,
        presence: Addr<PresenceHub>,
    ) -> Arc<Self> {
        Arc::new(Self {
            pool,
            listener,
            announcer,
            settings,
            metrics,
            presence,
            hospitals: Mutex::new(HashMap::new()),
            next_generation: AtomicU64::new(1),
            connections: Mutex::new(HashMap::new()),
        })
    }

    /// The hospital's actor, started on the current arbiter if there is none.
    pub fn hospital(self: &Arc<Self>, hospital: &HospitalId) -> Addr<HospitalActor> {
        let mut map = self.hospitals.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, addr)) = map.get(hospital) {
            if addr.connected() {
                return addr.clone();
            }
        }
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        let (head_tx, _) = watch::channel(0);
        let actor = HospitalActor {
            feed: Arc::new(HospitalFeed {
                hospital: hospital.clone(),
                window: RwLock::new(Window::new(
                    self.settings.window_events,
                    self.settings.window_age,
                )),
                head: head_tx,
                epoch: RwLock::new(None),
            }),
            pool: self.pool.clone(),
            listener: self.listener.clone(),
            announcer: self.announcer.clone(),
            settings: self.settings.clone(),
            metrics: self.metrics.clone(),
            directory: self.clone(),
            generation,
            members: HashMap::new(),
            reading: false,
            read: None,
            pending: false,
            presence: self.presence.clone(),
            metrics_watchers: HashMap::new(),
            metrics_timer: None,
        };
        let addr = actor.start();
        map.insert(hospital.clone(), (generation, addr.clone()));
        addr
    }

    fn remove(&self, hospital: &HospitalId, generation: u64) {
        let mut map = self.hospitals.lock().unwrap_or_else(|p| p.into_inner());
        if map.get(hospital).is_some_and(|(g, _)| *g == generation) {
            map.remove(hospital);
        }
    }

    /// Counts a new connection of `user`; `None` if they already have the maximum.
    pub fn open_connection(
        self: &Arc<Self>,
        hospital: &HospitalId,
        user: &UserId,
    ) -> Option<ConnectionSlot> {
        let mut map = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        let count = map.entry((hospital.clone(), user.clone())).or_insert(0);
        if *count >= self.settings.max_connections_per_user {
            return None;
        }
        *count += 1;
        Some(ConnectionSlot {
            directory: self.clone(),
            key: (hospital.clone(), user.clone()),
            held: *count,
        })
    }

    /// Wakes every hospital reader (used after the listener reconnects; also by tests).
    pub fn hospitals(&self) -> Vec<Addr<HospitalActor>> {
        self.hospitals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|(_, a)| a.clone())
            .collect()
    }
}

/// One counted connection; released on drop.
pub struct ConnectionSlot {
    directory: Arc<Directory>,
    key: (HospitalId, UserId),
    /// The user's connections on this node when this one was counted, itself included.
    held: u32,
}

impl ConnectionSlot {
    /// The hospital and user it counts for.
    pub fn key(&self) -> &(HospitalId, UserId) {
        &self.key
    }

    /// The user's connections on this node when this one was counted, itself included.
    pub fn held(&self) -> u32 {
        self.held
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut map = self
            .directory
            .connections
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(count) = map.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                map.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAP: i64 = 10_000;

    #[test]
    fn no_last_event_id_starts_live_at_the_head() {
        let d = decide_resume(None, None, 42, None, None, CAP);
        assert_eq!((d.recovered, d.start, d.reason), (false, 42, None));
    }

    #[test]
    fn a_recent_last_event_id_is_recovered_from_exactly_there() {
        let e = Some(Uuid::new_v4());
        let d = decide_resume(Some(30), e, 42, e, None, CAP);
        assert_eq!((d.recovered, d.start, d.position), (true, 30, 42));
    }

    #[test]
    fn a_last_event_id_beyond_the_cap_is_not_recovered_and_nothing_partial_is_sent() {
        let d = decide_resume(Some(1), None, 20_002, None, None, CAP);
        assert_eq!(
            (d.recovered, d.start, d.reason),
            (false, 20_002, Some("too_old"))
        );
        let at_cap = decide_resume(Some(10_002), None, 20_002, None, None, CAP);
        assert!(at_cap.recovered);
    }

    #[test]
    fn another_epoch_is_not_recovered() {
        let d = decide_resume(
            Some(5),
            Some(Uuid::new_v4()),
            42,
            Some(Uuid::new_v4()),
            None,
            CAP,
        );
        assert_eq!(
            (d.recovered, d.start, d.reason),
            (false, 42, Some("epoch_changed"))
        );
        let empty_stream = decide_resume(Some(5), Some(Uuid::new_v4()), 0, None, None, CAP);
        assert!(!empty_stream.recovered);
    }

    #[test]
    fn a_position_beyond_this_nodes_head_is_recovered_if_the_store_has_it() {
        let ahead = decide_resume(Some(50), None, 42, None, Some(60), CAP);
        assert_eq!((ahead.recovered, ahead.start), (true, 50));
        let unknown = decide_resume(Some(70), None, 42, None, Some(60), CAP);
        assert_eq!(
            (unknown.recovered, unknown.reason),
            (false, Some("unknown_position"))
        );
    }

    #[test]
    fn resuming_at_the_head_is_recovered_with_nothing_to_replay() {
        let d = decide_resume(Some(42), None, 42, None, None, CAP);
        assert_eq!((d.recovered, d.start), (true, 42));
    }
}
