//! The core promise of the realtime gateway: a client that reconnects with its last event
//! id receives every event it is entitled to after that id, exactly once and in order — or
//! is told plainly (`recovered: false`, with a reason) that it must reload instead.
//!
//! Each test states the invariant it checks. Writers are real concurrent REST clients (or
//! command-bus callers), readers are real WebSocket or SSE connections, and every wait is
//! bounded by a timeout.

use std::cell::Cell;
use std::collections::HashSet;
use std::time::Duration;

use aggregates::types::Role;
use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::helpers::ws::{self, closed, frame_of, send, subscribe, Received, Socket};
use crate::helpers::{
    assert_problem, eventually, spawn_app, spawn_app_with, until, Node, PrivateCluster, TestApp,
};

const H: &str = "st-marys";

/// Longest wait for one expected frame.
const FRAME_WAIT: Duration = Duration::from_secs(10);

/// How long "nothing more arrives" is observed for.
const QUIET: Duration = Duration::from_millis(400);

// ---------------------------------------------------------------------------------------
// Small helpers shared with `robustness.rs`.
// ---------------------------------------------------------------------------------------

/// An event frame's stream position.
pub(crate) fn position(event: &Value) -> i64 {
    event["position"]
        .as_i64()
        .unwrap_or_else(|| panic!("an event frame carries its position: {event}"))
}

/// Positions of event frames.
pub(crate) fn positions(events: &[Value]) -> Vec<i64> {
    events.iter().map(position).collect()
}

/// The next frame or close within `timeout`, or `None` if nothing arrived (never panics on
/// a timeout, unlike `ws::next`).
pub(crate) async fn try_next(socket: &mut Socket, timeout: Duration) -> Option<Received> {
    // `ws::next` panics when its own timeout expires: give it more time than ours, so ours
    // always fires first. (Reading a WebSocket stream is cancel-safe.)
    tokio::time::timeout(timeout, ws::next(socket, timeout + Duration::from_secs(1)))
        .await
        .ok()
}

/// The next `event` frame within `timeout`, skipping other frames; `None` on timeout.
/// Panics if the server closes the connection.
pub(crate) async fn next_event(socket: &mut Socket, timeout: Duration) -> Option<Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match try_next(socket, left).await? {
            Received::Frame(f) if f["type"] == "event" => return Some(f),
            Received::Frame(f) => {
                assert_ne!(f["type"], "closing", "unexpected close: {f}");
            }
            Received::Closed(code) => panic!("the server closed the connection ({code:?})"),
        }
    }
}

/// Exactly `n` event frames (panics if one takes longer than `FRAME_WAIT`).
pub(crate) async fn take_events(socket: &mut Socket, n: usize) -> Vec<Value> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        match next_event(socket, FRAME_WAIT).await {
            Some(e) => out.push(e),
            None => panic!(
                "expected {n} events, got {} ({:?}) before the timeout",
                out.len(),
                positions(&out)
            ),
        }
    }
    out
}

/// Asserts that no event frame arrives for `QUIET` (other frames are allowed).
pub(crate) async fn assert_no_event(socket: &mut Socket, why: &str) {
    if let Some(event) = next_event(socket, QUIET).await {
        panic!("{why}: unexpected event {event}");
    }
}

/// Sends `subscribe` with an optional last-event-id and epoch; returns `subscribed`.
async fn subscribe_in_epoch(
    socket: &mut Socket,
    topics: &[&str],
    last_event_id: Option<i64>,
    epoch: Option<&str>,
) -> Value {
    let mut frame = json!({"type": "subscribe", "id": "sub", "topics": topics});
    if let Some(n) = last_event_id {
        frame["last_event_id"] = json!(n);
    }
    if let Some(epoch) = epoch {
        frame["epoch"] = json!(epoch);
    }
    send(socket, frame).await;
    frame_of(socket, "subscribed").await
}

