//! Server configuration: every knob has a flag and a `VIGIL_*` environment variable, and a
//! default that is safe for a hospital deployment. Limits are documented constants here so
//! their reasons live next to their values.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

pub mod cors;
mod ingest;
mod realtime;
pub use ingest::IngestSettings;
pub use realtime::{PresenceSettings, RealtimeSettings};

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

/// What a bare number (no unit) means to a duration flag: each flag keeps the unit it took
/// before units were accepted, so existing scripts and environment files keep working.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BareUnit {
    /// The `*_MS` flags (`--heartbeat`, `--projection-spacing-ms`, ...).
    Millis,
    /// `vigil token --ttl`.
    Seconds,
}

/// What `--help` says about durations, shared by the commands that take them.
pub const DURATIONS_HELP: &str = "Durations take a unit: 500ms, 30s, 5m, 1h, 7d, or a sum such \
     as 1m30s. A bare number keeps each flag's old unit: milliseconds for the server's timers \
     (--heartbeat 30000 is 30s), seconds for `vigil token --ttl`.";

/// Parses a duration such as `500ms`, `30s`, `5m`, `1h`, `7d` or `1h30m`; a bare number is in
/// `bare` units. The one parser of every duration on the command line.
pub fn parse_duration(raw: &str, bare: BareUnit) -> Result<Duration, String> {
    let text = raw.trim();
    let not_a_duration = || format!("`{raw}` is not a duration like 500ms, 30s, 15m, 1h or 7d");
    if text.is_empty() {
        return Err(not_a_duration());
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        let n: u64 = text.parse().map_err(|_| not_a_duration())?;
        return Ok(match bare {
            BareUnit::Millis => Duration::from_millis(n),
            BareUnit::Seconds => Duration::from_secs(n),
        });
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(not_a_duration());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| not_a_duration())?;
        rest = &rest[digits..];
        let letters = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..letters];
        rest = &rest[letters..];
        let millis_per_unit: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => return Err(format!("`{raw}`: a unit is needed after {n} in a sum")),
            _ => {
                return Err(format!(
                    "unknown unit `{unit}` in `{raw}` (use ms, s, m, h or d)"
                ))
            }
        };
        let part = n
            .checked_mul(millis_per_unit)
            .ok_or_else(|| format!("`{raw}` is too long"))?;
        total = total
            .checked_add(Duration::from_millis(part))
            .ok_or_else(|| format!("`{raw}` is too long"))?;
    }
    Ok(total)
}

/// `--projection-spacing-ms`: a duration (bare number: milliseconds), kept as milliseconds.
fn parse_spacing(raw: &str) -> Result<u64, String> {
    let duration = parse_duration(raw, BareUnit::Millis)?;
    u64::try_from(duration.as_millis()).map_err(|_| format!("`{raw}` is too long"))
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
    /// over the stream (a bare number is milliseconds; `50ms`, `1s` work too). A commit after a quiet spell is projected at once;
    /// under load, commits are taken in batches at most this far apart, which is what keeps
    /// the projectors' statements per command (and PostgreSQL's CPU) down. Read models lag
    /// by up to this much under load: a read that must see a command's effect passes its
    /// position (`min_position`). 0 disables the pacing.
    #[arg(
        long,
        env = "VIGIL_PROJECTION_SPACING_MS",
        default_value_t = DEFAULT_PROJECTION_SPACING_MS,
        value_parser = parse_spacing
    )]
    pub projection_spacing_ms: u64,

    /// HTTP worker threads (defaults to the number of cores).
    #[arg(long, env = "VIGIL_WORKERS")]
    pub workers: Option<usize>,

    /// Create a demo hospital with patients, users and open alerts, and print a token.
    #[arg(long)]
    pub demo: bool,

    #[command(flatten)]
    pub realtime: RealtimeSettings,

    #[command(flatten)]
    pub presence: PresenceSettings,

    #[command(flatten)]
    pub ingest: IngestSettings,

    /// This node's id in a cluster (defaults to a random id per process). Never give two
    /// processes that run at the same time the same id, not even briefly during a rolling
    /// restart: their presence rows would be one node's, and the one that stops takes the
    /// other's with it until its next heartbeat.
    #[arg(long, env = "VIGIL_NODE_ID")]
    pub node_id: Option<uuid::Uuid>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units_and_bare_numbers_keep_the_flags_old_unit() {
        let ms = |raw| parse_duration(raw, BareUnit::Millis);
        assert_eq!(ms("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(ms("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(ms("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(ms("1h30m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(ms("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(ms(" 30000 "), Ok(Duration::from_secs(30)));
        assert_eq!(ms("0"), Ok(Duration::ZERO));
        assert_eq!(
            parse_duration("90", BareUnit::Seconds),
            Ok(Duration::from_secs(90))
        );
    }

    #[test]
    fn malformed_durations_say_what_is_wrong() {
        let ms = |raw| parse_duration(raw, BareUnit::Millis).expect_err(raw);
        assert!(ms("soon").contains("is not a duration"));
        assert!(ms("").contains("is not a duration"));
        assert!(ms("-5s").contains("is not a duration"));
        assert!(ms("1.5s").contains("unknown unit `.`"));
        assert!(ms("5y").contains("unknown unit `y`"));
        assert!(ms("1m30").contains("a unit is needed"));
        assert!(ms("99999999999999999999d").contains("not a duration"));
        assert!(ms("9999999999999999d").contains("too long"));
    }
}
