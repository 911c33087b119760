//! Connection slots, tickets, refreshes and tokens under abuse: a closed SSE stream frees its
//! slot at once, a ticket is spent only by a request that is served, the connection limit
//! has its own code, a refresh cannot change what a connection receives, and an unsigned
//! token is refused plainly.

use std::time::{Duration, Instant};

use aggregates::types::Role;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::ws::{self, frame, send, Socket};
use crate::helpers::{assert_problem, spawn_app, spawn_app_with, TestApp};

const H: &str = "st-marys";

/// Opens an SSE stream of alerts with a bearer token.
async fn open_stream(app: &TestApp, token: &str) -> reqwest::Response {
    app.client
        .get(app.url(&format!("/api/hospitals/{H}/events/stream?topics=alerts")))
        .bearer_auth(token)
        .send()
        .await
        .expect("SSE request")
}

/// Invariant: an SSE stream the client closes frees its per-user slot within a second (not
/// at a later heartbeat: the heartbeat here is the default 15 s), and over the limit SSE
/// answers `429 too_many_connections`, the WebSocket's code, not `rate_limited`.
#[actix_web::test]
async fn a_closed_sse_stream_frees_its_slot_within_a_second() {
    // Arrange: the limit held by two streams.
    let app = spawn_app_with(|s| s.realtime.max_connections_per_user = 2).await;
    let nurse = app.token(H, "nurse-amy", Role::Nurse);
    let first = open_stream(&app, &nurse).await;
    assert_eq!(first.status(), StatusCode::OK);
    let second = open_stream(&app, &nurse).await;
    assert_eq!(second.status(), StatusCode::OK);
    let over = open_stream(&app, &nurse).await;
    assert_eq!(over.headers()["retry-after"], "5");
    let problem = assert_problem(over, StatusCode::TOO_MANY_REQUESTS, "too_many_connections").await;
    assert_eq!(problem["retry_after"], 5);

    // Act: the client closes one stream.
    drop(first);
    let closed_at = Instant::now();

    // Assert: a new stream is admitted within a second.
    loop {
        let again = open_stream(&app, &nurse).await;
        if again.status() == StatusCode::OK {
            break;
        }
        assert_problem(again, StatusCode::TOO_MANY_REQUESTS, "too_many_connections").await;
        assert!(
            closed_at.elapsed() < Duration::from_secs(1),
            "the closed stream still held its slot after a second"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(second);
}

/// Issues an SSE ticket for `token`.
async fn ticket(app: &TestApp, token: &str) -> String {
    let issued = app
        .post_empty(&format!("/api/hospitals/{H}/events/stream/tickets"), token)
        .await;
    assert_eq!(issued.status(), StatusCode::CREATED);
    issued.json::<Value>().await.unwrap()["ticket"]
        .as_str()
        .expect("a ticket")
        .to_owned()
}

/// Invariant: a ticket is spent only by a request that is served: requests refused for
/// another reason (an unknown topic, a forbidden topic, another hospital, a bad position,
/// the connection limit) leave it usable; the served request spends it.
#[actix_web::test]
async fn an_sse_ticket_is_spent_only_by_a_served_request() {
    // Arrange: a limit of one connection, already held by a WebSocket.
    let app = spawn_app_with(|s| s.realtime.max_connections_per_user = 1).await;
    let asha = app.token(H, "asha-1", Role::Asha);
    let ticket = ticket(&app, &asha).await;
    let with = |hospital: &str, query: &str| {
        app.url(&format!(
            "/api/hospitals/{hospital}/events/stream?ticket={ticket}&{query}"
        ))
    };
    let get = |url: String| {
        let client = app.client.clone();
        async move { client.get(url).send().await.expect("SSE request") }
    };
    let mut holder = ws::connect(app.port, H, Some(&asha)).await;
    assert_eq!(frame(&mut holder).await["type"], "authenticated");

    // Act + Assert: each refusal keeps the ticket.
    let unknown = get(with(H, "topics=nosuch")).await;
    assert_problem(unknown, StatusCode::BAD_REQUEST, "invalid_field").await;
    let forbidden = get(with(H, "topics=metrics")).await;
    assert_problem(forbidden, StatusCode::FORBIDDEN, "forbidden_topic").await;
    let elsewhere = get(with("other-hospital", "topics=alerts")).await;
    assert_problem(elsewhere, StatusCode::FORBIDDEN, "wrong_hospital").await;
    let bad_position = get(with(H, "topics=alerts&last_event_id=x")).await;
    assert_problem(bad_position, StatusCode::BAD_REQUEST, "invalid_field").await;
    let over = get(with(H, "topics=alerts")).await;
    assert_problem(over, StatusCode::TOO_MANY_REQUESTS, "too_many_connections").await;

    // The slot freed, the ticket serves once.
    holder.close(None).await.expect("close");
    let deadline = Instant::now() + Duration::from_secs(3);
    let served = loop {
        let response = get(with(H, "topics=alerts")).await;
        if response.status() != StatusCode::TOO_MANY_REQUESTS {
            break response;
        }
        assert!(
            Instant::now() < deadline,
            "the WebSocket's slot was never freed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(served.status(), StatusCode::OK);
    drop(served);
    let reused = get(with(H, "topics=alerts")).await;
    assert_problem(reused, StatusCode::UNAUTHORIZED, "invalid_token").await;
}

/// Connects with `role`, subscribes to `topics`, and returns the socket.
async fn subscribed(app: &TestApp, user: &str, role: Role, topics: &[&str]) -> Socket {
    let mut socket = ws::connect(app.port, H, Some(&app.token(H, user, role))).await;
    assert_eq!(frame(&mut socket).await["type"], "authenticated");
    let s = ws::subscribe(&mut socket, topics, None).await;
    assert_eq!(s["type"], "subscribed");
    socket
}

/// The reply to frame `id` (skipping presence and other frames).
async fn reply(socket: &mut Socket, id: &str) -> Value {
    loop {
        let f = frame(socket).await;
        if f["id"] == id {
            return f;
        }
    }
}

/// Invariant: a refresh keeps user, hospital and role: a token with another role is refused
/// in both directions (nurse → admin, admin → chw) with `refresh_mismatch`, and the
/// connection goes on unchanged (same role, same subscriptions); one with the same role is
/// accepted.
#[actix_web::test]
async fn a_refresh_cannot_change_the_connections_role() {
    // Arrange
    let app = spawn_app().await;
    for (user, role, other_role) in [
        ("nurse-amy", Role::Nurse, Role::Admin),
        ("admin-1", Role::Admin, Role::Chw),
    ] {
        let mut socket = subscribed(&app, user, role, &["alerts"]).await;

        // Act
        let other = app.token(H, user, other_role);
        send(
            &mut socket,
            json!({"type": "refresh", "id": "r1", "token": other}),
        )
        .await;
        let refused = reply(&mut socket, "r1").await;

        // Assert
        assert_eq!(refused["type"], "error", "{role} → {other_role}");
        assert_eq!(refused["code"], "refresh_mismatch");
        let same = app.token(H, user, role);
        send(
            &mut socket,
            json!({"type": "refresh", "id": "r2", "token": same}),
        )
        .await;
        let accepted = reply(&mut socket, "r2").await;
        assert_eq!(accepted["type"], "authenticated");
        assert_eq!(accepted["role"], role.as_str());
        // Still subscribed: an alert arrives.
        let nurse = app.token(H, "nurse-bea", Role::Nurse);
        app.raise_alert(H, &nurse, "high").await;
        let event = ws::frame_of(&mut socket, "event").await;
        assert_eq!(event["topic"], "alerts");
    }
}

/// Invariant: an unsigned token (`alg: none`) is refused as `invalid_token` with a plain
/// message, over HTTP and over the WebSocket, naming none of the library's internals.
#[actix_web::test]
async fn an_unsigned_token_is_refused_with_a_plain_message() {
    // Arrange
    let app = spawn_app().await;
    // `{"alg":"none","typ":"JWT"}` . `{"sub":"admin-1","hospital":"st-marys","role":"admin",
    // "exp":4000000000}` . no signature.
    let token = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.\
        eyJzdWIiOiJhZG1pbi0xIiwiaG9zcGl0YWwiOiJzdC1tYXJ5cyIsInJvbGUiOiJhZG1pbiIsImV4cCI6NDAwMDAwMDAwMH0.";

    // Act
    let response = app.get(&format!("/api/hospitals/{H}/events"), token).await;
    let problem = assert_problem(response, StatusCode::UNAUTHORIZED, "invalid_token").await;
    let mut socket = ws::connect(app.port, H, None).await;
    send(
        &mut socket,
        json!({"type": "auth", "id": "a", "token": token}),
    )
    .await;
    let refused = frame(&mut socket).await;

    // Assert
    assert_eq!(refused["code"], "invalid_token");
    for message in [&problem["detail"], &refused["message"]] {
        let message = message.as_str().expect("a message");
        // What is wrong and what is expected, in words: not the parser's list of the
        // library's algorithm variants.
        assert_eq!(
            message,
            "invalid token: unsigned token (`alg: none`) refused: tokens must be signed with HS256"
        );
        for internal in ["variant", "expected one of", "HS384"] {
            assert!(!message.contains(internal), "{message}");
        }
    }
}

/// Invariant (as PROTOCOL.md states it): frames the server cannot understand — malformed
/// JSON, an unknown frame type, wrong fields, a binary frame (`unsupported_frame`) — count as
/// violations and close the connection past the maximum (1008), while well-formed requests
/// that are refused (an unknown topic, a case not found) are answered and never count.
#[actix_web::test]
async fn bad_frames_count_as_violations_but_refused_requests_do_not() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;

    // Arrange
    let app = spawn_app_with(|s| s.realtime.max_violations = 3).await;
    let mut socket = ws::connect(app.port, H, Some(&app.token(H, "chw-1", Role::Chw))).await;
    assert_eq!(frame(&mut socket).await["type"], "authenticated");

    // Act + Assert: refused requests, more than the maximum, leave the connection open.
    for i in 0..5 {
        let id = format!("u{i}");
        send(
            &mut socket,
            json!({"type": "subscribe", "id": id, "topics": ["nosuch"]}),
        )
        .await;
        assert_eq!(reply(&mut socket, &id).await["code"], "unknown_topic");
        let id = format!("c{i}");
        let case = uuid::Uuid::new_v4();
        send(
            &mut socket,
            json!({"type": "typing", "id": id, "case": case}),
        )
        .await;
        assert_eq!(reply(&mut socket, &id).await["code"], "case_not_found");
    }
    send(&mut socket, json!({"type": "ping", "id": "alive"})).await;
    assert_eq!(reply(&mut socket, "alive").await["type"], "pong");

    // Bad frames: each answered, the fourth (past the maximum of 3) closes.
    let bad = [
        Message::Text("{oops".into()),
        Message::Text(json!({"type": "nosuch"}).to_string()),
        Message::Binary(vec![1, 2, 3]),
        Message::Text(json!({"type": "subscribe", "topics": 7}).to_string()),
    ];
    for message in bad {
        socket.send(message).await.expect("send");
    }
    let mut codes = Vec::new();
    let (reason, code) = loop {
        match ws::next(&mut socket, Duration::from_secs(5)).await {
            ws::Received::Frame(f) if f["type"] == "error" => {
                codes.push(f["code"].as_str().unwrap_or_default().to_owned())
            }
            ws::Received::Frame(f) if f["type"] == "closing" => {
                let (_, code) = ws::closed(&mut socket, Duration::from_secs(5)).await;
                break (f["reason"].as_str().map(str::to_owned), code);
            }
            ws::Received::Frame(_) => {}
            ws::Received::Closed(code) => break (None, code),
        }
    };
    assert_eq!(
        codes,
        vec![
            "malformed_json",
            "unknown_frame_type",
            "unsupported_frame",
            "invalid_frame"
        ]
    );
    assert_eq!(reason.as_deref(), Some("policy_violation"));
    assert_eq!(code, Some(1008));
}

/// Invariant: a flood of client errors cannot fill the log. 2,000 refused requests (401 with
/// no token or a bad one, 404, 400) against a real `vigil serve` at its default log level
/// write no WARN line and at most a couple of summary lines (each ~500-byte WARN line per
/// request before: one abusive client wrote 7,102 in 20 s).
#[actix_web::test]
async fn a_flood_of_client_errors_writes_a_handful_of_log_lines() {
    use crate::cli::{vigil, DataDir, Process};
    use crate::helpers::{TestDatabase, TEST_SECRET};

    // Arrange
    let db = TestDatabase::create().await;
    let data = DataDir::new();
    let mut cmd = vigil(data.path(), &["serve", "--bind", "127.0.0.1:0"]);
    cmd.env("DATABASE_URL", &db.url)
        .env("VIGIL_JWT_SECRET", TEST_SECRET);
    let mut server = Process::spawn(cmd);
    let started = server
        .wait_for_stdout("vigil listening", Duration::from_secs(90))
        .await;
    let port: u16 = started
        .lines()
        .find_map(|l| l.split("port=").nth(1))
        .map(|rest| {
            rest.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        })
        .and_then(|digits| digits.parse().ok())
        .expect("the port in the `vigil listening` line");
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    let client = reqwest::Client::new();
    let before = server.stdout().len();

    // Act
    for i in 0..500 {
        let events = url(&format!("/api/hospitals/{H}/events"));
        let no_token = client.get(&events).send().await.unwrap();
        assert_eq!(no_token.status(), StatusCode::UNAUTHORIZED);
        let bad_token = client
            .get(&events)
            .bearer_auth("x.y.z")
            .send()
            .await
            .unwrap();
        assert_eq!(bad_token.status(), StatusCode::UNAUTHORIZED);
        let no_route = client
            .get(url(&format!("/nosuch/{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(no_route.status(), StatusCode::NOT_FOUND);
        let bad_body = client
            .post(url(&format!("/api/hospitals/{H}/alerts")))
            .bearer_auth(TEST_SECRET)
            .header("content-type", "application/json")
            .body("{oops")
            .send()
            .await
            .unwrap();
        assert!(bad_body.status().is_client_error());
    }
    // Every line a request caused was written before its response; the WebSocket's
    // `websocket admitted` line comes after them all.
    let keys = vigil::auth::JwtKeys::from_secret(TEST_SECRET).expect("keys");
    let token = keys
        .mint(
            &aggregates::types::UserId::parse("nurse-amy").unwrap(),
            &aggregates::types::HospitalId::parse(H).unwrap(),
            Role::Nurse,
            Duration::from_secs(600),
        )
        .unwrap();
    let mut socket = ws::connect(port, H, Some(&token)).await;
    assert_eq!(frame(&mut socket).await["type"], "authenticated");
    let log = server
        .wait_for_stdout("websocket admitted", Duration::from_secs(5))
        .await;

    // Assert
    let flood = &log[before..];
    let warnings = flood.lines().filter(|l| l.contains("WARN")).count();
    let failed = flood
        .lines()
        .filter(|l| l.contains("request failed"))
        .count();
    assert_eq!(warnings, 0, "{flood}");
    assert!(
        failed <= 3,
        "{failed} lines for 2,000 client errors:\n{flood}"
    );
    assert!(
        flood.len() < 8 * 1024,
        "{} bytes logged:\n{flood}",
        flood.len()
    );
}
