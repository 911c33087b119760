//! Every limit and timer of the realtime gateway, with short configured timers: what the
//! client is told (an `error` frame, or a `closing` frame and its close code) and that the
//! rest of the server is unaffected.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use aggregates::alert::{Alert, AlertCommand, Severity};
use aggregates::types::{AlertMessage, HospitalId, Role, UserId};
use futures_util::future::join_all;
use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::MaybeTlsStream;
use uuid::Uuid;
use vigil::auth::Claims;
use vigil::command::{CommandBus, CommandContext};

use crate::helpers::ws::{self, closed, frame, frame_of, send, subscribe, Received, Socket};
use crate::helpers::{eventually, paths, spawn_app, spawn_app_with, until, TestApp};
use crate::resume::{metric, metrics_text, next_event, position, positions, take_events, try_next};

const H: &str = "st-marys";

/// Sends a raw text frame, ignoring a failure (the server may already have closed).
async fn send_raw(socket: &mut Socket, text: String) {
    let _ = socket.send(Message::Text(text)).await;
}

/// A `ping` frame with an id.
fn ping(id: &str) -> Value {
    json!({"type": "ping", "id": id})
}

/// The next frame that is not ephemeral state (presence, typing, viewing), or a close.
async fn next_reply(socket: &mut Socket) -> Value {
    loop {
        let f = frame(socket).await;
        if !matches!(f["type"].as_str(), Some("presence" | "typing" | "viewing")) {
            return f;
        }
    }
}

/// A token for `user` of `hospital` that expires at `exp` (seconds since the epoch).
fn token_expiring_at(app: &TestApp, hospital: &str, user: &str, exp: i64) -> String {
    app.token_with(&Claims {
        sub: UserId::parse(user).unwrap(),
        hospital: HospitalId::parse(hospital).unwrap(),
        role: Role::Nurse,
        exp,
        iat: Some(chrono::Utc::now().timestamp()),
        iss: None,
        aud: None,
    })
}

/// The server side of a loopback TCP connection: (state, bytes in its send queue), from
/// `/proc/net/tcp` (`"01"` is ESTABLISHED), or `None` once the kernel has forgotten it.
pub(crate) fn server_side_tcp(server_port: u16, client_port: u16) -> Option<(String, u64)> {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let local = format!("0100007F:{server_port:04X}");
    let remote = format!("0100007F:{client_port:04X}");
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(1) == Some(&local.as_str()) && fields.get(2) == Some(&remote.as_str())).then(
            || {
                let queued = fields[4].split(':').next().unwrap_or("0");
                (
                    fields[3].to_owned(),
                    u64::from_str_radix(queued, 16).unwrap_or(0),
                )
            },
        )
    })
}

/// Commits a high-severity alert by `user` straight through the command bus (no HTTP, so
/// that the tests can commit faster than a client reads).
pub(crate) async fn raise_high_alert(
    bus: &CommandBus,
    hospital: &HospitalId,
    user: &str,
    message: &AlertMessage,
) {
    let command_id = Uuid::new_v4();
    let ctx = CommandContext {
        hospital: hospital.clone(),
        user: UserId::parse(user).unwrap(),
        role: Role::Nurse,
        command_id,
        correlation_id: command_id,
        causation_id: command_id,
    };
    bus.execute::<Alert>(&ctx, &command_id.to_string(), || AlertCommand::Raise {
        severity: Severity::High,
        message: message.clone(),
        department: None,
        patient: None,
        by: ctx.user.clone(),
        at: chrono::Utc::now(),
    })
    .await
    .expect("command commits");
}

