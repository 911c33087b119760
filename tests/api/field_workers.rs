//! Field workers (CHW, ASHA) see and touch only the cases assigned to them, on every path:
//! case commands, the case read, WebSocket subscriptions, typing and viewing, SSE topics and
//! polling. A refusal answers exactly as an unknown case does, persists nothing and reveals
//! nothing (not even how many messages the case has). Staff roles touch every case.

use aggregates::types::Role;
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::ws::{self, frame, frame_of, send, subscribe, Socket};
use crate::helpers::{assert_problem, spawn_app, TestApp};

const H: &str = "st-marys";

/// The worker the case is assigned to.
const OWNER: &str = "asha-1";

/// Opens a case assigned to `assignee` (by a nurse) with `messages` messages; its id.
async fn case_with_messages(app: &TestApp, assignee: &str, messages: usize) -> String {
    let nurse = app.token(H, "nurse-amy", Role::Nurse);
    let opened = app
        .post(
            &format!("/api/hospitals/{H}/cases"),
            &nurse,
            json!({"patient": "p-1", "title": "Fever, village Rampur", "assignee": assignee}),
        )
        .await;
    assert_eq!(opened.status(), StatusCode::CREATED);
    let id = opened.json::<Value>().await.unwrap()["aggregate_id"]
        .as_str()
        .expect("a case id")
        .to_owned();
    for n in 0..messages {
        let posted = app
            .post(
                &format!("/api/hospitals/{H}/cases/{id}/messages"),
                &nurse,
                json!({"body": format!("message {n}")}),
            )
            .await;
        assert_eq!(posted.status(), StatusCode::OK);
    }
    id
}

/// Status and body of a POST, for comparing two answers whole.
async fn answer(app: &TestApp, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
    let response = app.post(path, token, body).await;
    let status = response.status();
    (status, response.json().await.expect("a JSON body"))
}

/// Invariant: a field worker's command on another worker's case is answered exactly as one
/// on a case that does not exist (status and whole body), whatever the case holds, and
/// persists nothing; the worker it is assigned to, and every staff role, are served.
#[actix_web::test]
async fn a_field_worker_cannot_write_into_another_workers_case_nor_learn_about_it() {
    // Arrange: a case of asha-1 with three messages.
    let app = spawn_app().await;
    let case = case_with_messages(&app, OWNER, 3).await;
    let unknown = Uuid::new_v4().to_string();

    for (role, user) in [(Role::Asha, "asha-2"), (Role::Chw, "chw-9")] {
        let other = app.token(H, user, role);
        // Act + Assert: each command answers as for an unknown case.
        let attempts = [
            ("messages", json!({"body": "let me in"})),
            ("read", json!({"up_to": 3})),
            ("read", json!({"up_to": 4})),
            ("read", json!({"up_to": 1})),
            ("status", json!({"status": "in_review"})),
            ("assign", json!({"assignee": user})),
        ];
        for (command, body) in attempts {
            let refused = answer(
                &app,
                &format!("/api/hospitals/{H}/cases/{case}/{command}"),
                &other,
                body.clone(),
            )
            .await;
            let as_unknown = answer(
                &app,
                &format!("/api/hospitals/{H}/cases/{unknown}/{command}"),
                &other,
                body.clone(),
            )
            .await;
            assert_eq!(refused, as_unknown, "{role} {command} {body}");
            let expected = match command {
                // Field workers may not change status or assign at all (the roles table).
                "status" | "assign" => StatusCode::FORBIDDEN,
                _ => StatusCode::NOT_FOUND,
            };
            assert_eq!(refused.0, expected, "{role} {command}: {}", refused.1);
            if expected == StatusCode::NOT_FOUND {
                assert_eq!(refused.1["code"], "case_not_found");
            }
        }
        // The read answers as for an unknown case too.
        let read = app
            .get(&format!("/api/hospitals/{H}/cases/{case}"), &other)
            .await;
        assert_problem(read, StatusCode::NOT_FOUND, "case_not_found").await;
    }
    let persisted: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE metadata->>'user' IN ('asha-2', 'chw-9')",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(persisted, 0, "nothing was persisted");

    // The assigned worker is served: she posts (the fourth message) and reads up to it.
    let owner = app.token(H, OWNER, Role::Asha);
    let path = |command: &str| format!("/api/hospitals/{H}/cases/{case}/{command}");
    let posted = app
        .post(&path("messages"), &owner, json!({"body": "seen today"}))
        .await;
    assert_eq!(posted.status(), StatusCode::OK);
    let read = app.post(&path("read"), &owner, json!({"up_to": 4})).await;
    assert_eq!(read.status(), StatusCode::OK);
    let detail = app
        .get(&format!("/api/hospitals/{H}/cases/{case}"), &owner)
        .await;
    assert_eq!(detail.status(), StatusCode::OK);

    // Every staff role touches every case; operators none (the roles table).
    for (role, user) in [
        (Role::Nurse, "nurse-bea"),
        (Role::Physician, "dr-rao"),
        (Role::Admin, "admin-1"),
    ] {
        let staff = app.token(H, user, role);
        let posted = app
            .post(&path("messages"), &staff, json!({"body": "noted"}))
            .await;
        assert_eq!(posted.status(), StatusCode::OK, "{role}");
    }
    let operator = app.token(H, "op-1", Role::Operator);
    let refused = app
        .post(&path("messages"), &operator, json!({"body": "hello"}))
        .await;
    assert_problem(refused, StatusCode::FORBIDDEN, "role_forbidden").await;
}

