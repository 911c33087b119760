//! The realtime gateway over real WebSockets: live delivery, exact resume, entitlement.

use std::time::Duration;

use aggregates::types::Role;
use serde_json::json;

use crate::helpers::ws::{self, closed, events, frame, frame_of, send, subscribe};
use crate::helpers::{spawn_app, spawn_app_with};

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
    assert_eq!(event["id"], "1");
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
    let last = events(&mut socket, 1).await[0]["id"]
        .as_str()
        .unwrap()
        .parse::<i64>()
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
        .get(app.url(&format!("/api/hospitals/{H}/ws")))
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
