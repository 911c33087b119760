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
//! It uses a dedicated `tokio-postgres` connection: LISTEN holds a session, which a pooled
//! connection cannot.

use std::collections::BTreeSet;
use std::time::Duration;

use aggregates::types::HospitalId;
use futures_util::StreamExt;
use tokio::sync::broadcast;
use tokio_postgres::{AsyncMessage, NoTls};

use super::Position;

/// The channel the position trigger notifies.
pub const CHANNEL: &str = "vigil_events";

/// How many wake-ups may queue for a slow reader before it is told to resync instead. A
/// reader that lags just re-reads from its position, so this bounds memory, not correctness.
pub const WAKEUP_BUFFER: usize = 4096;

/// First and longest delay between reconnect attempts.
const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(5);

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
    /// reconnects forever with backoff; readers receive [`Wakeup::Resync`] after each
    /// (re)connection.
    pub fn spawn(config: String) -> Self {
        let (sender, _) = broadcast::channel(WAKEUP_BUFFER);
        let task_sender = sender.clone();
        tokio::spawn(async move { run(config, task_sender).await });
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

/// Waits up to `poll` for the next wake-up and takes every one already queued behind it,
/// so a consumer checks only the hospitals that committed instead of asking the database
/// which hospitals lag on every wake-up (under load that query, once per consumer per
/// commit, was a large share of PostgreSQL's work). Anything that may hide a commit —
/// [`Wakeup::Resync`], a lagged receiver, the timeout — yields [`WakeScope::All`].
pub async fn next_scope(wakeups: &mut broadcast::Receiver<Wakeup>, poll: Duration) -> WakeScope {
    use broadcast::error::{RecvError, TryRecvError};
    let mut hospitals = BTreeSet::new();
    match tokio::time::timeout(poll, wakeups.recv()).await {
        Ok(Ok(Wakeup::Committed { hospital, .. })) => {
            hospitals.insert(hospital.as_str().to_owned());
        }
        Ok(Ok(Wakeup::Resync)) | Ok(Err(RecvError::Lagged(_))) | Err(_) => return WakeScope::All,
        Ok(Err(RecvError::Closed)) => return WakeScope::Closed,
    }
    loop {
        match wakeups.try_recv() {
            Ok(Wakeup::Committed { hospital, .. }) => {
                hospitals.insert(hospital.as_str().to_owned());
            }
            Ok(Wakeup::Resync) | Err(TryRecvError::Lagged(_)) => return WakeScope::All,
            Err(TryRecvError::Empty) => return WakeScope::Hospitals(hospitals),
            Err(TryRecvError::Closed) => return WakeScope::Closed,
        }
    }
}

async fn run(config: String, sender: broadcast::Sender<Wakeup>) {
    let mut delay = RECONNECT_MIN;
    loop {
        match listen_once(&config, &sender).await {
            Ok(()) => {
                tracing::warn!("stream listener connection closed; reconnecting");
                delay = RECONNECT_MIN;
            }
            Err(error) => {
                tracing::warn!(%error, delay_ms = delay.as_millis() as u64, "stream listener failed; reconnecting");
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(RECONNECT_MAX);
    }
}

/// One connection's life: connect, LISTEN, forward notifications until the connection ends.
async fn listen_once(
    config: &str,
    sender: &broadcast::Sender<Wakeup>,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = tokio_postgres::connect(config, NoTls).await?;
    let forward = sender.clone();
    let pump = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(note)) => {
                    if let Some(wakeup) = parse(note.payload()) {
                        // No receivers is fine: nobody is reading right now.
                        let _ = forward.send(wakeup);
                    }
                }
                Ok(_) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    });
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
    tracing::info!("stream listener connected");
    // Anything committed before LISTEN took effect was not notified: tell readers to catch up.
    let _ = sender.send(Wakeup::Resync);
    let outcome = pump.await;
    drop(client);
    match outcome {
        Ok(result) => result,
        Err(join) => {
            tracing::error!(%join, "stream listener pump panicked");
            Ok(())
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

    #[tokio::test]
    async fn a_wake_up_covers_every_hospital_already_notified() {
        let (tx, mut rx) = broadcast::channel(16);
        for h in ["b", "a", "b"] {
            tx.send(committed(h)).unwrap();
        }
        let scope = next_scope(&mut rx, Duration::from_secs(5)).await;
        let expected = ["a", "b"].map(String::from).into_iter().collect();
        assert_eq!(scope, WakeScope::Hospitals(expected));
    }

    #[tokio::test]
    async fn a_resync_anywhere_in_the_queue_means_everything() {
        let (tx, mut rx) = broadcast::channel(16);
        tx.send(committed("a")).unwrap();
        tx.send(Wakeup::Resync).unwrap();
        assert_eq!(
            next_scope(&mut rx, Duration::from_secs(5)).await,
            WakeScope::All
        );
    }

    #[tokio::test]
    async fn missed_notifications_mean_everything() {
        let (tx, mut rx) = broadcast::channel(2);
        for h in ["a", "b", "c", "d"] {
            tx.send(committed(h)).unwrap();
        }
        assert_eq!(
            next_scope(&mut rx, Duration::from_secs(5)).await,
            WakeScope::All
        );
    }

    #[tokio::test]
    async fn the_safety_poll_means_everything_and_a_closed_listener_stops() {
        let (tx, mut rx) = broadcast::channel::<Wakeup>(2);
        assert_eq!(
            next_scope(&mut rx, Duration::from_millis(10)).await,
            WakeScope::All
        );
        drop(tx);
        assert_eq!(
            next_scope(&mut rx, Duration::from_secs(5)).await,
            WakeScope::Closed
        );
    }

    #[test]
    fn malformed_notifications_are_ignored() {
        assert_eq!(parse("no-position"), None);
        assert_eq!(parse("h x"), None);
        assert_eq!(parse("BAD_ID 1"), None);
    }
}
