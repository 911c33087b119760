//! The integration-test harness: a real PostgreSQL started by the harness itself (shared by
//! every test of this binary, one fresh database per test, dropped afterwards) and the real
//! server on port 0.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use aggregates::types::{HospitalId, Role, UserId};
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;
use vigil::auth::{Claims, JwtKeys};
use vigil::config::{DatabaseSettings, JwtAlgorithm, JwtSettings, ServeSettings};
use vigil::startup::Application;
use vigil::store::embedded::{EmbeddedError, EmbeddedPostgres};

/// Longest wait for anything that should happen within a few round trips or polls.
pub const WAIT: Duration = Duration::from_secs(20);

/// How often [`eventually`] probes again.
const POLL: Duration = Duration::from_millis(20);

/// Polls `probe` until it returns `Some`, for at most `timeout`; `None` if the deadline
/// passes. The one polling loop of the suite: a test waits for a condition, never for a fixed
/// time. Most tests want [`eventually`], which fails the test at the deadline; this is for
/// waits whose caller decides what a timeout means.
pub async fn poll_for<T, F, Fut>(timeout: Duration, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = tokio::time::Instant::now();
    loop {
        if let Some(found) = probe().await {
            return Some(found);
        }
        if started.elapsed() >= timeout {
            return None;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Polls `probe` until it returns `Some`, for at most `timeout`; panics with `what` (and the
/// time waited) when the deadline passes.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    match poll_for(timeout, probe).await {
        Some(found) => found,
        None => panic!("timed out after {timeout:?} waiting for {what}"),
    }
}

/// [`eventually`] for a probe that sees something on every try: `Ok` ends the wait, `Err`
/// describes what was seen instead, and the last description is in the failure message.
pub async fn eventually_seen<T, F, Fut>(timeout: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let last = std::cell::RefCell::new(String::new());
    let seen = &last;
    let found = poll_for(timeout, move || {
        let attempt = probe();
        async move {
            match attempt.await {
                Ok(found) => Some(found),
                Err(description) => {
                    *seen.borrow_mut() = description;
                    None
                }
            }
        }
    })
    .await;
    match found {
        Some(found) => found,
        None => panic!(
            "timed out after {timeout:?} waiting for {what}; last seen: {}",
            last.borrow()
        ),
    }
}

/// [`eventually`] for a plain condition.
pub async fn until<F, Fut>(timeout: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually(timeout, what, || {
        let holds = condition();
        async move { holds.await.then_some(()) }
    })
    .await
}

/// The paths of the API, by resource, so that a test names what it calls instead of
/// building `/api/hospitals/{h}/...` by hand.
pub mod paths {
    use std::fmt::Display;

    /// `/api/hospitals/{hospital}/{rest}`.
    pub fn hospital(hospital: impl Display, rest: impl Display) -> String {
        format!("/api/hospitals/{hospital}/{rest}")
    }

    /// The alerts of a hospital (POST raises one).
    pub fn alerts(hospital: impl Display) -> String {
        self::hospital(hospital, "alerts")
    }

    /// A command on one alert: `acknowledge`, `escalate`, `resolve`.
    pub fn alert(hospital: impl Display, alert: impl Display, command: &str) -> String {
        self::hospital(hospital, format!("alerts/{alert}/{command}"))
    }

    /// The cases of a hospital (POST opens one, GET lists them).
    pub fn cases(hospital: impl Display) -> String {
        self::hospital(hospital, "cases")
    }

    /// One case (its thread view).
    pub fn case(hospital: impl Display, case: impl Display) -> String {
        self::hospital(hospital, format!("cases/{case}"))
    }

    /// A command on one case: `assign`, `messages`, `read`, `status`, ...
    pub fn case_command(hospital: impl Display, case: impl Display, command: &str) -> String {
        self::hospital(hospital, format!("cases/{case}/{command}"))
    }

    /// A patient's chart.
    pub fn patient(hospital: impl Display, patient: impl Display) -> String {
        self::hospital(hospital, format!("patients/{patient}"))
    }

    /// A patient's vitals (POST records a reading).
    pub fn vitals(hospital: impl Display, patient: impl Display) -> String {
        self::hospital(hospital, format!("patients/{patient}/vitals"))
    }

    /// The caller's notifications.
    pub fn notifications(hospital: impl Display) -> String {
        self::hospital(hospital, "notifications")
    }

    /// Marks one notification read.
    pub fn notification_read(hospital: impl Display, notification: impl Display) -> String {
        self::hospital(hospital, format!("notifications/{notification}/read"))
    }

    /// The appointments of a hospital (POST books one).
    pub fn appointments(hospital: impl Display) -> String {
        self::hospital(hospital, "appointments")
    }

    /// One appointment.
    pub fn appointment(hospital: impl Display, appointment: impl Display) -> String {
        self::hospital(hospital, format!("appointments/{appointment}"))
    }

    /// The hospital's event stream (polling).
    pub fn events(hospital: impl Display) -> String {
        self::hospital(hospital, "events")
    }

    /// The hospital's dashboard metrics.
    pub fn metrics(hospital: impl Display) -> String {
        self::hospital(hospital, "metrics")
    }

    /// The hospital's WebSocket.
    pub fn ws(hospital: impl Display) -> String {
        self::hospital(hospital, "ws")
    }

    /// The hospital's escalation deadlines.
    pub fn escalation_policy(hospital: impl Display) -> String {
        self::hospital(hospital, "policies/escalation")
    }

    /// `path` with the query string `query` (given without its `?`).
    pub fn with_query(path: String, query: impl Display) -> String {
        format!("{path}?{query}")
    }
}

/// The HS256 secret every test server uses.
pub const TEST_SECRET: &str = "vigil-integration-tests-secret-0123456789";

/// The shared test cluster, started on first use. It lives under the target dir and is
/// reused by later runs; `.ci/run` stops it at the end.
pub fn postgres() -> &'static EmbeddedPostgres {
    static PG: OnceLock<EmbeddedPostgres> = OnceLock::new();
    PG.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("vigil-test-pg");
        EmbeddedPostgres::start(&dir, 5432).expect("the test PostgreSQL must start")
    })
}

