//! The realtime gateway over real WebSockets: live delivery, exact resume, entitlement.

use std::time::Duration;

use aggregates::types::Role;
use serde_json::json;

use crate::helpers::ws::{self, closed, events, frame, frame_of, send, subscribe};
use crate::helpers::{paths, spawn_app, spawn_app_with};

const H: &str = "st-marys";

fn positions(events: &[serde_json::Value]) -> Vec<i64> {
    events
        .iter()
        .map(|e| e["position"].as_i64().unwrap())
        .collect()
}

#[actix_web::test]
async fn a_raised_alert_arrives_live_with_its_position_as_id() {
    let app = spawn_app().await;
    let nurse = app.token(H, "nurse-amy", Role::Nurse);
    let mut socket = ws::connect(app.port, H, Some(&nurse)).await;
    let auth = frame_of(&mut socket, "authenticated").await;
    assert_eq!(auth["user"], "nurse-amy");
    let subscribed = subscribe(&mut socket, &["alerts"], None).await;
    assert_eq!(subscribed["recovered"], false);
    assert_eq!(subscribed["position"], "0");
    assert_eq!(subscribed["id"], "sub");

    let raised = app.raise_alert(H, &nurse, "critical").await;
    let event = &events(&mut socket, 1).await[0];
    assert_eq!(event["position"], 1);
    assert_eq!(event["topic"], "alerts");
    assert_eq!(event["event_type"], "AlertRaised");
    assert_eq!(event["aggregate_id"], raised["aggregate_id"]);
    assert_eq!(event["data"]["severity"], "critical");
}

#[actix_web::test]
async fn a_client_that_reconnects_with_its_last_id_gets_exactly_what_it_missed() {
    let app = spawn_app().await;
    let nurse = app.token(H, "nurse-amy", Role::Nurse);
    let mut socket = ws::connect(app.port, H, Some(&nurse)).await;
    subscribe(&mut socket, &["alerts"], None).await;
    app.raise_alert(H, &nurse, "high").await;
    let last = events(&mut socket, 1).await[0]["position"]
        .as_i64()
        .unwrap();
    drop(socket);

    for _ in 0..3 {
        app.raise_alert(H, &nurse, "low").await;
    }
    let mut socket = ws::connect(app.port, H, Some(&nurse)).await;
    let subscribed = subscribe(&mut socket, &["alerts"], Some(last)).await;
    assert_eq!(subscribed["recovered"], true);
    assert!(subscribed["epoch"].is_string());
    let missed = events(&mut socket, 3).await;
    assert_eq!(positions(&missed), vec![2, 3, 4]);
    // Then live, continuing without a gap.
    app.raise_alert(H, &nurse, "low").await;
    assert_eq!(positions(&events(&mut socket, 1).await), vec![5]);
}

#[actix_web::test]
async fn the_first_frame_may_authenticate_and_a_missing_auth_times_out() {
    let app = spawn_app_with(|s| s.realtime.auth_timeout = Duration::from_millis(300)).await;
    let nurse = app.token(H, "nurse-amy", Role::Nurse);
    let mut socket = ws::connect(app.port, H, None).await;
    send(
        &mut socket,
        json!({"type": "subscribe", "id": 1, "topics": ["alerts"]}),
    )
    .await;
    let refused = frame(&mut socket).await;
    assert_eq!(refused["code"], "not_authenticated");
    assert_eq!(refused["id"], 1);
    send(&mut socket, json!({"type": "auth", "token": nurse})).await;
    assert_eq!(frame(&mut socket).await["type"], "authenticated");
    assert_eq!(
        subscribe(&mut socket, &["alerts"], None).await["recovered"],
        false
    );

    let mut silent = ws::connect(app.port, H, None).await;
    let (reason, code) = closed(&mut silent, Duration::from_secs(5)).await;
    assert_eq!(reason.as_deref(), Some("authentication_failed"));
    assert_eq!(code, Some(4003));
}

