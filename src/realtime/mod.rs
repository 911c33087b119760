//! The realtime gateway: hospital, case-thread and session actors delivering each
//! hospital's stream over WebSocket and SSE, with exact resume from a last-event-id.
//!
//! - [`protocol`]: the wire frames and close codes;
//! - [`topics`]: subscribable topics and who may subscribe to what;
//! - [`window`]: recent events, serialized once, shared by every session;
//! - [`hospital`]: the `HospitalActor`, one per hospital with live sessions on this node:
//!   it reads the stream from PostgreSQL when woken by NOTIFY, fills the window and tells
//!   sessions the new head;
//! - [`writer`]: each connection's single ordered writer, a cursor over the stream that
//!   reads from the window (or from PostgreSQL when it is older) — the one place that decides
//!   what a connection receives, so replay and live delivery cannot diverge;
//! - [`session`]: the `SessionActor` behind each WebSocket: frames in, timers, limits;
//! - [`presence`]: who is online, typing and viewing, across nodes;
//! - the HTTP endpoints that open connections are `http::ws` and `http::sse`, edges over
//!   this module like every other endpoint;
//! - [`fanout`]: one task per hospital per worker thread that writes each new event
//!   straight to the sockets of caught-up connections, waking no task per connection;
//! - [`socket`]: a WebSocket connection's socket, run by Vigil after the handshake, and
//!   [`assemble`]: whole messages from its frames (fragments, UTF-8, limits).
//!
//! Invariant: sessions receive events only from their hospital's stream reader, never from
//! the command path, so events committed on other nodes arrive exactly like local ones.

pub mod assemble;
pub(crate) mod fanout;
pub mod hospital;
pub mod presence;
pub mod protocol;
pub mod session;
pub mod socket;
pub mod topics;
pub mod window;
pub mod writer;

use std::sync::atomic::{AtomicU64, Ordering};

use actix::Message;

pub use protocol::ServerFrame;

/// Identifies a connection on this node (unique per process; across nodes pair it with the
/// node id).
pub type SessionId = u64;

/// A fresh session id.
pub fn next_session_id() -> SessionId {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A frame pushed to a session by another actor (presence, typing, viewing, metrics), to be
/// written if the session still wants it.
#[derive(Clone, Debug, Message)]
#[rtype(result = "()")]
pub struct Push {
    /// The frame to send.
    pub frame: ServerFrame,
}

/// What every realtime connection shares.
pub struct Realtime {
    /// Hospital readers and per-user connection counts on this node.
    pub directory: std::sync::Arc<hospital::Directory>,
    /// Presence, typing and viewing across nodes.
    pub presence: actix::Addr<presence::PresenceHub>,
    /// Limits and timers.
    pub settings: std::sync::Arc<crate::config::RealtimeSettings>,
    /// Counters.
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
    /// Token verification (auth and refresh frames, SSE).
    pub keys: crate::auth::JwtKeys,
    /// For replays older than the window, and SSE tickets.
    pub pool: sqlx::PgPool,
    /// Becomes true when the server shuts down: every writer sends its shutdown frame.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// Other live nodes, for the per-user connection limit across the cluster.
    pub peers: std::sync::Arc<presence::Peers>,
    /// Counts a user's connections on the other nodes.
    pub elsewhere: presence::Elsewhere,
    /// This database's identity, for the epoch of streams with no events yet
    /// ([`Realtime::empty_epoch`]); `None` if PostgreSQL would not tell it.
    pub database_identity: Option<uuid::Uuid>,
}

impl Realtime {
    /// The epoch `subscribed` reports for a hospital whose stream has no events yet, so a
    /// client can always store one (a stream's real epoch is minted with its first event).
    /// It is derived from this database's identity and the hospital, so it changes when the
    /// database is re-created. A resume presenting it is taken as "positions of this
    /// database" and is not compared with the real epoch minted since.
    pub fn empty_epoch(&self, hospital: &str) -> Option<uuid::Uuid> {
        self.database_identity
            .map(|identity| uuid::Uuid::new_v5(&identity, hospital.as_bytes()))
    }

    /// The identity [`Realtime::empty_epoch`] derives from: PostgreSQL's system identifier
    /// (random per `initdb`) and the database's oid (new when it is re-created). Reading
    /// `pg_control_system()` may be refused to an unprivileged role: then `None`, and empty
    /// streams report no epoch, as before.
    pub async fn database_identity(pool: &sqlx::PgPool) -> Option<uuid::Uuid> {
        let row: Result<(String,), sqlx::Error> = sqlx::query_as(
            "SELECT (SELECT system_identifier::text FROM pg_control_system()) || ':' ||              (SELECT oid::text FROM pg_database WHERE datname = current_database())",
        )
        .fetch_one(pool)
        .await;
        match row {
            Ok((identity,)) => Some(uuid::Uuid::new_v5(
                &uuid::Uuid::NAMESPACE_OID,
                identity.as_bytes(),
            )),
            Err(error) => {
                tracing::warn!(%error, "cannot read the database identity: streams without events report no epoch");
                None
            }
        }
    }

    /// The per-user connection limit across the cluster, for a connection already counted
    /// on this node (`slot`): `None` when no other node is alive (this node's count is the
    /// whole count), else a future resolving to whether the user's connections here plus
    /// those on other nodes stay within the limit. If PostgreSQL cannot be asked, the
    /// connection is admitted (and a warning logged): the limit protects the server from
    /// abuse, and must not lock clinicians out while the database is briefly unreachable.
    pub fn cluster_admission(
        &self,
        slot: &hospital::ConnectionSlot,
    ) -> Option<impl std::future::Future<Output = bool> + 'static> {
        if self.peers.count() == 0 {
            return None;
        }
        let elsewhere = self.elsewhere.clone();
        let (hospital, user) = slot.key().clone();
        let (held, max) = (slot.held(), self.settings.max_connections_per_user);
        Some(async move {
            match elsewhere.count(hospital.clone(), user.clone()).await {
                Some(count) => held.saturating_add(count) <= max,
                None => {
                    tracing::warn!(%hospital, %user, "the user's connections on other nodes are unknown; admitting");
                    true
                }
            }
        })
    }
}