/// A fresh, migrated database; dropped when the guard is dropped.
pub struct TestDatabase {
    pub name: String,
    pub url: String,
}

impl TestDatabase {
    pub async fn create() -> Self {
        let pg = tokio::task::spawn_blocking(postgres)
            .await
            .expect("start PostgreSQL");
        let name = format!("test_{}", Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&pg.url("postgres"))
            .await
            .expect("connect as admin");
        sqlx::query(&format!(r#"CREATE DATABASE "{name}""#))
            .execute(&mut admin)
            .await
            .expect("create test database");
        admin.close().await.ok();
        let url = pg.url(&name);
        let pool = PgPool::connect(&url)
            .await
            .expect("connect to test database");
        vigil::store::MIGRATOR.run(&pool).await.expect("migrate");
        pool.close().await;
        Self { name, url }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        let url = postgres().url("postgres");
        // Drop runs outside async; use a private runtime on a plain thread.
        let handle = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let mut admin = PgConnection::connect(&url).await?;
                sqlx::query(&format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#))
                    .execute(&mut admin)
                    .await?;
                Ok::<_, sqlx::Error>(())
            })
            .map_err(|e| std::io::Error::other(e.to_string()))
        });
        if let Ok(Err(e)) = handle.join() {
            eprintln!("could not drop test database {}: {e}", self.name);
        }
    }
}

/// Settings for a test server on `url`.
pub fn settings(url: &str) -> ServeSettings {
    ServeSettings {
        bind: ([127, 0, 0, 1], 0).into(),
        database: DatabaseSettings {
            database_url: Some(url.to_owned()),
            data_dir: PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("unused-data-dir"),
            db_pool_size: 8,
        },
        jwt: JwtSettings {
            algorithm: JwtAlgorithm::Hs256,
            secret: Some(TEST_SECRET.to_owned()),
            public_key: None,
            private_key: None,
            issuer: None,
            audience: None,
        },
        command_rate: 1000.0,
        command_burst: 1000.0,
        projection_spacing_ms: vigil::config::DEFAULT_PROJECTION_SPACING_MS,
        workers: Some(2),
        demo: false,
        realtime: Default::default(),
        presence: Default::default(),
        ingest: Default::default(),
        node_id: None,
    }
}

/// A running server and what tests need to talk to it.
pub struct TestApp {
    pub address: String,
    pub port: u16,
    /// Shuts the server down gracefully (as SIGTERM would).
    pub shutdown: vigil::startup::Shutdown,
    pub client: reqwest::Client,
    pub keys: JwtKeys,
    pub pool: PgPool,
    /// Held for its `Drop`, which drops the test's database.
    #[allow(dead_code)]
    pub db: TestDatabase,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Spawns a server with adjusted settings.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut ServeSettings)) -> TestApp {
    let db = TestDatabase::create().await;
    let mut settings = settings(&db.url);
    adjust(&mut settings);
    let node = Node::start_with(&settings, Duration::from_secs(30)).await;
    let pool = PgPool::connect(&db.url).await.expect("test pool");
    TestApp {
        address: node.address,
        port: node.port,
        shutdown: node.shutdown,
        client: node.client,
        keys: node.keys,
        pool,
        db,
    }
}

