//! `watch`: the reference realtime client. It prints a hospital's events as they happen and
//! never misses one, even across disconnects.
//!
//! ```text
//! export VIGIL_TOKEN=$(cargo run -q -- token --hospital demo --user nurse-1 --role nurse)
//! cargo run --example watch -- --url ws://127.0.0.1:8080 --hospital demo \
//!     --topics alerts,cases [--last-event-id 42]
//! ```
//!
//! The token is read from `VIGIL_TOKEN` (or `TOKEN`): `--token` works too, but a command line
//! is visible to every user of the machine through `ps`.
//!
//! ```text
//! ```
//!
//! What every Vigil client does, in order:
//!
//! 1. Connect to `GET /api/hospitals/{hospital}/ws` with `Authorization: Bearer <token>`
//!    (browsers, which cannot set headers, send `{"type":"auth","token":"…"}` first instead).
//!    The server answers `authenticated`.
//! 2. Send `{"type":"subscribe","topics":[…],"last_event_id":"N"}`. The server answers
//!    `subscribed` with `recovered` and `position`: every event after `position` follows, in
//!    order. `recovered: false` with a last id means the gap could not be replayed (too old,
//!    or another stream epoch): reload state through REST, then carry on from `position`.
//! 3. Remember the `id` of every event. It is the stream position: after a disconnect,
//!    reconnect and subscribe with it as `last_event_id`, and the server replays exactly what
//!    was missed — no gaps, no duplicates.
//!
//! Ctrl-C prints the last event id, to pass as `--last-event-id` next time.

use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::AUTHORIZATION;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

/// First reconnect delay; doubled after each failed attempt up to [`MAX_BACKOFF`], so a
/// restarting server is not hammered by every client at once.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// Longest reconnect delay.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Characters of an event's data shown on its line.
const DATA_PREVIEW: usize = 100;

/// Watch a Vigil hospital's events live.
#[derive(Debug, Parser)]
struct Args {
    /// Server WebSocket base URL.
    #[arg(long, default_value = "ws://127.0.0.1:8080")]
    url: String,
    /// Hospital id.
    #[arg(long)]
    hospital: String,
    /// Bearer token (`vigil token …`). Prefer the VIGIL_TOKEN variable (TOKEN works too):
    /// a command line is visible to every user of the machine through `ps`.
    #[arg(long, env = "VIGIL_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Comma-separated topics: alerts, cases, case:<uuid>, patient:<id>, appointments,
    /// notifications, presence, metrics.
    #[arg(long, default_value = "alerts", value_delimiter = ',')]
    topics: Vec<String>,
    /// Resume after this event id (the last one you saw).
    #[arg(long)]
    last_event_id: Option<u64>,
}

