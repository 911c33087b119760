//! The projections engine end to end: what the alert board shows, what survives a crash
//! mid-batch, online rebuilds under load, several nodes projecting at once, the read
//! contract (`min_position`, `as_of` then subscribe), the automatic rebuild after a version
//! change, and the operations side (`/api/admin/projections`, `vigil projections`).
//!
//! Each test states the invariant it checks. Every wait is bounded.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aggregates::types::Role;
use projections::alert_board::{self, AlertBoard, BoardFilter};
use projections::engine::{self, ApplyFuture, ProjectionError, ReadModel, Tables};
use projections::event::Envelope;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection, PgPool};
use vigil::startup::{Application, Shutdown};

use crate::helpers::ws::{self, frame_of, subscribe, Received, Socket};
use crate::helpers::{
    assert_problem, eventually, eventually_seen, settings, spawn_app, until, TestApp,
};

const H: &str = "st-marys";
const OTHER: &str = "city-general";

/// Longest wait for a projector, a rebuild or a lock to reach the state a test expects.
const WAIT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn nurse(app: &TestApp, hospital: &str) -> String {
    app.token(hospital, "nurse-amy", Role::Nurse)
}

fn admin(app: &TestApp, hospital: &str) -> String {
    app.token(hospital, "admin-ada", Role::Admin)
}

/// The stream position of a command's last event.
fn position_of(outcome: &Value) -> i64 {
    outcome["events"]
        .as_array()
        .and_then(|events| events.last())
        .and_then(|event| event["position"].as_i64())
        .unwrap_or_else(|| panic!("a command outcome lists its events: {outcome}"))
}

