//! One simulated WebSocket client: connect with a bearer token, subscribe, read every frame,
//! and keep the ledger that proves exactly-once delivery.
//!
//! Each client is one tokio task that owns its socket (reading also answers the server's
//! pings: tungstenite queues the pong and flushes it on the next read). It records, per
//! event, the two latencies into the run's shared [`Recorder`] and the position into its own
//! [`Ledger`]; the orchestrator checks the ledgers against the stream at the end.

use std::borrow::Cow;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::AUTHORIZATION;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::report;
use crate::writer::SendLog;

/// Time allowed from TCP connect to `authenticated`, and again to `subscribed`. A server
/// that takes longer is overloaded; the attempt counts as a failure.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Times a subscriber reconnects after the server drops it (e.g. as a slow consumer) before
/// it gives up; each attempt resumes from its last event id.
const MAX_RECONNECTS: u32 = 5;

/// First reconnect delay; doubled per attempt.
const RECONNECT_BACKOFF: Duration = Duration::from_millis(100);

/// Time allowed to send our close frame when a run stops.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Largest position span a ledger tracks (positions past it count as unexpected): 300 s at
/// 20,000 events/s, so a runaway stream cannot exhaust memory.
const MAX_LEDGER_SPAN: i64 = 6_000_000;

pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What every client of a run shares.
pub struct RunContext {
    /// `ws://host:port/api/hospitals/{h}/ws`.
    pub ws_url: String,
    /// Subscriber tokens; client `i` uses `tokens[i % len]`.
    pub tokens: Vec<String>,
    /// Whether clients subscribe to `alerts` (all modes but `connect`).
    pub subscribe: bool,
    /// The topic client `i` subscribes to: `topics[i % len]` (`alerts` but in vitals mode).
    pub topics: Vec<String>,
    /// Whether a client dropped by the server reconnects and resumes.
    pub reconnect: bool,
    /// The run's time origin; instants are recorded as microseconds since it.
    pub t0: Instant,
    /// Latency histograms, shared (a short lock per event).
    pub recorder: Mutex<Recorder>,
    /// Scheduled send instants of commands by position (steady mode).
    pub send_log: Option<Arc<SendLog>>,
    /// Each client's highest position received, for the orchestrator's drain check.
    pub progress: Vec<AtomicI64>,
    /// Clients whose connection is up (and subscribed, if subscribing).
    pub ready: AtomicU64,
    /// Clients that gave up connecting.
    pub failed: AtomicU64,
    /// µs since t0 when the last client became ready: the end of the connection ramp.
    pub last_ready_us: AtomicU64,
    /// Reconnect mode: the position that completes a client; it then records when.
    pub complete_at: Option<i64>,
}

impl RunContext {
    /// A context for `clients` clients; instants are measured from `t0`.
    pub fn new(ws_url: String, tokens: Vec<String>, clients: usize, t0: Instant) -> Self {
        Self {
            ws_url,
            tokens,
            subscribe: true,
            topics: vec!["alerts".to_owned()],
            reconnect: false,
            t0,
            recorder: Mutex::new(Recorder::new()),
            send_log: None,
            progress: (0..clients).map(|_| AtomicI64::new(0)).collect(),
            ready: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            last_ready_us: AtomicU64::new(0),
            complete_at: None,
        }
    }

    /// Microseconds from t0 to `at`.
    pub fn micros_since_t0(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.t0).as_micros()).unwrap_or(u64::MAX)
    }
}

/// The run's latency histograms.
pub struct Recorder {
    /// Event commit time (`ts`) → received.
    pub commit: Histogram<u64>,
    /// Scheduled send → received.
    pub send: Histogram<u64>,
    /// Connect → `authenticated`/`subscribed`.
    pub handshake: Histogram<u64>,
}

impl Recorder {
    pub fn new() -> Self {
        Self {
            commit: report::histogram(),
            send: report::histogram(),
            handshake: report::histogram(),
        }
    }
}

/// The positions one subscriber received after its subscribe position.
#[derive(Debug, Default)]
pub struct Ledger {
    /// The `subscribed` frame's position: the client is owed every alert after it.
    pub base: i64,
    /// `counts[p - base - 1]`: copies of position `p` received.
    pub counts: Vec<u8>,
    /// Events at or before `base`, or beyond [`MAX_LEDGER_SPAN`].
    pub unexpected: u64,
    /// Highest position received (the resume point).
    pub last: i64,
    /// Events delivered.
    pub deliveries: u64,
    /// Payload bytes of the `event` frames delivered (the frame's JSON, without the
    /// WebSocket header): what the frame shape costs on the wire.
    pub frame_bytes: u64,
    /// Microseconds since t0 of the last delivery.
    pub last_delivery_us: u64,
    /// Deliveries whose command's send instant was not yet known: `(position, received µs)`.
    pub pending: Vec<(i64, u64)>,
}

