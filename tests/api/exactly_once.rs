//! At most once under faults: a command is applied at most once whatever fails around its
//! commit, a keyed retry answers the first outcome, `503 unavailable` means nothing was
//! persisted, and `GET commands/{id}` answers a command's outcome for good.
//!
//! The fault tests kill PostgreSQL backends (`pg_terminate_backend`) or restart PostgreSQL
//! while commands are in flight, then check every command against the log.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aggregates::alert::{Alert, AlertCommand, Severity};
use aggregates::types::{AlertMessage, HospitalId, Role, UserId};
use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;
use vigil::command::{CommandBus, CommandContext, CommandError, Resolution};

use crate::helpers::{assert_problem, spawn_app, Node, PrivateCluster, TestApp, TEST_SECRET};

const H: &str = "st-marys";

fn context(command_id: Uuid) -> CommandContext {
    CommandContext {
        hospital: HospitalId::parse(H).unwrap(),
        user: UserId::parse("nurse-amy").unwrap(),
        role: Role::Nurse,
        command_id,
        correlation_id: command_id,
        causation_id: command_id,
    }
}

fn raise(message: &str) -> AlertCommand {
    AlertCommand::Raise {
        severity: Severity::High,
        message: AlertMessage::parse(message).unwrap(),
        department: None,
        patient: None,
        by: UserId::parse("nurse-amy").unwrap(),
        at: chrono::Utc::now(),
    }
}

/// How many `AlertRaised` events carry `message` (messages are unique per test command).
async fn raised_with(pool: &PgPool, message: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE event_type = 'AlertRaised' AND payload::text LIKE $1",
    )
    .bind(format!("%\"{message}\"%"))
    .fetch_one(pool)
    .await
    .unwrap()
}

// ---------------------------------------------------------------------------------------
// The guard and the fence, on the bus.
// ---------------------------------------------------------------------------------------

/// Invariant: one command id commits in one transaction at most — here eight concurrent runs
/// of the same command id, each against a different new alert, commit one alert, and every
/// run answers that one outcome.
#[actix_web::test]
async fn a_command_id_commits_at_most_once_even_when_run_concurrently() {
    // Arrange
    let app = spawn_app().await;
    let bus = Arc::new(CommandBus::new(app.pool.clone()));
    let ctx = context(Uuid::new_v4());

    // Act
    let runs = join_all((0..8).map(|_| {
        let (bus, ctx) = (bus.clone(), ctx.clone());
        async move {
            let alert = Uuid::new_v4().to_string();
            bus.execute::<Alert>(&ctx, &alert, || raise("Bed 7: SpO2 84%"))
                .await
        }
    }))
    .await;

    // Assert
    let outcomes: Vec<_> = runs
        .into_iter()
        .map(|run| run.expect("every run answers"))
        .collect();
    assert!(outcomes.iter().all(|o| o == &outcomes[0]), "{outcomes:?}");
    assert_eq!(app.event_count().await, 1);
}

/// Invariant: once resolved as never committed, a command id can never commit; resolving is
/// final.
#[actix_web::test]
async fn a_command_resolved_as_never_committed_can_never_commit() {
    // Arrange
    let app = spawn_app().await;
    let bus = CommandBus::new(app.pool.clone());
    let hospital = HospitalId::parse(H).unwrap();
    let command_id = Uuid::new_v4();

    // Act
    let first = bus.resolve(command_id, &hospital).await.unwrap();
    let late = bus
        .execute::<Alert>(&context(command_id), &command_id.to_string(), || {
            raise("a late attempt")
        })
        .await;

    // Assert
    assert_eq!(first, Resolution::NeverCommitted);
    assert!(
        matches!(late, Err(CommandError::Unavailable(_))),
        "a fenced command is refused as certainly not persisted: {late:?}"
    );
    assert_eq!(app.event_count().await, 0);
    assert_eq!(
        bus.resolve(command_id, &hospital).await.unwrap(),
        Resolution::NeverCommitted
    );
}

// ---------------------------------------------------------------------------------------
// GET commands/{command_id}.
// ---------------------------------------------------------------------------------------

