//! What wakes stream readers when events commit: the LISTEN/NOTIFY connection, and the head
//! poll that covers a lost notification.
//!
//! After a command's transaction has committed, its writer announces it
//! ([`super::announce`]): `NOTIFY vigil_events, '<hospital> <position>'`, heard by every node
//! listening, not just the one that wrote. (The event trigger notified inside the
//! transaction until the NOTIFY was found to serialize every commit of the cluster; see
//! `migrations/*_notify_after_commit.sql`.) A notification is only a hint: readers then read
//! "after my last position" from the table, which is the truth. So a lost or coalesced
//! notification can delay a reader but never make it skip an event:
//!
//! - after a reconnect (e.g. PostgreSQL restarted) the listener broadcasts
//!   [`Wakeup::Resync`] so every reader catches up from its own position;
//! - an announcement that never went out (the writer died between its commit and its
//!   announcement, the statement failed) is found by the **head poll**
//!   ([`StreamListener::spawn_with_head_poll`]): every [`DEFAULT_HEAD_POLL`] or so it reads
//!   the `stream_heads` rows changed since its last look and broadcasts
//!   [`Wakeup::Committed`] for every head beyond what was heard.
//!
//! The connection itself — dedicated (LISTEN holds a session, which a pooled connection
//! cannot), reconnecting within a quarter second of PostgreSQL's return — is
//! [`crate::store::listen`], shared with presence.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aggregates::types::HospitalId;
use chrono::{DateTime, Utc};
use sqlx::{PgPool, Row};
use tokio::sync::broadcast;
use tokio::time::Instant;

use super::Position;
use crate::store::listen::{self, Heard};

/// The channel writers announce commits on ([`super::announce`]).
pub const CHANNEL: &str = "vigil_events";

/// How many wake-ups may queue for a slow reader before it is told to resync instead. A
/// reader that lags just re-reads from its position, so this bounds memory, not correctness.
pub const WAKEUP_BUFFER: usize = 4096;

/// Notifications held between the LISTEN connection and the broadcast. Forwarding never
/// waits (a broadcast send does not), so this only absorbs bursts.
const HEARD_BUFFER: usize = 256;

/// Default interval of the head poll: the longest a reader waits for a commit whose
/// announcement was lost. Half a second keeps that well under the one second Vigil promises
/// for live delivery after PostgreSQL's return, and costs PostgreSQL two polls a second per
/// node, each reading only the `stream_heads` rows changed since the previous one.
pub const DEFAULT_HEAD_POLL: Duration = Duration::from_millis(500);

/// How far back before its previous look the head poll reads `stream_heads`. A head row's
/// `updated_at` is the time its position was *assigned*, and the transaction commits later
/// (after its remaining statements and its fsync); a look that began in between did not see
/// it. Any commit that follows its position assignment by less than this is found by the
/// next incremental look.
const HEAD_LOOKBACK: Duration = Duration::from_secs(10);

/// Every this many looks the head poll reads every head, for a transaction that held its
/// position longer than [`HEAD_LOOKBACK`] before committing.
const HEAD_FULL_SCAN_EVERY: u32 = 60;

/// The head poll's look: the heads changed after `$1` (all of them when `$1` is NULL), and
/// the time of the look. `stream_heads` has one row per hospital and no index on
/// `updated_at` on purpose: an index on a column every commit updates would make each
/// head update a non-HOT update (more WAL on the commit path) to speed up a scan of a few
/// thousand rows twice a second.
const HEADS_CHANGED: &str = "SELECT t.now, h.hospital, h.position \
     FROM (SELECT statement_timestamp() AS now) AS t \
     LEFT JOIN stream_heads AS h ON $1::timestamptz IS NULL OR h.updated_at > $1";

/// What the listener tells readers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Wakeup {
    /// `hospital` has committed events up to `position`.
    Committed {
        hospital: HospitalId,
        position: Position,
    },
    /// Notifications may have been missed (first connect, reconnect, lag): every reader
    /// should read after its last position.
    Resync,
}

/// Handle to the background listener. Cloning shares the same connection.
#[derive(Clone, Debug)]
pub struct StreamListener {
    sender: broadcast::Sender<Wakeup>,
}

/// The highest position heard or polled per hospital: what the head poll compares with.
type Known = Arc<Mutex<HashMap<HospitalId, Position>>>;

impl StreamListener {
    /// Spawns the listener on the current tokio runtime. `config` is a tokio-postgres
    /// connection string (URL or key-value form). It connects in the background and
    /// reconnects forever (see [`crate::store::listen`]); readers receive
    /// [`Wakeup::Resync`] after each (re)connection. Without a head poll, a commit whose
    /// announcement is lost is seen at the next commit of its hospital or the next resync:
    /// servers use [`Self::spawn_with_head_poll`].
    pub fn spawn(config: String) -> Self {
        Self::start(config, Known::default()).0
    }