/// Raises an alert; returns (alert id, position).
async fn raise(
    app: &TestApp,
    hospital: &str,
    token: &str,
    severity: &str,
    department: &str,
) -> (String, i64) {
    let response = app
        .post(
            &format!("/api/hospitals/{hospital}/alerts"),
            token,
            json!({"severity": severity, "message": format!("{severity} in {department}"),
                   "department": department, "patient": "p-1"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let outcome: Value = response.json().await.unwrap();
    (
        outcome["aggregate_id"].as_str().unwrap().to_owned(),
        position_of(&outcome),
    )
}

/// Runs an alert transition (`acknowledge`, `escalate`, `resolve`); returns its position.
async fn transition(app: &TestApp, hospital: &str, token: &str, id: &str, action: &str) -> i64 {
    let path = format!("/api/hospitals/{hospital}/alerts/{id}/{action}");
    let response = match action {
        "escalate" => app.post(&path, token, json!({"reason": "no answer"})).await,
        "resolve" => app.post(&path, token, json!({"note": "handled"})).await,
        _ => app.post_empty(&path, token).await,
    };
    assert_eq!(response.status(), StatusCode::OK, "{action} {id}");
    position_of(&response.json().await.unwrap())
}

/// `GET /alerts` with a query string; returns the page.
async fn board_page(app: &TestApp, hospital: &str, token: &str, query: &str) -> Value {
    let response = app
        .get(&format!("/api/hospitals/{hospital}/alerts?{query}"), token)
        .await;
    assert_eq!(response.status(), StatusCode::OK, "GET /alerts?{query}");
    response.json().await.unwrap()
}

/// Ids of a board page's alerts, in order.
fn ids(page: &Value) -> Vec<String> {
    page["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["alert_id"].as_str().unwrap().to_owned())
        .collect()
}

/// Every row of the alert board, every column (none is volatile: ages are computed by the
/// queries, not stored), in a stable order.
async fn board_rows(pool: &PgPool) -> Vec<Value> {
    sqlx::query_scalar("SELECT to_jsonb(b) FROM alert_board b ORDER BY hospital, alert_id")
        .fetch_all(pool)
        .await
        .unwrap()
}

/// Waits until `model`'s live checkpoint has reached every hospital's stream head.
async fn caught_up(pool: &PgPool, model: &str) {
    until(WAIT, &format!("{model} to catch up"), || async {
        let behind: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM stream_heads h LEFT JOIN projection_checkpoints c \
               ON c.projector = $1 AND c.hospital = h.hospital \
             WHERE coalesce(c.position, 0) < h.position",
        )
        .bind(model)
        .fetch_one(pool)
        .await
        .unwrap();
        behind == 0
    })
    .await
}

/// Runs a full rebuild of the alert board (from position 0) in the test process.
async fn fresh_rebuild(pool: &PgPool) {
    engine::rebuild(pool, &AlertBoard, true, &AtomicBool::new(false), |_, _| {})
        .await
        .expect("rebuild");
}

/// A second node: another `Application` on the same database, running.
async fn second_node(app: &TestApp) -> (TestApp2, Application) {
    let node = Application::build(&settings(&app.db.url))
        .await
        .expect("second node");
    let port = node.port();
    (
        TestApp2 {
            address: format!("http://127.0.0.1:{port}"),
            shutdown: node.shutdown_handle(),
        },
        node,
    )
}

/// What a test needs of a second node.
struct TestApp2 {
    address: String,
    shutdown: Shutdown,
}

/// `GET /api/admin/projections` on `address`; returns the named projector.
async fn projector(app: &TestApp, address: &str, token: &str, name: &str) -> Value {
    let response = app
        .client
        .get(format!("{address}/api/admin/projections"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    body["projectors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("{name} is listed: {body}"))
        .clone()
}

/// Polls the status until `accept` holds for the named projector; returns it.
async fn wait_status(
    app: &TestApp,
    address: &str,
    token: &str,
    name: &str,
    accept: impl Fn(&Value) -> bool,
) -> Value {
    let accept = &accept;
    eventually_seen(WAIT, "the projector's status to match", || async move {
        let status = projector(app, address, token, name).await;
        if accept(&status) {
            Ok(status)
        } else {
            Err(status.to_string())
        }
    })
    .await
}

/// Waits until a backend whose query starts with one of `prefixes` waits for a lock.
async fn waiting_on_lock(pool: &PgPool, prefixes: &[&str]) -> String {
    let what = format!("a query starting with {prefixes:?} to wait for a lock");
    eventually(WAIT, &what, || async {
        let waiting: Vec<String> = sqlx::query_scalar(
            "SELECT query FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_all(pool)
        .await
        .unwrap();
        waiting
            .into_iter()
            .find(|q| prefixes.iter().any(|p| q.trim_start().starts_with(p)))
    })
    .await
}

// ---------------------------------------------------------------------------------------
// The board
// ---------------------------------------------------------------------------------------

/// Invariant: the board is each alert as its events left it — status, level, who and when —
/// with open alerts most severe first and counts of open alerts per severity.
#[actix_web::test]
async fn the_alert_board_shows_each_alert_as_its_events_left_it() {
    let app = spawn_app().await;
    let token = nurse(&app, H);
    let (low, _) = raise(&app, H, &token, "low", "ward-3").await;
    let (critical, _) = raise(&app, H, &token, "critical", "icu").await;
    let (high, _) = raise(&app, H, &token, "high", "icu").await;
    let (medium, _) = raise(&app, H, &token, "medium", "ward-3").await;
    transition(&app, H, &token, &critical, "acknowledge").await;
    transition(&app, H, &token, &high, "escalate").await;
    let last = transition(&app, H, &token, &medium, "resolve").await;

    let open = board_page(&app, H, &token, &format!("min_position={last}")).await;
    assert!(open["as_of"].as_i64().unwrap() >= last);
    assert_eq!(
        ids(&open),
        vec![critical.clone(), high.clone(), low.clone()]
    );
    let alerts = open["alerts"].as_array().unwrap();
    assert_eq!(alerts[0]["status"], "acknowledged");
    assert_eq!(alerts[0]["acknowledged_by"], "nurse-amy");
    assert!(alerts[0]["acknowledged_at"].is_string());
    assert_eq!(alerts[0]["department"], "icu");
    assert_eq!(alerts[1]["status"], "raised");
    assert_eq!(alerts[1]["level"], 1);
    assert_eq!(alerts[2]["severity"], "low");
    assert_eq!(alerts[2]["level"], 0);
    assert_eq!(
        open["counts"],
        json!({"critical": 1, "high": 1, "medium": 0, "low": 1})
    );

    let resolved = board_page(&app, H, &token, "status=resolved").await;
    assert_eq!(ids(&resolved), vec![medium]);
    assert!(resolved["alerts"][0]["resolved_at"].is_string());
    let icu = board_page(&app, H, &token, "department=icu").await;
    assert_eq!(ids(&icu), vec![critical, high]);
}

/// Invariant (read-your-writes): a read with `min_position` = the position a command
/// returned reflects that command; a position beyond the stream's head is a prompt 400
/// (conformance.rs checks the 503 for a reachable position the model has not reached), never a
/// stale answer.
#[actix_web::test]
async fn a_read_with_min_position_sees_the_write_that_returned_it() {
    let app = spawn_app().await;
    let token = nurse(&app, H);
    for _ in 0..5 {
        let (id, position) = raise(&app, H, &token, "high", "icu").await;
        let page = board_page(&app, H, &token, &format!("min_position={position}")).await;
        assert!(page["as_of"].as_i64().unwrap() >= position);
        assert!(ids(&page).contains(&id), "{id} is on the board");
    }
    let unreachable = app
        .get(
            &format!("/api/hospitals/{H}/alerts?min_position=1000"),
            &token,
        )
        .await;
    assert_problem(unreachable, StatusCode::BAD_REQUEST, "position_beyond_head").await;
    let negative = app
        .get(
            &format!("/api/hospitals/{H}/alerts?min_position=-1"),
            &token,
        )
        .await;
    assert_problem(negative, StatusCode::BAD_REQUEST, "invalid_field").await;
}

/// The next frame within `timeout`, or `None` (a WebSocket read is cancel-safe).
async fn try_next(socket: &mut Socket, timeout: Duration) -> Option<Received> {
    tokio::time::timeout(timeout, ws::next(socket, timeout + Duration::from_secs(1)))
        .await
        .ok()
}

/// Invariant (snapshot then subscribe): load the board, subscribe with `last_event_id =
/// as_of`, and exactly the events after the snapshot follow — none the board already
/// reflects, none missing — so board plus stream is every alert exactly once.
#[actix_web::test]
async fn subscribing_from_the_boards_as_of_delivers_exactly_the_later_events() {
    let app = spawn_app().await;
    let token = nurse(&app, H);
    let mut raised = Vec::new();
    for severity in ["critical", "high", "low"] {
        raised.push(raise(&app, H, &token, severity, "icu").await.0);
    }
    let page = board_page(&app, H, &token, "").await;
    let as_of = page["as_of"].as_i64().unwrap();
    let on_board = ids(&page);
    // Written between the read and the subscription.
    for severity in ["medium", "low"] {
        raised.push(raise(&app, H, &token, severity, "ward-3").await.0);
    }
    let head: i64 = sqlx::query_scalar("SELECT position FROM stream_heads WHERE hospital = $1")
        .bind(H)
        .fetch_one(&app.pool)
        .await
        .unwrap();

    let mut socket = ws::connect(app.port, H, Some(&token)).await;
    frame_of(&mut socket, "authenticated").await;
    subscribe(&mut socket, &["alerts"], Some(as_of)).await;
    let after = ws::events(&mut socket, (head - as_of) as usize).await;
    let positions: Vec<i64> = after
        .iter()
        .map(|e| e["position"].as_i64().unwrap())
        .collect();
    assert_eq!(positions, ((as_of + 1)..=head).collect::<Vec<_>>());
    // Nothing else was queued: the next frame is the next live event.
    let (live, _) = raise(&app, H, &token, "low", "icu").await;
    loop {
        match try_next(&mut socket, Duration::from_secs(10)).await {
            Some(Received::Frame(f)) if f["type"] == "event" => {
                assert_eq!(f["position"].as_i64(), Some(head + 1), "{f}");
                assert_eq!(f["aggregate_id"], live.as_str());
                break;
            }
            Some(Received::Frame(_)) => continue,
            other => panic!("expected the live event, got {other:?}"),
        }
    }
    let streamed: Vec<String> = after
        .iter()
        .filter(|e| e["event_type"] == "AlertRaised")
        .map(|e| e["aggregate_id"].as_str().unwrap().to_owned())
        .collect();
    let mut union: Vec<String> = on_board.iter().chain(&streamed).cloned().collect();
    union.sort();
    let mut expected = raised.clone();
    expected.sort();
    assert_eq!(union, expected, "board + stream = every alert, once");
}

// ---------------------------------------------------------------------------------------
// Crashes and rebuilds
// ---------------------------------------------------------------------------------------

/// The alert board with one poisoned event: applying it fails, as a crash between two
/// statements of the batch's transaction would.
struct Poisoned {
    at: i64,
}

static BOARD: AlertBoard = AlertBoard;

impl ReadModel for Poisoned {
    fn name(&self) -> &'static str {
        "poisoned_board"
    }

    fn version(&self) -> i32 {
        1
    }

    fn tables(&self) -> &'static [&'static str] {
        BOARD.tables()
    }

    fn apply<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        tables: &'a Tables,
        event: &'a Envelope,
    ) -> ApplyFuture<'a> {
        if event.position == self.at {
            Box::pin(async { Err(sqlx::Error::Protocol("poisoned event".into())) })
        } else {
            BOARD.apply(tx, tables, event)
        }
    }
}

/// Invariant: a batch is all or nothing with its checkpoint. A failure mid-batch leaves the
/// checkpoint where the last committed batch put it and none of the failed batch's rows;
/// projecting again from there gives exactly the board a clean projection gives.
#[actix_web::test]
async fn a_batch_that_fails_midway_moves_neither_the_checkpoint_nor_the_board() {
    let app = spawn_app().await;
    let token = nurse(&app, H);
    let mut last = 0;
    for severity in ["critical", "high", "low", "medium"] {
        let (id, _) = raise(&app, H, &token, severity, "icu").await;
        last = transition(&app, H, &token, &id, "acknowledge").await;
    }
    assert_eq!(last, 8);
    caught_up(&app.pool, "alert_board").await;
    // The poisoned model writes into shadow tables under its own checkpoint, beside the live
    // projector of the same database.
    let poisoned = Poisoned { at: 5 };
    let tables = Tables::shadow(&poisoned);
    let shadow = tables.get("alert_board").unwrap().to_owned();
    sqlx::query(&format!(
        "CREATE TABLE {shadow} (LIKE alert_board INCLUDING ALL)"
    ))
    .execute(&app.pool)
    .await
    .unwrap();
    let shadow_rows = |pool: PgPool, shadow: String| async move {
        sqlx::query_scalar::<_, Value>(&format!(
            "SELECT to_jsonb(b) FROM {shadow} b ORDER BY hospital, alert_id"
        ))
        .fetch_all(&pool)
        .await
        .unwrap()
    };
    let checkpoint = "crash_test";

    // Batches of 2: (1, 2) and (3, 4) commit; (5, 6) fails on 5 after nothing else.
    for expected in [2, 4] {
        let applied = engine::apply_batch(&app.pool, &poisoned, &tables, checkpoint, H, 2)
            .await
            .unwrap();
        assert_eq!(applied, Some((expected, 2)));
    }
    let before = shadow_rows(app.pool.clone(), shadow.clone()).await;
    assert_eq!(before.len(), 2);
    let failed = engine::apply_batch(&app.pool, &poisoned, &tables, checkpoint, H, 2).await;
    assert!(
        matches!(failed, Err(ProjectionError::Database(_))),
        "{failed:?}"
    );
    assert_eq!(
        engine::checkpoint(&app.pool, checkpoint, H).await.unwrap(),
        4
    );
    assert_eq!(shadow_rows(app.pool.clone(), shadow.clone()).await, before);

    // Poisoned on the batch's last event: the rows of its first event are rolled back too.
    let poisoned_last = Poisoned { at: 6 };
    let failed = engine::apply_batch(&app.pool, &poisoned_last, &tables, checkpoint, H, 2).await;
    assert!(failed.is_err());
    assert_eq!(
        engine::checkpoint(&app.pool, checkpoint, H).await.unwrap(),
        4
    );
    assert_eq!(shadow_rows(app.pool.clone(), shadow.clone()).await, before);

    // Recovery: the same checkpoint, a healthy model, to the head.
    let healthy = Poisoned { at: -1 };
    while engine::apply_batch(&app.pool, &healthy, &tables, checkpoint, H, 2)
        .await
        .unwrap()
        .is_some()
    {}
    assert_eq!(
        engine::checkpoint(&app.pool, checkpoint, H).await.unwrap(),
        8
    );
    let resumed = shadow_rows(app.pool.clone(), shadow).await;
    assert_eq!(
        resumed,
        board_rows(&app.pool).await,
        "resumed after the failure = the live board"
    );
    // (The rebuild replaces the shadow table with its own, then swaps it in.)
    fresh_rebuild(&app.pool).await;
    assert_eq!(
        resumed,
        board_rows(&app.pool).await,
        "= a from-scratch rebuild"
    );
}

/// Invariant: the alert board's set-based batch apply (`AlertBoard::apply_all`) leaves the
/// table exactly as applying the same events one by one (`AlertBoard::apply`) does, whether
/// an alert's whole life falls in one batch or is split across batches.
#[actix_web::test]
async fn applying_a_batch_at_once_equals_applying_its_events_one_by_one() {
    let app = spawn_app().await;
    let nurse = nurse(&app, H);
    let physician = app.token(H, "dr-bo", Role::Physician);
    let (a, _) = raise(&app, H, &nurse, "critical", "icu").await;
    let (b, _) = raise(&app, H, &nurse, "high", "er").await;
    transition(&app, H, &physician, &a, "escalate").await;
    transition(&app, H, &nurse, &a, "acknowledge").await;
    let (c, _) = raise(&app, H, &physician, "low", "ward-3").await;
    transition(&app, H, &physician, &a, "escalate").await;
    transition(&app, H, &nurse, &b, "resolve").await;
    transition(&app, H, &physician, &c, "escalate").await;
    transition(&app, H, &nurse, &c, "acknowledge").await;
    transition(&app, H, &physician, &a, "resolve").await;
    let (d, _) = raise(&app, H, &nurse, "medium", "icu").await;
    transition(&app, H, &physician, &d, "acknowledge").await;
    caught_up(&app.pool, "alert_board").await;
    let live = board_rows(&app.pool).await;
    assert_eq!(live.len(), 4);

    let one_by_one = Poisoned { at: -1 }; // never poisons: the default, per-event apply_all
    let tables = Tables::shadow(&one_by_one);
    let shadow = tables.get("alert_board").unwrap().to_owned();
    sqlx::query(&format!(
        "CREATE TABLE {shadow} (LIKE alert_board INCLUDING ALL)"
    ))
    .execute(&app.pool)
    .await
    .unwrap();
    let project = |model: &'static dyn ReadModel, checkpoint: &'static str, batch: i64| {
        let (pool, tables, shadow) = (app.pool.clone(), tables.clone(), shadow.clone());
        async move {
            sqlx::query(&format!("TRUNCATE {shadow}"))
                .execute(&pool)
                .await
                .unwrap();
            while engine::apply_batch(&pool, model, &tables, checkpoint, H, batch)
                .await
                .unwrap()
                .is_some()
            {}
            sqlx::query_scalar::<_, Value>(&format!(
                "SELECT to_jsonb(b) FROM {shadow} b ORDER BY hospital, alert_id"
            ))
            .fetch_all(&pool)
            .await
            .unwrap()
        }
    };
    static ONE_BY_ONE: Poisoned = Poisoned { at: -1 };
    let reference = project(&ONE_BY_ONE, "one_by_one", 1000).await;
    assert_eq!(reference, live);
    for (checkpoint, batch) in [("whole", 1000), ("threes", 3), ("pairs", 2)] {
        assert_eq!(
            project(&BOARD, checkpoint, batch).await,
            reference,
            "batches of {batch}"
        );
    }
}

/// Invariant: rebuilding from the log reproduces the live board row for row, and leaves the
/// live checkpoints at the stream heads.
#[actix_web::test]
async fn a_fresh_rebuild_reproduces_the_live_board() {
    let app = spawn_app().await;
    for hospital in [H, OTHER] {
        let token = nurse(&app, hospital);
        for (i, severity) in ["critical", "high", "medium", "low", "high", "critical"]
            .iter()
            .enumerate()
        {
            let (id, _) = raise(&app, hospital, &token, severity, "icu").await;
            match i % 3 {
                0 => {
                    transition(&app, hospital, &token, &id, "acknowledge").await;
                    transition(&app, hospital, &token, &id, "resolve").await;
                }
                1 => {
                    transition(&app, hospital, &token, &id, "escalate").await;
                }
                _ => {}
            }
        }
    }
    caught_up(&app.pool, "alert_board").await;
    let live = board_rows(&app.pool).await;
    assert_eq!(live.len(), 12);

    fresh_rebuild(&app.pool).await;
    assert_eq!(board_rows(&app.pool).await, live);
    let behind: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM stream_heads h JOIN projection_checkpoints c \
           ON c.projector = 'alert_board' AND c.hospital = h.hospital \
         WHERE c.position <> h.position",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(behind, 0);
    let shadows: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM projection_checkpoints WHERE projector = 'alert_board#rebuild'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        shadows, 0,
        "a finished rebuild leaves no shadow checkpoints"
    );
}

/// An alert as its writer knows it: where it was raised and acknowledged.
#[derive(Clone, Debug)]
struct Known {
    id: String,
    raised: i64,
    acknowledged: Option<i64>,
}

/// Invariants, with writers raising and acknowledging, readers polling the board and
/// rebuilds running back to back:
/// - every read is one consistent board: its counts are its rows, and every alert a writer
///   saw committed at or before the read's `as_of` is there in that state, and none after;
/// - `as_of` never goes back for a reader;
/// - afterwards no event is lost: one row per `AlertRaised`, and the board is exactly what a
///   fresh rebuild makes.
#[actix_web::test]
async fn rebuilding_while_commands_are_written_and_clients_read_loses_nothing() {
    const WRITERS: usize = 4;
    const ALERTS_PER_WRITER: usize = 25;
    const READERS: usize = 2;
    let app = Arc::new(spawn_app().await);
    let token = nurse(&app, H);
    let known: Arc<Mutex<Vec<Known>>> = Arc::default();
    let writing = Arc::new(AtomicBool::new(true));

    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (app, token, known) = (app.clone(), token.clone(), known.clone());
        writers.push(tokio::spawn(async move {
            let mut mine: Vec<usize> = Vec::new();
            for i in 0..ALERTS_PER_WRITER {
                let severity = ["critical", "high", "medium", "low"][(w + i) % 4];
                let (id, raised) = raise(&app, H, &token, severity, "icu").await;
                let index = {
                    let mut known = known.lock().unwrap();
                    known.push(Known {
                        id,
                        raised,
                        acknowledged: None,
                    });
                    known.len() - 1
                };
                mine.push(index);
                if i % 2 == 1 {
                    let target = mine[i - 1];
                    let id = known.lock().unwrap()[target].id.clone();
                    let at = transition(&app, H, &token, &id, "acknowledge").await;
                    known.lock().unwrap()[target].acknowledged = Some(at);
                }
            }
        }));
    }

    let mut readers = Vec::new();
    for _ in 0..READERS {
        let (app, token, known, writing) =
            (app.clone(), token.clone(), known.clone(), writing.clone());
        readers.push(tokio::spawn(async move {
            let mut last_as_of = 0;
            let mut reads = 0;
            while writing.load(Ordering::Relaxed) {
                let page = board_page(&app, H, &token, "limit=500").await;
                let as_of = page["as_of"].as_i64().unwrap();
                assert!(
                    as_of >= last_as_of,
                    "as_of went back: {last_as_of} -> {as_of}"
                );
                last_as_of = as_of;
                let alerts = page["alerts"].as_array().unwrap();
                let counts = &page["counts"];
                let counted: i64 = ["critical", "high", "medium", "low"]
                    .iter()
                    .map(|s| counts[s].as_i64().unwrap())
                    .sum();
                assert_eq!(counted, alerts.len() as i64, "counts = rows: {page}");
                let status_of = |id: &str| {
                    alerts
                        .iter()
                        .find(|a| a["alert_id"] == id)
                        .map(|a| a["status"].as_str().unwrap().to_owned())
                };
                for k in known.lock().unwrap().iter() {
                    let status = status_of(&k.id);
                    if k.raised > as_of {
                        assert_eq!(status, None, "{k:?} is on a board as of {as_of}");
                    } else if k.acknowledged.is_some_and(|at| at <= as_of) {
                        assert_eq!(status.as_deref(), Some("acknowledged"), "{k:?} @ {as_of}");
                    } else {
                        assert!(
                            status.is_some(),
                            "{k:?} is missing from the board @ {as_of}"
                        );
                    }
                }
                reads += 1;
            }
            reads
        }));
    }

    let mut rebuilds = 0;
    let never = AtomicBool::new(false);
    while writers.iter().any(|w| !w.is_finished()) {
        engine::rebuild(&app.pool, &AlertBoard, false, &never, |_, _| {})
            .await
            .expect("rebuild under load");
        rebuilds += 1;
    }
    for writer in writers {
        writer.await.expect("writer");
    }
    writing.store(false, Ordering::Relaxed);
    for reader in readers {
        assert!(reader.await.expect("reader") > 0);
    }
    assert!(rebuilds > 0);

    caught_up(&app.pool, "alert_board").await;
    let raised: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'AlertRaised'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(raised, (WRITERS * ALERTS_PER_WRITER) as i64);
    let live = board_rows(&app.pool).await;
    assert_eq!(live.len() as i64, raised, "one row per AlertRaised");
    fresh_rebuild(&app.pool).await;
    assert_eq!(
        board_rows(&app.pool).await,
        live,
        "live board = fresh rebuild"
    );
}

/// Invariant: a read's snapshot and the rebuild's table swap never interleave. A read whose
/// `as_of` was taken before the swap committed must not then read the swapped-in tables (it
/// would see the shadow as of its older snapshot, missing events its `as_of` claims).
#[actix_web::test]
async fn a_read_racing_the_rebuild_swap_sees_the_board_its_as_of_names() {
    let app = spawn_app().await;
    let token = nurse(&app, H);
    for _ in 0..10 {
        raise(&app, H, &token, "high", "icu").await;
    }
    caught_up(&app.pool, "alert_board").await;
    // An interrupted rebuild: its shadow holds the first 10 alerts.
    let cancelled = AtomicBool::new(true);
    let result = engine::rebuild(&app.pool, &AlertBoard, true, &cancelled, |_, _| {}).await;
    assert!(matches!(result, Err(ProjectionError::Cancelled)));
    for _ in 0..5 {
        raise(&app, H, &token, "low", "ward-3").await;
    }
    caught_up(&app.pool, "alert_board").await;

    // Holds the swap between its DROP of the live table and its RENAME of the shadow.
    let mut blocker = PgConnection::connect(&app.db.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut blocker).await.unwrap();
    sqlx::query("LOCK TABLE alert_board_rebuild IN ACCESS SHARE MODE")
        .execute(&mut blocker)
        .await
        .unwrap();

    // The read, as `GET /alerts` makes it: snapshot and as_of first, rows second.
    let (node, application) = second_node(&app).await;
    let state = application.state();
    actix_web::rt::spawn(application.run_until_stopped());
    let (mut tx, as_of) = vigil::http::reads::snapshot(&state, "alert_board", H, None)
        .await
        .expect("snapshot");
    assert_eq!(as_of, 15);

    let pool = app.pool.clone();
    let rebuild = tokio::spawn(async move {
        engine::rebuild(
            &pool,
            &AlertBoard,
            false,
            &AtomicBool::new(false),
            |_, _| {},
        )
        .await
    });
    waiting_on_lock(&app.pool, &["DROP TABLE", "ALTER TABLE"]).await;
    let read = tokio::spawn(async move {
        let filter = BoardFilter {
            limit: 500,
            ..BoardFilter::default()
        };
        let rows = alert_board::list(&mut tx, H, &filter).await;
        tx.commit().await.unwrap();
        rows
    });
    until(
        WAIT,
        "the read to run or wait for the swap's lock",
        || async {
            if read.is_finished() {
                return true;
            }
            let reader_waits: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND wait_event_type = 'Lock' AND query LIKE 'SELECT alert_id%'",
            )
            .fetch_one(&app.pool)
            .await
            .unwrap();
            reader_waits > 0
        },
    )
    .await;
    sqlx::query("COMMIT").execute(&mut blocker).await.unwrap();
    let rows = read.await.unwrap().expect("the read succeeds");
    rebuild.await.unwrap().expect("the rebuild completes");
    assert_eq!(
        rows.len(),
        15,
        "a board read as of {as_of} shows the {as_of} alerts raised up to it"
    );
    node.shutdown.trigger().await;
}