#[actix_web::test]
async fn a_committed_command_is_answered_to_its_issuer_with_its_positions() {
    // Arrange
    let app = spawn_app().await;
    let amy = app.token(H, "nurse-amy", Role::Nurse);
    let bob = app.token(H, "nurse-bob", Role::Nurse);
    let raised = app.raise_alert(H, &amy, "high").await;
    let command_id = raised["aggregate_id"].as_str().unwrap();
    let path = format!("/api/hospitals/{H}/commands/{command_id}");

    // Act
    let mine = app.get(&path, &amy).await;
    let theirs = app.get(&path, &bob).await;

    // Assert
    assert_eq!(mine.status(), StatusCode::OK);
    assert_eq!(mine.json::<Value>().await.unwrap(), raised);
    assert_problem(theirs, StatusCode::NOT_FOUND, "command_not_found").await;
}

/// Invariant: a 404 is final — the command asked about can no longer commit.
#[actix_web::test]
async fn an_unknown_command_is_not_found_and_can_never_commit_afterwards() {
    // Arrange
    let app = spawn_app().await;
    let amy = app.token(H, "nurse-amy", Role::Nurse);
    let command_id = Uuid::new_v4();

    // Act
    let answer = app
        .get(&format!("/api/hospitals/{H}/commands/{command_id}"), &amy)
        .await;
    let late = CommandBus::new(app.pool.clone())
        .execute::<Alert>(&context(command_id), &command_id.to_string(), || {
            raise("after the 404")
        })
        .await;

    // Assert
    assert_problem(answer, StatusCode::NOT_FOUND, "command_not_found").await;
    assert!(late.is_err(), "{late:?}");
    assert_eq!(app.event_count().await, 0);
    let malformed = app
        .get(&format!("/api/hospitals/{H}/commands/not-a-uuid"), &amy)
        .await;
    assert_problem(malformed, StatusCode::BAD_REQUEST, "invalid_field").await;
}

// ---------------------------------------------------------------------------------------
// Keyed retries: the key's states.
// ---------------------------------------------------------------------------------------

async fn post_keyed(app: &TestApp, token: &str, key: &str, message: &str) -> reqwest::Response {
    app.client
        .post(app.url(&format!("/api/hospitals/{H}/alerts")))
        .bearer_auth(token)
        .header("Idempotency-Key", key)
        .json(&json!({"severity": "high", "message": message}))
        .send()
        .await
        .unwrap()
}

/// A key whose attempt is running (its command id not committed) answers 409 with
/// `Retry-After`; once the attempt is over, the retry resolves that command (never
/// committed), runs the command once under a new id, and later retries replay that.
#[actix_web::test]
async fn a_retry_waits_for_a_running_attempt_then_takes_over_one_that_never_committed() {
    // Arrange: a key whose current attempt runs command `never`, which has not committed.
    let app = spawn_app().await;
    let amy = app.token(H, "nurse-amy", Role::Nurse);
    assert_eq!(
        post_keyed(&app, &amy, "k-1", "Bed 3").await.status(),
        StatusCode::CREATED
    );
    let never = Uuid::new_v4();
    sqlx::query(
        "UPDATE idempotency_keys SET command_id = $1, response_status = NULL, \
         response_body = NULL, attempt_started_at = clock_timestamp()",
    )
    .bind(never)
    .execute(&app.pool)
    .await
    .unwrap();

    // Act + Assert: running → 409 with Retry-After.
    let waiting = post_keyed(&app, &amy, "k-1", "Bed 3").await;
    let retry_after: u64 = waiting.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=3).contains(&retry_after), "{retry_after}");
    let body = assert_problem(waiting, StatusCode::CONFLICT, "idempotency_key_in_flight").await;
    assert_eq!(body["retry_after"], retry_after);

    // Act + Assert: the attempt ended with its outcome unknown → resolved, run once.
    sqlx::query("UPDATE idempotency_keys SET attempt_started_at = NULL")
        .execute(&app.pool)
        .await
        .unwrap();
    let taken_over = post_keyed(&app, &amy, "k-1", "Bed 3").await;
    assert_eq!(taken_over.status(), StatusCode::CREATED);
    assert!(taken_over.headers().get("idempotent-replayed").is_none());
    let taken_over: Value = taken_over.json().await.unwrap();
    let replayed = post_keyed(&app, &amy, "k-1", "Bed 3").await;
    assert_eq!(replayed.headers()["idempotent-replayed"], "true");
    assert_eq!(replayed.json::<Value>().await.unwrap(), taken_over);
    assert_eq!(
        raised_with(&app.pool, "Bed 3").await,
        2,
        "the first run and the take-over"
    );
    let late = CommandBus::new(app.pool.clone())
        .execute::<Alert>(&context(never), &never.to_string(), || raise("Bed 3"))
        .await;
    assert!(
        late.is_err(),
        "the superseded command id can no longer commit"
    );
    assert_eq!(raised_with(&app.pool, "Bed 3").await, 2);
}