    /// [`Self::spawn`], plus the head poll: every `every`, the `stream_heads` rows changed
    /// since the previous look are read on `pool`, and [`Wakeup::Committed`] is broadcast
    /// for each head beyond what was heard, so that no reader waits longer than about
    /// `every` for a commit whose announcement was lost.
    pub fn spawn_with_head_poll(config: String, pool: PgPool, every: Duration) -> Self {
        let (listener, known) = Self::start(config, Known::default());
        tokio::spawn(poll_heads(pool, every, known, listener.sender.clone()));
        listener
    }

    fn start(config: String, known: Known) -> (Self, Known) {
        let (sender, _) = broadcast::channel(WAKEUP_BUFFER);
        let heard = listen::spawn(config, CHANNEL, "stream", HEARD_BUFFER);
        tokio::spawn(forward(heard, sender.clone(), known.clone()));
        (Self { sender }, known)
    }

    /// A new receiver of wake-ups. Subscribe *before* the reader's first read, so that no
    /// commit between the read and the subscription goes unnoticed.
    pub fn subscribe(&self) -> broadcast::Receiver<Wakeup> {
        self.sender.subscribe()
    }
}

/// What a consumer of every hospital's stream (a projector, the policies) must look at after
/// a wake-up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WakeScope {
    /// Only these hospitals committed (every notification since the last look named one).
    Hospitals(BTreeSet<String>),
    /// Anything may have changed: a resync, missed notifications, or the safety poll.
    All,
    /// The listener is gone: stop.
    Closed,
}

/// The wake-ups of one background consumer of every hospital's stream (a read model's
/// projector, the policies), paced.
///
/// Each pass of such a consumer costs a handful of statements per hospital whatever the
/// number of events it finds (lock the checkpoint, read, apply, advance, commit), so passes
/// that each find one event made the consumers — eight of them, every one woken by every
/// commit — most of PostgreSQL's work under load, and a context switch to PostgreSQL and
/// back per statement on the server's core. Passes are therefore at least `spacing` apart:
/// a wake-up after a quiet spell starts a pass at once (no added delay when commands are
/// sparse), and commits that arrive while the consumer is inside its spacing are taken
/// together by the next pass (at most `spacing` later). The realtime readers are not paced:
/// their latency is what clients see.
pub struct Wakeups {
    receiver: broadcast::Receiver<Wakeup>,
    poll: Duration,
    spacing: Duration,
    last_pass: Option<Instant>,
}

impl Wakeups {
    /// Paces `receiver`: a pass at least every `poll` (the safety net against a lost
    /// notification), and at most one every `spacing` (zero: no pacing) while wake-ups
    /// arrive. The poll's pass is not paced: it comes only after `poll` without any
    /// wake-up, so it adds at most one pass per `poll` whatever the spacing.
    pub fn new(receiver: broadcast::Receiver<Wakeup>, poll: Duration, spacing: Duration) -> Self {
        Self {
            receiver,
            poll,
            spacing,
            last_pass: None,
        }
    }

    /// Waits for the next pass and says what it must look at. Waits up to `poll` for a
    /// wake-up, then until `spacing` has passed since the previous pass began, and takes
    /// every wake-up queued by then, so the pass checks only the hospitals that committed
    /// instead of asking the database which hospitals lag (under load that query, once per
    /// consumer per commit, was a large share of PostgreSQL's work). Anything that may hide
    /// a commit — [`Wakeup::Resync`], a lagged receiver, the poll timeout — yields
    /// [`WakeScope::All`].
    pub async fn next(&mut self) -> WakeScope {
        use broadcast::error::{RecvError, TryRecvError};
        let mut hospitals = BTreeSet::new();
        match tokio::time::timeout(self.poll, self.receiver.recv()).await {
            Ok(Ok(Wakeup::Committed { hospital, .. })) => {
                hospitals.insert(hospital.as_str().to_owned());
            }
            Ok(Ok(Wakeup::Resync)) | Ok(Err(RecvError::Lagged(_))) | Err(_) => {
                return self.pass(WakeScope::All)
            }
            Ok(Err(RecvError::Closed)) => return WakeScope::Closed,
        }
        if let Some(last) = self.last_pass {
            tokio::time::sleep_until(last + self.spacing).await;
        }
        loop {
            match self.receiver.try_recv() {
                Ok(Wakeup::Committed { hospital, .. }) => {
                    hospitals.insert(hospital.as_str().to_owned());
                }
                Ok(Wakeup::Resync) | Err(TryRecvError::Lagged(_)) => {
                    return self.pass(WakeScope::All)
                }
                Err(TryRecvError::Empty) => return self.pass(WakeScope::Hospitals(hospitals)),
                Err(TryRecvError::Closed) => return WakeScope::Closed,
            }
        }
    }

