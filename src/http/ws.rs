//! `GET /api/hospitals/{hospital}/ws`: the WebSocket endpoint.
//!
//! The token comes from the `Authorization: Bearer` header, or — because browsers cannot
//! set headers on a WebSocket — from a first `auth` frame. Tokens are never accepted in the
//! URL (URLs end up in logs).
//!
//! A WebSocket upgrade never reaches actix-web's router: actix-http hands every upgrade
//! request, with its socket, to [`upgrade`], which checks it (path, hospital, token,
//! handshake), answers it, and runs the connection on the socket itself ([`socket`]) — the
//! connection then holds no HTTP buffers. A plain `GET` on the endpoint reaches [`connect`]
//! and gets the same checks and a `400 websocket_upgrade_required`.

use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, AsyncContext};
use actix_codec::Framed;
use actix_http::body::MessageBody;
use actix_http::header::HeaderMap;
use actix_http::ws::verify_handshake;
use actix_http::{h1, Method, Request, RequestHead};
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use aggregates::types::HospitalId;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use super::extract::{bearer_token_in, hospital_from_path};
use super::problem::ApiError;
use super::AppState;
use crate::access::authorize;
use crate::access::Action;
use crate::auth::Identity;
use crate::realtime::hospital::SessionProgress;
use crate::realtime::session::SessionActor;
use crate::realtime::socket;
use crate::realtime::writer::{self, WriterContext, COMMAND_QUEUE};
use crate::realtime::Realtime;

/// How long a client has to take a refused upgrade's error response.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Frames above this size are a protocol error that closes the connection (1009); frames
/// between the configured limit and this one get an error frame and the connection stays.
pub fn hard_frame_limit(soft: usize) -> usize {
    soft.saturating_mul(8).max(64 * 1024)
}

/// The checks every connection passes before it is upgraded: a valid hospital in the path
/// and, if the request carries a bearer token, a valid token for that hospital (without
/// one, the first frame must be `auth`).
fn admit(
    rt: &Realtime,
    hospital: &str,
    headers: &HeaderMap,
) -> Result<(HospitalId, Option<Identity>), ApiError> {
    let hospital = hospital_from_path(hospital)?;
    let identity = match bearer_token_in(headers) {
        Some(token) => {
            let identity = rt.keys.verify(token)?;
            authorize(&identity, &hospital, Action::ReadEvents)?;
            Some(identity)
        }
        None => None,
    };
    Ok((hospital, identity))
}

fn upgrade_required(error: impl std::fmt::Display) -> ApiError {
    ApiError::BadRequest {
        code: "websocket_upgrade_required",
        detail: format!("this endpoint speaks WebSocket: {error}"),
        field: None,
    }
}

/// `GET` on the endpoint without a WebSocket upgrade (a WebSocket never reaches here, see
/// [`upgrade`]): the same checks as a connection, then `400 websocket_upgrade_required`.
pub async fn connect(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    admit(&state.realtime, &path, req.headers())?;
    Err(upgrade_required(
        verify_handshake(req.head()).err().map_or_else(
            || "the upgrade was not recognised".to_owned(),
            |e| e.to_string(),
        ),
    ))
}

/// The hospital segment of `/api/hospitals/{hospital}/ws` (a trailing slash and repeated
/// slashes allowed, as for every other route).
fn endpoint_hospital(path: &str) -> Option<&str> {
    let mut segments = path.split('/').filter(|s| !s.is_empty());
    match (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) {
        (Some("api"), Some("hospitals"), Some(hospital), Some("ws"), None) => Some(hospital),
        _ => None,
    }
}

/// What to do with an upgrade request.
fn check(rt: &Realtime, head: &RequestHead) -> Result<(HospitalId, Option<Identity>), ApiError> {
    let Some(hospital) = endpoint_hospital(head.uri.path()) else {
        return Err(ApiError::NotFound {
            code: "route_not_found",
            detail: format!("no WebSocket endpoint at {}", head.uri.path()),
        });
    };
    if head.method != Method::GET {
        return Err(ApiError::MethodNotAllowed { allow: "GET" });
    }
    check_origin(rt, head)?;
    let admitted = admit(rt, hospital, &head.headers)?;
    verify_handshake(head).map_err(upgrade_required)?;
    Ok(admitted)
}