/// An attempt that ended with its outcome unknown but had in fact committed: the retry finds
/// it in the log and answers the original status and positions.
#[actix_web::test]
async fn a_retry_of_a_command_that_committed_unseen_answers_the_original_outcome() {
    // Arrange: vitals answer 201 though they extend an existing aggregate (version > 1).
    let app = spawn_app().await;
    let amy = app.token(H, "nurse-amy", Role::Nurse);
    let record = |key: &'static str| {
        app.client
            .post(app.url(&format!("/api/hospitals/{H}/patients/p-1/vitals")))
            .bearer_auth(&amy)
            .header("Idempotency-Key", key)
            .json(&json!({"heart_rate": 72}))
            .send()
    };
    assert_eq!(record("v-1").await.unwrap().status(), StatusCode::CREATED);
    let first = record("v-2").await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.unwrap();
    sqlx::query(
        "UPDATE idempotency_keys SET response_status = NULL, response_body = NULL \
         WHERE key = 'v-2'",
    )
    .execute(&app.pool)
    .await
    .unwrap();

    // Act
    let retry = record("v-2").await.unwrap();

    // Assert
    assert_eq!(retry.status(), StatusCode::CREATED);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(retry.json::<Value>().await.unwrap(), first);
    assert_eq!(app.event_count().await, 2);
}

// ---------------------------------------------------------------------------------------
// Under faults.
// ---------------------------------------------------------------------------------------

/// What the clients saw, for the assertions and the figures printed.
#[derive(Default)]
struct Tally {
    committed: AtomicUsize,
    retries: AtomicUsize,
    outcome_unknown: AtomicUsize,
    unavailable: AtomicUsize,
    in_flight: AtomicUsize,
    transport_errors: AtomicUsize,
}

impl Tally {
    fn print(&self, what: &str, faults: usize) {
        eprintln!(
            "{what}: {faults} faults injected; committed {}, retries {}, outcome_unknown {}, \
             unavailable {}, in_flight {}, transport errors {}",
            self.committed.load(Ordering::Relaxed),
            self.retries.load(Ordering::Relaxed),
            self.outcome_unknown.load(Ordering::Relaxed),
            self.unavailable.load(Ordering::Relaxed),
            self.in_flight.load(Ordering::Relaxed),
            self.transport_errors.load(Ordering::Relaxed),
        );
    }
}

/// A client that sends keyed commands and retries each until it gets an answer, as the
/// README tells clients to.
struct KeyedClient {
    client: reqwest::Client,
    address: String,
    token: String,
}

impl KeyedClient {
    /// Raises alert `key` (the message is the key), retrying through faults; returns the
    /// committed outcome, after checking that one more retry replays it exactly.
    async fn raise(&self, key: &str, tally: &Tally) -> Value {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            assert!(Instant::now() < deadline, "{key}: no answer within 90 s");
            let sent = self
                .client
                .post(format!("{}/api/hospitals/{H}/alerts", self.address))
                .bearer_auth(&self.token)
                .header("Idempotency-Key", key)
                .json(&json!({"severity": "high", "message": key}))
                .send()
                .await;
            let response = match sent {
                Ok(response) => response,
                Err(_) => {
                    tally.transport_errors.fetch_add(1, Ordering::Relaxed);
                    tally.retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    continue;
                }
            };
            let status = response.status();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            match (status, body["code"].as_str()) {
                (StatusCode::CREATED, _) => {
                    tally.committed.fetch_add(1, Ordering::Relaxed);
                    return body;
                }
                (StatusCode::SERVICE_UNAVAILABLE, Some("outcome_unknown")) => {
                    tally.outcome_unknown.fetch_add(1, Ordering::Relaxed);
                }
                (StatusCode::SERVICE_UNAVAILABLE, Some("unavailable")) => {
                    tally.unavailable.fetch_add(1, Ordering::Relaxed);
                }
                (StatusCode::CONFLICT, Some("idempotency_key_in_flight")) => {
                    tally.in_flight.fetch_add(1, Ordering::Relaxed);
                }
                (StatusCode::TOO_MANY_REQUESTS, _) => {
                    let wait = body["retry_after"].as_u64().unwrap_or(1);
                    tokio::time::sleep(Duration::from_secs(wait)).await;
                }
                other => panic!("{key}: unexpected answer {other:?}: {body}"),
            }
            tally.retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }
}

