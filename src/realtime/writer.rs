//! Each connection's single ordered writer.
//!
//! The writer is a cursor over its hospital's stream: it sends every event after its cursor
//! that the connection's filter admits, in position order, taking events from the shared
//! window (already serialized) or, when the window does not reach back far enough, from
//! PostgreSQL. Replay after a reconnect and live delivery are therefore the same loop over
//! the same cursor: there is no switch-over where an event could be skipped or sent twice.
//!
//! Other frames (replies, presence, typing, errors) arrive as [`WriterCommand`]s on a bounded
//! channel and are written in order between event batches. A kill signal (slow consumer,
//! server shutdown) interrupts even a send that is blocked on a client that stopped reading.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use aggregates::types::{Role, UserId};
use bytes::Bytes;
use bytestring::ByteString;
use sqlx::PgPool;
use tokio::sync::{mpsc, watch};

use super::hospital::{HospitalFeed, SessionProgress, READ_RETRY};
use super::protocol::{CloseReason, ServerFrame};
use super::topics::Subscriptions;
use super::window::{prepare, Batch, WindowEvent};
use crate::access::entitlement::Viewer;
use crate::metrics::Metrics;
use crate::stream::read::read_after;
use crate::stream::Position;

/// Events taken from the window per step; small, so commands interleave with a long replay.
pub const MEMORY_BATCH: usize = 64;

/// Events read from PostgreSQL per step when replaying beyond the window.
pub const DATABASE_BATCH: i64 = 256;

/// Capacity of the command channel. A session that fills it is not reading: slow consumer.
pub const COMMAND_QUEUE: usize = 256;

/// Time allowed to deliver the `closing` frame and close frame before giving up.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// What a connection receives: its topics, filtered by its user's entitlement.
#[derive(Clone, Debug)]
pub struct Filter {
    /// Subscribed topics.
    pub topics: Subscriptions,
    /// The user.
    pub user: UserId,
    /// Their role.
    pub role: Role,
}

impl Filter {
    /// Whether the connection receives `event`: a subscribed topic and entitled.
    pub fn wants(&self, event: &WindowEvent) -> bool {
        self.topics.matches(&event.topics)
            && event.visible_to(Viewer {
                user: &self.user,
                role: self.role,
            })
    }
}

/// Where a connection's stream starts, and through which filter.
#[derive(Debug)]
pub struct StreamStart {
    /// The hospital's feed.
    pub feed: Arc<HospitalFeed>,
    /// The last position the connection already has.
    pub start: Position,
    /// What it receives.
    pub filter: Filter,
}

/// Instructions from the session to its writer.
///
/// Kept small (the rare, large variants are boxed): the command channel allocates room for
/// 32 of them per connection up front, so their size is per-connection memory.
#[derive(Debug)]
pub enum WriterCommand {
    /// Write a non-event frame.
    Frame(ByteString),
    /// Start streaming the feed's events after `start` through `filter`.
    Stream(Box<StreamStart>),
    /// Replace the filter (topics changed, token refreshed).
    Filter(Box<Filter>),
    /// Send a heartbeat (WebSocket ping, SSE comment).
    Ping,
    /// Answer a client's WebSocket ping.
    Pong(Bytes),
    /// Close after the frames already queued, with a `closing` frame.
    Close(CloseReason),
}

/// The connection was closed by the peer.
#[derive(Debug)]
pub struct Closed;

