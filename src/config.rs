//! Server configuration: every knob has a flag and a `VIGIL_*` environment variable, and a
//! default that is safe for a hospital deployment. Limits are documented constants here so
//! their reasons live next to their values.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

/// Largest accepted request body. Commands are small JSON documents (the longest field, a
/// case message, is 4,000 characters); 64 KiB leaves room for that and refuses anything that
/// could only be abuse.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// How long an `Idempotency-Key` is remembered. The issue asks for at least 24 h: long enough
/// for a phone that lost signal overnight to retry.
pub const IDEMPOTENCY_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);

/// Largest page of the polling endpoint (`GET .../events?limit=`).
pub const MAX_EVENTS_PAGE: i64 = 1_000;

/// Default page of the polling endpoint.
pub const DEFAULT_EVENTS_PAGE: i64 = 100;

/// Output format of the logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines, for a terminal.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// JWT signing algorithm. HS256 uses a shared secret; RS256 and ES256 verify with a public
/// key (and can mint tokens with `vigil token` only when the private key is configured).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum JwtAlgorithm {
    #[default]
    #[value(name = "HS256")]
    Hs256,
    #[value(name = "RS256")]
    Rs256,
    #[value(name = "ES256")]
    Es256,
}

/// Where the database is and where the server keeps its files.
#[derive(Clone, Debug, Args)]
pub struct DatabaseSettings {
    /// PostgreSQL URL. Without it Vigil starts and owns its own PostgreSQL under the data dir.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,

    /// Directory for the embedded PostgreSQL (`<dir>/postgres`) and the generated JWT secret.
    #[arg(long, env = "VIGIL_DATA_DIR", default_value = "./var")]
    pub data_dir: PathBuf,

    /// Largest number of pooled database connections per node. The projectors may hold up
    /// to 5 models × 3 hospitals at once, the policies 3; the rest serve commands and reads.
    /// Mind PostgreSQL's `max_connections` (100 by default) times the number of nodes.
    #[arg(long, env = "VIGIL_DB_POOL_SIZE", default_value_t = 32)]
    pub db_pool_size: u32,
}

/// How tokens are verified (and minted by `vigil token`).
#[derive(Clone, Debug, Args)]
pub struct JwtSettings {
    /// Signing algorithm of accepted tokens.
    #[arg(
        long = "jwt-algorithm",
        env = "VIGIL_JWT_ALGORITHM",
        value_enum,
        default_value = "HS256"
    )]
    pub algorithm: JwtAlgorithm,

    /// HS256 shared secret. In zero-config mode a random one is generated once and kept in the
    /// data dir, so `vigil serve` and `vigil token` agree without set-up.
    #[arg(long = "jwt-secret", env = "VIGIL_JWT_SECRET", hide_env_values = true)]
    pub secret: Option<String>,

    /// PEM file of the RS256/ES256 public key that verifies tokens.
    #[arg(long = "jwt-public-key", env = "VIGIL_JWT_PUBLIC_KEY")]
    pub public_key: Option<PathBuf>,

    /// PEM file of the RS256/ES256 private key; only `vigil token` uses it.
    #[arg(long = "jwt-private-key", env = "VIGIL_JWT_PRIVATE_KEY")]
    pub private_key: Option<PathBuf>,

    /// Required `iss` claim, when set.
    #[arg(long = "jwt-issuer", env = "VIGIL_JWT_ISSUER")]
    pub issuer: Option<String>,

    /// Required `aud` claim, when set.
    #[arg(long = "jwt-audience", env = "VIGIL_JWT_AUDIENCE")]
    pub audience: Option<String>,
}

/// Default of `--projection-spacing-ms`: under load a read model lags by at most this
/// (plus its pass), well inside the 50 ms projection-lag goal, while a pass takes ~2–3
/// commits at 100 commands/s.
pub const DEFAULT_PROJECTION_SPACING_MS: u64 = 25;

/// Everything `vigil serve` needs.
#[derive(Clone, Debug, Args)]
pub struct ServeSettings {
    /// Address the HTTP server binds (port 0 picks a free port).
    #[arg(long, env = "VIGIL_BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,

    #[command(flatten)]
    pub database: DatabaseSettings,

    #[command(flatten)]
    pub jwt: JwtSettings,

    /// Commands one user may send per second, sustained (token bucket refill rate).
    #[arg(long, env = "VIGIL_COMMAND_RATE", default_value_t = 20.0)]
    pub command_rate: f64,

    /// Commands one user may send in a burst (token bucket capacity).
    #[arg(long, env = "VIGIL_COMMAND_BURST", default_value_t = 40.0)]
    pub command_burst: f64,

    /// Shortest time between two passes of a read model's projector, or of the policies,
    /// over the stream, in milliseconds. A commit after a quiet spell is projected at once;
    /// under load, commits are taken in batches at most this far apart, which is what keeps
    /// the projectors' statements per command (and PostgreSQL's CPU) down. Read models lag
    /// by up to this much under load: a read that must see a command's effect passes its
    /// position (`min_position`). 0 disables the pacing.
    #[arg(long, env = "VIGIL_PROJECTION_SPACING_MS", default_value_t = DEFAULT_PROJECTION_SPACING_MS)]
    pub projection_spacing_ms: u64,

    /// HTTP worker threads (defaults to the number of cores).
    #[arg(long, env = "VIGIL_WORKERS")]
    pub workers: Option<usize>,

    /// Create a demo hospital with patients, users and open alerts, and print a token.
    #[arg(long)]
    pub demo: bool,

    #[command(flatten)]
    pub realtime: crate::realtime::RealtimeSettings,

    #[command(flatten)]
    pub presence: crate::realtime::presence::PresenceSettings,

    /// This node's id in a cluster (defaults to a random id per process). Never give two
    /// processes that run at the same time the same id, not even briefly during a rolling
    /// restart: their presence rows would be one node's, and the one that stops takes the
    /// other's with it until its next heartbeat.
    #[arg(long, env = "VIGIL_NODE_ID")]
    pub node_id: Option<uuid::Uuid>,
}