/// Checks, after the faults, that every key committed exactly once, at the positions its
/// answer gave.
async fn assert_each_key_applied_once(pool: &PgPool, answers: &HashMap<String, Value>) {
    for (key, answer) in answers {
        let rows: Vec<(i64, Option<Uuid>)> = sqlx::query_as(
            "SELECT position, command_id FROM events \
             WHERE event_type = 'AlertRaised' AND payload::text LIKE $1",
        )
        .bind(format!("%\"{key}\"%"))
        .fetch_all(pool)
        .await
        .unwrap();
        assert_eq!(rows.len(), 1, "{key} applied {} times", rows.len());
        assert_eq!(
            answer["events"][0]["position"].as_i64(),
            Some(rows[0].0),
            "{key}: the answer names the committed position"
        );
    }
}

/// Faults the backend killer injects at most: enough to hit many commits mid-flight, bounded
/// so that on a loaded machine the writers still finish (each fault can cost a keyed retry
/// the in-flight window).
const MAX_KILL_ROUNDS: u64 = 300;

/// Terminates every other backend of the test's database every few milliseconds until
/// `stop` or [`MAX_KILL_ROUNDS`]; returns how many it terminated.
async fn kill_backends_until(url: &str, stop: &AtomicBool) -> usize {
    let mut killer = PgConnection::connect(url).await.unwrap();
    let mut killed = 0usize;
    let mut round = 0u64;
    while !stop.load(Ordering::Relaxed) && round < MAX_KILL_ROUNDS {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid() \
             AND backend_type = 'client backend'",
        )
        .fetch_one(&mut killer)
        .await
        .unwrap();
        killed += n as usize;
        round += 1;
        // 15..45 ms apart: some kills land mid-transaction, some between.
        tokio::time::sleep(Duration::from_millis(15 + (round * 7919) % 31)).await;
    }
    killed
}