/// Where a writer writes: a WebSocket or an SSE response.
pub trait Sink {
    /// Writes a frame (JSON text).
    fn send(&mut self, frame: ByteString) -> impl Future<Output = Result<(), Closed>>;
    /// Writes an event frame (SSE adds its `id:` line).
    fn send_event(&mut self, event: &WindowEvent) -> impl Future<Output = Result<(), Closed>>;
    /// Heartbeat.
    fn ping(&mut self) -> impl Future<Output = Result<(), Closed>>;
    /// Answers a client ping.
    fn pong(&mut self, payload: Bytes) -> impl Future<Output = Result<(), Closed>>;
    /// Sends the `closing` frame (if a reason) and closes.
    fn close(self, reason: Option<CloseReason>) -> impl Future<Output = ()>;
    /// Resolves when the peer is known to be gone without a write having to fail (SSE: the
    /// response body was dropped). A WebSocket learns it from its incoming stream instead.
    fn gone(&self) -> impl Future<Output = ()> {
        std::future::pending()
    }
    /// Offers the stream to the sink's direct lane while the writer sleeps caught up: the
    /// thread's fan-out then writes live events straight to the socket, with no task woken
    /// per connection ([`super::fanout`]). Returns whether the sink took it; one that has no
    /// such lane (SSE) declines, and its writer waits for the head as before.
    fn arm(&mut self, _lane: Lane) -> bool {
        false
    }
    /// Resolves when an armed lane hands the stream back (a write would block, the
    /// connection fell behind, a command is pending): the writer must look again.
    fn handed_back(&self) -> impl Future<Output = ()> {
        std::future::pending()
    }
    /// Takes the stream back from an armed lane: the position it reached (every event up to
    /// it was queued or written, in order), or `None` if none was armed.
    fn disarm(&mut self) -> Option<Position> {
        None
    }
}

/// What a writer hands its sink's direct lane while it sleeps: where it stands and what the
/// connection receives. The lane moves `cursor` on as it writes; the writer takes it back
/// with [`Sink::disarm`].
pub struct Lane {
    /// The hospital's feed.
    pub feed: Arc<HospitalFeed>,
    /// The last position handled (queued or skipped): every event after it is owed.
    pub cursor: Position,
    /// What the connection receives.
    pub filter: Arc<Filter>,
    /// Published for the hospital actor's lag checks, moved on by the lane too.
    pub progress: Arc<SessionProgress>,
    /// Commands the writer has taken from its queue: the lane writes only while the session
    /// has sent no more than that ([`SessionProgress::commands_sent`]), so a command (a new
    /// filter, a reply) is never overtaken by an event.
    pub taken: u64,
    /// Counters, for the fan-out.
    pub metrics: Arc<Metrics>,
}

/// Everything a writer reads besides its commands.
pub struct WriterContext {
    /// For replays older than the window.
    pub pool: PgPool,
    /// Published for the hospital actor's lag checks.
    pub progress: Arc<SessionProgress>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Set by the session or hospital actor to close at once (slow consumer).
    pub kill: watch::Receiver<Option<CloseReason>>,
    /// Set when the server shuts down.
    pub shutdown: watch::Receiver<bool>,
}

enum Stop {
    Closed,
    Kill(CloseReason),
}

/// The closing frame for `reason`.
pub fn closing_frame(reason: CloseReason) -> ByteString {
    ByteString::from(
        ServerFrame::Closing {
            code: reason.code(),
            reason: reason.as_str(),
        }
        .to_text(),
    )
}

struct State {
    /// The stream, once the connection subscribes: the feed and its head watch.
    feed: Option<(Arc<HospitalFeed>, watch::Receiver<Position>)>,
    cursor: Option<Position>,
    /// Shared with the direct lane while armed (a reference count, not a copy per sleep).
    filter: Option<Arc<Filter>>,
    /// Events up to here are a replay (for metrics), later ones are live.
    replay_until: Position,
    /// Commands taken from the queue so far (see [`Lane::taken`]).
    taken: u64,
}

/// Runs the writer until the connection closes.
///
/// One loop, four steps: stop if told to, apply queued commands, write events up to the
/// head, else sleep until something changes. The per-event work stays in [`step`]; the
/// steps here run once per turn of the loop, not per event.
pub async fn run<S: Sink>(
    mut sink: S,
    mut commands: mpsc::Receiver<WriterCommand>,
    mut ctx: WriterContext,
) {
    let mut state = State {
        feed: None,
        cursor: None,
        filter: None,
        replay_until: 0,
        taken: 0,
    };
    let stop = loop {
        if let Some(stop) = pending_stop(&ctx) {
            break stop;
        }
        // Commands first, without waiting: they are ordered relative to event batches.
        if let Err(stop) = drain_commands(&mut sink, &mut state, &ctx, &mut commands).await {
            break stop;
        }
        if let (Some((feed, head)), Some(cursor)) = (&mut state.feed, state.cursor) {
            let current = *head.borrow_and_update();
            if cursor < current {
                let feed = feed.clone();
                if let Err(stop) =
                    step(&mut sink, &mut state, &mut ctx, &feed, cursor, current).await
                {
                    break stop;
                }
                continue;
            }
        }
        match wait(&mut sink, &mut state, &mut ctx, &mut commands).await {
            Woke::Command(command) => {
                if let Err(stop) = apply(&mut sink, &mut state, &ctx, command).await {
                    break stop;
                }
            }
            Woke::Gone => break pending_stop(&ctx).unwrap_or(Stop::Closed),
            Woke::Nudged => {}
        }
    };
    // Bounded either way: a client that stopped reading must not hold the writer.
    let reason = match stop {
        Stop::Closed => None,
        Stop::Kill(reason) => Some(reason),
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.close(reason)).await;
}