    fn pass(&mut self, scope: WakeScope) -> WakeScope {
        self.last_pass = Some(Instant::now());
        scope
    }
}

/// Turns what the LISTEN connection hears into wake-ups, until the connection's task ends
/// (it does not while the runtime runs).
async fn forward(
    mut heard: tokio::sync::mpsc::Receiver<Heard>,
    sender: broadcast::Sender<Wakeup>,
    known: Known,
) {
    while let Some(item) = heard.recv().await {
        let wakeup = match item {
            // Anything committed before LISTEN took effect was not notified: every reader
            // re-reads after its position (the hospital actors, the projectors, the policies).
            Heard::Listening => Some(Wakeup::Resync),
            Heard::Notification(payload) => parse(&payload),
        };
        if let Some(Wakeup::Committed { hospital, position }) = &wakeup {
            raise(&known, hospital, *position);
        }
        if let Some(wakeup) = wakeup {
            // No receivers is fine: nobody is reading right now.
            let _ = sender.send(wakeup);
        }
    }
}

/// Records `position` as known for `hospital`; whether it was beyond what was known.
fn raise(known: &Known, hospital: &HospitalId, position: Position) -> bool {
    let mut known = known.lock().unwrap_or_else(|p| p.into_inner());
    let entry = known.entry(hospital.clone()).or_insert(0);
    let beyond = position > *entry;
    *entry = (*entry).max(position);
    beyond
}

/// The head poll: reads the heads changed since its previous look (all of them at first,
/// after a failed look, and every [`HEAD_FULL_SCAN_EVERY`] looks) and wakes readers for
/// every head beyond what the listener heard or an earlier look found. Runs until the pool
/// is closed.
async fn poll_heads(
    pool: PgPool,
    every: Duration,
    known: Known,
    sender: broadcast::Sender<Wakeup>,
) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let lookback = chrono::Duration::from_std(HEAD_LOOKBACK).unwrap_or(chrono::Duration::zero());
    let mut since: Option<DateTime<Utc>> = None;
    let mut looks: u32 = 0;
    loop {
        ticks.tick().await;
        if pool.is_closed() {
            return;
        }
        looks = looks.wrapping_add(1);
        let after = since.filter(|_| !looks.is_multiple_of(HEAD_FULL_SCAN_EVERY));
        let rows = match sqlx::query(HEADS_CHANGED)
            .bind(after)
            .fetch_all(&pool)
            .await
        {
            Ok(rows) => rows,
            Err(error) => {
                // PostgreSQL away: the listener's resync covers its return; look at every
                // head next time.
                tracing::debug!(%error, "stream head poll failed");
                since = None;
                continue;
            }
        };
        for row in &rows {
            if let Ok(now) = row.try_get::<DateTime<Utc>, _>("now") {
                since = Some(now - lookback);
            }
            let head = row
                .try_get::<Option<String>, _>("hospital")
                .ok()
                .flatten()
                .and_then(|h| HospitalId::parse(&h).ok())
                .zip(
                    row.try_get::<Option<Position>, _>("position")
                        .ok()
                        .flatten(),
                );
            if let Some((hospital, position)) = head {
                if raise(&known, &hospital, position) {
                    tracing::debug!(%hospital, position, "head poll found an unannounced commit");
                    // No receivers is fine: nobody is reading right now.
                    let _ = sender.send(Wakeup::Committed { hospital, position });
                }
            }
        }
    }
}

