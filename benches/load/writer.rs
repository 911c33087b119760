//! The open-loop command writer: raise-alert commands sent through REST at their scheduled
//! instants, whatever the server's response time.
//!
//! Command `k` is due at `start + k / rate`. The writer fires every due command, then sleeps
//! until the next one is due; each command runs in its own task, so a slow response never
//! delays the next send (a closed loop would, and would hide the server's queueing from the
//! latencies: "coordinated omission"). Latencies are measured from the *scheduled* instant.
//! In-flight commands are capped so a stalled server cannot make the tool open thousands of
//! sockets; commands over the cap are skipped and reported, never silently dropped.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::sync::Semaphore;

use crate::api::{Api, CommandFailure, REQUEST_TIMEOUT};
use crate::report;

/// Most commands in flight at once. 1,024 is far above what a healthy server needs (rate ×
/// response time) and keeps sockets well under the process's file limit next to 15,000
/// WebSockets.
pub const MAX_IN_FLIGHT: usize = 1024;

/// Most slots a [`SendLog`] holds (64 MiB): 300 s at 20,000 commands/s plus room for
/// commands that produce more than one event.
const MAX_SEND_LOG_SLOTS: usize = 8_000_000;

/// The scheduled send instant of each command, by the stream positions it produced: lets a
/// subscriber compute send → delivery latency for each event it receives.
pub struct SendLog {
    /// Positions before and at it are not ours.
    base: i64,
    /// `slots[p - base - 1]` = scheduled µs since t0, plus one (0 = not known yet).
    slots: Vec<AtomicU64>,
}

impl SendLog {
    /// A log for positions after `base`, sized for `commands` commands.
    pub fn new(base: i64, commands: u64) -> Self {
        let len = usize::try_from(commands.saturating_mul(2).saturating_add(1024))
            .unwrap_or(MAX_SEND_LOG_SLOTS)
            .min(MAX_SEND_LOG_SLOTS);
        Self {
            base,
            slots: (0..len).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn slot(&self, position: i64) -> Option<&AtomicU64> {
        usize::try_from(position - self.base - 1)
            .ok()
            .and_then(|i| self.slots.get(i))
    }

    fn set(&self, position: i64, scheduled_us: u64) {
        if let Some(slot) = self.slot(position) {
            slot.store(scheduled_us.saturating_add(1), Ordering::Relaxed);
        }
    }

    /// The scheduled send instant (µs since t0) of the command that produced `position`,
    /// if its response has been read.
    pub fn scheduled_us(&self, position: i64) -> Option<u64> {
        match self.slot(position)?.load(Ordering::Relaxed) {
            0 => None,
            v => Some(v - 1),
        }
    }
}

/// What the writer did.
pub struct WriterReport {
    pub scheduled: u64,
    pub ok: u64,
    pub failed: u64,
    pub skipped: u64,
    /// Failures by status (`http 429`) or transport failure (`timeout`, `connect`, …).
    pub failures: BTreeMap<String, u32>,
    /// Scheduled send → 201 response.
    pub latency: Histogram<u64>,
    /// Time from the first scheduled send to the last response.
    pub elapsed: Duration,
}

/// Everything a command task needs.
struct Shared {
    api: Api,
    tokens: Vec<String>,
    log: Arc<SendLog>,
    t0: Instant,
    ok: AtomicU64,
    failed: AtomicU64,
    failures: Mutex<BTreeMap<String, u32>>,
    latency: Mutex<Histogram<u64>>,
}

/// Sends `rate` × `duration` raise-alert commands on an open-loop schedule, writer user
/// `k % tokens.len()` sending command `k`, and records each command's positions in `log`.
pub async fn drive(
    api: Api,
    tokens: Vec<String>,
    rate: f64,
    duration: Duration,
    log: Arc<SendLog>,
    t0: Instant,
) -> WriterReport {
    let total = (rate * duration.as_secs_f64()).round() as u64;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let shared = Arc::new(Shared {
        api,
        tokens,
        log,
        t0,
        ok: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        failures: Mutex::new(BTreeMap::new()),
        latency: Mutex::new(report::histogram()),
    });
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let start = tokio::time::Instant::now();
    let mut skipped = 0u64;
    let mut k = 0u64;
    while k < total {
        let due = start + interval.mul_f64(k as f64);
        tokio::time::sleep_until(due).await;
        let now = tokio::time::Instant::now();
        // Fire every command due by now: the timer's 1 ms granularity would otherwise cap
        // the rate, and a late wake-up must not shift the schedule.
        while k < total && start + interval.mul_f64(k as f64) <= now {
            let scheduled = (start + interval.mul_f64(k as f64)).into_std();
            match in_flight.clone().try_acquire_owned() {
                Ok(permit) => {
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        send(&shared, k, scheduled).await;
                        drop(permit);
                    });
                }
                Err(_) => skipped += 1,
            }
            k += 1;
        }
    }
    // Wait for the last responses; each is bounded by the request timeout.
    let all = u32::try_from(MAX_IN_FLIGHT).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(REQUEST_TIMEOUT * 2, in_flight.acquire_many(all)).await;
    let elapsed = start.elapsed();
    let failures = shared
        .failures
        .lock()
        .map(|f| f.clone())
        .unwrap_or_default();
    let latency = shared
        .latency
        .lock()
        .map(|h| h.clone())
        .unwrap_or_else(|_| report::histogram());
    WriterReport {
        scheduled: total,
        ok: shared.ok.load(Ordering::Relaxed),
        failed: shared.failed.load(Ordering::Relaxed),
        skipped,
        failures,
        latency,
        elapsed,
    }
}

/// Sends command `k`, scheduled at `scheduled`.
async fn send(shared: &Shared, k: u64, scheduled: Instant) {
    let token = &shared.tokens[(k % shared.tokens.len() as u64) as usize];
    let result = shared
        .api
        .raise_alert(token, &format!("load test alert {k}"))
        .await;
    let scheduled_us =
        u64::try_from(scheduled.saturating_duration_since(shared.t0).as_micros()).unwrap_or(0);
    match result {
        Ok(positions) => {
            for p in positions {
                shared.log.set(p, scheduled_us);
            }
            shared.ok.fetch_add(1, Ordering::Relaxed);
            let micros = u64::try_from(scheduled.elapsed().as_micros()).unwrap_or(u64::MAX);
            if let Ok(mut h) = shared.latency.lock() {
                report::record(&mut h, micros);
            }
        }
        Err(failure) => {
            shared.failed.fetch_add(1, Ordering::Relaxed);
            let key = match failure {
                CommandFailure::Status(s) => format!("http {s}"),
                CommandFailure::Transport(kind) => kind.to_owned(),
            };
            if let Ok(mut f) = shared.failures.lock() {
                *f.entry(key).or_default() += 1;
            }
        }
    }
}

/// Raises `count` alerts as fast as `concurrency` requests in flight allow (reconnect mode:
/// the events the disconnected clients will be owed). Returns how many succeeded.
pub async fn raise_burst(api: &Api, tokens: &[String], count: u32, concurrency: usize) -> u32 {
    use futures_util::StreamExt;
    futures_util::stream::iter(0..count)
        .map(|k| {
            let token = &tokens[k as usize % tokens.len()];
            let api = api.clone();
            async move {
                api.raise_alert(token, &format!("owed alert {k}"))
                    .await
                    .is_ok()
            }
        })
        .buffer_unordered(concurrency)
        .fold(0u32, |n, ok| async move { n + u32::from(ok) })
        .await
}