/// Invariant: with PostgreSQL backends killed at random around commits, every keyed command
/// (retried until answered) is applied exactly once and every retry answers the same
/// positions; an unkeyed command answered `503 unavailable` persisted nothing, and one
/// answered `outcome_unknown` is resolved by `GET commands/{id}` in agreement with the log.
#[actix_web::test]
async fn commands_apply_at_most_once_while_backends_are_killed_around_commits() {
    // Arrange
    let app = spawn_app().await;
    let amy = app.token(H, "nurse-amy", Role::Nurse);
    let keyed = KeyedClient {
        client: app.client.clone(),
        address: app.address.clone(),
        token: amy.clone(),
    };
    let tally = Tally::default();
    let stop = AtomicBool::new(false);
    let unkeyed_answers = tokio::sync::Mutex::new(Vec::<(String, StatusCode, Value)>::new());

    // Act: six keyed writers and two unkeyed ones, while backends are killed.
    let keyed_writers = join_all((0..6).map(|w| {
        let (keyed, tally) = (&keyed, &tally);
        async move {
            let mut answers = HashMap::new();
            for i in 0..25 {
                let key = format!("kill-w{w}-k{i}");
                let answer = keyed.raise(&key, tally).await;
                answers.insert(key, answer);
            }
            answers
        }
    }));
    let unkeyed_writers = join_all((0..2).map(|w| {
        let (app, amy, answers) = (&app, &amy, &unkeyed_answers);
        async move {
            for i in 0..40 {
                let message = format!("plain-w{w}-{i}");
                let sent = app
                    .client
                    .post(app.url(&format!("/api/hospitals/{H}/alerts")))
                    .bearer_auth(amy)
                    .json(&json!({"severity": "low", "message": message}))
                    .send()
                    .await;
                if let Ok(response) = sent {
                    let status = response.status();
                    let body = response.json().await.unwrap_or(Value::Null);
                    answers.lock().await.push((message, status, body));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }));
    let writers = async {
        let (keyed, ()) = tokio::join!(keyed_writers, async {
            unkeyed_writers.await;
        });
        stop.store(true, Ordering::Relaxed);
        keyed
    };
    let (answers, killed) = tokio::join!(writers, kill_backends_until(&app.db.url, &stop));

    // Assert
    tally.print("backends killed", killed);
    assert!(killed >= 100, "faults injected: {killed}");
    let answers: HashMap<String, Value> = answers.into_iter().flatten().collect();
    assert_eq!(answers.len(), 150);
    assert_each_key_applied_once(&app.pool, &answers).await;
    for (key, answer) in &answers {
        let again = keyed.raise(key, &tally).await;
        assert_eq!(&again, answer, "{key}: a later retry answers the same");
    }
    let unkeyed = unkeyed_answers.into_inner();
    let mut by_code: HashMap<String, usize> = HashMap::new();
    for (message, status, body) in &unkeyed {
        let code = body["code"].as_str().unwrap_or("").to_owned();
        *by_code
            .entry(format!("{} {code}", status.as_u16()))
            .or_default() += 1;
        let in_log = raised_with(&app.pool, message).await;
        match (*status, code.as_str()) {
            (StatusCode::CREATED, _) => assert_eq!(in_log, 1, "{message}"),
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable") => {
                assert_eq!(in_log, 0, "{message}: `unavailable` persisted something")
            }
            (StatusCode::SERVICE_UNAVAILABLE, "outcome_unknown") => {
                let command_id = body["command_id"].as_str().unwrap();
                let resolved = app
                    .get(&format!("/api/hospitals/{H}/commands/{command_id}"), &amy)
                    .await;
                match resolved.status() {
                    StatusCode::OK => assert_eq!(in_log, 1, "{message}"),
                    StatusCode::NOT_FOUND => assert_eq!(in_log, 0, "{message}"),
                    other => panic!("{message}: resolving answered {other}"),
                }
            }
            other => panic!("{message}: unexpected answer {other:?}: {body}"),
        }
    }
    eprintln!("unkeyed answers: {by_code:?}");
}

/// Invariant: across PostgreSQL restarts (`pg_ctl restart -m fast`) with keyed commands in
/// flight, every key commits exactly once and its retries answer the same positions.
#[actix_web::test]
async fn keyed_commands_apply_at_most_once_across_postgresql_restarts() {
    keyed_writers_through(PostgresFault::Restart).await;
}

/// Invariant: the same across PostgreSQL *crashes* (`pg_ctl stop -m immediate`: no final WAL
/// flush). Key rows are committed without waiting for their flush (`http::idempotency`);
/// a crash may lose the latest of them, and still no key applies twice, because a command's
/// own synchronous commit makes its key's claim durable first.
#[actix_web::test]
async fn keyed_commands_apply_at_most_once_across_postgresql_crashes() {
    keyed_writers_through(PostgresFault::Crash).await;
}

/// How the keyed writers' PostgreSQL goes away.
#[derive(Clone, Copy)]
enum PostgresFault {
    /// `pg_ctl restart -m fast`.
    Restart,
    /// `pg_ctl stop -m immediate`, then start.
    Crash,
}

/// Four keyed writers while PostgreSQL goes away five times; every key applied once, and each
/// retry answers the first answer.
async fn keyed_writers_through(fault: PostgresFault) {
    // Arrange: a cluster of its own (restarting the shared one would disturb every other test).
    let cluster = PrivateCluster::start("vx").await;
    let url = cluster.url();
    let node = Node::start(&url).await;
    let token = node.token(H, "nurse-amy", Role::Nurse);
    let keyed = KeyedClient {
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap(),
        address: node.address.clone(),
        token,
    };
    let tally = Tally::default();
    let stop = AtomicBool::new(false);

    // Act: four writers while PostgreSQL goes away five times.
    let writers = async {
        let answers = join_all((0..4).map(|w| {
            let (keyed, tally, stop) = (&keyed, &tally, &stop);
            async move {
                let mut answers = HashMap::new();
                let mut i = 0;
                while i < 20 || !stop.load(Ordering::Relaxed) {
                    let key = format!("restart-w{w}-k{i}");
                    answers.insert(key.clone(), keyed.raise(&key, tally).await);
                    i += 1;
                }
                answers
            }
        }))
        .await;
        answers
    };
    let faults = async {
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            match fault {
                PostgresFault::Restart => cluster.restart().await,
                PostgresFault::Crash => cluster.crash_restart().await,
            }
        }
        stop.store(true, Ordering::Relaxed);
    };
    let (answers, ()) = tokio::join!(writers, faults);

    // Assert
    let label = match fault {
        PostgresFault::Restart => "PostgreSQL restarts",
        PostgresFault::Crash => "PostgreSQL crashes",
    };
    tally.print(label, 5);
    let answers: HashMap<String, Value> = answers.into_iter().flatten().collect();
    let pool = PgPool::connect(&url).await.unwrap();
    assert_each_key_applied_once(&pool, &answers).await;
    for (key, answer) in &answers {
        assert_eq!(&keyed.raise(key, &tally).await, answer, "{key}");
    }
    pool.close().await;
    node.shutdown.trigger().await;
}

/// A `vigil serve` child process on a fixed port, killed with SIGKILL (`Child::kill`) by the
/// test: no shutdown code of the server runs.
struct KillableServer {
    child: std::process::Child,
}

impl KillableServer {
    /// Starts `vigil serve` on `port` against `database_url`, and waits until it answers.
    async fn start(port: u16, database_url: &str) -> Self {
        use std::process::{Command, Stdio};
        let mut command = Command::new(env!("CARGO_BIN_EXE_vigil"));
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("VIGIL_") {
                command.env_remove(key);
            }
        }
        let child = command
            .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
            .env("DATABASE_URL", database_url)
            .env("VIGIL_JWT_SECRET", TEST_SECRET)
            .env("VIGIL_COMMAND_RATE", "1000")
            .env("VIGIL_COMMAND_BURST", "1000")
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn vigil serve");
        let server = Self { child };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = client
                .get(format!("http://127.0.0.1:{port}/readyz"))
                .send()
                .await;
            if matches!(&ready, Ok(r) if r.status() == StatusCode::OK) {
                return server;
            }
            assert!(
                Instant::now() < deadline,
                "vigil serve not ready: {ready:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL, and reaps the process.
    fn kill(mut self) {
        self.child.kill().expect("kill -9 vigil");
        self.child.wait().expect("reap vigil");
    }
}

impl Drop for KillableServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Invariant: with the server killed (`kill -9`) at random moments while keyed commands are
/// in flight and restarted, every key commits exactly once and its retries answer the same
/// positions.
#[actix_web::test]
async fn keyed_commands_apply_at_most_once_across_kill_9_of_the_server() {
    // Arrange
    let db = crate::helpers::TestDatabase::create().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let server = tokio::sync::Mutex::new(Some(KillableServer::start(port, &db.url).await));
    let keys = vigil::auth::JwtKeys::from_secret(TEST_SECRET).unwrap();
    let keyed = KeyedClient {
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap(),
        address: format!("http://127.0.0.1:{port}"),
        token: keys
            .mint(
                &UserId::parse("nurse-amy").unwrap(),
                &HospitalId::parse(H).unwrap(),
                Role::Nurse,
                Duration::from_secs(3600),
            )
            .unwrap(),
    };
    let tally = Tally::default();
    let stop = AtomicBool::new(false);

    // Act: four writers while the server is killed and restarted five times.
    let writers = join_all((0..4).map(|w| {
        let (keyed, tally, stop) = (&keyed, &tally, &stop);
        async move {
            let mut answers = HashMap::new();
            let mut i = 0;
            while i < 10 || !stop.load(Ordering::Relaxed) {
                let key = format!("kill9-w{w}-k{i}");
                answers.insert(key.clone(), keyed.raise(&key, tally).await);
                i += 1;
            }
            answers
        }
    }));
    let kills = async {
        for round in 0..5u64 {
            tokio::time::sleep(Duration::from_millis(150 + round * 61)).await;
            if let Some(running) = server.lock().await.take() {
                running.kill();
            }
            *server.lock().await = Some(KillableServer::start(port, &db.url).await);
        }
        stop.store(true, Ordering::Relaxed);
    };
    let (answers, ()) = tokio::join!(writers, kills);

    // Assert
    tally.print("kill -9 of the server", 5);
    assert!(
        tally.transport_errors.load(Ordering::Relaxed) > 0,
        "the kills cut requests off"
    );
    let answers: HashMap<String, Value> = answers.into_iter().flatten().collect();
    let pool = PgPool::connect(&db.url).await.unwrap();
    assert_each_key_applied_once(&pool, &answers).await;
    for (key, answer) in &answers {
        assert_eq!(&keyed.raise(key, &tally).await, answer, "{key}");
    }
    pool.close().await;
    drop(server);
}