/// A token signed with `keys` for `user` of `hospital` with `role`, valid for an hour.
fn mint(keys: &JwtKeys, hospital: &str, user: &str, role: Role) -> String {
    keys.mint(
        &UserId::parse(user).unwrap(),
        &HospitalId::parse(hospital).unwrap(),
        role,
        Duration::from_secs(3600),
    )
    .unwrap()
}

impl TestApp {
    /// A token for `user` of `hospital` with `role`, valid for an hour.
    pub fn token(&self, hospital: &str, user: &str, role: Role) -> String {
        mint(&self.keys, hospital, user, role)
    }

    /// A token with explicit claims (expired, foreign, ...).
    pub fn token_with(&self, claims: &Claims) -> String {
        self.keys.mint_claims(claims).unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// POST JSON with a bearer token.
    pub async fn post(&self, path: &str, token: &str, body: Value) -> Response {
        self.client
            .post(self.url(path))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("request")
    }

    /// POST with no body.
    pub async fn post_empty(&self, path: &str, token: &str) -> Response {
        self.client
            .post(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("request")
    }

    pub async fn get(&self, path: &str, token: &str) -> Response {
        self.client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("request")
    }

    /// PUT JSON with a bearer token.
    pub async fn put(&self, path: &str, token: &str, body: Value) -> Response {
        self.client
            .put(self.url(path))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("request")
    }

    /// Raises an alert and returns the command response.
    pub async fn raise_alert(&self, hospital: &str, token: &str, severity: &str) -> Value {
        let response = self
            .post_alert(
                hospital,
                token,
                json!({"severity": severity, "message": "Bed 12: SpO2 82%", "patient": "p-1"}),
            )
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        response.json().await.unwrap()
    }

    /// `POST /alerts` with `body`, whatever the answer.
    pub async fn post_alert(&self, hospital: &str, token: &str, body: Value) -> Response {
        self.post(&paths::alerts(hospital), token, body).await
    }

    /// `POST /alerts/{alert}/acknowledge`.
    pub async fn acknowledge(&self, hospital: &str, token: &str, alert: &str) -> Response {
        self.post_empty(&paths::alert(hospital, alert, "acknowledge"), token)
            .await
    }

    /// `POST /alerts/{alert}/escalate` with `body`.
    pub async fn escalate(
        &self,
        hospital: &str,
        token: &str,
        alert: &str,
        body: Value,
    ) -> Response {
        self.post(&paths::alert(hospital, alert, "escalate"), token, body)
            .await
    }

    /// `POST /alerts/{alert}/resolve` with a note.
    pub async fn resolve(&self, hospital: &str, token: &str, alert: &str, note: &str) -> Response {
        self.post(
            &paths::alert(hospital, alert, "resolve"),
            token,
            json!({ "note": note }),
        )
        .await
    }

    /// `POST /cases` with `body` (patient, title, assignee).
    pub async fn open_case(&self, hospital: &str, token: &str, body: Value) -> Response {
        self.post(&paths::cases(hospital), token, body).await
    }

    /// `POST /cases/{case}/assign` to `assignee`.
    pub async fn assign_case(
        &self,
        hospital: &str,
        token: &str,
        case: &str,
        assignee: &str,
    ) -> Response {
        self.post(
            &paths::case_command(hospital, case, "assign"),
            token,
            json!({ "assignee": assignee }),
        )
        .await
    }

    /// `GET /cases` with a query string (empty for none), which must answer 200; its body.
    pub async fn cases(&self, hospital: &str, token: &str, query: &str) -> Value {
        let path = match query {
            "" => paths::cases(hospital),
            q => paths::with_query(paths::cases(hospital), q),
        };
        let response = self.get(&path, token).await;
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        body
    }

    /// `POST /patients/{patient}/vitals` with a reading.
    pub async fn record_vitals(
        &self,
        hospital: &str,
        token: &str,
        patient: &str,
        reading: Value,
    ) -> Response {
        self.post(&paths::vitals(hospital, patient), token, reading)
            .await
    }

    /// `GET /events` with a query string.
    pub async fn get_events(&self, hospital: &str, token: &str, query: &str) -> Response {
        self.get(&paths::with_query(paths::events(hospital), query), token)
            .await
    }

    /// Reads the whole visible stream after `after`.
    pub async fn events(&self, hospital: &str, token: &str, after: i64) -> Value {
        let response = self
            .get_events(hospital, token, &format!("after={after}&limit=1000"))
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    /// How many events the database holds (for "a rejected command persists nothing").
    pub async fn event_count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }
}

/// A PostgreSQL cluster of one test's own, for the tests that stop, restart or break
/// PostgreSQL (doing that to the shared cluster would disturb every other test). It has a
/// `vigil` database, lives in a short path (`/tmp/<prefix>-<random>`: the socket path must
/// stay under 100 bytes), and is stopped and deleted even if the test panics.
pub struct PrivateCluster {
    /// The running server; `None` while a test has taken it down (see `listener_faults`).
    pub pg: Option<Arc<EmbeddedPostgres>>,
    /// The cluster's directory, deleted on drop.
    pub dir: PathBuf,
}

impl PrivateCluster {
    /// The name of the database the cluster is started with.
    pub const DATABASE: &'static str = "vigil";

    /// Initializes and starts a cluster in `/tmp/<prefix>-<random>`, with its database.
    pub async fn start(prefix: &str) -> Self {
        let dir = PathBuf::from(format!("/tmp/{prefix}-{:08x}", rand::random::<u32>()));
        let start_dir = dir.clone();
        let pg = tokio::task::spawn_blocking(move || {
            let pg = EmbeddedPostgres::start(&start_dir, 5432)?;
            pg.ensure_database(Self::DATABASE)?;
            Ok::<_, EmbeddedError>(pg)
        })
        .await
        .expect("start task")
        .expect("the test's cluster starts");
        Self {
            pg: Some(Arc::new(pg)),
            dir,
        }
    }

    /// The running server.
    pub fn pg(&self) -> Arc<EmbeddedPostgres> {
        self.pg.clone().expect("the cluster is running")
    }

    /// The URL of the cluster's database.
    pub fn url(&self) -> String {
        self.pg().url(Self::DATABASE)
    }

    /// `pg_ctl restart -m fast` (sessions are disconnected), run off the runtime thread as
    /// `pg_ctl` blocks.
    pub async fn restart(&self) {
        let pg = self.pg();
        tokio::task::spawn_blocking(move || pg.restart())
            .await
            .expect("restart task")
            .expect("PostgreSQL restarts");
    }
}

impl PrivateCluster {
    /// `pg_ctl stop -m immediate` + start: a crash of PostgreSQL (no final WAL flush), run off
    /// the runtime thread as `pg_ctl` blocks.
    pub async fn crash_restart(&self) {
        let pg = self.pg();
        tokio::task::spawn_blocking(move || pg.crash_restart())
            .await
            .expect("crash task")
            .expect("PostgreSQL comes back after a crash");
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        if let Some(pg) = self.pg.take() {
            if let Err(error) = pg.stop() {
                eprintln!("could not stop the test's cluster: {error}");
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A server started on a database of the test's choosing: a second node beside a
/// [`TestApp`] on the same database, or the one node of a [`PrivateCluster`]. Tests add the
/// requests they need as inherent methods in their own file.
pub struct Node {
    pub port: u16,
    /// `http://127.0.0.1:<port>`.
    pub address: String,
    /// Shuts the node down gracefully (as SIGTERM would).
    pub shutdown: vigil::startup::Shutdown,
    /// A client with a timeout (10 s for a node started with [`Node::start`]): a node's
    /// database may be away, and a request must not hang the test.
    pub client: reqwest::Client,
    pub keys: JwtKeys,
}

impl Node {
    /// Builds and runs a server with the test settings on `url`.
    pub async fn start(url: &str) -> Self {
        Self::start_with(&settings(url), Duration::from_secs(10)).await
    }

    /// Builds and runs a server with `settings`; its client gives up after `timeout`.
    async fn start_with(settings: &ServeSettings, timeout: Duration) -> Self {
        let app = Application::build(settings).await.expect("build app");
        let port = app.port();
        let shutdown = app.shutdown_handle();
        actix_web::rt::spawn(app.run_until_stopped());
        Self {
            port,
            address: format!("http://127.0.0.1:{port}"),
            shutdown,
            client: reqwest::Client::builder()
                .timeout(timeout)
                .build()
                .expect("client"),
            keys: JwtKeys::from_secret(TEST_SECRET).expect("keys"),
        }
    }

    /// A token for `user` of `hospital` with `role`, valid for an hour.
    pub fn token(&self, hospital: &str, user: &str, role: Role) -> String {
        mint(&self.keys, hospital, user, role)
    }
}

/// Asserts a problem+json response with `status` and `code`; returns the body.
pub async fn assert_problem(response: Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(response.status(), status, "status");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], code, "problem: {body}");
    assert_eq!(body["status"], status.as_u16());
    assert_eq!(body["type"], format!("urn:vigil:problem:{code}"));
    body
}

/// A WebSocket client for tests.
pub mod ws {
    use std::time::Duration;

    use futures_util::{SinkExt, StreamExt};
    use serde_json::Value;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;

    pub type Socket = tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >;

    /// Connects to `/api/hospitals/{hospital}/ws` with an optional bearer header.
    pub async fn connect(port: u16, hospital: &str, token: Option<&str>) -> Socket {
        connect_path(port, &super::paths::ws(hospital), token).await
    }

    /// The upgrade request for `path`, with an optional bearer header.
    pub fn request(
        port: u16,
        path: &str,
        token: Option<&str>,
    ) -> tokio_tungstenite::tungstenite::handshake::client::Request {
        let mut request = format!("ws://127.0.0.1:{port}{path}")
            .into_client_request()
            .unwrap();
        if let Some(token) = token {
            request
                .headers_mut()
                .insert("Authorization", format!("Bearer {token}").parse().unwrap());
        }
        request
    }

    /// Connects to `path` with an optional bearer header.
    pub async fn connect_path(port: u16, path: &str, token: Option<&str>) -> Socket {
        let (socket, _) = tokio_tungstenite::connect_async(request(port, path, token))
            .await
            .expect("websocket connects");
        socket
    }

    pub async fn send(socket: &mut Socket, frame: Value) {
        socket
            .send(Message::Text(frame.to_string()))
            .await
            .expect("send");
    }

    /// What the server sent next.
    #[derive(Debug)]
    pub enum Received {
        Frame(Value),
        Closed(Option<u16>),
    }

    /// The next JSON frame or close, skipping pings; panics after `timeout`.
    pub async fn next(socket: &mut Socket, timeout: Duration) -> Received {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let message = tokio::time::timeout_at(deadline, socket.next())
                .await
                .expect("a frame arrives in time");
            match message {
                Some(Ok(Message::Text(text))) => {
                    return Received::Frame(serde_json::from_str(&text).expect("json frame"))
                }
                Some(Ok(Message::Close(frame))) => {
                    return Received::Closed(frame.map(|f| u16::from(f.code)))
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Received::Closed(None),
            }
        }
    }

    /// The next JSON frame (panics on close).
    pub async fn frame(socket: &mut Socket) -> Value {
        match next(socket, Duration::from_secs(10)).await {
            Received::Frame(v) => v,
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    /// The next frame of `kind`, skipping others (presence etc.).
    pub async fn frame_of(socket: &mut Socket, kind: &str) -> Value {
        loop {
            let f = frame(socket).await;
            if f["type"] == kind {
                return f;
            }
        }
    }

    /// Authenticated + subscribed; returns the `subscribed` frame.
    pub async fn subscribe(
        socket: &mut Socket,
        topics: &[&str],
        last_event_id: Option<i64>,
    ) -> Value {
        let mut frame = serde_json::json!({"type": "subscribe", "id": "sub", "topics": topics});
        if let Some(n) = last_event_id {
            frame["last_event_id"] = Value::String(n.to_string());
        }
        send(socket, frame).await;
        frame_of(socket, "subscribed").await
    }

    /// Collects `n` event frames (skipping other frames).
    pub async fn events(socket: &mut Socket, n: usize) -> Vec<Value> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let f = frame(socket).await;
            if f["type"] == "event" {
                out.push(f);
            }
        }
        out
    }

    /// Waits for the server's close, returning (closing frame reason, close code).
    pub async fn closed(socket: &mut Socket, timeout: Duration) -> (Option<String>, Option<u16>) {
        let mut reason = None;
        loop {
            match next(socket, timeout).await {
                Received::Frame(f) if f["type"] == "closing" => {
                    reason = f["reason"].as_str().map(str::to_owned)
                }
                Received::Frame(_) => {}
                Received::Closed(code) => return (reason, code),
            }
        }
    }
}