/// A read model that counts the events applied to it per hospital and refuses any event
/// that is not the next one: applying an event twice, or skipping one, fails the batch.
struct Counter;

impl ReadModel for Counter {
    fn name(&self) -> &'static str {
        "test_event_counter"
    }

    fn version(&self) -> i32 {
        1
    }

    fn tables(&self) -> &'static [&'static str] {
        &["test_event_counter"]
    }

    fn apply<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        tables: &'a Tables,
        event: &'a Envelope,
    ) -> ApplyFuture<'a> {
        Box::pin(async move {
            let table = tables.get("test_event_counter")?;
            sqlx::query(&format!(
                "INSERT INTO {table} (hospital, applied, last_position) VALUES ($1, 0, 0) \
                 ON CONFLICT DO NOTHING"
            ))
            .bind(&event.hospital)
            .execute(&mut *tx)
            .await?;
            let updated = sqlx::query(&format!(
                "UPDATE {table} SET applied = applied + 1, last_position = $2 \
                 WHERE hospital = $1 AND last_position = $2 - 1"
            ))
            .bind(&event.hospital)
            .bind(event.position)
            .execute(&mut *tx)
            .await?;
            if updated.rows_affected() != 1 {
                return Err(sqlx::Error::Protocol(format!(
                    "event {} of {} applied twice or out of order",
                    event.position, event.hospital
                )));
            }
            Ok(())
        })
    }
}

