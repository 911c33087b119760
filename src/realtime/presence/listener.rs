//! The node's LISTEN connection on [`CHANNEL`]: hands each parsed notification to the hub.
//!
//! Like `stream::listener`, it holds a dedicated `tokio-postgres` connection (LISTEN needs a
//! session of its own), reconnects forever with backoff, and after each (re)connection tells
//! the hub ([`ListenerUp`]) so it can re-read what it may have missed. It forwards with
//! `send().await`, so a busy hub slows the reading of notifications (PostgreSQL queues
//! them) instead of growing an unbounded mailbox. It stops when the hub is gone.

use std::time::Duration;

use actix::{Addr, Message};
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, NoTls};

use super::hub::PresenceHub;
use super::note::Note;
use super::CHANNEL;

/// First and longest delay between reconnect attempts.
const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// Notifications read ahead of the hub; beyond this the connection is not read (and
/// PostgreSQL buffers).
const READ_AHEAD: usize = 256;

/// How often an idle listener checks that its hub still exists.
const HUB_CHECK: Duration = Duration::from_secs(1);

/// A notification from some node (this one included).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Remote {
    /// The change.
    pub note: Note,
}

/// The LISTEN connection is (again) established: notifications may have been missed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ListenerUp;

/// Spawns the listener on the current runtime.
pub fn spawn(config: String, hub: Addr<PresenceHub>) {
    tokio::spawn(async move { run(config, hub).await });
}

/// Why one connection's life ended without an error.
enum End {
    /// The server closed the connection.
    Closed,
    /// The hub stopped: so does the listener.
    HubGone,
}

async fn run(config: String, hub: Addr<PresenceHub>) {
    let mut delay = RECONNECT_MIN;
    loop {
        match listen_once(&config, &hub).await {
            Ok(End::HubGone) => return,
            Ok(End::Closed) => {
                tracing::warn!("presence listener connection closed; reconnecting");
                delay = RECONNECT_MIN;
            }
            Err(error) if crate::stream::listener::is_server_shutdown(&error) => {
                tracing::info!(
                    "PostgreSQL is shutting down or restarting; presence listener reconnecting"
                );
            }
            Err(error) => {
                tracing::warn!(
                    ?error,
                    delay_ms = delay.as_millis() as u64,
                    "presence listener failed; reconnecting"
                );
            }
        }
        tokio::time::sleep(delay).await;
        if !hub.connected() {
            return;
        }
        delay = (delay * 2).min(RECONNECT_MAX);
    }
}

/// One connection's life: connect, LISTEN, forward notifications until the connection ends.
async fn listen_once(config: &str, hub: &Addr<PresenceHub>) -> Result<End, tokio_postgres::Error> {
    let (client, mut connection) = tokio_postgres::connect(config, NoTls).await?;
    let (forward, mut notes) = mpsc::channel::<Note>(READ_AHEAD);
    let pump = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(note)) => {
                    if let Some(note) = Note::parse(note.payload()) {
                        if forward.send(note).await.is_err() {
                            break;
                        }
                    }
                }
                Ok(_) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    });
    let outcome = forward_all(&client, hub, &mut notes).await;
    drop(client);
    match outcome {
        Ok(Forwarding::HubGone) => {
            pump.abort();
            Ok(End::HubGone)
        }
        Ok(Forwarding::ConnectionEnded) => match pump.await {
            Ok(Ok(())) => Ok(End::Closed),
            Ok(Err(error)) => Err(error),
            Err(join) => {
                tracing::error!(%join, "presence listener pump panicked");
                Ok(End::Closed)
            }
        },
        Err(error) => {
            pump.abort();
            Err(error)
        }
    }
}

/// Why forwarding stopped.
enum Forwarding {
    HubGone,
    ConnectionEnded,
}

async fn forward_all(
    client: &tokio_postgres::Client,
    hub: &Addr<PresenceHub>,
    notes: &mut mpsc::Receiver<Note>,
) -> Result<Forwarding, tokio_postgres::Error> {
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
    tracing::info!("presence listener connected");
    if hub.send(ListenerUp).await.is_err() {
        return Ok(Forwarding::HubGone);
    }
    let mut check = tokio::time::interval(HUB_CHECK);
    loop {
        tokio::select! {
            note = notes.recv() => match note {
                Some(note) => {
                    if hub.send(Remote { note }).await.is_err() {
                        return Ok(Forwarding::HubGone);
                    }
                }
                // The pump ended: the connection closed or failed.
                None => return Ok(Forwarding::ConnectionEnded),
            },
            _ = check.tick() => {
                if !hub.connected() {
                    return Ok(Forwarding::HubGone);
                }
            }
        }
    }
}