/// How a connection ended.
enum End {
    /// Ctrl-C: stop.
    Interrupted,
    /// The server closed the connection or it broke: reconnect and resume.
    Disconnected(String),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let Some(token) = args
        .token
        .clone()
        .or_else(|| std::env::var("TOKEN").ok())
        .filter(|token| !token.trim().is_empty())
    else {
        bail!("no token: export VIGIL_TOKEN=$(vigil token --hospital ... --user ... --role ...)");
    };
    let url = format!(
        "{}/api/hospitals/{}/ws",
        args.url.trim_end_matches('/'),
        args.hospital
    );
    let mut last_event_id = args.last_event_id;
    let mut backoff = FIRST_BACKOFF;
    loop {
        // Ctrl-C ends the client wherever it is: connected, connecting or backing off.
        let end = tokio::select! {
            end = connection(&url, &token, &args, &mut last_event_id, &mut backoff) => {
                end.unwrap_or_else(|e| End::Disconnected(e.root_cause().to_string()))
            }
            _ = tokio::signal::ctrl_c() => End::Interrupted,
        };
        let End::Disconnected(why) = end else { break };
        eprintln!("disconnected ({why}); reconnecting in {backoff:?}");
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = tokio::signal::ctrl_c() => break,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
    // This program's output is for a person at a terminal, so it prints rather than logs.
    match last_event_id {
        Some(id) => println!("last event id: {id} (resume with --last-event-id {id})"),
        None => println!("no events received"),
    }
    Ok(())
}

/// One connection: connect, subscribe (resuming after `last_event_id`), print frames until
/// the connection ends. Keeps `last_event_id` current and resets `backoff` once subscribed.
async fn connection(
    url: &str,
    token: &str,
    args: &Args,
    last_event_id: &mut Option<u64>,
    backoff: &mut Duration,
) -> anyhow::Result<End> {
    // 1. Connect with the token in the Authorization header.
    let mut request = url.into_client_request().context("invalid --url")?;
    let bearer = HeaderValue::from_str(&format!("Bearer {token}")).context("invalid token")?;
    request.headers_mut().insert(AUTHORIZATION, bearer);
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await?;

    // 2. Subscribe, resuming after the last event id if we have one.
    let resume_from = *last_event_id;
    let mut subscribe = json!({ "type": "subscribe", "id": "watch", "topics": args.topics });
    if let Some(id) = resume_from {
        subscribe["last_event_id"] = json!(id.to_string());
    }
    socket.send(Message::Text(subscribe.to_string())).await?;

    // 3. Print frames and remember each event's id. (tungstenite answers the server's pings
    //    while we read.)
    while let Some(message) = socket.next().await {
        let text = match message? {
            Message::Text(text) => text,
            Message::Close(frame) => {
                let why = frame.map_or_else(
                    || "closed".to_owned(),
                    |f| format!("{} {}", f.code, f.reason),
                );
                return Ok(End::Disconnected(why));
            }
            _ => continue,
        };
        let frame: Value = serde_json::from_str(&text).context("the server sent invalid JSON")?;
        match frame["type"].as_str().unwrap_or_default() {
            "authenticated" => println!(
                "authenticated as {} ({}) in {}",
                frame["user"], frame["role"], frame["hospital"]
            ),
            "subscribed" => {
                let recovered = frame["recovered"].as_bool().unwrap_or(false);
                let position = frame["position"].as_str().unwrap_or("?");
                match resume_from {
                    Some(id) => println!("resumed from {id}, recovered={recovered}"),
                    None => println!(
                        "subscribed to {}, from position {position}",
                        frame["topics"]
                    ),
                }
                if resume_from.is_some() && !recovered {
                    println!("  the gap could not be replayed: reload state through REST; continuing after {position}");
                }
                // Whatever happened before, the events that follow are those after `position`.
                *last_event_id = position.parse().ok().or(*last_event_id);
                *backoff = FIRST_BACKOFF;
            }
            "event" => {
                print_event(&frame);
                if let Some(p) = frame["position"].as_u64() {
                    *last_event_id = Some(p);
                }
            }
            "error" => eprintln!("error {}: {}", frame["code"], frame["message"]),
            "closing" => eprintln!("server closing: {} {}", frame["code"], frame["reason"]),
            "token_expiring" => {
                eprintln!("token expires in {}s: get a new one", frame["seconds_left"])
            }
            "pong" => {}
            other => println!("{other}: {text}"),
        }
    }
    bail!("connection ended")
}

/// One line per event: position, type, aggregate, and the start of its data (null fields
/// left out).
fn print_event(frame: &Value) {
    let mut data = frame["data"].clone();
    if let Some(fields) = data.as_object_mut() {
        fields.retain(|_, v| !v.is_null());
    }
    let data = data.to_string();
    let mut preview: String = data.chars().take(DATA_PREVIEW).collect();
    if preview.len() < data.len() {
        preview.push('…');
    }
    println!(
        "{:>8}  {:<22} {}:{}  {preview}",
        frame["position"].as_i64().unwrap_or(-1),
        frame["event_type"].as_str().unwrap_or("?"),
        frame["aggregate_type"].as_str().unwrap_or("?"),
        frame["aggregate_id"].as_str().unwrap_or("?"),
    );
}