/// Invariant: access follows the case's current assignee as the log records it, at once
/// (not when a read model catches up): a case reassigned to a worker is hers for the next
/// command, and no longer the previous worker's.
#[actix_web::test]
async fn a_reassigned_case_changes_hands_for_commands_at_once() {
    // Arrange
    let app = spawn_app().await;
    let case = case_with_messages(&app, OWNER, 0).await;
    let nurse = app.token(H, "nurse-amy", Role::Nurse);
    let owner = app.token(H, OWNER, Role::Asha);
    let next = app.token(H, "asha-2", Role::Asha);
    let messages = format!("/api/hospitals/{H}/cases/{case}/messages");
    let refused = app.post(&messages, &next, json!({"body": "x"})).await;
    assert_eq!(refused.status(), StatusCode::NOT_FOUND);

    // Act
    let assigned = app
        .post(
            &format!("/api/hospitals/{H}/cases/{case}/assign"),
            &nurse,
            json!({"assignee": "asha-2"}),
        )
        .await;
    assert_eq!(assigned.status(), StatusCode::OK);

    // Assert
    let by_next = app
        .post(&messages, &next, json!({"body": "mine now"}))
        .await;
    assert_eq!(by_next.status(), StatusCode::OK);
    let by_previous = app.post(&messages, &owner, json!({"body": "still?"})).await;
    assert_problem(by_previous, StatusCode::NOT_FOUND, "case_not_found").await;
}

/// Connects `user` with `role` over WebSocket and waits for `authenticated`.
async fn connect(app: &TestApp, user: &str, role: Role) -> Socket {
    let mut socket = ws::connect(app.port, H, Some(&app.token(H, user, role))).await;
    assert_eq!(frame(&mut socket).await["type"], "authenticated");
    socket
}

/// The next `error` frame or reply with `id`.
async fn reply(socket: &mut Socket, id: &str) -> Value {
    loop {
        let f = frame(socket).await;
        if f["id"] == id {
            return f;
        }
    }
}