/// Invariants, with two server nodes on one database (each running every projector) and
/// three more projector loops of a counting model:
/// - no event is applied twice or skipped: each hospital's count equals its head, and the
///   counting model never saw an event out of order;
/// - the board is right: every alert's `last_position` is its last event's position, every
///   acknowledged alert has its one `acknowledged_at`, and it equals a fresh rebuild.
#[actix_web::test]
async fn two_nodes_projecting_at_once_apply_every_event_exactly_once() {
    let app = spawn_app().await;
    let (node, application) = second_node(&app).await;
    actix_web::rt::spawn(application.run_until_stopped());
    sqlx::query(
        "CREATE TABLE test_event_counter \
         (hospital text PRIMARY KEY, applied bigint NOT NULL, last_position bigint NOT NULL)",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let counting = Arc::new(AtomicBool::new(true));
    let mut counters = Vec::new();
    for _ in 0..3 {
        let (pool, counting) = (app.pool.clone(), counting.clone());
        counters.push(tokio::spawn(async move {
            while counting.load(Ordering::Relaxed) {
                engine::catch_up(&pool, &Counter).await?;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Ok::<_, ProjectionError>(())
        }));
    }

    let nodes = [app.address.clone(), node.address.clone()];
    let mut writers = Vec::new();
    for (w, hospital) in [H, OTHER, H, OTHER].into_iter().enumerate() {
        let client = app.client.clone();
        let token = nurse(&app, hospital);
        let nodes = nodes.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..15 {
                let address = &nodes[(w + i) % 2];
                let response = client
                    .post(format!("{address}/api/hospitals/{hospital}/alerts"))
                    .bearer_auth(&token)
                    .json(&json!({"severity": "high", "message": "two nodes"}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), StatusCode::CREATED);
                let id = response.json::<Value>().await.unwrap()["aggregate_id"]
                    .as_str()
                    .unwrap()
                    .to_owned();
                if i % 3 == 0 {
                    let other = &nodes[(w + i + 1) % 2];
                    let response = client
                        .post(format!(
                            "{other}/api/hospitals/{hospital}/alerts/{id}/acknowledge"
                        ))
                        .bearer_auth(&token)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(response.status(), StatusCode::OK);
                }
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    caught_up(&app.pool, "alert_board").await;
    caught_up(&app.pool, "test_event_counter").await;
    counting.store(false, Ordering::Relaxed);
    for counter in counters {
        counter
            .await
            .unwrap()
            .expect("no event applied twice or skipped");
    }

    let mismatched: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT h.hospital, h.position, coalesce(c.applied, 0) FROM stream_heads h \
         LEFT JOIN test_event_counter c USING (hospital) WHERE coalesce(c.applied, 0) <> h.position",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(mismatched, vec![], "events applied per hospital = head");
    let wrong_last: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM alert_board b WHERE b.last_position <> \
           (SELECT max(e.position) FROM events e \
            WHERE e.aggregate_type = 'alert' AND e.aggregate_id = b.hospital || '/' || b.alert_id)",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        wrong_last, 0,
        "every alert's last_position is its last event"
    );
    let (acknowledged, acks): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM alert_board WHERE acknowledged_at IS NOT NULL), \
                (SELECT count(*) FROM events WHERE event_type = 'AlertAcknowledged')",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!((acknowledged, acks), (20, 20));
    let live = board_rows(&app.pool).await;
    assert_eq!(live.len(), 60);
    fresh_rebuild(&app.pool).await;
    assert_eq!(board_rows(&app.pool).await, live);
    node.shutdown.trigger().await;
}

/// Invariant: a node that starts with a read model whose stored version differs from its
/// code rebuilds it before serving it as caught up, and records the current version.
#[actix_web::test]
async fn a_model_whose_version_changed_is_rebuilt_when_a_node_starts() {
    let app = spawn_app().await;
    let token = nurse(&app, H);
    for severity in ["critical", "high", "low"] {
        raise(&app, H, &token, severity, "icu").await;
    }
    caught_up(&app.pool, "alert_board").await;
    let live = board_rows(&app.pool).await;
    // As if an older release had built these tables (and built them wrong).
    sqlx::query("UPDATE projection_checkpoints SET version = 0 WHERE projector = 'alert_board'")
        .execute(&app.pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM alert_board")
        .execute(&app.pool)
        .await
        .unwrap();
    let admin = admin(&app, H);
    let stale = projector(&app, &app.address, &admin, "alert_board").await;
    assert_eq!(stale["state"], "stale_version");

    let (node, application) = second_node(&app).await;
    actix_web::rt::spawn(application.run_until_stopped());
    let status = wait_status(&app, &node.address, &admin, "alert_board", |p| {
        p["state"] == "caught_up"
    })
    .await;
    assert_eq!(status["version"], alert_board::VERSION);
    let stale_rows: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM projection_checkpoints WHERE projector = 'alert_board' AND version <> $1",
    )
    .bind(alert_board::VERSION)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(stale_rows, 0);
    assert_eq!(board_rows(&app.pool).await, live);
    node.shutdown.trigger().await;
}

// ---------------------------------------------------------------------------------------
// Operations: /api/admin/projections and `vigil projections`
// ---------------------------------------------------------------------------------------

#[actix_web::test]
async fn the_admin_endpoints_refuse_non_admins_and_unknown_models() {
    let app = spawn_app().await;
    let nurse = nurse(&app, H);
    let admin = admin(&app, H);
    let status = app.get("/api/admin/projections", &nurse).await;
    assert_problem(status, StatusCode::FORBIDDEN, "role_forbidden").await;
    let start = app
        .post_empty("/api/admin/projections/alert_board/rebuild", &nurse)
        .await;
    assert_problem(start, StatusCode::FORBIDDEN, "role_forbidden").await;
    let cancel = app
        .client
        .delete(app.url("/api/admin/projections/alert_board/rebuild"))
        .bearer_auth(&nurse)
        .send()
        .await
        .unwrap();
    assert_problem(cancel, StatusCode::FORBIDDEN, "role_forbidden").await;
    let anonymous = app
        .client
        .get(app.url("/api/admin/projections"))
        .send()
        .await
        .unwrap();
    assert_problem(anonymous, StatusCode::UNAUTHORIZED, "missing_token").await;

    let unknown = app
        .post_empty("/api/admin/projections/nope/rebuild", &admin)
        .await;
    let body = assert_problem(unknown, StatusCode::NOT_FOUND, "unknown_projection").await;
    assert!(body["detail"].as_str().unwrap().contains("alert_board"));
    let unknown = app
        .client
        .delete(app.url("/api/admin/projections/nope/rebuild"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_problem(unknown, StatusCode::NOT_FOUND, "unknown_projection").await;
    let idle = app
        .client
        .delete(app.url("/api/admin/projections/alert_board/rebuild"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_problem(idle, StatusCode::CONFLICT, "rebuild_not_running").await;
    let bad = app
        .post(
            "/api/admin/projections/alert_board/rebuild",
            &admin,
            json!({"restart": "yes"}),
        )
        .await;
    assert_problem(bad, StatusCode::BAD_REQUEST, "invalid_field").await;
    let put = app
        .client
        .put(app.url("/api/admin/projections"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_problem(put, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;

    let doc: Value = app
        .client
        .get(app.url("/api/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paths = &doc["paths"];
    assert!(paths["/api/admin/projections"]["get"].is_object());
    let rebuild = &paths["/api/admin/projections/{name}/rebuild"];
    assert!(rebuild["post"]["responses"]["409"].is_object());
    assert!(rebuild["delete"]["responses"]["202"].is_object());
}

/// Invariant (tenant isolation): an admin sees every projector, with the figures of their
/// own hospital only.
#[actix_web::test]
async fn the_status_lists_every_projector_with_the_callers_hospital_only() {
    let app = spawn_app().await;
    for _ in 0..3 {
        raise(&app, H, &nurse(&app, H), "high", "icu").await;
    }
    for _ in 0..2 {
        raise(&app, OTHER, &nurse(&app, OTHER), "low", "icu").await;
    }
    for model in vigil::projection::models() {
        caught_up(&app.pool, model.name()).await;
    }
    let response = app.get("/api/admin/projections", &admin(&app, H)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    assert!(!text.contains(OTHER), "another hospital leaks: {text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["hospital"], H);
    let names: Vec<&str> = body["projectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    let expected: Vec<&str> = vigil::projection::models()
        .iter()
        .map(|m| m.name())
        .collect();
    assert_eq!(names, expected);
    let board = body["projectors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "alert_board")
        .unwrap();
    assert_eq!(
        *board,
        json!({
            "name": "alert_board", "version": alert_board::VERSION, "state": "caught_up",
            "checkpoint": 3, "head": 3, "lag_events": 0, "lag_seconds": 0.0, "rebuild": null
        })
    );
}

/// A rebuild started over HTTP runs in the background and reports how it ended.
#[actix_web::test]
async fn a_rebuild_started_over_http_completes_in_the_background() {
    let app = spawn_app().await;
    let token = nurse(&app, H);
    for severity in ["critical", "high", "low"] {
        let (id, _) = raise(&app, H, &token, severity, "icu").await;
        transition(&app, H, &token, &id, "acknowledge").await;
    }
    caught_up(&app.pool, "alert_board").await;
    let live = board_rows(&app.pool).await;
    let admin = admin(&app, H);
    let response = app
        .post_empty("/api/admin/projections/alert_board/rebuild", &admin)
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let started: Value = response.json().await.unwrap();
    assert_eq!(started["name"], "alert_board");
    assert_eq!(started["rebuild"]["status"], "running");

    let done = wait_status(&app, &app.address, &admin, "alert_board", |p| {
        p["rebuild"]["status"] != "running"
    })
    .await;
    assert_eq!(done["rebuild"]["status"], "completed", "{done}");
    assert_eq!(done["state"], "caught_up");
    assert!(done["rebuild"]["finished_at"].is_string());
    assert_eq!(board_rows(&app.pool).await, live);
}

/// Invariants: one rebuild per model at a time, on this node (the registry) and across nodes
/// (the advisory lock); a cancelled rebuild keeps its shadow tables and checkpoints, and the
/// next one resumes from them and completes.
#[actix_web::test]
async fn a_running_rebuild_refuses_a_second_and_can_be_cancelled_then_resumed() {
    let app = spawn_app().await;
    let token = nurse(&app, H);
    for severity in ["critical", "high", "medium", "low", "high"] {
        raise(&app, H, &token, severity, "icu").await;
    }
    caught_up(&app.pool, "alert_board").await;
    let live = board_rows(&app.pool).await;
    let admin = admin(&app, H);
    let (node, application) = second_node(&app).await;
    actix_web::rt::spawn(application.run_until_stopped());

    // Hold the rebuild at its first step (dropping an old shadow table) until we let go.
    sqlx::query("CREATE TABLE alert_board_rebuild (LIKE alert_board INCLUDING ALL)")
        .execute(&app.pool)
        .await
        .unwrap();
    let mut blocker = PgConnection::connect(&app.db.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut blocker).await.unwrap();
    sqlx::query("LOCK TABLE alert_board_rebuild IN ACCESS SHARE MODE")
        .execute(&mut blocker)
        .await
        .unwrap();

    let path = "/api/admin/projections/alert_board/rebuild";
    let started = app.post(path, &admin, json!({"restart": true})).await;
    assert_eq!(started.status(), StatusCode::ACCEPTED);
    waiting_on_lock(&app.pool, &["DROP TABLE"]).await;
    let again = app.post_empty(path, &admin).await;
    assert_problem(again, StatusCode::CONFLICT, "rebuild_in_progress").await;
    let elsewhere = app
        .client
        .post(format!("{}{path}", node.address))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_problem(elsewhere, StatusCode::CONFLICT, "rebuild_in_progress").await;
    let cancel = app
        .client
        .delete(app.url(path))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), StatusCode::ACCEPTED);
    sqlx::query("COMMIT").execute(&mut blocker).await.unwrap();

    let cancelled = wait_status(&app, &app.address, &admin, "alert_board", |p| {
        p["rebuild"]["status"] != "running"
    })
    .await;
    assert_eq!(cancelled["rebuild"]["status"], "cancelled", "{cancelled}");
    assert_eq!(cancelled["state"], "rebuilding");
    assert_eq!(cancelled["rebuild"]["done"], 5, "its first batch committed");
    assert_eq!(cancelled["rebuild"]["total"], 5);
    let (shadow_table, shadow_checkpoints): (bool, i64) = sqlx::query_as(
        "SELECT to_regclass('alert_board_rebuild') IS NOT NULL, \
           (SELECT count(*) FROM projection_checkpoints WHERE projector = 'alert_board#rebuild')",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(shadow_table && shadow_checkpoints > 0);
    assert_eq!(
        board_rows(&app.pool).await,
        live,
        "the live board kept serving"
    );
    // Another node sees a rebuild that is not its own.
    let there = projector(&app, &node.address, &admin, "alert_board").await;
    assert_eq!(there["rebuild"]["status"], "pending");

    let resumed = app.post_empty(path, &admin).await;
    assert_eq!(resumed.status(), StatusCode::ACCEPTED);
    let done = wait_status(&app, &app.address, &admin, "alert_board", |p| {
        p["rebuild"]["status"] != "running"
    })
    .await;
    assert_eq!(done["rebuild"]["status"], "completed", "{done}");
    assert_eq!(done["state"], "caught_up");
    assert_eq!(board_rows(&app.pool).await, live);
    node.shutdown.trigger().await;
}

/// Invariants of a rebuild scoped to one hospital over HTTP: `"scope": "hospital"` rebuilds
/// the caller's hospital; another hospital's admin never sees it (nor its hospital's name),
/// and a rebuild of another scope is refused while it is interrupted.
#[actix_web::test]
async fn a_hospital_scoped_rebuild_is_invisible_to_other_hospitals() {
    let app = spawn_app().await;
    for hospital in [H, OTHER] {
        let token = nurse(&app, hospital);
        raise(&app, hospital, &token, "critical", "icu").await;
    }
    caught_up(&app.pool, "alert_board").await;
    let live = board_rows(&app.pool).await;
    // An interrupted rebuild of OTHER only.
    let cancelled = AtomicBool::new(true);
    let interrupted = engine::rebuild_scoped(
        &app.pool,
        &AlertBoard,
        &engine::Scope::Hospital(OTHER.into()),
        false,
        &cancelled,
        |_, _| {},
    )
    .await;
    assert!(matches!(interrupted, Err(ProjectionError::Cancelled)));

    let ours = admin(&app, H);
    let seen = projector(&app, &app.address, &ours, "alert_board").await;
    assert_eq!(seen["state"], "caught_up", "{seen}");
    assert!(seen["rebuild"].is_null(), "{seen}");
    let path = "/api/admin/projections/alert_board/rebuild";
    let refused = app.post_empty(path, &ours).await;
    let problem = assert_problem(refused, StatusCode::CONFLICT, "rebuild_scope_conflict").await;
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("another hospital") && !detail.contains(OTHER),
        "{detail}"
    );

    let theirs = admin(&app, OTHER);
    let seen = projector(&app, &app.address, &theirs, "alert_board").await;
    assert_eq!(seen["state"], "rebuilding", "{seen}");
    assert_eq!(seen["rebuild"]["scope"], "hospital", "{seen}");
    let started = app.post(path, &theirs, json!({"scope": "hospital"})).await;
    assert_eq!(started.status(), StatusCode::ACCEPTED);
    let done = wait_status(&app, &app.address, &theirs, "alert_board", |p| {
        p["rebuild"]["status"] != "running"
    })
    .await;
    assert_eq!(done["rebuild"]["status"], "completed", "{done}");
    assert_eq!(done["state"], "caught_up");
    assert_eq!(board_rows(&app.pool).await, live);
    let bad = app.post(path, &theirs, json!({"scope": "planet"})).await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
}

/// `vigil projections status` and `vigil projections rebuild` against DATABASE_URL.
#[actix_web::test]
async fn the_cli_shows_the_status_and_rebuilds_a_model() {
    let app = spawn_app().await;
    let token = nurse(&app, H);
    for severity in ["critical", "low"] {
        raise(&app, H, &token, severity, "icu").await;
    }
    caught_up(&app.pool, "alert_board").await;
    let live = board_rows(&app.pool).await;
    let (ok, stdout, stderr) = vigil_cli(&app.db.url, &["projections", "status"]).await;
    assert!(ok, "{stderr}");
    let row = stdout
        .lines()
        .find(|l| l.starts_with("alert_board") && l.contains(H))
        .unwrap_or_else(|| panic!("a row for alert_board/{H}: {stdout}"));
    let fields: Vec<&str> = row.split_whitespace().collect();
    let version = alert_board::VERSION.to_string();
    assert_eq!(
        fields[1..],
        [version.as_str(), "caught_up", H, "2", "2", "0", "0.0"]
    );

    let (ok, _, stderr) = vigil_cli(&app.db.url, &["projections", "rebuild", "alert_board"]).await;
    assert!(ok, "{stderr}");
    assert_eq!(board_rows(&app.pool).await, live);
    let (ok, _, stderr) = vigil_cli(
        &app.db.url,
        &["projections", "rebuild", "alert_board", "--hospital", H],
    )
    .await;
    assert!(ok, "{stderr}");
    assert_eq!(board_rows(&app.pool).await, live);
    let (ok, _, stderr) = vigil_cli(&app.db.url, &["projections", "rebuild", "nope"]).await;
    assert!(!ok);
    assert!(
        stderr.contains("no read model is called `nope`"),
        "{stderr}"
    );
}

/// Runs the `vigil` binary against `url` off the test's runtime (whose projector tasks must
/// keep running: a rebuild's swap waits for them); returns (success, stdout, stderr).
async fn vigil_cli(url: &str, args: &[&str]) -> (bool, String, String) {
    let url = url.to_owned();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let output = Command::new(env!("CARGO_BIN_EXE_vigil"))
            .args(&args)
            .env("DATABASE_URL", &url)
            .env("RUST_LOG", "warn")
            .output()
            .expect("run vigil");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    })
    .await
    .expect("vigil ran")
}
