//! The load generator's view of the REST API and of tokens: mint the tokens every simulated
//! user needs, raise alerts, and read the stream's head and its alert positions (what each
//! subscriber is owed).

use std::time::Duration;

use aggregates::types::{HospitalId, Role, UserId};
use anyhow::{bail, Context};
use serde::Deserialize;
use vigil::auth::JwtKeys;

/// Per-request timeout of every REST call. Long enough for a saturated server to answer,
/// short enough that a stuck request cannot hold a run past its deadline.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Positions scanned per page when listing the stream (the endpoint's maximum).
const EVENTS_PAGE: i64 = 1000;

/// Most pages read when listing owed positions: 300 s at 20,000 commands/s, with room.
const MAX_PAGES: usize = 10_000;

/// The tokens of every simulated user, minted once before any connection opens so signing
/// never competes with the measurement.
pub struct Tokens {
    /// Subscriber tokens (role `nurse`, who sees every alert); connection `i` uses
    /// `subscribers[i % len]`, which spreads connections over users so the per-user
    /// connection limit is not what gets measured.
    pub subscribers: Vec<String>,
    /// REST writer tokens (role `operator`); command `k` uses `writers[k % len]`, which
    /// spreads commands over users so the per-user command rate limit is not what gets
    /// measured either.
    pub writers: Vec<String>,
    /// The token of the reader that lists the stream at the end of a run.
    pub reader: String,
}

impl Tokens {
    /// Mints `users` subscriber tokens, `writers` writer tokens and a reader token for
    /// `hospital`, each valid for `ttl`.
    pub fn mint(
        secret: &str,
        hospital: &HospitalId,
        users: u32,
        writers: u32,
        ttl: Duration,
    ) -> anyhow::Result<Self> {
        let keys = JwtKeys::from_secret(secret).context("the --secret is not a usable key")?;
        let mint = |name: String, role: Role| -> anyhow::Result<String> {
            let user = UserId::parse(&name).map_err(|e| anyhow::anyhow!("user id {name}: {e}"))?;
            keys.mint(&user, hospital, role, ttl)
                .with_context(|| format!("minting a token for {name}"))
        };
        Ok(Self {
            subscribers: (0..users)
                .map(|i| mint(format!("load-user-{i}"), Role::Nurse))
                .collect::<anyhow::Result<_>>()?,
            writers: (0..writers)
                .map(|i| mint(format!("load-writer-{i}"), Role::Operator))
                .collect::<anyhow::Result<_>>()?,
            reader: mint("load-reader".to_owned(), Role::Nurse)?,
        })
    }
}

/// The REST endpoints the tool calls, for one hospital.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    /// `{url}/api/hospitals/{hospital}`.
    base: String,
    /// Every command carries a fresh `Idempotency-Key`, as `@vigil/client`'s outbox sends
    /// them (`--keyed`): what a real client's command costs, key bookkeeping included.
    keyed: bool,
}

/// The body of a 201 from a command endpoint (the fields the tool reads).
#[derive(Deserialize)]
struct CommandOutcome {
    events: Vec<CommittedEvent>,
}

#[derive(Deserialize)]
struct CommittedEvent {
    position: i64,
}

/// A page of `GET /events`.
#[derive(Deserialize)]
struct EventsPage {
    events: Vec<PageEvent>,
    next_after: i64,
    head: i64,
}

#[derive(Deserialize)]
struct PageEvent {
    position: i64,
    aggregate_type: String,
}

/// Why a command did not produce events.
#[derive(Debug)]
pub enum CommandFailure {
    /// The server answered with this status.
    Status(u16),
    /// No (usable) answer: `timeout` ([`REQUEST_TIMEOUT`]), `connect` (refused), `body`
    /// (the 201's body was cut or unreadable) or `transport` (reset, anything else).
    Transport(&'static str),
}

/// A short name for why a request got no answer.
fn kind(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else {
        "transport"
    }
}

impl Api {
    /// An API client for `hospital` on the server at `url` (`http://host:port`). Up to
    /// `pool` idle keep-alive connections are kept, so the open-loop writer does not pay a
    /// TCP handshake per command.
    pub fn new(url: &str, hospital: &HospitalId, pool: usize, keyed: bool) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .pool_max_idle_per_host(pool)
            // Below the server's 5 s keep-alive: a connection idle that long is dropped here
            // first, instead of being reused just as the server closes it (a writer at
            // 10 commands/s over 50 users sends on each connection every 5 s).
            .pool_idle_timeout(std::time::Duration::from_secs(3))
            .tcp_nodelay(true)
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            http,
            base: format!("{}/api/hospitals/{hospital}", url.trim_end_matches('/')),
            keyed,
        })
    }

    /// Raises one low-severity alert and returns the stream positions of its events.
    pub async fn raise_alert(
        &self,
        token: &str,
        message: &str,
    ) -> Result<Vec<i64>, CommandFailure> {
        let mut request = self
            .http
            .post(format!("{}/alerts", self.base))
            .bearer_auth(token);
        if self.keyed {
            request = request.header("Idempotency-Key", uuid::Uuid::new_v4().to_string());
        }
        let response = request
            .json(&serde_json::json!({ "severity": "low", "message": message }))
            .send()
            .await
            .map_err(|e| CommandFailure::Transport(kind(&e)))?;
        let status = response.status();
        if status != reqwest::StatusCode::CREATED {
            return Err(CommandFailure::Status(status.as_u16()));
        }
        let outcome: CommandOutcome = response.json().await.map_err(|e| {
            CommandFailure::Transport(if e.is_timeout() { "timeout" } else { "body" })
        })?;
        Ok(outcome.events.into_iter().map(|e| e.position).collect())
    }

    async fn page(&self, token: &str, after: i64, limit: i64) -> anyhow::Result<EventsPage> {
        let response = self
            .http
            .get(format!("{}/events", self.base))
            .query(&[("after", after), ("limit", limit)])
            .bearer_auth(token)
            .send()
            .await
            .context("GET /events")?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            bail!("GET /events answered {status}: {body}");
        }
        response.json().await.context("decoding an events page")
    }

    /// The stream's head: its last position (0 when empty).
    pub async fn head(&self, token: &str) -> anyhow::Result<i64> {
        Ok(self.page(token, 0, 1).await?.head)
    }

    /// The positions of alert events in `(after, head]`, in order: what a subscriber to
    /// `alerts` whose subscribe position is `after` is owed. Listed from the stream itself
    /// rather than assumed dense, so other traffic in the hospital cannot fake a loss.
    pub async fn alert_positions(
        &self,
        token: &str,
        after: i64,
        head: i64,
    ) -> anyhow::Result<Vec<i64>> {
        let mut positions = Vec::new();
        let mut cursor = after;
        for _ in 0..MAX_PAGES {
            if cursor >= head {
                return Ok(positions);
            }
            let page = self.page(token, cursor, EVENTS_PAGE).await?;
            positions.extend(
                page.events
                    .iter()
                    .filter(|e| e.aggregate_type == "alert" && e.position <= head)
                    .map(|e| e.position),
            );
            if page.next_after <= cursor {
                bail!(
                    "GET /events did not advance past {cursor} (head {})",
                    page.head
                );
            }
            cursor = page.next_after;
        }
        bail!("listing ({after}, {head}] took more than {MAX_PAGES} pages")
    }
}
