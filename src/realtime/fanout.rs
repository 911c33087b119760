//! Direct writes for caught-up connections: one fan-out per hospital per worker thread.
//!
//! Without it, each new event woke every connection's writer task (through the hospital
//! head's watch), and each task then took the event from the window, queued its frame and
//! wrote it: at 10,000 connections about a fifth of the server's time went into waking and
//! polling those tasks (BENCHMARKS.md, "issue 17: delivery"). Here a writer that is caught
//! up and has nothing else to do hands its cursor and filter to its socket's *lane*
//! ([`Sink::arm`](super::writer::Sink::arm)) before it sleeps. The thread's fan-out for that
//! hospital is the only task the head wakes on this thread; it takes the new events from the
//! window once and, for each armed lane, queues the frames the connection wants and writes
//! them with one non-blocking `write` (or `writev`), on the connection's behalf.
//!
//! Exactly once and in order still hold, because a stream position is owned by one party at
//! a time: the lane while the writer sleeps, the writer once it takes the lane back — which
//! it does first thing whenever it wakes, whatever woke it. The fan-out writes only when the
//! lane's cursor is inside the batch it holds, no command is waiting for the writer (a new
//! filter or a reply is never overtaken), and nothing is still queued for the socket.
//! Otherwise, or when the socket does not take everything (the rest stays queued in order),
//! it hands the stream back and wakes the writer task, which goes on from the lane's cursor
//! by the ordinary path: replay, back-pressure, slow-consumer limits all unchanged.
//!
//! Single-threaded by construction: the fan-out, the connections it writes to and their
//! writer tasks all run on one worker thread's local task set (actix-web runs each
//! connection on the worker that accepted it), so the lane is a `RefCell`, not a lock.

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Notify;

use super::hospital::HospitalFeed;
use super::socket::Shared;
use super::window::WindowEvent;
use super::writer::MEMORY_BATCH;
use crate::metrics::Metrics;
use crate::stream::Position;

thread_local! {
    /// This thread's fan-outs, one per hospital with an armed connection here. Few (a
    /// node serves a handful of hospitals), so a list searched by pointer.
    static FANOUTS: RefCell<Vec<Rc<FanOut>>> = const { RefCell::new(Vec::new()) };
}

/// One hospital's fan-out on one worker thread.
pub(super) struct FanOut {
    feed: Arc<HospitalFeed>,
    /// The connections registered here (each once, from its first arm until it ends).
    lanes: RefCell<Vec<Weak<Shared>>>,
    /// Registered connections still open; the task ends when it falls to zero.
    live: Cell<usize>,
    /// Wakes the task when `live` falls to zero.
    emptied: Notify,
    metrics: Arc<Metrics>,
}

/// What one pass did, summed into the metrics once per pass rather than per connection.
#[derive(Default)]
pub(super) struct PassStats {
    /// Recipients of each event of the batch (same index), for the latency histogram.
    pub recipients: Vec<u64>,
    /// Frames queued by the fan-out.
    pub delivered: u64,
    /// Of those, frames the socket took at once.
    pub direct: u64,
    /// Connections handed back to their writer task.
    pub handed_back: u64,
}

impl FanOut {
    /// Whether this fan-out follows `feed`.
    pub fn serves(&self, feed: &Arc<HospitalFeed>) -> bool {
        Arc::ptr_eq(&self.feed, feed)
    }

    /// A registered connection ended.
    pub fn leave(&self) {
        let live = self.live.get().saturating_sub(1);
        self.live.set(live);
        if live == 0 {
            self.emptied.notify_one();
        }
    }

    /// Writes the events after `from` up to `head` to every armed lane; returns the position
    /// reached (`head`).
    fn pass(&self, mut from: Position, head: Position) -> Position {
        let now = Instant::now();
        let mut stats = PassStats::default();
        while from < head {
            let Some(batch) = self.feed.events_after(from, MEMORY_BATCH) else {
                // The window no longer reaches back to `from` (a burst evicted it): every
                // armed lane behind is handed back; their writers read the store.
                self.each_lane(|shared| {
                    shared.deliver(&self.feed, &[], from, head, now, &mut stats)
                });
                break;
            };
            let events: Vec<Arc<WindowEvent>> = batch.collect();
            let Some(last) = events.last().map(|e| e.position) else {
                break;
            };
            stats.recipients.clear();
            stats.recipients.resize(events.len(), 0);
            self.each_lane(|shared| {
                shared.deliver(&self.feed, &events, from, last, now, &mut stats)
            });
            // Read after the batch's last write: the latency recorded is that of the last
            // connection written to (an upper bound for the others), once per event.
            let now_utc = chrono::Utc::now();
            for (event, &n) in events.iter().zip(&stats.recipients) {
                let age = now_utc.signed_duration_since(event.recorded_at);
                self.metrics
                    .delivery_latency
                    .observe_ms_times(age.num_milliseconds().max(0) as u64, n);
            }
            from = last;
        }
        let add = |counter: &std::sync::atomic::AtomicU64, n: u64| {
            if n > 0 {
                counter.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            }
        };
        add(&self.metrics.events_delivered, stats.delivered);
        add(&self.metrics.events_delivered_direct, stats.direct);
        add(&self.metrics.direct_handed_back, stats.handed_back);
        head
    }

    /// Calls `f` on every open registered connection, forgetting closed ones.
    fn each_lane(&self, mut f: impl FnMut(&Shared)) {
        self.lanes.borrow_mut().retain(|lane| match lane.upgrade() {
            Some(shared) => {
                f(&shared);
                true
            }
            None => false,
        });
    }
}

/// Registers a connection with this thread's fan-out for `feed`, starting the fan-out if
/// there is none yet.
pub(super) fn join(
    feed: &Arc<HospitalFeed>,
    metrics: &Arc<Metrics>,
    lane: Weak<Shared>,
) -> Rc<FanOut> {
    FANOUTS.with(|fanouts| {
        let mut fanouts = fanouts.borrow_mut();
        let fanout = match fanouts.iter().find(|f| f.serves(feed)) {
            Some(fanout) => fanout.clone(),
            None => {
                let fanout = Rc::new(FanOut {
                    feed: feed.clone(),
                    lanes: RefCell::new(Vec::new()),
                    live: Cell::new(0),
                    emptied: Notify::new(),
                    metrics: metrics.clone(),
                });
                fanouts.push(fanout.clone());
                tokio::task::spawn_local(run(fanout.clone()));
                fanout
            }
        };
        fanout.live.set(fanout.live.get() + 1);
        fanout.lanes.borrow_mut().push(lane);
        fanout
    })
}

/// The fan-out's task: one pass per move of the head, until no connection is registered.
async fn run(fanout: Rc<FanOut>) {
    let mut head = fanout.feed.watch_head();
    let mut from = *head.borrow_and_update();
    loop {
        tokio::select! {
            changed = head.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            () = fanout.emptied.notified() => {
                if fanout.live.get() == 0 {
                    break;
                }
                continue;
            }
        }
        let current = *head.borrow_and_update();
        if current > from {
            from = fanout.pass(from, current);
        }
    }
    // Registered lanes that are still armed would otherwise sleep through later events.
    let mut stats = PassStats::default();
    let now = Instant::now();
    fanout.each_lane(|shared| {
        shared.deliver(
            &fanout.feed,
            &[],
            Position::MAX,
            Position::MAX,
            now,
            &mut stats,
        )
    });
    let _ = FANOUTS.try_with(|fanouts| {
        fanouts.borrow_mut().retain(|f| !Rc::ptr_eq(f, &fanout));
    });
}