/// A WebSocket that can hold very little in flight, so that a client that stops reading
/// really does block the server's writes after a few frames.
///
/// A small receive buffer is not enough on loopback: its 64 KiB MSS lets the server's send
/// buffer autotune to megabytes. Advertising a small MSS in the SYN (`TCP_MAXSEG`) keeps the
/// server's send buffer near its initial size too, as over a real network path.
pub(crate) async fn connect_with_small_buffers(port: u16, token: &str) -> Socket {
    use std::os::fd::AsRawFd;
    let tcp = tokio::net::TcpSocket::new_v4().expect("socket");
    tcp.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let mss: libc::c_int = 1024;
    // SAFETY: a valid socket descriptor, a pointer to a live c_int and its exact size.
    let set = unsafe {
        libc::setsockopt(
            tcp.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_MAXSEG,
            (&mss as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(set, 0, "TCP_MAXSEG: {}", std::io::Error::last_os_error());
    let stream = tcp
        .connect(([127, 0, 0, 1], port).into())
        .await
        .expect("TCP connect");
    let request = ws::request(port, &paths::ws(H), Some(token));
    let (socket, _) = tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream))
        .await
        .expect("websocket connects");
    socket
}

/// A TCP stream whose writes can be silenced: a WebSocket client over it never answers
/// the server's pings (tungstenite answers them whenever it reads, so a plain client that
/// reads late would answer stale pings, and fail on the closed socket, before it could
/// read the frames the server sent).
struct Deaf {
    inner: tokio::net::TcpStream,
    deaf: Arc<AtomicBool>,
}

impl AsyncRead for Deaf {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Deaf {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.deaf.load(Ordering::Relaxed) {
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        if self.deaf.load(Ordering::Relaxed) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Invariant: a client that answers nothing (not even the server's pings) is closed with
/// 4005 after two silent intervals; one that reads (and so answers pings) stays open.
///
/// The heartbeat is a timer, so the test takes a few intervals; it waits for frames (the
/// silent client's close, the live client's pings), never for a fixed time.
#[actix_web::test]
async fn a_silent_client_is_closed_by_the_heartbeat_and_a_live_one_is_not() {
    // Arrange
    let app = spawn_app_with(|s| s.realtime.heartbeat = Duration::from_millis(200)).await;
    let nurse = app.token(H, "nurse-amy", Role::Nurse);
    let deaf = Arc::new(AtomicBool::new(false));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
        .await
        .expect("TCP connect");
    let request = ws::request(app.port, &paths::ws(H), Some(&nurse));
    let (mut silent, _) = tokio_tungstenite::client_async(
        request,
        Deaf {
            inner: tcp,
            deaf: deaf.clone(),
        },
    )
    .await
    .expect("websocket connects");
    silent
        .send(Message::Text(
            json!({"type": "subscribe", "topics": ["alerts"]}).to_string(),
        ))
        .await
        .expect("subscribe");
    deaf.store(true, Ordering::Relaxed);
    let mut live = ws::connect(app.port, H, Some(&nurse)).await;
    subscribe(&mut live, &["alerts"], None).await;

    // Act: the live client reads (tungstenite answers pings while reading) until the server
    // has pinged it LIVE_PINGS times, well past the two silent intervals that close a
    // connection; meanwhile the silent one never answers (its writes go nowhere).
    const LIVE_PINGS: usize = 5;
    let live_reader = async {
        let mut pings = 0;
        while pings < LIVE_PINGS {
            let message = tokio::time::timeout(Duration::from_secs(3), live.next())
                .await
                .expect("the live client is pinged in time");
            match message {
                Some(Ok(Message::Ping(_))) => pings += 1,
                Some(Ok(Message::Text(text))) => {
                    let f: Value = serde_json::from_str(&text).expect("json frame");
                    assert_ne!(f["type"], "closing", "{f}");
                }
                Some(Ok(Message::Close(frame))) => panic!("the live client was closed: {frame:?}"),
                Some(Ok(_)) => {}
                Some(Err(error)) => panic!("the live client failed: {error}"),
                None => panic!("the live client was closed"),
            }
        }
    };
    let silent_reader = async {
        let mut reason = None;
        let code = loop {
            let message = tokio::time::timeout(Duration::from_secs(5), silent.next())
                .await
                .expect("the silent client is closed in time");
            match message {
                Some(Ok(Message::Text(text))) => {
                    let f: Value = serde_json::from_str(&text).expect("json frame");
                    if f["type"] == "closing" {
                        reason = f["reason"].as_str().map(str::to_owned);
                    }
                }
                Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => {}
                Some(Err(error)) => panic!("read failed before the close frame: {error}"),
                None => break None,
            }
        };
        (reason, code)
    };
    let ((), (reason, code)) = tokio::join!(live_reader, silent_reader);

    // Assert: the silent client has been told why, and closed; the live one still answers.
    assert_eq!(reason.as_deref(), Some("heartbeat_timeout"));
    assert_eq!(code, Some(4005));
    send(&mut live, ping("still-there")).await;
    let pong = frame_of(&mut live, "pong").await;
    assert_eq!(pong["id"], "still-there");
}

/// Invariant: a connection that never subscribes is closed after the idle timeout (4004);
/// a subscribed one is not.
#[actix_web::test]
async fn a_connection_that_never_subscribes_is_closed_as_idle() {
    // Arrange
    const IDLE: Duration = Duration::from_millis(300);
    let app = spawn_app_with(|s| s.realtime.idle_timeout = IDLE).await;
    let nurse = app.token(H, "nurse-amy", Role::Nurse);
    let subscribed_since = Instant::now();
    let mut subscribed = ws::connect(app.port, H, Some(&nurse)).await;
    subscribe(&mut subscribed, &["alerts"], None).await;

    // Act
    let started = Instant::now();
    let mut idle = ws::connect(app.port, H, Some(&nurse)).await;
    assert_eq!(frame(&mut idle).await["type"], "authenticated");
    let (reason, code) = closed(&mut idle, Duration::from_secs(3)).await;

    // Assert
    assert_eq!(reason.as_deref(), Some("idle_timeout"));
    assert_eq!(code, Some(4004));
    assert!(started.elapsed() < Duration::from_secs(3));
    // The idle timer is a timer: the subscribed connection's own one was armed before the
    // idle connection's, which has fired. Its actor may run on another worker thread, so
    // the test also lets its deadline pass by a whole timeout before asking (the one wait
    // for time here, at most IDLE).
    tokio::time::sleep_until(subscribed_since + IDLE * 2).await;
    send(&mut subscribed, ping("p")).await;
    assert_eq!(frame_of(&mut subscribed, "pong").await["id"], "p");
}

/// Invariant: a connection is warned before its token expires and closed when it does
/// (4001) unless it sends `refresh` with a token of the same user and hospital; a refresh
/// with anyone else's token is refused and changes nothing.
#[actix_web::test]
async fn a_token_expiry_is_warned_then_closes_unless_refreshed() {
    // Arrange
    // Token expiry is a timer on the wall clock (whole seconds): the tokens live 3 s, the
    // shortest that leaves the 2 s warning room to be sent and answered.
    let app = spawn_app_with(|s| s.realtime.token_warning = Duration::from_secs(2)).await;
    let exp = chrono::Utc::now().timestamp() + 3;
    // Told when the first connection is closed at `exp`: the positive signal that the
    // server's expiry timers for `exp` have fired.
    let expired = tokio::sync::Notify::new();

    let expires = async {
        let token = token_expiring_at(&app, H, "nurse-a", exp);
        let mut socket = ws::connect(app.port, H, Some(&token)).await;
        subscribe(&mut socket, &["alerts"], None).await;
        let warning = frame_of(&mut socket, "token_expiring").await;
        assert!(warning["seconds_left"].as_i64().unwrap() <= 2, "{warning}");
        let (reason, code) = closed(&mut socket, Duration::from_secs(5)).await;
        assert_eq!(reason.as_deref(), Some("token_expired"));
        assert_eq!(code, Some(4001));
        assert!(
            chrono::Utc::now().timestamp() <= exp + 2,
            "closed at the expiry, not much later"
        );
        expired.notify_one();
    };

    let refreshed = async {
        let token = token_expiring_at(&app, H, "nurse-b", exp);
        let mut socket = ws::connect(app.port, H, Some(&token)).await;
        subscribe(&mut socket, &["alerts"], None).await;
        frame_of(&mut socket, "token_expiring").await;
        let fresh = app.token(H, "nurse-b", Role::Nurse);
        send(
            &mut socket,
            json!({"type": "refresh", "id": "r1", "token": fresh}),
        )
        .await;
        let reply = next_reply(&mut socket).await;
        assert_eq!(reply["type"], "authenticated", "{reply}");
        assert_eq!(reply["id"], "r1");
        assert_eq!(reply["user"], "nurse-b");
        // The old expiry has passed: another connection's timer for the same instant fired.
        // This session's timer (had the refresh not replaced it) was armed for the same
        // instant on maybe another worker thread: 200 ms more covers that thread's lag.
        expired.notified().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        send(&mut socket, ping("after-expiry")).await;
        let pong = next_reply(&mut socket).await;
        assert_eq!(
            pong["type"], "pong",
            "still open after the old expiry: {pong}"
        );
        assert_eq!(pong["id"], "after-expiry");
    };

    let refused = async {
        let token = token_expiring_at(&app, H, "nurse-c", exp);
        let mut socket = ws::connect(app.port, H, Some(&token)).await;
        subscribe(&mut socket, &["alerts"], None).await;
        let someone_else = app.token(H, "dr-other", Role::Physician);
        send(
            &mut socket,
            json!({"type": "refresh", "id": "r2", "token": someone_else}),
        )
        .await;
        let error = frame_of(&mut socket, "error").await;
        assert_eq!(
            (error["code"].as_str(), error["id"].as_str()),
            (Some("refresh_mismatch"), Some("r2"))
        );
        let other_hospital = app.token("other", "nurse-c", Role::Nurse);
        send(
            &mut socket,
            json!({"type": "refresh", "id": "r3", "token": other_hospital}),
        )
        .await;
        let error = frame_of(&mut socket, "error").await;
        assert_eq!(error["id"], "r3");
        assert_eq!(error["code"], "refresh_mismatch");
        send(&mut socket, ping("usable")).await;
        assert_eq!(frame_of(&mut socket, "pong").await["id"], "usable");
        // Unchanged: it still closes at the original expiry.
        let (reason, code) = closed(&mut socket, Duration::from_secs(5)).await;
        assert_eq!(reason.as_deref(), Some("token_expired"));
        assert_eq!(code, Some(4001));
    };

    // Act + Assert, concurrently (each takes about as long as a token lives).
    tokio::time::timeout(
        Duration::from_secs(20),
        futures_util::future::join3(expires, refreshed, refused),
    )
    .await
    .expect("the three connections finish in time");
}

/// Invariant: frames over the rate get `rate_limited` errors; repeated violations close the
/// connection with 4029.
#[actix_web::test]
async fn a_client_over_the_frame_rate_is_warned_then_closed() {
    // Arrange
    let app = spawn_app_with(|s| {
        s.realtime.frame_rate = 1.0;
        s.realtime.frame_burst = 3.0;
        s.realtime.max_violations = 3;
    })
    .await;
    let nurse = app.token(H, "nurse-amy", Role::Nurse);
    let mut socket = ws::connect(app.port, H, Some(&nurse)).await;
    frame_of(&mut socket, "authenticated").await;

    // Act
    for i in 0..12 {
        send_raw(&mut socket, ping(&format!("p{i}")).to_string()).await;
    }

    // Assert
    let mut pongs = 0;
    let mut rate_limited = 0;
    let (reason, code) = loop {
        match ws::next(&mut socket, Duration::from_secs(5)).await {
            Received::Frame(f) if f["type"] == "pong" => {
                assert_eq!(rate_limited, 0, "no pong after the first refusal");
                pongs += 1;
            }
            Received::Frame(f) if f["type"] == "error" => {
                assert_eq!(f["code"], "rate_limited", "{f}");
                rate_limited += 1;
            }
            Received::Frame(f) if f["type"] == "closing" => {
                let reason = f["reason"].as_str().map(str::to_owned);
                let (_, code) = closed(&mut socket, Duration::from_secs(5)).await;
                break (reason, code);
            }
            Received::Frame(f) => panic!("unexpected frame {f}"),
            Received::Closed(code) => break (None, code),
        }
    };
    assert!((3..=4).contains(&pongs), "the burst is served: {pongs}");
    assert!(
        rate_limited >= 3,
        "warned before being closed: {rate_limited}"
    );
    assert_eq!(reason.as_deref(), Some("rate_limited"));
    assert_eq!(code, Some(4029));
    let exposition = metrics_text(&app.client, &app.address).await;
    assert!(metric(&exposition, "vigil_rate_limit_hits_total").unwrap_or(0.0) >= 3.0);
}

/// Invariant: a frame over the configured size gets an error and the connection stays
/// usable; one over the hard limit closes the connection with 1009.
#[actix_web::test]
async fn oversized_frames_are_refused_and_huge_ones_close_the_connection() {
    // Arrange
    let app = spawn_app_with(|s| s.realtime.max_frame_bytes = 1024).await;
    let nurse = app.token(H, "nurse-amy", Role::Nurse);
    let mut socket = ws::connect(app.port, H, Some(&nurse)).await;
    frame_of(&mut socket, "authenticated").await;
    let padded = |bytes: usize| json!({"type": "ping", "pad": "x".repeat(bytes)}).to_string();

    // Act + Assert: over the soft limit.
    send_raw(&mut socket, padded(2 * 1024)).await;
    let error = frame(&mut socket).await;
    assert_eq!(error["type"], "error");
    assert_eq!(error["code"], "frame_too_large");
    send(&mut socket, ping("after")).await;
    assert_eq!(frame(&mut socket).await["id"], "after", "still usable");

    // Over the hard limit (64 KiB).
    send_raw(&mut socket, padded(200 * 1024)).await;
    let (reason, code) = closed(&mut socket, Duration::from_secs(5)).await;
    assert_eq!(reason.as_deref(), Some("frame_too_large"));
    assert_eq!(code, Some(1009));
}

/// Invariant: a connection holds at most `max_subscriptions` topics.
#[actix_web::test]
async fn subscriptions_beyond_the_maximum_are_refused() {
    // Arrange
    let app = spawn_app_with(|s| s.realtime.max_subscriptions = 2).await;
    let nurse = app.token(H, "nurse-amy", Role::Nurse);
    let mut socket = ws::connect(app.port, H, Some(&nurse)).await;
    frame_of(&mut socket, "authenticated").await;

    // Act
    send(
        &mut socket,
        json!({"type": "subscribe", "id": "three", "topics": ["alerts", "cases", "notifications"]}),
    )
    .await;
    let refused = frame(&mut socket).await;
    let two = subscribe(&mut socket, &["alerts", "cases"], None).await;
    send(
        &mut socket,
        json!({"type": "subscribe", "id": "one-more", "topics": ["notifications"]}),
    )
    .await;
    let refused_again = frame(&mut socket).await;

    // Assert
    assert_eq!(refused["type"], "error");
    assert_eq!(refused["code"], "too_many_subscriptions");
    assert_eq!(refused["id"], "three");
    assert_eq!(two["topics"], json!(["alerts", "cases"]));
    assert_eq!(refused_again["code"], "too_many_subscriptions");
    assert_eq!(refused_again["id"], "one-more");
}

/// Invariant: one user holds at most `max_connections_per_user` connections (4013 for the
/// next); other users are unaffected, and a closed connection frees its slot.
#[actix_web::test]
async fn a_user_over_the_connection_limit_is_refused_until_one_closes() {
    // Arrange
    let app = spawn_app_with(|s| s.realtime.max_connections_per_user = 2).await;
    let nurse = app.token(H, "nurse-amy", Role::Nurse);
    let doctor = app.token(H, "dr-rao", Role::Physician);
    let mut first = ws::connect(app.port, H, Some(&nurse)).await;
    assert_eq!(frame(&mut first).await["type"], "authenticated");
    let mut second = ws::connect(app.port, H, Some(&nurse)).await;
    assert_eq!(frame(&mut second).await["type"], "authenticated");

    // Act
    let mut third = ws::connect(app.port, H, Some(&nurse)).await;
    let refused = frame(&mut third).await;
    let (reason, code) = closed(&mut third, Duration::from_secs(5)).await;
    let mut other_user = ws::connect(app.port, H, Some(&doctor)).await;
    let other_reply = frame(&mut other_user).await;

    // Assert
    assert_eq!(refused["type"], "error");
    assert_eq!(refused["code"], "too_many_connections");
    assert_eq!(reason.as_deref(), Some("too_many_connections"));
    assert_eq!(code, Some(4013));
    assert_eq!(other_reply["type"], "authenticated");

    // Closing one frees a slot (released when the server sees the close).
    first.close(None).await.expect("close");
    let nurse_ref = &nurse;
    let _again = eventually(
        Duration::from_secs(3),
        "the slot of a closed connection to be released",
        || async move {
            let mut again = ws::connect(app.port, H, Some(nurse_ref)).await;
            let reply = frame(&mut again).await;
            if reply["type"] == "authenticated" {
                return Some(again);
            }
            assert_eq!(reply["code"], "too_many_connections", "{reply}");
            None
        },
    )
    .await;
    send(&mut second, ping("second")).await;
    assert_eq!(frame_of(&mut second, "pong").await["id"], "second");
}

/// Rows of `user`'s connections in `presence_sessions` (every node's), waited for until
/// there are `expected` of them (a node's writer stores a connection just after admitting it).
async fn await_registered_connections(app: &TestApp, user: &str, expected: i64) {
    let what = format!("{expected} connections of {user} registered");
    until(Duration::from_secs(5), &what, || async move {
        let count: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM presence_sessions WHERE hospital = $1 AND user_id = $2",
        )
        .bind(H)
        .bind(user)
        .fetch_one(&app.pool)
        .await
        .expect("count connections");
        count == expected
    })
    .await;
}

/// The heartbeat times (`last_seen`) of the cluster's nodes, by node.
async fn node_heartbeats(app: &TestApp) -> Vec<(Uuid, chrono::DateTime<chrono::Utc>)> {
    sqlx::query_as("SELECT node_id, last_seen FROM presence_nodes ORDER BY node_id")
        .fetch_all(&app.pool)
        .await
        .expect("node heartbeats")
}

/// Invariant: the per-user limit holds across the nodes of a cluster: a user's connections
/// on another node count against it, and a connection closed on one node frees a slot on
/// the others.
#[actix_web::test]
async fn the_connection_limit_counts_the_users_connections_on_every_node() {
    // Arrange: two nodes on one database, a limit of 2, heartbeats fast enough that each
    // node knows of the other within a fraction of a second.
    let cluster = |s: &mut vigil::config::ServeSettings| {
        s.realtime.max_connections_per_user = 2;
        s.presence.node_heartbeat = Duration::from_millis(100);
        s.presence.node_timeout = Duration::from_secs(2);
    };
    let app = spawn_app_with(cluster).await;
    let mut settings_b = crate::helpers::settings(&app.db.url);
    cluster(&mut settings_b);
    let node_b = vigil::startup::Application::build(&settings_b)
        .await
        .expect("second node");
    let port_b = node_b.port();
    let shutdown_b = node_b.shutdown_handle();
    actix_web::rt::spawn(node_b.run_until_stopped());
    let registered = eventually(
        Duration::from_secs(5),
        "the second node to register",
        || async {
            let beats = node_heartbeats(&app).await;
            (beats.len() == 2).then_some(beats)
        },
    )
    .await;
    // Each writer counts the other nodes at each heartbeat, after touching its own row: two
    // more heartbeats of each node after both were registered prove one whole count.
    let beats = std::cell::RefCell::new((0, registered));
    let (beats, app_ref) = (&beats, &app);
    until(
        Duration::from_secs(5),
        "two heartbeats of each node",
        || async move {
            let now = node_heartbeats(app_ref).await;
            let mut seen = beats.borrow_mut();
            let (changes, last) = &mut *seen;
            let moved = now.len() == 2
                && now
                    .iter()
                    .zip(last.iter())
                    .all(|(a, b)| a.0 == b.0 && a.1 > b.1);
            if moved {
                *changes += 1;
                *last = now;
            }
            *changes >= 2
        },
    )
    .await;
    let nurse = app.token(H, "nurse-amy", Role::Nurse);
    let mut on_a_1 = ws::connect(app.port, H, Some(&nurse)).await;
    assert_eq!(frame(&mut on_a_1).await["type"], "authenticated");
    let mut on_a_2 = ws::connect(app.port, H, Some(&nurse)).await;
    assert_eq!(frame(&mut on_a_2).await["type"], "authenticated");
    await_registered_connections(&app, "nurse-amy", 2).await;

    // Act: a third connection, on the node where the user has none.
    let mut on_b = ws::connect(port_b, H, Some(&nurse)).await;
    let refused = frame(&mut on_b).await;
    let (reason, code) = closed(&mut on_b, Duration::from_secs(5)).await;

    // Assert
    assert_eq!(refused["type"], "error");
    assert_eq!(refused["code"], "too_many_connections", "{refused}");
    assert_eq!(reason.as_deref(), Some("too_many_connections"));
    assert_eq!(code, Some(4013));

    // One closed on A frees a slot on B; the next one on B is over the limit again.
    on_a_1.close(None).await.expect("close");
    await_registered_connections(&app, "nurse-amy", 1).await;
    let mut on_b = ws::connect(port_b, H, Some(&nurse)).await;
    assert_eq!(frame(&mut on_b).await["type"], "authenticated");
    await_registered_connections(&app, "nurse-amy", 2).await;
    let mut over = ws::connect(port_b, H, Some(&nurse)).await;
    assert_eq!(frame(&mut over).await["code"], "too_many_connections");
    let mut also_over = ws::connect(app.port, H, Some(&nurse)).await;
    assert_eq!(frame(&mut also_over).await["code"], "too_many_connections");
    send(&mut on_a_2, ping("still-here")).await;
    assert_eq!(frame_of(&mut on_a_2, "pong").await["id"], "still-here");

    // A node shut down gracefully leaves the cluster at once (the node timeout is 2 s): its
    // row and its connections' rows are gone when shutdown returns.
    shutdown_b.trigger().await;
    let (nodes, sessions): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM presence_nodes), (SELECT count(*) FROM presence_sessions)",
    )
    .fetch_one(&app.pool)
    .await
    .expect("count rows");
    assert_eq!(
        (nodes, sessions),
        (1, 1),
        "node A and its one open connection"
    );
}

/// Invariant: `typing` for one case is accepted at most once per throttle interval.
#[actix_web::test]
async fn typing_faster_than_the_throttle_is_refused() {
    // Arrange
    // The throttle is a timer: 500 ms, short, yet far longer than two frames sent back to
    // back take to arrive.
    const THROTTLE: Duration = Duration::from_millis(500);
    let app = spawn_app_with(|s| s.realtime.typing_throttle = THROTTLE).await;
    let nurse = app.token(H, "nurse-amy", Role::Nurse);
    let mut socket = ws::connect(app.port, H, Some(&nurse)).await;
    frame_of(&mut socket, "authenticated").await;
    let case = Uuid::new_v4();
    let other_case = Uuid::new_v4();

    // Act
    send(
        &mut socket,
        json!({"type": "typing", "id": "t1", "case": case}),
    )
    .await;
    send(
        &mut socket,
        json!({"type": "typing", "id": "t2", "case": case}),
    )
    .await;
    let throttled = next_reply(&mut socket).await;
    // `t1` was accepted before `t2` was refused, so before now.
    let t1_accepted_before = Instant::now();
    send(
        &mut socket,
        json!({"type": "typing", "id": "t3", "case": other_case}),
    )
    .await;
    send(&mut socket, ping("after-other-case")).await;
    let after_other_case = next_reply(&mut socket).await;
    // The one wait for time: until a whole interval has passed since `t1`.
    tokio::time::sleep_until(t1_accepted_before + THROTTLE).await;
    send(
        &mut socket,
        json!({"type": "typing", "id": "t4", "case": case}),
    )
    .await;
    send(&mut socket, ping("after-interval")).await;
    let after_interval = next_reply(&mut socket).await;

    // Assert
    assert_eq!(throttled["type"], "error", "{throttled}");
    assert_eq!(throttled["code"], "typing_throttled");
    assert_eq!(throttled["id"], "t2");
    assert_eq!(
        after_other_case["id"], "after-other-case",
        "another case is not throttled: {after_other_case}"
    );
    assert_eq!(
        after_interval["id"], "after-interval",
        "the same case is accepted after the interval: {after_interval}"
    );
}

/// Invariant: a connection that falls behind — its client reads nothing for a while, its
/// buffers fill and the server's writes block — but stays within the lag limit still
/// receives every event exactly once, in order, then live events. The events that piled up
/// are written several frames to a `writev`, and a write the socket takes only part of goes
/// on from the byte where it stopped (issue 17's batched writes).
#[actix_web::test]
async fn a_connection_that_falls_behind_gets_every_event_once_in_order_then_live_ones() {
    const EVENTS: usize = 120;

    // Arrange
    let app = spawn_app().await;
    let nurse = app.token(H, "nurse-amy", Role::Nurse);
    let mut slow = connect_with_small_buffers(app.port, &nurse).await;
    assert_eq!(frame(&mut slow).await["type"], "authenticated");
    subscribe(&mut slow, &["alerts"], None).await;
    let client_port = match slow.get_ref() {
        MaybeTlsStream::Plain(tcp) => tcp.local_addr().expect("local address").port(),
        _ => unreachable!("a plain TCP stream"),
    };
    let bus = CommandBus::new(app.pool.clone());
    let hospital = HospitalId::parse(H).unwrap();
    // ~7.6 KiB events: 120 of them (~0.9 MiB) are far more than the client's buffers and the
    // server's send buffer hold, and far less than the lag limit (4 MiB).
    let message =
        AlertMessage::parse(&format!("Ward 3 telemetry: {}", "\u{1FA7A}".repeat(1900))).unwrap();

    // Act: commit everything while the client reads nothing.
    for _ in 0..EVENTS {
        raise_high_alert(&bus, &hospital, "monitor-1", &message).await;
    }
    until(
        Duration::from_secs(10),
        "the server's writes to block on the client",
        || async { server_side_tcp(app.port, client_port).is_some_and(|(_, queued)| queued > 0) },
    )
    .await;
    let backlog = take_events(&mut slow, EVENTS).await;
    raise_high_alert(&bus, &hospital, "monitor-1", &message).await;
    let live = take_events(&mut slow, 1).await;

    // Assert
    assert_eq!(positions(&backlog), (1..=EVENTS as i64).collect::<Vec<_>>());
    assert_eq!(positions(&live), vec![EVENTS as i64 + 1]);
    assert!(backlog
        .iter()
        .all(|e| e["data"]["message"] == message.to_string()));
}

/// Invariant: a client that stops reading is disconnected as a slow consumer (4008) instead
/// of growing server memory, the server and well-behaved clients are unaffected, and the slow
/// client then resumes from its last id and gets the rest exactly.
#[actix_web::test]
async fn a_client_that_stops_reading_is_disconnected_and_resumes_exactly() {
    const EVENTS: usize = 300;
    const WRITERS: usize = 6;

    // Arrange: a lag limit far below the 300 events (the slow client must pass it) and far
    // above what a reading client falls behind by on a loaded machine, where six writers'
    // commands commit together (group commit) faster than one starved fan-out pass writes.
    let app = spawn_app_with(|s| s.realtime.max_lag_events = 100).await;
    let nurse = app.token(H, "nurse-amy", Role::Nurse);
    let mut slow = connect_with_small_buffers(app.port, &nurse).await;
    assert_eq!(frame(&mut slow).await["type"], "authenticated");
    subscribe(&mut slow, &["alerts"], None).await;
    let mut good = ws::connect(app.port, H, Some(&nurse)).await;
    subscribe(&mut good, &["alerts"], None).await;
    let bus = CommandBus::new(app.pool.clone());
    let hospital = HospitalId::parse(H).unwrap();
    // Large events (~1.5 KiB each) so the slow client's buffers fill quickly.
    let message =
        AlertMessage::parse(&format!("Ward 3 telemetry: {}", "\u{1FA7A}".repeat(1900))).unwrap();

    // Act: commit quickly; meanwhile the good client reads, /healthz is probed, and the slow
    // client reads nothing until the server reports a slow-consumer disconnect.
    let burst_done = std::cell::Cell::new(false);
    let writers = async {
        join_all((0..WRITERS).map(|w| {
            let (bus, hospital, message) = (&bus, &hospital, &message);
            async move {
                for _ in 0..EVENTS / WRITERS {
                    raise_high_alert(bus, hospital, &format!("monitor-{w}"), message).await;
                }
            }
        }))
        .await;
        burst_done.set(true);
    };
    let good_reader = async { take_events(&mut good, EVENTS).await };
    let health = async {
        let mut probes = 0;
        while !burst_done.get() || probes == 0 {
            let response = app.client.get(app.url("/healthz")).send().await.unwrap();
            assert_eq!(
                response.status(),
                StatusCode::OK,
                "/healthz during the burst"
            );
            probes += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let slow_reader = async {
        until(
            Duration::from_secs(30),
            "the slow client to be disconnected",
            || async {
                let exposition = metrics_text(&app.client, &app.address).await;
                metric(&exposition, "vigil_slow_consumer_disconnects_total").unwrap_or(0.0) >= 1.0
            },
        )
        .await;
        // Read again: what was buffered, then the closing frame and the close.
        let mut received = Vec::new();
        let mut reason = None;
        let code = loop {
            match try_next(&mut slow, Duration::from_secs(5)).await {
                Some(Received::Frame(f)) if f["type"] == "event" => received.push(f),
                Some(Received::Frame(f)) if f["type"] == "closing" => {
                    reason = f["reason"].as_str().map(str::to_owned)
                }
                Some(Received::Frame(_)) => {}
                Some(Received::Closed(code)) => break code,
                None => panic!("the slow client was never closed"),
            }
        };
        (received, reason, code)
    };
    let ((), good_events, (), (slow_events, reason, code)) =
        tokio::join!(writers, good_reader, health, slow_reader);

    // Assert
    let all: Vec<i64> = (1..=EVENTS as i64).collect();
    assert_eq!(
        positions(&good_events),
        all,
        "the good client got everything"
    );
    assert_eq!(reason.as_deref(), Some("slow_consumer"));
    assert_eq!(code, Some(4008));
    let got = positions(&slow_events);
    assert_eq!(
        got,
        (1..=got.len() as i64).collect::<Vec<_>>(),
        "no gap before the close"
    );
    assert!(
        got.len() < EVENTS,
        "the slow client was cut off before the end"
    );
    let exposition = metrics_text(&app.client, &app.address).await;
    assert!(metric(&exposition, "vigil_slow_consumer_disconnects_total").unwrap() >= 1.0);

    // It resumes from its last id and gets the rest exactly.
    let last = got.last().copied().unwrap_or(0);
    let mut resumed = ws::connect(app.port, H, Some(&nurse)).await;
    let s = subscribe(&mut resumed, &["alerts"], Some(last)).await;
    assert_eq!(s["recovered"], true);
    let rest = take_events(&mut resumed, EVENTS - last as usize).await;
    assert_eq!(
        positions(&rest),
        ((last + 1)..=EVENTS as i64).collect::<Vec<_>>()
    );
    // Nothing after the last event: the next event committed arrives next, with nothing
    // before it (delivery is ordered, so anything extra would have come first).
    raise_high_alert(&bus, &hospital, "monitor-0", &message).await;
    let next = take_events(&mut resumed, 1).await;
    assert_eq!(
        positions(&next),
        vec![EVENTS as i64 + 1],
        "nothing after the last event"
    );
}

/// Invariant: `/metrics` exposes the gateway's connection gauge, delivery counter and
/// latency histogram, and they move when events are delivered.
#[actix_web::test]
async fn metrics_expose_connections_deliveries_and_latency() {
    // Arrange
    let app = spawn_app().await;
    let nurse = app.token(H, "nurse-amy", Role::Nurse);
    let mut socket = ws::connect(app.port, H, Some(&nurse)).await;
    subscribe(&mut socket, &["alerts"], None).await;

    // Act
    app.raise_alert(H, &nurse, "high").await;
    let delivered = next_event(&mut socket, Duration::from_secs(10))
        .await
        .expect("the alert is delivered");
    let exposition = metrics_text(&app.client, &app.address).await;

    // Assert
    assert_eq!(position(&delivered), 1);
    let connections = metric(&exposition, r#"vigil_connections{transport="websocket"}"#)
        .expect("the websocket connection gauge");
    assert!(connections >= 1.0, "{exposition}");
    assert!(metric(&exposition, "vigil_events_delivered_total").expect("delivered") >= 1.0);
    assert!(exposition.contains("vigil_delivery_latency_seconds_bucket{le="));
    assert!(
        metric(
            &exposition,
            r#"vigil_delivery_latency_seconds_bucket{le="+Inf"}"#
        )
        .expect("the +Inf bucket")
            >= 1.0
    );
}

/// The state of the server's side of the TCP connection from `client_port` to the server's
/// `server_port` on loopback (`"01"` is ESTABLISHED), or `None` once the kernel has forgotten
/// it.
fn server_side_tcp_state(server_port: u16, client_port: u16) -> Option<String> {
    server_side_tcp(server_port, client_port).map(|(state, _)| state)
}

/// Invariant: a client that stops reading for good does not keep its connection. Once it is
/// disconnected as a slow consumer, the server shuts its side of the socket within a few
/// seconds (the close frame is given `CLOSE_TIMEOUT` to leave, then the connection goes),
/// even though the client never reads again — before, the connection stayed open, with its
/// buffers, until the client read again or TCP gave up.
#[actix_web::test]
async fn a_client_that_never_reads_again_loses_its_connection() {
    // Arrange
    let app = spawn_app_with(|s| s.realtime.max_lag_events = 20).await;
    let nurse = app.token(H, "nurse-amy", Role::Nurse);
    let mut silent = connect_with_small_buffers(app.port, &nurse).await;
    assert_eq!(frame(&mut silent).await["type"], "authenticated");
    subscribe(&mut silent, &["alerts"], None).await;
    let client_port = match silent.get_ref() {
        MaybeTlsStream::Plain(tcp) => tcp.local_addr().expect("local address").port(),
        _ => unreachable!("plain TCP"),
    };
    assert_eq!(
        server_side_tcp_state(app.port, client_port).as_deref(),
        Some("01"),
        "the connection is established"
    );
    let bus = CommandBus::new(app.pool.clone());
    let hospital = HospitalId::parse(H).unwrap();
    let message =
        AlertMessage::parse(&format!("Ward 3 telemetry: {}", "\u{1FA7A}".repeat(1900))).unwrap();

    // Act: large events until the server disconnects the silent client, which never reads.
    for _ in 0..200 {
        raise_high_alert(&bus, &hospital, "monitor-1", &message).await;
        let exposition = metrics_text(&app.client, &app.address).await;
        if metric(&exposition, "vigil_slow_consumer_disconnects_total").unwrap_or(0.0) >= 1.0 {
            break;
        }
    }
    let exposition = metrics_text(&app.client, &app.address).await;
    assert!(
        metric(&exposition, "vigil_slow_consumer_disconnects_total").unwrap_or(0.0) >= 1.0,
        "the silent client was disconnected as a slow consumer"
    );

    // Assert: the server's side leaves ESTABLISHED while the client still reads nothing.
    until(
        Duration::from_secs(15),
        "the server to let go of the connection of a client that stopped reading",
        || async { server_side_tcp_state(app.port, client_port).as_deref() != Some("01") },
    )
    .await;
    // The server is healthy.
    let response = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    drop(silent);
}

/// Invariant: a client that closes its sending side and never reads again (a crashed app
/// behind a half-open TCP connection) does not keep a writer blocked on its full socket: the
/// connection's task gives up a few seconds after its session ends, and the server closes
/// its side.
#[actix_web::test]
async fn a_half_closed_client_that_never_reads_does_not_keep_its_writer() {
    use tokio::io::AsyncWriteExt;
    // Arrange: the lag limit is high, so that no slow-consumer disconnect comes to the rescue.
    let app = spawn_app_with(|s| s.realtime.max_lag_events = 100_000).await;
    let nurse = app.token(H, "nurse-amy", Role::Nurse);
    let mut silent = connect_with_small_buffers(app.port, &nurse).await;
    assert_eq!(frame(&mut silent).await["type"], "authenticated");
    subscribe(&mut silent, &["alerts"], None).await;
    let client_port = match silent.get_ref() {
        MaybeTlsStream::Plain(tcp) => tcp.local_addr().expect("local address").port(),
        _ => unreachable!("plain TCP"),
    };
    let bus = CommandBus::new(app.pool.clone());
    let hospital = HospitalId::parse(H).unwrap();
    let message =
        AlertMessage::parse(&format!("Ward 3 telemetry: {}", "\u{1FA7A}".repeat(1900))).unwrap();
    // Enough large events to fill the client's small window, the server's socket buffer
    // and the connection's queue, so that the writer is blocked.
    for _ in 0..150 {
        raise_high_alert(&bus, &hospital, "monitor-1", &message).await;
    }
    // The writer is blocked once the server's send queue for this client holds data it
    // cannot send and stops moving (the client reads nothing, so nothing drains it).
    let queued = std::cell::Cell::new(0);
    let queued = &queued;
    until(
        Duration::from_secs(10),
        "the server's send queue to fill",
        || async move {
            let now = server_side_tcp(app.port, client_port).map_or(0, |(_, q)| q);
            let stuck = now > 0 && now == queued.get();
            queued.set(now);
            if !stuck {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            stuck
        },
    )
    .await;

    // Act: the client closes its sending side, and still reads nothing.
    match silent.get_mut() {
        MaybeTlsStream::Plain(tcp) => tcp.shutdown().await.expect("half-close"),
        _ => unreachable!("plain TCP"),
    }

    // Assert: the server's side moves past ESTABLISHED / CLOSE_WAIT (it shuts down its own
    // side, LAST_ACK, or the socket is gone) within a bounded time.
    until(
        Duration::from_secs(20),
        "the server to let go of the half-closed connection",
        || async {
            let state = server_side_tcp_state(app.port, client_port);
            !matches!(state.as_deref(), Some("01") | Some("08"))
        },
    )
    .await;
    drop(silent);
}