/// Invariant: over WebSocket a field worker may not subscribe to another worker's case,
/// see who types or views there, or type or view in it — each refused with the answer an
/// unknown case gets (`case_not_found`) — while the assigned worker and staff may.
#[actix_web::test]
async fn a_field_worker_can_neither_watch_nor_type_nor_view_in_another_workers_case() {
    // Arrange: a nurse watches asha-1's case.
    let app = spawn_app().await;
    let case = case_with_messages(&app, OWNER, 1).await;
    let unknown = Uuid::new_v4();
    let mut watcher = connect(&app, "nurse-amy", Role::Nurse).await;
    let watching = subscribe(&mut watcher, &[&format!("case:{case}")], None).await;
    assert_eq!(watching["type"], "subscribed");

    for (role, user) in [(Role::Asha, "asha-2"), (Role::Chw, "chw-9")] {
        let mut other = connect(&app, user, role).await;
        // Act + Assert: subscribing, alone or among allowed topics.
        for (id, topics) in [
            ("s1", json!([format!("case:{case}")])),
            ("s2", json!(["alerts", format!("case:{case}")])),
            ("s3", json!([format!("case:{unknown}")])),
        ] {
            send(
                &mut other,
                json!({"type": "subscribe", "id": id, "topics": topics}),
            )
            .await;
            let refused = reply(&mut other, id).await;
            assert_eq!(refused["type"], "error", "{role} {topics}");
            assert_eq!(refused["code"], "case_not_found", "{role} {topics}");
        }
        // Typing and viewing.
        send(
            &mut other,
            json!({"type": "typing", "id": "t", "case": case}),
        )
        .await;
        let typing = reply(&mut other, "t").await;
        assert_eq!(typing["code"], "case_not_found", "{role}: {typing}");
        send(
            &mut other,
            json!({"type": "view", "id": "v", "target": format!("case:{case}")}),
        )
        .await;
        let viewing = reply(&mut other, "v").await;
        assert_eq!(viewing["code"], "case_not_found", "{role}: {viewing}");
        // Still connected, still subscribed to nothing.
        send(&mut other, json!({"type": "ping", "id": "p"})).await;
        assert_eq!(reply(&mut other, "p").await["type"], "pong");
    }

    // The assigned worker subscribes, types and views; the watcher sees her, and only her
    // (the refused attempts above were answered before, so they would show by now).
    let mut owner = connect(&app, OWNER, Role::Asha).await;
    let subscribed = subscribe(&mut owner, &[&format!("case:{case}")], None).await;
    assert_eq!(subscribed["type"], "subscribed");
    send(&mut owner, json!({"type": "typing", "case": case})).await;
    let typing = loop {
        let f = frame_of(&mut watcher, "typing").await;
        if f["users"].as_array().is_some_and(|u| !u.is_empty()) {
            break f;
        }
    };
    let typists: Vec<&str> = typing["users"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|u| u["user"].as_str())
        .collect();
    assert_eq!(typists, vec![OWNER], "{typing}");
    send(
        &mut owner,
        json!({"type": "view", "target": format!("case:{case}")}),
    )
    .await;
    let viewing = loop {
        let f = frame_of(&mut watcher, "viewing").await;
        if f["viewers"].as_array().is_some_and(|v| !v.is_empty()) {
            break f;
        }
    };
    let viewers: Vec<&str> = viewing["viewers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|u| u["user"].as_str())
        .collect();
    assert_eq!(viewers, vec![OWNER], "{viewing}");

    // Staff may subscribe to any case, even one not opened yet.
    let mut doctor = connect(&app, "dr-rao", Role::Physician).await;
    let any = subscribe(
        &mut doctor,
        &[&format!("case:{case}"), &format!("case:{unknown}")],
        None,
    )
    .await;
    assert_eq!(any["type"], "subscribed");
}

/// Invariant: an SSE stream of another worker's case is refused exactly as one of an
/// unknown case; the assigned worker's is served; polling never shows a field worker
/// another worker's case.
#[actix_web::test]
async fn a_field_worker_cannot_stream_or_poll_another_workers_case() {
    // Arrange
    let app = spawn_app().await;
    let case = case_with_messages(&app, OWNER, 2).await;
    let unknown = Uuid::new_v4();
    let stream =
        |topics: String| app.url(&format!("/api/hospitals/{H}/events/stream?topics={topics}"));
    let other = app.token(H, "chw-9", Role::Chw);
    let owner = app.token(H, OWNER, Role::Asha);

    // Act
    let refused = app
        .client
        .get(stream(format!("case:{case}")))
        .bearer_auth(&other)
        .send()
        .await
        .unwrap();
    let as_unknown = app
        .client
        .get(stream(format!("case:{unknown}")))
        .bearer_auth(&other)
        .send()
        .await
        .unwrap();
    let served = app
        .client
        .get(stream(format!("case:{case}")))
        .bearer_auth(&owner)
        .send()
        .await
        .unwrap();

    // Assert
    let refused = assert_problem(refused, StatusCode::NOT_FOUND, "case_not_found").await;
    let as_unknown = assert_problem(as_unknown, StatusCode::NOT_FOUND, "case_not_found").await;
    assert_eq!(
        refused["detail"].as_str().map(|d| d.replace(&case, "ID")),
        as_unknown["detail"]
            .as_str()
            .map(|d| d.replace(&unknown.to_string(), "ID")),
        "the same answer but for the id"
    );
    assert_eq!(served.status(), StatusCode::OK);
    drop(served);
    let concerns_case = |events: &Value| {
        events["events"]
            .as_array()
            .expect("events")
            .iter()
            .filter(|e| e["aggregate_id"] == case.as_str())
            .count()
    };
    assert_eq!(concerns_case(&app.events(H, &other, 0).await), 0);
    assert_eq!(concerns_case(&app.events(H, &owner, 0).await), 3);
}

/// Invariant: a case reassigned away from a field worker stops being followed by her
/// connection within `CASE_RECHECK_INTERVAL` (5 s): she is told (`case_not_found`), leaves
/// the case's viewers, and its events stop reaching her at once.
#[actix_web::test]
async fn a_case_reassigned_away_is_no_longer_followed_by_the_previous_worker() {
    // Arrange: asha-1 follows and views her case; a nurse watches who views it.
    let app = spawn_app().await;
    let case = case_with_messages(&app, OWNER, 0).await;
    let topic = format!("case:{case}");
    let mut watcher = connect(&app, "nurse-amy", Role::Nurse).await;
    subscribe(&mut watcher, &[&topic], None).await;
    let mut owner = connect(&app, OWNER, Role::Asha).await;
    subscribe(&mut owner, &[&topic], None).await;
    send(&mut owner, json!({"type": "view", "target": topic})).await;
    let viewers = |f: &Value| -> Vec<String> {
        f["viewers"]
            .as_array()
            .map(|v| {
                v.iter()
                    .filter_map(|u| u["user"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    loop {
        let f = frame_of(&mut watcher, "viewing").await;
        if viewers(&f) == vec![OWNER] {
            break;
        }
    }

    // Act
    let nurse = app.token(H, "nurse-amy", Role::Nurse);
    let assigned = app
        .post(
            &format!("/api/hospitals/{H}/cases/{case}/assign"),
            &nurse,
            json!({"assignee": "asha-2"}),
        )
        .await;
    assert_eq!(assigned.status(), StatusCode::OK);
    let posted = app
        .post(
            &format!("/api/hospitals/{H}/cases/{case}/messages"),
            &nurse,
            json!({"body": "for asha-2 only"}),
        )
        .await;
    assert_eq!(posted.status(), StatusCode::OK);

    // Assert: she sees the reassignment (it concerns her), not the message after it, and is
    // then told the case is no longer followed.
    let mut seen = Vec::new();
    let dropped = loop {
        let f = frame(&mut owner).await;
        match f["type"].as_str() {
            Some("event") => seen.push(f["event_type"].as_str().unwrap_or_default().to_owned()),
            Some("error") => break f,
            _ => {}
        }
    };
    assert_eq!(dropped["code"], "case_not_found", "{dropped}");
    assert!(seen.contains(&"CaseAssigned".to_owned()), "{seen:?}");
    assert!(!seen.contains(&"MessagePosted".to_owned()), "{seen:?}");
    loop {
        let f = frame_of(&mut watcher, "viewing").await;
        if viewers(&f).is_empty() {
            break;
        }
    }
    send(
        &mut owner,
        json!({"type": "typing", "id": "t", "case": case}),
    )
    .await;
    assert_eq!(reply(&mut owner, "t").await["code"], "case_not_found");
}