/// A browser page may open a socket only from Vigil's own origin or an allowed one
/// (`--cors-allowed-origins`); browsers do not apply CORS to WebSocket, so this is the check.
/// Clients that send no `Origin` (native apps, servers) are not browsers' pages and pass.
fn check_origin(rt: &Realtime, head: &RequestHead) -> Result<(), ApiError> {
    let Some(origin) = head.headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or_default();
    let host = head.headers.get(header::HOST).and_then(|h| h.to_str().ok());
    if crate::config::cors::same_origin(origin, host) || rt.settings.allowed_origins.allows(origin)
    {
        return Ok(());
    }
    Err(ApiError::Forbidden {
        code: "origin_not_allowed",
        detail: format!(
            "pages of `{origin}` may not open a socket; allow it with --cors-allowed-origins"
        ),
    })
}

/// actix-http's upgrade service: every request asking for a WebSocket, with its socket.
/// Refused requests get their problem+json response and the socket is closed; accepted ones
/// get `101 Switching Protocols` and become a session.
pub async fn upgrade(rt: Arc<Realtime>, req: Request, framed: Framed<TcpStream, h1::Codec>) {
    let span = tracing::info_span!("websocket_upgrade", path = %req.path());
    async move {
        let parts = framed.into_parts();
        let mut io = parts.io;
        match check(&rt, req.head()) {
            Err(error) => {
                tracing::debug!(%error, "websocket upgrade refused");
                refuse(&mut io, &error).await;
            }
            Ok((hospital, identity)) => {
                // `verify_handshake` checked the key is there.
                let key = req
                    .head()
                    .headers
                    .get(header::SEC_WEBSOCKET_KEY)
                    .map(|k| k.as_bytes())
                    .unwrap_or_default();
                // Not written here: it leaves with the session's first frames, in one write.
                let response = socket::switching_protocols(key);
                start(rt, hospital, identity, io, parts.read_buf, response);
            }
        }
    }
    .instrument(span)
    .await
}

/// Writes `error` as the HTTP response to a refused upgrade and closes the connection.
async fn refuse(io: &mut TcpStream, error: &ApiError) {
    let response = error.error_response();
    let status = response.status();
    let mut head = format!(
        "HTTP/1.1 {} {}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    for (name, value) in response.headers() {
        if let Ok(value) = value.to_str() {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    let body = response.into_body().try_into_bytes().unwrap_or_default();
    head.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    ));
    // One write: head and body leave together, so a client that reads the response once
    // (as WebSocket clients do for a failed handshake) gets the whole problem.
    let mut response = head.into_bytes();
    response.extend_from_slice(&body);
    let write = async {
        io.write_all(&response).await?;
        io.shutdown().await
    };
    let _ = tokio::time::timeout(RESPONSE_TIMEOUT, write).await;
}

/// Starts an upgraded connection: its writer task on the socket and its session actor.
fn start(
    rt: Arc<Realtime>,
    hospital: HospitalId,
    identity: Option<Identity>,
    io: TcpStream,
    pending: bytes::BytesMut,
    response: bytes::BytesMut,
) {
    let (reader, outgoing) = socket::split(
        io,
        pending,
        hard_frame_limit(rt.settings.max_frame_bytes),
        response,
    );
    let (commands, receiver) = mpsc::channel(COMMAND_QUEUE);
    let (kill, kill_receiver) = watch::channel(None);
    let progress = Arc::new(SessionProgress::default());
    let context = WriterContext {
        pool: rt.pool.clone(),
        progress: progress.clone(),
        metrics: rt.metrics.clone(),
        kill: kill_receiver,
        shutdown: rt.shutdown.clone(),
    };
    let sink = outgoing.sink();
    actix_web::rt::spawn(outgoing.run(writer::run(sink, receiver, context)));
    SessionActor::create(move |ctx| {
        ctx.add_stream(reader);
        SessionActor::new(hospital, rt, identity, commands, kill, progress)
    });
}