/// Applies every command already queued, without waiting for more.
async fn drain_commands<S: Sink>(
    sink: &mut S,
    state: &mut State,
    ctx: &WriterContext,
    commands: &mut mpsc::Receiver<WriterCommand>,
) -> Result<(), Stop> {
    loop {
        match commands.try_recv() {
            Ok(command) => apply(sink, state, ctx, command).await?,
            Err(mpsc::error::TryRecvError::Empty) => return Ok(()),
            Err(mpsc::error::TryRecvError::Disconnected) => {
                // A close reason set just before the session stopped still wins.
                return Err(pending_stop(ctx).unwrap_or(Stop::Closed));
            }
        }
    }
}

/// Why an idle writer woke.
enum Woke {
    /// The session sent a command.
    Command(WriterCommand),
    /// The session or the peer is gone.
    Gone,
    /// The head moved, or a kill or shutdown was signalled: look again.
    Nudged,
}

/// Sleeps until a command, the peer leaving, the head moving, a kill or shutdown.
///
/// A writer that is caught up hands its stream to the sink's direct lane for the sleep (if
/// the sink has one): new events are then written by the thread's fan-out, and this task
/// wakes only for a command, a kill, or the lane handing the stream back. Whatever woke it,
/// it takes the stream back first, so the lane and the writer never both own the cursor.
async fn wait<S: Sink>(
    sink: &mut S,
    state: &mut State,
    ctx: &mut WriterContext,
    commands: &mut mpsc::Receiver<WriterCommand>,
) -> Woke {
    let armed = match (&state.feed, state.cursor, &state.filter) {
        (Some((feed, head)), Some(cursor), Some(filter)) if cursor >= *head.borrow() => {
            sink.arm(Lane {
                feed: feed.clone(),
                cursor,
                filter: filter.clone(),
                progress: ctx.progress.clone(),
                taken: state.taken,
                metrics: ctx.metrics.clone(),
            })
        }
        _ => false,
    };
    let woke = {
        let sink = &*sink;
        let head_moved = async {
            match state.feed.as_mut() {
                Some(_) if armed => sink.handed_back().await,
                Some((_, head)) => {
                    if head.changed().await.is_err() {
                        // The hospital actor is gone; nothing more will arrive.
                        std::future::pending::<()>().await
                    }
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            command = commands.recv() => match command {
                Some(command) => Woke::Command(command),
                None => Woke::Gone,
            },
            _ = sink.gone() => Woke::Gone,
            _ = head_moved => Woke::Nudged,
            _ = ctx.kill.changed() => Woke::Nudged,
            _ = ctx.shutdown.changed() => Woke::Nudged,
        }
    };
    if armed {
        if let Some(cursor) = sink.disarm() {
            state.cursor = Some(cursor);
        }
    }
    woke
}

fn pending_stop(ctx: &WriterContext) -> Option<Stop> {
    if let Some(reason) = *ctx.kill.borrow() {
        return Some(Stop::Kill(reason));
    }
    if *ctx.shutdown.borrow() {
        return Some(Stop::Kill(CloseReason::ServerShutdown));
    }
    None
}

/// Races a write against the kill and shutdown signals.
///
/// A write to a connection that keeps up completes at its first poll (the frame fits in the
/// connection's queue), so it is polled once before the race: only a write that has to wait
/// pays for watching the two signals (two waiter registrations on their channels), which
/// otherwise was a good part of the cost of one delivery.
async fn guarded<F: Future<Output = Result<(), Closed>>>(
    write: F,
    ctx: &mut WriterContext,
) -> Result<(), Stop> {
    if let Some(stop) = pending_stop(ctx) {
        return Err(stop);
    }
    let mut write = std::pin::pin!(write);
    let first = std::future::poll_fn(|cx| std::task::Poll::Ready(write.as_mut().poll(cx))).await;
    if let std::task::Poll::Ready(result) = first {
        return result.map_err(|_| Stop::Closed);
    }
    // Boxed: the race is rare, and its futures would otherwise enlarge every connection's
    // writer for its whole life.
    Box::pin(async move {
        tokio::select! {
            result = write => result.map_err(|_| Stop::Closed),
            _ = ctx.kill.changed() => Err(pending_stop(ctx).unwrap_or(Stop::Closed)),
            _ = ctx.shutdown.changed() => Err(pending_stop(ctx).unwrap_or(Stop::Closed)),
        }
    })
    .await
}

async fn apply<S: Sink>(
    sink: &mut S,
    state: &mut State,
    ctx: &WriterContext,
    command: WriterCommand,
) -> Result<(), Stop> {
    state.taken += 1;
    match command {
        WriterCommand::Frame(frame) => sink.send(frame).await.map_err(|_| Stop::Closed)?,
        WriterCommand::Stream(stream) => {
            let StreamStart {
                feed,
                start,
                filter,
            } = *stream;
            let head = feed.head();
            state.feed = Some((feed.clone(), feed.watch_head()));
            state.cursor = Some(start);
            state.filter = Some(Arc::new(filter));
            state.replay_until = head;
            ctx.progress.advance(start, head);
        }
        WriterCommand::Filter(filter) => state.filter = Some(Arc::new(*filter)),
        WriterCommand::Ping => sink.ping().await.map_err(|_| Stop::Closed)?,
        WriterCommand::Pong(payload) => sink.pong(payload).await.map_err(|_| Stop::Closed)?,
        WriterCommand::Close(reason) => return Err(Stop::Kill(reason)),
    }
    ctx.progress.touch();
    Ok(())
}

/// Sends the next batch after `cursor` (up to `head`), from memory or the store.
async fn step<S: Sink>(
    sink: &mut S,
    state: &mut State,
    ctx: &mut WriterContext,
    feed: &HospitalFeed,
    cursor: Position,
    head: Position,
) -> Result<(), Stop> {
    let (batch, from_memory) = match feed.events_after(cursor, MEMORY_BATCH) {
        Some(batch) => (batch, true),
        None => match read_after(&ctx.pool, &feed.hospital, cursor, DATABASE_BATCH).await {
            Ok(events) => (
                Batch::from(events.into_iter().map(prepare).collect::<Vec<_>>()),
                false,
            ),
            Err(error) => {
                tracing::warn!(hospital = %feed.hospital, %error, "replay read failed; retrying");
                let pause = tokio::time::sleep(READ_RETRY);
                return guarded(
                    async {
                        pause.await;
                        Ok(())
                    },
                    ctx,
                )
                .await;
            }
        },
    };
    // Read once per batch: the clock was ~2 % of the core at 10,000 connections when each
    // delivery read it (BENCHMARKS.md).
    let mut now = None;
    for event in batch {
        if event.position <= cursor {
            continue;
        }
        let wanted = state.filter.as_ref().is_some_and(|f| f.wants(&event));
        if wanted {
            guarded(sink.send_event(&event), ctx).await?;
            Metrics::inc(&ctx.metrics.events_delivered);
            if event.position <= state.replay_until {
                let counter = if from_memory {
                    &ctx.metrics.replayed_memory
                } else {
                    &ctx.metrics.replayed_database
                };
                Metrics::inc(counter);
            } else {
                let now = *now.get_or_insert_with(chrono::Utc::now);
                let age = now.signed_duration_since(event.recorded_at);
                ctx.metrics
                    .delivery_latency
                    .observe_ms(age.num_milliseconds().max(0) as u64);
            }
        }
        state.cursor = Some(event.position);
        ctx.progress.advance(event.position, head);
    }
    Ok(())
}