impl Ledger {
    fn new(base: i64) -> Self {
        Self {
            base,
            last: base,
            ..Self::default()
        }
    }

    fn note(&mut self, position: i64) {
        let offset = position - self.base - 1;
        if !(0..MAX_LEDGER_SPAN).contains(&offset) {
            self.unexpected += 1;
            return;
        }
        // In range by the check above.
        let i = offset as usize;
        if self.counts.len() <= i {
            self.counts.resize(i + 1, 0);
        }
        self.counts[i] = self.counts[i].saturating_add(1);
        self.last = self.last.max(position);
    }

    /// Copies of `position` received.
    pub fn count(&self, position: i64) -> u8 {
        usize::try_from(position - self.base - 1)
            .ok()
            .and_then(|i| self.counts.get(i).copied())
            .unwrap_or(0)
    }
}

/// How a client's run ended.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Why the first connection failed, if it did.
    pub failure: Option<String>,
    /// The ledger (subscribing clients that connected).
    pub ledger: Option<Ledger>,
    /// Reconnects after a server drop.
    pub reconnects: u32,
    /// Resumes answered `recovered: false`.
    pub unrecovered: u32,
    /// Close codes and reasons the server sent.
    pub closes: Vec<String>,
    /// Reconnect mode: µs since t0 when the client held [`RunContext::complete_at`].
    pub completed_us: Option<u64>,
    /// Whether the client was still connected when told to stop.
    pub connected_at_stop: bool,
}

/// The fields of a server frame the tool reads; `data` and the rest are skipped unparsed.
#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, deserialize_with = "position_field")]
    position: Option<i64>,
    #[serde(default, borrow)]
    ts: Option<Cow<'a, str>>,
    #[serde(default)]
    recovered: Option<bool>,
}

/// A position is a number in `event` frames and a string in `subscribed` frames.
fn position_field<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    struct Visitor;
    impl serde::de::Visitor<'_> for Visitor {
        type Value = Option<i64>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a position as a number or a string")
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
            i64::try_from(v).map(Some).map_err(E::custom)
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            v.parse().map(Some).map_err(E::custom)
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }
    d.deserialize_any(Visitor)
}

/// An open, authenticated (and subscribed) connection.
struct Opened {
    socket: Socket,
    /// The `subscribed` frame's position and `recovered` flag.
    subscribed: Option<(i64, bool)>,
    /// Event frames that arrived before `subscribed` (none expected; kept, not lost).
    early: Vec<String>,
}

/// Connects, waits for `authenticated`, and subscribes to `alerts` (resuming after
/// `last_event_id` if given). The error is a short reason for the failure tally.
async fn open(
    ctx: &RunContext,
    index: usize,
    last_event_id: Option<i64>,
) -> Result<Opened, String> {
    let started = Instant::now();
    let mut request = ctx
        .ws_url
        .as_str()
        .into_client_request()
        .map_err(|e| format!("bad url: {e}"))?;
    let token = &ctx.tokens[index % ctx.tokens.len()];
    let bearer =
        HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| "bad token".to_owned())?;
    request.headers_mut().insert(AUTHORIZATION, bearer);
    // Small write buffers: the client only sends one frame; 15,000 default 128 KiB buffers
    // would be most of this process's memory.
    let config = WebSocketConfig {
        write_buffer_size: 0,
        ..WebSocketConfig::default()
    };
    let (mut socket, _) = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        tokio_tungstenite::connect_async_with_config(request, Some(config), true),
    )
    .await
    .map_err(|_| "connect timeout".to_owned())?
    .map_err(|e| match e {
        tokio_tungstenite::tungstenite::Error::Http(response) => {
            format!("http {}", response.status().as_u16())
        }
        tokio_tungstenite::tungstenite::Error::Io(io) => format!("io {:?}", io.kind()),
        other => format!("handshake: {other}"),
    })?;
    let mut early = Vec::new();
    await_frame(&mut socket, "authenticated", &mut early).await?;
    let subscribed = if ctx.subscribe {
        let topic = ctx
            .topics
            .get(index % ctx.topics.len().max(1))
            .map_or("alerts", String::as_str);
        let mut frame = serde_json::json!({ "type": "subscribe", "id": "s1", "topics": [topic] });
        if let Some(last) = last_event_id {
            frame["last_event_id"] = serde_json::json!(last.to_string());
        }
        socket
            .send(Message::Text(frame.to_string()))
            .await
            .map_err(|e| format!("send subscribe: {e}"))?;
        let text = await_frame(&mut socket, "subscribed", &mut early).await?;
        let frame: Frame<'_> =
            serde_json::from_str(&text).map_err(|e| format!("bad subscribed frame: {e}"))?;
        let position = frame.position.ok_or("subscribed frame without position")?;
        Some((position, frame.recovered.unwrap_or(false)))
    } else {
        None
    };
    let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    if let Ok(mut recorder) = ctx.recorder.lock() {
        report::record(&mut recorder.handshake, micros);
    }
    Ok(Opened {
        socket,
        subscribed,
        early,
    })
}

