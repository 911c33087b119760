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
//! - [`ws`] and [`sse`]: the HTTP endpoints;
//! - [`socket`]: a WebSocket connection's socket, run by Vigil after the handshake.
//!
//! Invariant: sessions receive events only from their hospital's stream reader, never from
//! the command path, so events committed on other nodes arrive exactly like local ones.

pub mod hospital;
pub mod presence;
pub mod protocol;
pub mod session;
pub mod socket;
pub mod sse;
pub mod topics;
pub mod window;
pub mod writer;
pub mod ws;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use actix::Message;
use clap::Args;

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

/// A duration flag: `30s`, `500ms`, ..., or a bare number of milliseconds (the old form).
fn millis(raw: &str) -> Result<Duration, String> {
    crate::config::parse_duration(raw, crate::config::BareUnit::Millis)
}

/// Limits and timers of the realtime gateway. Every value has a flag and a `VIGIL_*`
/// variable; durations are in milliseconds so tests can shorten them.
#[derive(Clone, Debug, Args)]
pub struct RealtimeSettings {
    /// Server ping interval; a connection silent for two intervals is closed. 30 s keeps
    /// NAT/proxy mappings alive (most drop idle TCP after 60 s or more).
    #[arg(long, env = "VIGIL_HEARTBEAT_MS", value_parser = millis, default_value = "30000")]
    pub heartbeat: Duration,

    /// Time allowed for the first `auth` frame when the upgrade carried no token.
    #[arg(long, env = "VIGIL_AUTH_TIMEOUT_MS", value_parser = millis, default_value = "5000")]
    pub auth_timeout: Duration,

    /// Time a connection may stay open without any subscription.
    #[arg(long, env = "VIGIL_IDLE_TIMEOUT_MS", value_parser = millis, default_value = "60000")]
    pub idle_timeout: Duration,

    /// How long before token expiry the client is warned (`token_expiring`).
    #[arg(long, env = "VIGIL_TOKEN_WARNING_MS", value_parser = millis, default_value = "60000")]
    pub token_warning: Duration,

    /// Events kept in each hospital's in-memory window. Resumes within it never touch
    /// PostgreSQL; 4,096 covers minutes of a busy hospital at ~1 KiB per event.
    #[arg(long, env = "VIGIL_WINDOW_EVENTS", default_value_t = 4096)]
    pub window_events: usize,

    /// Oldest event kept in the window.
    #[arg(long, env = "VIGIL_WINDOW_AGE_MS", value_parser = millis, default_value = "900000")]
    pub window_age: Duration,

    /// Most events a resume may replay; an older last-event-id gets `recovered: false`
    /// (reload through REST instead of streaming a huge backlog).
    #[arg(long, env = "VIGIL_REPLAY_CAP", default_value_t = 10_000)]
    pub replay_cap: i64,

    /// Largest client frame accepted; larger ones get an error frame.
    #[arg(long, env = "VIGIL_MAX_FRAME_BYTES", default_value_t = 16 * 1024)]
    pub max_frame_bytes: usize,

    /// Topics one connection may hold.
    #[arg(long, env = "VIGIL_MAX_SUBSCRIPTIONS", default_value_t = 64)]
    pub max_subscriptions: usize,

    /// Open connections one user may have (tabs, devices), on this node and across the
    /// cluster: other nodes' WebSocket connections of the user count too.
    #[arg(long, env = "VIGIL_MAX_CONNECTIONS_PER_USER", default_value_t = 16)]
    pub max_connections_per_user: u32,

    /// Client frames per second per connection, sustained.
    #[arg(long, env = "VIGIL_FRAME_RATE", default_value_t = 20.0)]
    pub frame_rate: f64,

    /// Client frame burst per connection.
    #[arg(long, env = "VIGIL_FRAME_BURST", default_value_t = 40.0)]
    pub frame_burst: f64,

    /// Shortest interval between two `typing` frames of a connection for the same case.
    #[arg(long, env = "VIGIL_TYPING_THROTTLE_MS", value_parser = millis, default_value = "1000")]
    pub typing_throttle: Duration,

    /// Limit violations (rate, size, subscriptions) tolerated per minute before the
    /// connection is closed; each one before that only gets an error frame.
    #[arg(long, env = "VIGIL_MAX_VIOLATIONS", default_value_t = 10)]
    pub max_violations: u32,

    /// Events a live connection may lag behind its hospital's head before it is
    /// disconnected as a slow consumer (it then resumes from its last id).
    #[arg(long, env = "VIGIL_MAX_LAG_EVENTS", default_value_t = 2048)]
    pub max_lag_events: i64,

    /// Bytes of backlog a live connection may have before it is a slow consumer.
    #[arg(long, env = "VIGIL_MAX_LAG_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_lag_bytes: usize,

    /// Time a connection with a backlog may make no progress before it is a slow consumer.
    #[arg(long, env = "VIGIL_STALL_TIMEOUT_MS", value_parser = millis, default_value = "30000")]
    pub stall_timeout: Duration,

    /// How often `metrics` frames are pushed to subscribers.
    #[arg(long, env = "VIGIL_METRICS_INTERVAL_MS", value_parser = millis, default_value = "10000")]
    pub metrics_interval: Duration,

    /// SSE heartbeat comment interval.
    #[arg(long, env = "VIGIL_SSE_HEARTBEAT_MS", value_parser = millis, default_value = "15000")]
    pub sse_heartbeat: Duration,
}

impl Default for RealtimeSettings {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(30),
            auth_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            token_warning: Duration::from_secs(60),
            window_events: 4096,
            window_age: Duration::from_secs(900),
            replay_cap: 10_000,
            max_frame_bytes: 16 * 1024,
            max_subscriptions: 64,
            max_connections_per_user: 16,
            frame_rate: 20.0,
            frame_burst: 40.0,
            typing_throttle: Duration::from_secs(1),
            max_violations: 10,
            max_lag_events: 2048,
            max_lag_bytes: 4 * 1024 * 1024,
            stall_timeout: Duration::from_secs(30),
            sse_heartbeat: Duration::from_secs(15),
            metrics_interval: Duration::from_secs(10),
        }
    }
}

/// What every realtime connection shares.
pub struct Realtime {
    /// Hospital readers and per-user connection counts on this node.
    pub directory: std::sync::Arc<hospital::Directory>,
    /// Presence, typing and viewing across nodes.
    pub presence: actix::Addr<presence::PresenceHub>,
    /// Limits and timers.
    pub settings: std::sync::Arc<RealtimeSettings>,
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
}

impl Realtime {
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