#[actix_web::test]
async fn malformed_unknown_and_mistyped_frames_get_errors_and_the_connection_stays_usable() {
    let app = spawn_app().await;
    let nurse = app.token(H, "nurse-amy", Role::Nurse);
    let mut socket = ws::connect(app.port, H, Some(&nurse)).await;
    frame_of(&mut socket, "authenticated").await;
    for (raw, code) in [
        ("{oops", "malformed_json"),
        (r#"{"type":"teleport"}"#, "unknown_frame_type"),
        (r#"{"type":"subscribe","topics":"alerts"}"#, "invalid_frame"),
        (
            r#"{"type":"subscribe","topics":["nonsense"]}"#,
            "unknown_topic",
        ),
        (
            r#"{"type":"subscribe","topics":["alerts"],"last_event_id":"abc"}"#,
            "invalid_frame",
        ),
        (r#"{"type":"view","target":"room:5"}"#, "invalid_target"),
    ] {
        socket.send_text(raw).await;
        let error = frame(&mut socket).await;
        assert_eq!(error["type"], "error", "{raw}");
        assert_eq!(error["code"], code, "{raw}");
    }
    send(&mut socket, json!({"type": "ping", "id": "p1"})).await;
    let pong = frame(&mut socket).await;
    assert_eq!(
        (pong["type"].as_str(), pong["id"].as_str()),
        (Some("pong"), Some("p1"))
    );
}

#[actix_web::test]
async fn a_topic_the_role_may_not_see_is_refused_with_an_error() {
    let app = spawn_app().await;
    let operator = app.token(H, "op-sam", Role::Operator);
    let mut socket = ws::connect(app.port, H, Some(&operator)).await;
    frame_of(&mut socket, "authenticated").await;
    send(
        &mut socket,
        json!({"type": "subscribe", "id": "s", "topics": ["alerts", "cases"]}),
    )
    .await;
    let error = frame(&mut socket).await;
    assert_eq!(error["code"], "forbidden_topic");
    assert_eq!(error["id"], "s");
}

#[actix_web::test]
async fn a_token_for_another_hospital_cannot_open_the_socket() {
    let app = spawn_app().await;
    let foreign = app.token("other", "nurse-amy", Role::Nurse);
    let request = app
        .client
        .get(app.url(&paths::ws(H)))
        .bearer_auth(&foreign)
        .send()
        .await
        .unwrap();
    assert_eq!(request.status(), reqwest::StatusCode::FORBIDDEN);
}

trait SendText {
    async fn send_text(&mut self, raw: &str);
}

impl SendText for ws::Socket {
    async fn send_text(&mut self, raw: &str) {
        use futures_util::SinkExt;
        self.send(tokio_tungstenite::tungstenite::Message::Text(
            raw.to_owned(),
        ))
        .await
        .unwrap();
    }
}

/// The response to a WebSocket upgrade that the server refuses: status, content type and
/// problem body.
async fn refused_upgrade(
    port: u16,
    path: &str,
    token: Option<&str>,
) -> (u16, String, serde_json::Value) {
    use tokio_tungstenite::tungstenite::Error;
    match tokio_tungstenite::connect_async(ws::request(port, path, token)).await {
        Err(Error::Http(response)) => {
            let content_type = response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let body = response.body().clone().unwrap_or_default();
            let problem = serde_json::from_slice(&body).expect("a JSON problem body");
            (response.status().as_u16(), content_type, problem)
        }
        Err(other) => panic!("expected an HTTP refusal, got {other}"),
        Ok(_) => panic!("the upgrade to {path} was accepted"),
    }
}

/// Invariant: a WebSocket upgrade the server cannot accept gets the same problem+json
/// responses as every other endpoint (upgrades are answered before actix-web's router, so
/// this is checked separately), and no connection.
#[actix_web::test]
async fn refused_upgrades_get_problem_responses() {
    let app = spawn_app().await;
    let nurse = app.token(H, "nurse-amy", Role::Nurse);
    let foreign = app.token("other", "nurse-amy", Role::Nurse);
    let ws_path = paths::ws(H);

    let (status, content_type, problem) =
        refused_upgrade(app.port, &ws_path, Some("not-a-token")).await;
    assert_eq!(status, 401);
    assert_eq!(content_type, "application/problem+json");
    assert_eq!(problem["status"], 401);

    let (status, _, problem) = refused_upgrade(app.port, &ws_path, Some(&foreign)).await;
    assert_eq!(status, 403);
    assert_eq!(problem["status"], 403);

    let (status, _, problem) = refused_upgrade(
        app.port,
        "/api/hospitals/Not%20A%20Hospital/ws",
        Some(&nurse),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(problem["field"], "hospital");

    let (status, _, problem) = refused_upgrade(app.port, &paths::alerts(H), Some(&nurse)).await;
    assert_eq!(status, 404);
    assert_eq!(problem["code"], "route_not_found");

    // A trailing slash is the same endpoint, as for every other route.
    let mut socket = ws::connect_path(app.port, &format!("{ws_path}/"), Some(&nurse)).await;
    assert_eq!(
        frame_of(&mut socket, "authenticated").await["user"],
        "nurse-amy"
    );
}

/// A client text frame, masked as RFC 6455 requires of clients.
fn masked_text_frame(text: &str) -> Vec<u8> {
    let payload = text.as_bytes();
    let mask = [0x12u8, 0x34, 0x56, 0x78];
    let mut frame = vec![0x81];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n <= u16::MAX as usize => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// Invariant: frames a client sends right behind its handshake, in the same packet (before
/// the server's `101` arrived), are not lost when the server takes the socket over.
#[actix_web::test]
async fn a_frame_sent_with_the_handshake_is_not_lost() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app().await;
    let nurse = app.token(H, "nurse-amy", Role::Nurse);
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
        .await
        .expect("TCP connect");
    let mut request = format!(
        "GET /api/hospitals/{H}/ws HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n",
        app.port
    )
    .into_bytes();
    request.extend(masked_text_frame(
        &json!({"type": "auth", "token": nurse, "id": "a"}).to_string(),
    ));
    request.extend(masked_text_frame(
        &json!({"type": "subscribe", "topics": ["alerts"], "id": "s"}).to_string(),
    ));
    tcp.write_all(&request).await.expect("send");
    // The response head, byte by byte so that no frame after it is consumed.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(tcp.read_u8().await.expect("response head"));
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "the RFC 6455 example key's accept value: {head}"
    );
    let mut socket = tokio_tungstenite::WebSocketStream::from_raw_socket(
        tokio_tungstenite::MaybeTlsStream::Plain(tcp),
        tokio_tungstenite::tungstenite::protocol::Role::Client,
        None,
    )
    .await;
    assert_eq!(frame_of(&mut socket, "authenticated").await["id"], "a");
    let subscribed = frame_of(&mut socket, "subscribed").await;
    assert_eq!(subscribed["id"], "s");
    app.raise_alert(H, &nurse, "high").await;
    assert_eq!(events(&mut socket, 1).await[0]["position"], 1);
}
