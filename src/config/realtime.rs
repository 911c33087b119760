//! The realtime gateway's and presence's limits and timers, as plain data: each has a flag
//! and a `VIGIL_*` variable (read by clap at start), and the realtime layer only reads them.
//! They live here rather than in `realtime` so that configuration depends on no layer above
//! it.

use std::time::Duration;

use clap::Args;

/// A duration flag: `30s`, `500ms`, ..., or a bare number of milliseconds (the old form).
fn millis(raw: &str) -> Result<Duration, String> {
    super::parse_duration(raw, super::BareUnit::Millis)
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

    /// How often each node reads the stream heads changed since its last look, to wake
    /// readers for a commit whose post-commit announcement was lost (the writer died between
    /// commit and announcement, the NOTIFY failed): the longest such a commit waits.
    #[arg(long, env = "VIGIL_STREAM_HEAD_POLL_MS", value_parser = nonzero_millis, default_value = "500")]
    pub stream_head_poll: Duration,

    /// SSE heartbeat comment interval.
    #[arg(long, env = "VIGIL_SSE_HEARTBEAT_MS", value_parser = millis, default_value = "15000")]
    pub sse_heartbeat: Duration,

    /// Other origins whose browser pages may call Vigil, comma-separated
    /// (`https://ward.example,https://clinic.example`), or `*` for any (development only).
    /// Covers the REST API and SSE (CORS, preflight included) and the WebSocket endpoint
    /// (its `Origin` check). Default none: only Vigil's own origin and clients that send no
    /// `Origin` (native apps, servers).
    #[arg(
        long = "cors-allowed-origins",
        env = "VIGIL_CORS_ALLOWED_ORIGINS",
        value_parser = super::cors::AllowedOrigins::parse,
        default_value = ""
    )]
    pub allowed_origins: super::cors::AllowedOrigins,
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
            allowed_origins: super::cors::AllowedOrigins::default(),
            // `stream::listener::DEFAULT_HEAD_POLL` (config sits below stream in the layers).
            stream_head_poll: Duration::from_millis(500),
        }
    }
}

fn nonzero_millis(raw: &str) -> Result<Duration, String> {
    let duration = millis(raw)?;
    if duration.is_zero() {
        return Err("must be at least 1 ms".to_owned());
    }
    Ok(duration)
}

/// Timers of presence, typing and viewing. Durations are in milliseconds so tests can
/// shorten them; each has a flag and a `VIGIL_*` variable.
#[derive(Clone, Debug, Args)]
pub struct PresenceSettings {
    /// How long "typing" lasts without a new `typing` frame. Clients repeat it about once a
    /// second while the user types, so 5 s survives a few lost frames without flickering.
    #[arg(long, env = "VIGIL_TYPING_TTL_MS", value_parser = nonzero_millis, default_value = "5000")]
    pub typing_ttl: Duration,

    /// A view not refreshed (by `view` or by the connection's heartbeat) for this long is
    /// released. Two server heartbeats (30 s each) fit in it.
    #[arg(long, env = "VIGIL_VIEW_TTL_MS", value_parser = nonzero_millis, default_value = "60000")]
    pub view_ttl: Duration,

    /// How often this node proves it is alive (and sweeps dead nodes).
    #[arg(long, env = "VIGIL_NODE_HEARTBEAT_MS", value_parser = nonzero_millis, default_value = "5000")]
    pub node_heartbeat: Duration,

    /// A node silent for this long is dead and its presence removed: three heartbeats, so a
    /// slow query or a short pause is not mistaken for a death.
    #[arg(long, env = "VIGIL_NODE_TIMEOUT_MS", value_parser = nonzero_millis, default_value = "15000")]
    pub node_timeout: Duration,
}

impl Default for PresenceSettings {
    fn default() -> Self {
        Self {
            typing_ttl: Duration::from_secs(5),
            view_ttl: Duration::from_secs(60),
            node_heartbeat: Duration::from_secs(5),
            node_timeout: Duration::from_secs(15),
        }
    }
}

impl PresenceSettings {
    /// How recently another node must have been heard from for its connections to count
    /// against the per-user connection limit: two heartbeats (at least 2 s, at most the node
    /// timeout). Shorter than the node timeout on purpose: after a node crashes, its users
    /// reconnect to the others at once, and its stale rows must not hold them out until the
    /// sweep. A live node whose heartbeat is late is briefly not counted, which only makes
    /// the limit more lenient.
    pub fn admission_liveness(&self) -> Duration {
        self.node_heartbeat
            .saturating_mul(2)
            .max(Duration::from_secs(2))
            .min(self.node_timeout)
    }

    /// How often a node re-announces its live views: three times per `view_ttl`, so two
    /// lost announcements do not release a view.
    pub fn view_refresh_interval(&self) -> Duration {
        (self.view_ttl / 3).max(Duration::from_millis(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_nodes_connections_count_for_two_heartbeats_within_the_node_timeout() {
        let with = |heartbeat_ms, timeout_ms| PresenceSettings {
            node_heartbeat: Duration::from_millis(heartbeat_ms),
            node_timeout: Duration::from_millis(timeout_ms),
            ..PresenceSettings::default()
        };
        assert_eq!(
            PresenceSettings::default().admission_liveness(),
            Duration::from_secs(10)
        );
        assert_eq!(
            with(100, 5_000).admission_liveness(),
            Duration::from_secs(2)
        );
        assert_eq!(
            with(100, 1_000).admission_liveness(),
            Duration::from_secs(1)
        );
        assert_eq!(
            with(5_000, 8_000).admission_liveness(),
            Duration::from_secs(8)
        );
    }

    #[test]
    fn every_presence_duration_setting_refuses_zero() {
        assert!(nonzero_millis("0").is_err());
        assert_eq!(nonzero_millis("250"), Ok(Duration::from_millis(250)));
    }
}
