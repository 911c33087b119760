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

    #[test]
    fn malformed_notifications_are_ignored() {
        assert_eq!(parse("no-position"), None);
        assert_eq!(parse("h x"), None);
        assert_eq!(parse("BAD_ID 1"), None);
    }
}