/// The value of one series of the Prometheus exposition (`name{labels}` exactly).
pub(crate) fn metric(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}

/// `GET /metrics`.
pub(crate) async fn metrics_text(client: &reqwest::Client, address: &str) -> String {
    let response = client
        .get(format!("{address}/metrics"))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(response.status(), StatusCode::OK);
    response.text().await.expect("metrics body")
}

/// A deterministic PRNG (splitmix64): the test is reproducible without extra crates.
struct Prng(u64);

impl Prng {
    fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform-enough in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// `(position, aggregate_id)` of every event the polling endpoint returns after `after`.
async fn polled(app: &TestApp, token: &str, after: i64) -> Vec<(i64, String)> {
    identified(
        app.events(H, token, after).await["events"]
            .as_array()
            .expect("events array"),
    )
}

/// `(position, aggregate_id)` of event frames.
fn identified(events: &[Value]) -> Vec<(i64, String)> {
    events
        .iter()
        .map(|e| {
            (
                position(e),
                e["aggregate_id"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// The requests these tests make of a second node, or of the node on a private cluster.
impl Node {
    /// Raises an alert; `None` if the server answered with a 5xx or the request failed
    /// (the database may be restarting).
    async fn try_raise_alert(&self, token: &str) -> Option<Value> {
        let response = self
            .client
            .post(format!("{}/api/hospitals/{H}/alerts", self.address))
            .bearer_auth(token)
            .json(&json!({"severity": "high", "message": "Bed 4: HR 150"}))
            .send()
            .await
            .ok()?;
        let status = response.status();
        if status.is_server_error() {
            return None;
        }
        assert_eq!(status, StatusCode::CREATED, "raise alert");
        response.json().await.ok()
    }

    /// Raises an alert, retrying (bounded) while the server answers 5xx.
    async fn raise_alert_retrying(&self, token: &str) -> Value {
        eventually(
            Duration::from_secs(60),
            "the server to accept commands again",
            || self.try_raise_alert(token),
        )
        .await
    }
}

// ---------------------------------------------------------------------------------------
// Tests.
// ---------------------------------------------------------------------------------------

/// Invariant: across any number of connections, each dropped at an arbitrary point (often
/// with events in flight), a client that always resumes from the last id it received sees
/// every position `1..=N` exactly once, in order — while several writers keep committing.
#[actix_web::test]
async fn resume_has_no_gap_or_duplicate_while_commands_are_written_and_the_client_disconnects_at_random(
) {
    const WRITERS: usize = 4;
    const PER_WRITER: usize = 75;
    const TOTAL: i64 = (WRITERS * PER_WRITER) as i64;
    const ITERATIONS: usize = 30;

    // Arrange
    let app = spawn_app().await;
    let nurse = app.token(H, "nurse-amy", Role::Nurse);
    let writers_done = Cell::new(false);

    // Act: writers and a reconnecting reader run concurrently.
    let writers = async {
        join_all((0..WRITERS).map(|_| async {
            for _ in 0..PER_WRITER {
                app.raise_alert(H, &nurse, "low").await;
            }
        }))
        .await;
        writers_done.set(true);
    };
    let reader = async {
        let mut rng = Prng::new(0x5EED_0001);
        let mut received: Vec<Value> = Vec::new();
        let mut subscribed: Vec<Value> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        for _ in 0..ITERATIONS {
            let last = received.last().map(position).unwrap_or(0);
            let mut socket = ws::connect(app.port, H, Some(&nurse)).await;
            // `last_event_id: 0` the first time: "everything from the beginning".
            subscribed.push(subscribe(&mut socket, &["alerts"], Some(last)).await);
            let wanted = rng.below(21);
            let mut got = 0;
            while got < wanted {
                assert!(Instant::now() < deadline, "the reader made no progress");
                match next_event(&mut socket, Duration::from_millis(200)).await {
                    Some(event) => {
                        received.push(event);
                        got += 1;
                    }
                    None if writers_done.get() => break,
                    None => {}
                }
            }
            // Drop without a close handshake, often with events still in flight.
            drop(socket);
        }
        (received, subscribed)
    };
    let ((), (mut received, subscribed)) = tokio::join!(writers, reader);

    // A last connection drains up to the final position.
    let last = received.last().map(position).unwrap_or(0);
    let mut socket = ws::connect(app.port, H, Some(&nurse)).await;
    let final_subscribed = subscribe(&mut socket, &["alerts"], Some(last)).await;
    if last < TOTAL {
        received.extend(take_events(&mut socket, (TOTAL - last) as usize).await);
    }
    assert_no_event(&mut socket, "nothing after the last position").await;

    // Assert
    let expected: Vec<i64> = (1..=TOTAL).collect();
    assert_eq!(
        positions(&received),
        expected,
        "every position exactly once, in order"
    );
    assert_eq!(
        identified(&received),
        polled(&app, &nurse, 0).await,
        "the same events the polling endpoint returns"
    );
    for (i, s) in subscribed.iter().chain([&final_subscribed]).enumerate() {
        assert_eq!(s["recovered"], true, "subscribe #{i} was recovered: {s}");
    }
}

/// Invariant: a resume that would need more than `replay_cap` events is refused as a whole
/// (`recovered: false`, `too_old`): the client is told to reload, and not one event of the
/// partial backlog is sent; it continues live after `position`.
#[actix_web::test]
async fn a_last_event_id_beyond_the_replay_cap_is_not_recovered_and_nothing_partial_is_sent() {
    // Arrange
    let app = spawn_app_with(|s| s.realtime.replay_cap = 5).await;
    let nurse = app.token(H, "nurse-amy", Role::Nurse);
    for _ in 0..10 {
        app.raise_alert(H, &nurse, "low").await;
    }

    // Act
    let mut socket = ws::connect(app.port, H, Some(&nurse)).await;
    let subscribed = subscribe(&mut socket, &["alerts"], Some(2)).await;

    // Assert
    assert_eq!(subscribed["recovered"], false);
    assert_eq!(subscribed["reason"], "too_old");
    assert_eq!(subscribed["position"], "10");
    assert_no_event(&mut socket, "nothing of the backlog is sent").await;
    app.raise_alert(H, &nurse, "high").await;
    assert_eq!(positions(&take_events(&mut socket, 1).await), vec![11]);
}

/// Invariant: a last-event-id is only honoured in the epoch it came from.
#[actix_web::test]
async fn a_last_event_id_from_another_epoch_is_not_recovered() {
    // Arrange
    let app = spawn_app().await;
    let nurse = app.token(H, "nurse-amy", Role::Nurse);
    for _ in 0..3 {
        app.raise_alert(H, &nurse, "low").await;
    }
    let mut first = ws::connect(app.port, H, Some(&nurse)).await;
    let epoch = subscribe(&mut first, &["alerts"], None).await["epoch"]
        .as_str()
        .expect("a stream with events has an epoch")
        .to_owned();
    drop(first);

    // Act
    let mut foreign = ws::connect(app.port, H, Some(&nurse)).await;
    let random = uuid::Uuid::new_v4().to_string();
    let refused = subscribe_in_epoch(&mut foreign, &["alerts"], Some(1), Some(&random)).await;
    let mut same = ws::connect(app.port, H, Some(&nurse)).await;
    let accepted = subscribe_in_epoch(&mut same, &["alerts"], Some(1), Some(&epoch)).await;

    // Assert
    assert_eq!(refused["recovered"], false);
    assert_eq!(refused["reason"], "epoch_changed");
    assert_eq!(refused["position"], "3");
    assert_eq!(refused["epoch"], epoch.as_str());
    assert_no_event(&mut foreign, "a refused resume replays nothing").await;
    assert_eq!(accepted["recovered"], true);
    assert_eq!(accepted["epoch"], epoch.as_str());
    assert_eq!(positions(&take_events(&mut same, 2).await), vec![2, 3]);
}

/// Invariant: a position the stream never reached is not "recovered" (the client's id is
/// from somewhere else — another database, a corrupted store).
#[actix_web::test]
async fn a_position_beyond_the_stream_is_not_recovered() {
    // Arrange
    let app = spawn_app().await;
    let nurse = app.token(H, "nurse-amy", Role::Nurse);
    for _ in 0..3 {
        app.raise_alert(H, &nurse, "low").await;
    }

    // Act
    let mut socket = ws::connect(app.port, H, Some(&nurse)).await;
    let subscribed = subscribe(&mut socket, &["alerts"], Some(999)).await;

    // Assert
    assert_eq!(subscribed["recovered"], false);
    assert_eq!(subscribed["reason"], "unknown_position");
    assert_eq!(subscribed["position"], "3");
    assert_no_event(&mut socket, "nothing is replayed").await;
    app.raise_alert(H, &nurse, "low").await;
    assert_eq!(positions(&take_events(&mut socket, 1).await), vec![4]);
}

/// Invariant: live delivery and replay apply the same entitlement, and no hospital ever
/// sees another's events. A field worker receives only cases assigned to her and her own
/// notifications; an admin every case but nobody else's notifications. Each connection
/// receives exactly what the polling endpoint shows the same user.
#[actix_web::test]
async fn entitlement_applies_to_live_and_replayed_events_alike() {
    // Arrange
    let app = spawn_app().await;
    let doctor = app.token(H, "dr-rao", Role::Physician);
    let other_doctor = app.token("other", "dr-rao", Role::Physician);
    let asha1 = app.token(H, "asha-1", Role::Asha);
    let asha2 = app.token(H, "asha-2", Role::Asha);
    let admin = app.token(H, "admin-kim", Role::Admin);
    // Each command answers with its events: `(position, aggregate_id)` of each.
    let command = |path: String, token: String, body: Value| {
        let app = &app;
        async move {
            let response = app.post(&path, &token, body).await;
            assert_eq!(response.status(), StatusCode::CREATED, "{path}");
            let outcome: Value = response.json().await.unwrap();
            let id = outcome["aggregate_id"].as_str().unwrap().to_owned();
            outcome["events"]
                .as_array()
                .expect("the command's events")
                .iter()
                .map(|e| (position(e), id.clone()))
                .collect::<Vec<_>>()
        }
    };
    let open_case = |hospital: &str, token: &str, assignee: &str| {
        command(
            format!("/api/hospitals/{hospital}/cases"),
            token.to_owned(),
            json!({"patient": "p-1", "title": format!("Visit for {assignee}"), "assignee": assignee}),
        )
    };
    let notify = |hospital: &str, token: &str, recipient: &str| {
        command(
            format!("/api/hospitals/{hospital}/notifications"),
            token.to_owned(),
            json!({"recipient": recipient, "content": {"kind": "task_assigned", "title": "Visit p-1"}}),
        )
    };
    let mut live_asha2 = ws::connect(app.port, H, Some(&asha2)).await;
    subscribe(&mut live_asha2, &["cases", "notifications"], None).await;

    // Act: the other hospital's commands are interleaved with this one's, with the same
    // user names, so only tenant isolation keeps them apart.
    let mut elsewhere = Vec::new();
    let case_a = open_case(H, &doctor, "asha-1").await;
    elsewhere.extend(open_case("other", &other_doctor, "asha-2").await);
    let case_b = open_case(H, &doctor, "asha-2").await;
    elsewhere.extend(notify("other", &other_doctor, "asha-2").await);
    let note = notify(H, &doctor, "asha-1").await;
    elsewhere.extend(open_case("other", &other_doctor, "asha-1").await);
    elsewhere.extend(notify("other", &other_doctor, "asha-1").await);
    let case_c = open_case(H, &doctor, "asha-2").await;
    let case_d = open_case(H, &doctor, "asha-1").await;
    // Policies react to these commands too (assigning a case notifies the assignee): wait
    // until the stream is quiet, so that each user's entitled sequence is final.
    settle(&app, &admin).await;

    // Assert: live, asha-2 gets exactly what polling shows her...
    let expected = polled(&app, &asha2, 0).await;
    let live = take_events(&mut live_asha2, expected.len()).await;
    assert_eq!(identified(&live), expected);
    assert_no_event(&mut live_asha2, "asha-2 sees nothing else").await;
    // ...which is her two cases and her own notifications, nothing of the other hospital.
    assert_entitled(&live, &[&case_b, &case_c], "asha-2", &elsewhere);

    // Replay: asha-1 from the beginning gets her cases, her notification, and nothing else.
    let mut replay_asha1 = ws::connect(app.port, H, Some(&asha1)).await;
    let s = subscribe(&mut replay_asha1, &["cases", "notifications"], Some(0)).await;
    assert_eq!(s["recovered"], true);
    let expected = polled(&app, &asha1, 0).await;
    let replayed = take_events(&mut replay_asha1, expected.len()).await;
    assert_eq!(identified(&replayed), expected);
    assert_no_event(&mut replay_asha1, "asha-1 sees nothing else").await;
    assert_entitled(&replayed, &[&case_a, &case_d], "asha-1", &elsewhere);
    assert!(
        contains_all(&replayed, &note),
        "asha-1 receives the notification sent to her"
    );

    // An admin sees every case of this hospital, and nobody's notifications.
    let mut replay_admin = ws::connect(app.port, H, Some(&admin)).await;
    subscribe(&mut replay_admin, &["cases", "notifications"], Some(0)).await;
    let expected = polled(&app, &admin, 0).await;
    let all_cases = take_events(&mut replay_admin, expected.len()).await;
    assert_eq!(identified(&all_cases), expected);
    assert_no_event(&mut replay_admin, "the admin sees nothing else").await;
    assert_entitled(
        &all_cases,
        &[&case_a, &case_b, &case_c, &case_d],
        "admin-kim",
        &elsewhere,
    );
    assert!(
        all_cases.iter().all(|e| e["topic"] == "cases"),
        "no notification reaches the admin"
    );
}

/// A field of an event frame's `data` (the payload, possibly wrapped in its variant name).
fn data_field<'a>(event: &'a Value, name: &str) -> Option<&'a Value> {
    let data = &event["data"];
    data.get(name)
        .or_else(|| data.as_object()?.values().next()?.get(name))
}

/// Whether every `(position, aggregate_id)` of `part` was received.
fn contains_all(received: &[Value], part: &[(i64, String)]) -> bool {
    let got = identified(received);
    part.iter().all(|e| got.contains(e))
}

/// `received` holds every event of `cases`, no other case, no notification for anyone but
/// `user`, and nothing of `elsewhere` (another hospital).
fn assert_entitled(
    received: &[Value],
    cases: &[&Vec<(i64, String)>],
    user: &str,
    elsewhere: &[(i64, String)],
) {
    let case_ids: HashSet<&str> = cases
        .iter()
        .flat_map(|c| c.iter().map(|(_, id)| id.as_str()))
        .collect();
    for case in cases {
        assert!(
            contains_all(received, case),
            "{user} receives every event of {case:?}"
        );
    }
    let foreign: HashSet<&str> = elsewhere.iter().map(|(_, id)| id.as_str()).collect();
    for e in received {
        let id = e["aggregate_id"].as_str().unwrap_or_default();
        assert!(
            !foreign.contains(id),
            "{user} received another hospital's event {e}"
        );
        match e["topic"].as_str() {
            Some("cases") => assert!(case_ids.contains(id), "{user} received {e}"),
            Some("notifications") => assert_eq!(
                data_field(e, "recipient"),
                Some(&json!(user)),
                "{user} received someone else's notification {e}"
            ),
            _ => panic!("{user} received an unexpected event {e}"),
        }
    }
}

/// Waits (bounded) until the hospital's head stops moving for a second: the policies have
/// reacted to every command.
async fn settle(app: &TestApp, token: &str) {
    // The head last seen, and since when.
    let last = Cell::new((-1, Instant::now()));
    let last = &last;
    until(
        Duration::from_secs(15),
        "the stream to become quiet",
        move || async move {
            let head = app.events(H, token, 0).await["head"]
                .as_i64()
                .expect("the page's head");
            let (seen, since) = last.get();
            if head != seen {
                last.set((head, Instant::now()));
                return false;
            }
            since.elapsed() >= Duration::from_secs(1)
        },
    )
    .await
}

/// Invariant: a resume older than the in-memory window is served from PostgreSQL, with the
/// same exactness (`3..=20`, then live), and the metrics say so.
#[actix_web::test]
async fn resume_from_beyond_the_in_memory_window_reads_the_database() {
    // Arrange
    let app = spawn_app_with(|s| s.realtime.window_events = 4).await;
    let nurse = app.token(H, "nurse-amy", Role::Nurse);
    for _ in 0..20 {
        app.raise_alert(H, &nurse, "low").await;
    }

    // Act
    let mut socket = ws::connect(app.port, H, Some(&nurse)).await;
    let subscribed = subscribe(&mut socket, &["alerts"], Some(2)).await;
    let replayed = take_events(&mut socket, 18).await;

    // Assert
    assert_eq!(subscribed["recovered"], true);
    assert_eq!(subscribed["position"], "20");
    assert_eq!(positions(&replayed), (3..=20).collect::<Vec<_>>());
    assert_eq!(identified(&replayed), polled(&app, &nurse, 2).await);
    app.raise_alert(H, &nurse, "low").await;
    assert_eq!(positions(&take_events(&mut socket, 1).await), vec![21]);
    let exposition = metrics_text(&app.client, &app.address).await;
    let from_database = metric(
        &exposition,
        r#"vigil_events_replayed_total{source="database"}"#,
    )
    .expect("the replay metric is exposed");
    assert!(
        from_database > 0.0,
        "events older than the window came from the database"
    );
}

/// A Server-Sent Events response read frame by frame.
struct SseStream {
    response: reqwest::Response,
    buffer: String,
}

/// One SSE message: its `id:` line, if any, and its `data:` as JSON.
#[derive(Debug)]
struct SseMessage {
    id: Option<String>,
    data: Value,
}

impl SseStream {
    fn new(response: reqwest::Response) -> Self {
        Self {
            response,
            buffer: String::new(),
        }
    }

    /// The next message with data (skipping `retry:` and comments); panics on timeout or end.
    async fn next(&mut self) -> SseMessage {
        let deadline = Instant::now() + FRAME_WAIT;
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut id = None;
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if !data.is_empty() {
                    let data = serde_json::from_str(&data).expect("SSE data is JSON");
                    return SseMessage { id, data };
                }
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .expect("an SSE message arrives in time")
                .expect("the SSE body reads")
                .expect("the SSE stream stays open");
            self.buffer
                .push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
        }
    }

    /// The next event message (skipping other data frames).
    async fn next_event(&mut self) -> SseMessage {
        loop {
            let message = self.next().await;
            if message.data["type"] == "event" {
                return message;
            }
        }
    }
}

/// Invariant: SSE resumes exactly like the WebSocket (same `Last-Event-ID` semantics, each
/// event's `id:` is its position), tickets are single-use, and a client may move between
/// SSE, the WebSocket and polling with one last-event-id and lose nothing.
#[actix_web::test]
async fn sse_resumes_with_last_event_id() {
    // Arrange
    let app = spawn_app().await;
    let nurse = app.token(H, "nurse-amy", Role::Nurse);
    for _ in 0..3 {
        app.raise_alert(H, &nurse, "low").await;
    }
    let stream_url = app.url(&format!("/api/hospitals/{H}/events/stream"));

    // Act: resume with the standard header.
    let response = app
        .client
        .get(format!("{stream_url}?topics=alerts"))
        .bearer_auth(&nurse)
        .header("Last-Event-ID", "1")
        .send()
        .await
        .expect("SSE request");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let mut sse = SseStream::new(response);

    // Assert
    let subscribed = sse.next().await;
    assert_eq!(subscribed.data["type"], "subscribed");
    assert_eq!(subscribed.data["recovered"], true);
    assert_eq!(subscribed.id, None);
    for expected in [2, 3] {
        let event = sse.next_event().await;
        assert_eq!(event.id.as_deref(), Some(expected.to_string().as_str()));
        assert_eq!(position(&event.data), expected);
    }
    app.raise_alert(H, &nurse, "high").await;
    let live = sse.next_event().await;
    assert_eq!(live.id.as_deref(), Some("4"));
    assert_eq!(position(&live.data), 4);
    drop(sse);

    // The ticket flow: no header, a single-use ticket in the query.
    let issued = app
        .post_empty(&format!("/api/hospitals/{H}/events/stream/tickets"), &nurse)
        .await;
    assert_eq!(issued.status(), StatusCode::CREATED);
    let ticket = issued.json::<Value>().await.unwrap()["ticket"]
        .as_str()
        .expect("a ticket")
        .to_owned();
    let with_ticket = format!("{stream_url}?topics=alerts&ticket={ticket}&last_event_id=3");
    let response = app.client.get(&with_ticket).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut by_ticket = SseStream::new(response);
    let subscribed = by_ticket.next().await;
    assert_eq!(subscribed.data["recovered"], true);
    assert_eq!(by_ticket.next_event().await.id.as_deref(), Some("4"));
    let reused = app.client.get(&with_ticket).send().await.unwrap();
    assert_problem(reused, StatusCode::UNAUTHORIZED, "invalid_token").await;
    drop(by_ticket);

    // Moving to the WebSocket with the id SSE delivered last, and to polling.
    app.raise_alert(H, &nurse, "low").await;
    app.raise_alert(H, &nurse, "low").await;
    let mut socket = ws::connect(app.port, H, Some(&nurse)).await;
    let s = subscribe(&mut socket, &["alerts"], Some(4)).await;
    assert_eq!(s["recovered"], true);
    let next = take_events(&mut socket, 2).await;
    assert_eq!(positions(&next), vec![5, 6]);
    assert_no_event(&mut socket, "exactly the events after 4").await;
    assert_eq!(identified(&next), polled(&app, &nurse, 4).await);
}

/// Invariant: sessions receive events from the store, not from the command path, so a node
/// delivers commands accepted by another node, and a client can resume on any node.
#[actix_web::test]
async fn a_second_node_on_the_same_database_delivers_commands_accepted_by_the_first() {
    // Arrange
    let app = spawn_app().await;
    let node_b = Node::start(&app.db.url).await;
    let nurse = app.token(H, "nurse-amy", Role::Nurse);
    let mut on_b = ws::connect(node_b.port, H, Some(&nurse)).await;
    subscribe(&mut on_b, &["alerts"], None).await;
    let mut on_a = ws::connect(app.port, H, Some(&nurse)).await;
    subscribe(&mut on_a, &["alerts"], None).await;

    // Act
    let raised = app.raise_alert(H, &nurse, "critical").await;

    // Assert: node B delivers what node A accepted.
    let via_b = take_events(&mut on_b, 1).await;
    assert_eq!(position(&via_b[0]), 1);
    assert_eq!(via_b[0]["aggregate_id"], raised["aggregate_id"]);
    let via_a = take_events(&mut on_a, 1).await;
    assert_eq!(via_a[0], via_b[0], "both nodes send the same frame");

    // A client of A leaves, commands go on through A, the client comes back on B.
    drop(on_a);
    for _ in 0..5 {
        app.raise_alert(H, &nurse, "low").await;
    }
    let mut moved = ws::connect(node_b.port, H, Some(&nurse)).await;
    let s = subscribe(&mut moved, &["alerts"], Some(1)).await;
    assert_eq!(s["recovered"], true);
    let missed = take_events(&mut moved, 5).await;
    assert_eq!(positions(&missed), vec![2, 3, 4, 5, 6]);
    app.raise_alert(H, &nurse, "low").await;
    assert_eq!(positions(&take_events(&mut moved, 1).await), vec![7]);
    assert_eq!(
        positions(&take_events(&mut on_b, 6).await),
        vec![2, 3, 4, 5, 6, 7]
    );
    node_b.shutdown.trigger().await;
}

/// Invariant: a PostgreSQL restart in the middle of a stream delays delivery but loses and
/// duplicates nothing: the subscriber receives every committed position exactly once.
/// (A cluster of its own: restarting the shared one would disturb every other test.)
#[actix_web::test]
async fn a_postgresql_restart_mid_stream_loses_and_duplicates_nothing() {
    // Arrange
    let cluster = PrivateCluster::start("vr").await;
    let url = cluster.url();
    let node = Node::start(&url).await;
    let nurse = node.token(H, "nurse-amy", Role::Nurse);
    let mut socket = ws::connect(node.port, H, Some(&nurse)).await;
    assert_eq!(
        subscribe(&mut socket, &["alerts"], None).await["position"],
        "0"
    );
    for _ in 0..5 {
        node.raise_alert_retrying(&nurse).await;
    }

    // Act: restart PostgreSQL while a writer keeps committing (retrying through the outage).
    let accepted = Cell::new(5usize);
    let restarted = Cell::new(false);
    // Three writers keep committing through the restart, then a little after it.
    let writers = join_all((0..3).map(|_| async {
        let mut after_restart = 0;
        while after_restart < 5 {
            node.raise_alert_retrying(&nurse).await;
            accepted.set(accepted.get() + 1);
            if restarted.get() {
                after_restart += 1;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }));
    let restart = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        cluster.restart().await;
        restarted.set(true);
    };
    tokio::join!(writers, restart);

    // Assert: every committed position arrives exactly once, in order.
    let head: i64 = {
        let pool = sqlx::PgPool::connect(&url).await.expect("connect");
        let head = sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(&pool)
            .await
            .expect("count events");
        pool.close().await;
        head
    };
    assert!(
        head >= accepted.get() as i64,
        "every accepted command is in the stream ({head} < {})",
        accepted.get()
    );
    let received = take_events(&mut socket, head as usize).await;
    assert_eq!(positions(&received), (1..=head).collect::<Vec<_>>());
    assert_no_event(&mut socket, "nothing is delivered twice").await;
    drop(socket);
    node.shutdown.trigger().await;
    drop(cluster);
}

/// Invariant: on a graceful shutdown every connection is told why it is closed (so clients
/// reconnect elsewhere and resume) before the close frame, with code 1001.
#[actix_web::test]
async fn graceful_shutdown_sends_the_shutdown_frame() {
    // Arrange
    let app = spawn_app().await;
    let nurse = app.token(H, "nurse-amy", Role::Nurse);
    let mut socket = ws::connect(app.port, H, Some(&nurse)).await;
    subscribe(&mut socket, &["alerts"], None).await;

    // Act
    let shutdown = app.shutdown.clone();
    let trigger = actix_web::rt::spawn(async move { shutdown.trigger().await });
    let (reason, code) = closed(&mut socket, Duration::from_secs(5)).await;

    // Assert
    assert_eq!(reason.as_deref(), Some("server_shutdown"));
    assert_eq!(code, Some(1001));
    tokio::time::timeout(Duration::from_secs(15), trigger)
        .await
        .expect("the server stops in time")
        .expect("shutdown task");
}
