//! `ws_echo`: a WebSocket echo server on Vigil's own socket layer, for Autobahn|Testsuite.
//!
//! ```text
//! cargo run --release --example ws_echo -- --listen 127.0.0.1:9001 [--max-message BYTES]
//! ```
//!
//! Everything after the handshake is the code that runs every Vigil WebSocket connection:
//! [`socket::split`] (the reader, its frame codec, the reassembly of fragments, UTF-8 checks
//! and the message limit of [`assemble`](vigil::realtime::assemble)) and
//! [`Outgoing::run`](socket::Outgoing::run) with its [`WsSink`] (the single writer, the
//! outgoing high-water mark, the close handshake and its timeouts). Only the session differs:
//! [`echo`] sends each message back instead of speaking Vigil's JSON protocol, so the
//! fuzzing client (`.ci/autobahn.sh`) checks the layer itself against RFC 6455. The
//! handshake is read with actix-http's HTTP/1 codec, as Vigil's server does.
//!
//! Not a mode of `vigil serve`: it has no authentication and must never face a network.

use std::net::SocketAddr;
use std::time::Duration;

use actix_codec::Framed;
use actix_http::ws::{verify_handshake, Message};
use actix_http::{h1, ServiceConfig};
use anyhow::Context;
use clap::Parser;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use vigil::config::RealtimeSettings;
use vigil::http::ws::hard_frame_limit;
use vigil::realtime::socket::{self, SocketReader, WsSink};
use vigil::realtime::writer::Sink;

/// Time a client has to send its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Parser)]
struct Args {
    /// Address to listen on; keep it on loopback.
    #[arg(long, default_value = "127.0.0.1:9001")]
    listen: SocketAddr,
    /// Largest message accepted, fragmented or not (bytes); larger ones close the connection
    /// with 1009. Defaults to what `vigil serve` accepts with its default settings.
    #[arg(long)]
    max_message: Option<usize>,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let max_message = args
        .max_message
        .unwrap_or_else(|| hard_frame_limit(RealtimeSettings::default().max_frame_bytes));
    // One thread, as each of Vigil's connections runs on one worker thread (the socket
    // layer is `!Send`).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the runtime")?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let listener = TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("binding {}", args.listen))?;
        tracing::info!(address = %listener.local_addr()?, max_message, "ws_echo listening");
        loop {
            let (io, _) = listener.accept().await.context("accepting")?;
            tokio::task::spawn_local(connection(io, max_message));
        }
    })
}

/// One connection: the handshake, then Vigil's socket layer with the echo session.
async fn connection(io: TcpStream, max_message: usize) {
    let mut framed = Framed::new(io, h1::Codec::new(ServiceConfig::default()));
    let request = match tokio::time::timeout(HANDSHAKE_TIMEOUT, framed.next()).await {
        Ok(Some(Ok(h1::Message::Item(request)))) => request,
        _ => return,
    };
    let parts = framed.into_parts();
    let mut io = parts.io;
    if let Err(error) = verify_handshake(request.head()) {
        let body = error.to_string();
        let response = format!(
            "HTTP/1.1 400 Bad Request\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = io.write_all(response.as_bytes()).await;
        return;
    }
    // `verify_handshake` checked the key is there.
    let key = request
        .head()
        .headers
        .get(actix_http::header::SEC_WEBSOCKET_KEY)
        .map(|k| k.as_bytes())
        .unwrap_or_default();
    let response = socket::switching_protocols(key);
    let (reader, outgoing) = socket::split(io, parts.read_buf, max_message, response);
    let sink = outgoing.sink();
    outgoing.run(echo(reader, sink)).await;
}

/// The echo session: every text and binary message back as it came, pings answered; the
/// client's close is answered with its code, and a failure closes with the failure's code.
async fn echo(mut reader: SocketReader, mut sink: WsSink) {
    while let Some(item) = reader.next().await {
        let sent = match item {
            Ok(Message::Text(text)) => sink.send(text).await,
            Ok(Message::Binary(bytes)) => sink.binary(bytes).await,
            Ok(Message::Ping(payload)) => sink.pong(payload).await,
            Ok(Message::Pong(_)) | Ok(Message::Nop) | Ok(Message::Continuation(_)) => Ok(()),
            // Answered below: the sink echoes the client's code.
            Ok(Message::Close(_)) => break,
            Err(failure) => {
                tracing::debug!(%failure, "failing the connection");
                return sink.fail(failure.close_code()).await;
            }
        };
        if sent.is_err() {
            break;
        }
    }
    sink.close(None).await;
}