/// Reads until a frame of type `kind`, within [`HANDSHAKE_TIMEOUT`]; event frames met on
/// the way are kept in `early`. An `error` or `closing` frame, or a close, is a failure.
async fn await_frame(
    socket: &mut Socket,
    kind: &str,
    early: &mut Vec<String>,
) -> Result<String, String> {
    let deadline = tokio::time::Instant::now() + HANDSHAKE_TIMEOUT;
    loop {
        let message = tokio::time::timeout_at(deadline, socket.next())
            .await
            .map_err(|_| format!("timeout waiting for {kind}"))?;
        match message {
            None => return Err(format!("closed before {kind}")),
            Some(Err(e)) => return Err(format!("error before {kind}: {e}")),
            Some(Ok(Message::Close(frame))) => {
                return Err(match frame {
                    Some(f) => format!("closed {} {}", u16::from(f.code), f.reason),
                    None => "closed".to_owned(),
                })
            }
            Some(Ok(Message::Text(text))) => {
                let frame: Frame<'_> =
                    serde_json::from_str(&text).map_err(|e| format!("bad frame: {e}"))?;
                if frame.kind == kind {
                    return Ok(text);
                }
                match frame.kind.as_ref() {
                    "event" => early.push(text),
                    "error" | "closing" => return Err(format!("{}: {}", frame.kind, brief(&text))),
                    _ => {}
                }
            }
            Some(Ok(_)) => {}
        }
    }
}

/// A frame's `code`/`reason`/`message`, for failure tallies.
fn brief(text: &str) -> String {
    let value: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
    let field = |name: &str| {
        value
            .get(name)
            .map(|v| v.to_string().trim_matches('"').to_owned())
    };
    [field("code"), field("reason")]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Why [`receive`] returned.
enum Ended {
    /// The run told the client to stop.
    Stopped,
    /// The server closed the connection or it broke, with a description.
    Dropped(String),
}

/// Records one event frame: ledger, latencies, progress.
fn on_event(
    ctx: &RunContext,
    index: usize,
    ledger: &mut Ledger,
    frame: &Frame<'_>,
    outcome: &mut Outcome,
) {
    let received = Instant::now();
    let now_utc = SystemTime::now();
    let Some(position) = frame.position else {
        ledger.unexpected += 1;
        return;
    };
    ledger.note(position);
    ledger.deliveries += 1;
    let received_us = ctx.micros_since_t0(received);
    ledger.last_delivery_us = ledger.last_delivery_us.max(received_us);
    ctx.progress[index].store(ledger.last, Ordering::Relaxed);
    if let (Some(target), None) = (ctx.complete_at, outcome.completed_us) {
        if ledger.last >= target {
            outcome.completed_us = Some(received_us);
        }
    }
    // Commit time is the server's clock; this machine's clock is the same one.
    let commit_us = frame
        .ts
        .as_deref()
        .and_then(|ts| chrono::DateTime::parse_from_rfc3339(ts).ok())
        .and_then(|ts| {
            let now: chrono::DateTime<chrono::Utc> = now_utc.into();
            (now - ts.to_utc()).num_microseconds()
        })
        .map(|us| us.max(0) as u64);
    let sent_us = ctx.send_log.as_ref().map(|log| log.scheduled_us(position));
    let Ok(mut recorder) = ctx.recorder.lock() else {
        return;
    };
    if let Some(us) = commit_us {
        report::record(&mut recorder.commit, us);
    }
    match sent_us {
        Some(Some(sent)) => report::record(&mut recorder.send, received_us.saturating_sub(sent)),
        // The 201 has not been read yet: resolve at the end, when it has.
        Some(None) => ledger.pending.push((position, received_us)),
        None => {}
    }
}

/// Reads frames until told to stop or dropped.
async fn receive(
    ctx: &RunContext,
    index: usize,
    socket: &mut Socket,
    ledger: &mut Option<Ledger>,
    outcome: &mut Outcome,
    stop: &mut watch::Receiver<bool>,
) -> Ended {
    loop {
        let message = tokio::select! {
            biased;
            changed = stop.wait_for(|stop| *stop) => {
                let _ = changed;
                return Ended::Stopped;
            }
            message = socket.next() => message,
        };
        match message {
            None => return Ended::Dropped("eof".to_owned()),
            Some(Err(e)) => return Ended::Dropped(format!("error {e}")),
            Some(Ok(Message::Close(frame))) => {
                let why = match frame {
                    Some(f) => format!("{} {}", u16::from(f.code), f.reason),
                    None => "close".to_owned(),
                };
                return Ended::Dropped(why);
            }
            Some(Ok(Message::Text(text))) => {
                let Ok(frame) = serde_json::from_str::<Frame<'_>>(&text) else {
                    continue;
                };
                // A `closing` frame is followed by the close frame with the same code,
                // which is what gets recorded.
                if let ("event", Some(ledger)) = (frame.kind.as_ref(), ledger.as_mut()) {
                    ledger.frame_bytes += text.len() as u64;
                    on_event(ctx, index, ledger, &frame, outcome);
                }
            }
            Some(Ok(_)) => {}
        }
    }
}

