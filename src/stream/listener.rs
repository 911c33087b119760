//! The LISTEN/NOTIFY connection that wakes stream readers when events commit.
//!
//! The trigger that assigns positions also queues `NOTIFY vigil_events, '<hospital>
//! <position>'`, which PostgreSQL delivers only when (and if) the transaction commits — on
//! every node listening, not just the one that wrote. A notification is only a hint: readers
//! then read "after my last position" from the table, which is the truth. So a lost or
//! coalesced notification can delay a reader but never make it skip an event, and after a
//! reconnect (e.g. PostgreSQL restarted) the listener broadcasts [`Wakeup::Resync`] so every
//! reader catches up from its own position.
//!
//! The connection itself — dedicated (LISTEN holds a session, which a pooled connection
//! cannot), reconnecting within a quarter second of PostgreSQL's return — is
//! [`crate::store::listen`], shared with presence.

use std::collections::BTreeSet;
use std::time::Duration;

use aggregates::types::HospitalId;
use tokio::sync::broadcast;
use tokio::time::Instant;

use super::Position;
use crate::store::listen::{self, Heard};

/// The channel the position trigger notifies.
pub const CHANNEL: &str = "vigil_events";

/// How many wake-ups may queue for a slow reader before it is told to resync instead. A
/// reader that lags just re-reads from its position, so this bounds memory, not correctness.
pub const WAKEUP_BUFFER: usize = 4096;

/// Notifications held between the LISTEN connection and the broadcast. Forwarding never
/// waits (a broadcast send does not), so this only absorbs bursts.
const HEARD_BUFFER: usize = 256;

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

impl StreamListener {
    /// Spawns the listener on the current tokio runtime. `config` is a tokio-postgres
    /// connection string (URL or key-value form). It connects in the background and
    /// reconnects forever (see [`crate::store::listen`]); readers receive
    /// [`Wakeup::Resync`] after each (re)connection.
    pub fn spawn(config: String) -> Self {
        let (sender, _) = broadcast::channel(WAKEUP_BUFFER);
        let heard = listen::spawn(config, CHANNEL, "stream", HEARD_BUFFER);
        tokio::spawn(forward(heard, sender.clone()));
        Self { sender }
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
async fn forward(mut heard: tokio::sync::mpsc::Receiver<Heard>, sender: broadcast::Sender<Wakeup>) {
    while let Some(item) = heard.recv().await {
        let wakeup = match item {
            // Anything committed before LISTEN took effect was not notified: every reader
            // re-reads after its position (the hospital actors, the projectors, the policies).
            Heard::Listening => Some(Wakeup::Resync),
            Heard::Notification(payload) => parse(&payload),
        };
        if let Some(wakeup) = wakeup {
            // No receivers is fine: nobody is reading right now.
            let _ = sender.send(wakeup);
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
    fn malformed_notifications_are_ignored() {
        assert_eq!(parse("no-position"), None);
        assert_eq!(parse("h x"), None);
        assert_eq!(parse("BAD_ID 1"), None);
    }
}
