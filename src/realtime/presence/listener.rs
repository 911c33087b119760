//! The node's LISTEN connection on [`CHANNEL`]: hands each parsed notification to the hub.
//!
//! The connection is [`crate::store::listen`], the same reconnecting component as the
//! stream's: a dedicated connection, back within a quarter second of PostgreSQL's return,
//! and after each (re)connection this tells the hub ([`ListenerUp`]) so it can re-read what
//! it may have missed. It forwards with `send().await`, so a busy hub slows the reading of
//! notifications (PostgreSQL queues them) instead of growing an unbounded mailbox. It stops
//! when the hub is gone, and the connection with it.

use std::time::Duration;

use actix::{Addr, Message};
use tokio::sync::mpsc;

use super::hub::PresenceHub;
use super::note::Note;
use super::CHANNEL;
use crate::store::listen::{self, Heard};

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
    let heard = listen::spawn(config, CHANNEL, "presence", READ_AHEAD);
    tokio::spawn(forward(heard, hub));
}

/// Hands what the connection hears to the hub until either is gone. Returning drops
/// `heard`, which closes the connection.
async fn forward(mut heard: mpsc::Receiver<Heard>, hub: Addr<PresenceHub>) {
    let mut check = tokio::time::interval(HUB_CHECK);
    loop {
        tokio::select! {
            item = heard.recv() => {
                let delivered = match item {
                    Some(Heard::Listening) => hub.send(ListenerUp).await.is_ok(),
                    Some(Heard::Notification(payload)) => match Note::parse(&payload) {
                        Some(note) => hub.send(Remote { note }).await.is_ok(),
                        None => true,
                    },
                    None => false,
                };
                if !delivered {
                    return;
                }
            }
            _ = check.tick() => {
                if !hub.connected() {
                    return;
                }
            }
        }
    }
}