/// Parses `"<hospital> <position>"`; anything else is ignored (and logged).
fn parse(payload: &str) -> Option<Wakeup> {
    let (hospital, position) = payload.split_once(' ')?;
    let parsed = HospitalId::parse(hospital)
        .ok()
        .zip(position.parse::<Position>().ok());
    match parsed {
        Some((hospital, position)) => Some(Wakeup::Committed { hospital, position }),
        None => {
            tracing::warn!(payload, "ignoring malformed stream notification");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notification_names_the_hospital_and_position() {
        assert_eq!(
            parse("st-marys 42"),
            Some(Wakeup::Committed {
                hospital: HospitalId::parse("st-marys").unwrap(),
                position: 42
            })
        );
    }

    fn committed(hospital: &str) -> Wakeup {
        Wakeup::Committed {
            hospital: HospitalId::parse(hospital).unwrap(),
            position: 1,
        }
    }

    const SPACING: Duration = Duration::from_millis(25);

    fn unpaced(rx: broadcast::Receiver<Wakeup>) -> Wakeups {
        Wakeups::new(rx, Duration::from_secs(5), Duration::ZERO)
    }

    fn hospitals(names: &[&str]) -> WakeScope {
        WakeScope::Hospitals(names.iter().map(|h| h.to_string()).collect())
    }

    #[tokio::test]
    async fn a_wake_up_covers_every_hospital_already_notified() {
        let (tx, rx) = broadcast::channel(16);
        for h in ["b", "a", "b"] {
            tx.send(committed(h)).unwrap();
        }
        assert_eq!(unpaced(rx).next().await, hospitals(&["a", "b"]));
    }

    #[tokio::test]
    async fn a_resync_anywhere_in_the_queue_means_everything() {
        let (tx, rx) = broadcast::channel(16);
        tx.send(committed("a")).unwrap();
        tx.send(Wakeup::Resync).unwrap();
        assert_eq!(unpaced(rx).next().await, WakeScope::All);
    }

    #[tokio::test]
    async fn missed_notifications_mean_everything() {
        let (tx, rx) = broadcast::channel(2);
        for h in ["a", "b", "c", "d"] {
            tx.send(committed(h)).unwrap();
        }
        assert_eq!(unpaced(rx).next().await, WakeScope::All);
    }

    #[tokio::test(start_paused = true)]
    async fn the_safety_poll_means_everything_and_a_closed_listener_stops() {
        let (tx, rx) = broadcast::channel::<Wakeup>(2);
        let mut wakeups = Wakeups::new(rx, Duration::from_secs(1), SPACING);
        let start = Instant::now();
        assert_eq!(wakeups.next().await, WakeScope::All);
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        drop(tx);
        assert_eq!(wakeups.next().await, WakeScope::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_commit_after_a_quiet_spell_starts_a_pass_at_once() {
        let (tx, rx) = broadcast::channel(16);
        let mut wakeups = Wakeups::new(rx, Duration::from_secs(5), SPACING);
        tx.send(committed("a")).unwrap();
        let start = Instant::now();
        assert_eq!(wakeups.next().await, hospitals(&["a"]));
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "the first pass waits for nothing"
        );

        tokio::time::sleep(SPACING * 3).await;
        tx.send(committed("b")).unwrap();
        let quiet = Instant::now();
        assert_eq!(wakeups.next().await, hospitals(&["b"]));
        assert_eq!(
            quiet.elapsed(),
            Duration::ZERO,
            "nor does one after a quiet spell"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn commits_inside_the_spacing_are_taken_together_by_the_next_pass() {
        let (tx, rx) = broadcast::channel(16);
        let mut wakeups = Wakeups::new(rx, Duration::from_secs(5), SPACING);
        tx.send(committed("a")).unwrap();
        assert_eq!(wakeups.next().await, hospitals(&["a"]));
        let first_pass = Instant::now();

        let sender = tx.clone();
        tokio::spawn(async move {
            for (after_ms, hospital) in [(2, "b"), (9, "c"), (17, "b")] {
                tokio::time::sleep_until(first_pass + Duration::from_millis(after_ms)).await;
                sender.send(committed(hospital)).unwrap();
            }
        });
        assert_eq!(wakeups.next().await, hospitals(&["b", "c"]));
        assert_eq!(
            first_pass.elapsed(),
            SPACING,
            "the second pass starts one spacing after the first, not at the first commit"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_resync_as_the_next_wakeup_is_not_delayed_by_the_spacing() {
        let (tx, rx) = broadcast::channel(16);
        let mut wakeups = Wakeups::new(rx, Duration::from_secs(5), SPACING);
        tx.send(committed("a")).unwrap();
        assert_eq!(wakeups.next().await, hospitals(&["a"]));
        let first_pass = Instant::now();
        tx.send(Wakeup::Resync).unwrap();
        assert_eq!(wakeups.next().await, WakeScope::All);
        assert_eq!(first_pass.elapsed(), Duration::ZERO);
    }

    /// A resync behind a commit is taken by the paced pass, which then looks at everything.
    #[tokio::test(start_paused = true)]
    async fn a_resync_behind_a_commit_widens_the_paced_pass_to_everything() {
        let (tx, rx) = broadcast::channel(16);
        let mut wakeups = Wakeups::new(rx, Duration::from_secs(5), SPACING);
        tx.send(committed("a")).unwrap();
        assert_eq!(wakeups.next().await, hospitals(&["a"]));
        let first_pass = Instant::now();
        tx.send(committed("b")).unwrap();
        tx.send(Wakeup::Resync).unwrap();
        assert_eq!(wakeups.next().await, WakeScope::All);
        assert_eq!(first_pass.elapsed(), SPACING);
    }

    #[test]
    fn the_configured_head_poll_defaults_to_the_documented_interval() {
        assert_eq!(
            crate::config::RealtimeSettings::default().stream_head_poll,
            DEFAULT_HEAD_POLL
        );
    }

    #[test]
    fn malformed_notifications_are_ignored() {
        assert_eq!(parse("no-position"), None);
        assert_eq!(parse("h x"), None);
        assert_eq!(parse("BAD_ID 1"), None);
    }
}