/// Closes politely, without waiting long for the server's reply.
async fn close(socket: &mut Socket) {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, socket.close(None)).await;
}

/// Runs client `index` until `stop`: opens (resuming after `resume_after` if given, with
/// `ledger` carried over from an earlier phase), releases `permit` once up, reads and
/// records every event. If the run says so, a failed open is retried and a connection the
/// server drops is reopened, resuming from the last event received, with backoff.
pub async fn run(
    ctx: Arc<RunContext>,
    index: usize,
    resume_after: Option<i64>,
    mut ledger: Option<Ledger>,
    permit: tokio::sync::OwnedSemaphorePermit,
    mut stop: watch::Receiver<bool>,
) -> Outcome {
    let mut outcome = Outcome::default();
    let mut permit = Some(permit);
    let mut last_event_id = resume_after;
    let mut ever_connected = false;
    let mut retries = 0u32;
    loop {
        let opened = open(&ctx, index, last_event_id).await;
        // Free the connect slot whatever happened, so the next connection may start.
        drop(permit.take());
        let mut opened = match opened {
            Ok(opened) => opened,
            Err(reason) => {
                let give_up = !ctx.reconnect || retries >= MAX_RECONNECTS || *stop.borrow();
                if give_up && !ever_connected {
                    ctx.failed.fetch_add(1, Ordering::Relaxed);
                    outcome.failure = Some(reason);
                    break;
                }
                outcome.closes.push(format!("open failed: {reason}"));
                if give_up {
                    break;
                }
                retries += 1;
                tokio::time::sleep(RECONNECT_BACKOFF * 2u32.pow(retries)).await;
                continue;
            }
        };
        if let Some((position, recovered)) = opened.subscribed {
            match &ledger {
                None => {
                    ledger = Some(Ledger::new(position));
                    ctx.progress[index].store(position, Ordering::Relaxed);
                }
                Some(_) if last_event_id.is_some() && !recovered => outcome.unrecovered += 1,
                Some(_) => {}
            }
        }
        if !ever_connected {
            ever_connected = true;
            ctx.ready.fetch_add(1, Ordering::Relaxed);
            ctx.last_ready_us
                .fetch_max(ctx.micros_since_t0(Instant::now()), Ordering::Relaxed);
        }
        if let Some(l) = ledger.as_mut() {
            for text in std::mem::take(&mut opened.early) {
                if let Ok(frame) = serde_json::from_str::<Frame<'_>>(&text) {
                    on_event(&ctx, index, l, &frame, &mut outcome);
                }
            }
        }
        match receive(
            &ctx,
            index,
            &mut opened.socket,
            &mut ledger,
            &mut outcome,
            &mut stop,
        )
        .await
        {
            Ended::Stopped => {
                outcome.connected_at_stop = true;
                close(&mut opened.socket).await;
                break;
            }
            Ended::Dropped(why) => {
                outcome.closes.push(why);
                if !ctx.reconnect || *stop.borrow() || retries >= MAX_RECONNECTS {
                    break;
                }
                retries += 1;
                outcome.reconnects += 1;
                last_event_id = ledger.as_ref().map(|l| l.last);
                tokio::time::sleep(RECONNECT_BACKOFF * 2u32.pow(retries)).await;
            }
        }
    }
    outcome.ledger = ledger;
    outcome
}
