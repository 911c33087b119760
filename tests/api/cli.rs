//! The user's first five minutes, as tests: the real `vigil` binary run the way a newcomer
//! runs it (`vigil serve` with no configuration at all, `vigil token`, `vigil serve --demo`,
//! `vigil migrate`), and the refusals that must be prompt and clear rather than silent or
//! hanging.
//!
//! Nothing is left behind, even by a failing test: every child process belongs to a
//! [`Process`] whose `Drop` ends it, and every data directory to a [`DataDir`] whose `Drop`
//! stops any PostgreSQL still running in it before removing it. Every wait is bounded.

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

use crate::helpers::{eventually_seen, poll_for, postgres, TestDatabase};

/// The binary under test, built by Cargo for the integration tests.
pub const VIGIL: &str = env!("CARGO_BIN_EXE_vigil");

/// How long a `vigil serve` may take to answer `/readyz`. A first start runs `initdb`, starts
/// PostgreSQL and migrates: seconds on a laptop, more on a loaded two-core CI machine.
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// How long `vigil serve` may take to exit after SIGTERM: the HTTP server's graceful shutdown
/// (at most 10 s, see `startup.rs`) plus a fast PostgreSQL shutdown.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a one-shot command (`token`, `migrate`, a refused `serve`) may run. A refusal
/// that hangs fails the test instead of blocking the suite.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a leftover PostgreSQL gets for each shutdown mode when a test failed before its
/// `vigil serve` could stop it.
const LEFTOVER_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(20);

/// How often the bounded waits poll.
const POLL: Duration = Duration::from_millis(50);

/// A fresh data directory for one zero-config server, removed (after stopping any PostgreSQL
/// left running in it) when dropped.
///
/// It lives directly in `/tmp` with a short name, not under the target dir: PostgreSQL's
/// socket path (`<dir>/postgres/socket/.s.PGSQL.5432`) must fit a Unix socket address.
pub struct DataDir(PathBuf);

impl DataDir {
    pub fn new() -> Self {
        let simple = Uuid::new_v4().simple().to_string();
        let path = PathBuf::from(format!("/tmp/vz-{}", &simple[..8]));
        fs::create_dir(&path).expect("create the data dir");
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The lock file of the embedded cluster's postmaster: present exactly while it runs.
    fn postmaster_pid_file(&self) -> PathBuf {
        self.0.join("postgres/pgdata/postmaster.pid")
    }

    /// The pid of the embedded cluster's postmaster, if one is running.
    fn postmaster_pid(&self) -> Option<i32> {
        let contents = fs::read_to_string(self.postmaster_pid_file()).ok()?;
        let pid = contents.lines().next()?.trim().parse().ok()?;
        is_running_postgres(pid).then_some(pid)
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        // Only reached with a server still running when a test failed half-way: a passing
        // test has already seen `vigil serve` stop it.
        if let Some(pid) = self.postmaster_pid() {
            // Fast shutdown first (SIGINT), then immediate (SIGQUIT) if that stalls.
            for signal in [libc::SIGINT, libc::SIGQUIT] {
                // SAFETY: kill(2) has no memory-safety preconditions; `pid` was checked just
                // above to be a running postgres process.
                unsafe { libc::kill(pid, signal) };
                // A blocking wait, not `eventually`: `drop` cannot await.
                let deadline = Instant::now() + LEFTOVER_SHUTDOWN_TIMEOUT;
                while is_running_postgres(pid) && Instant::now() < deadline {
                    std::thread::sleep(POLL);
                }
                if !is_running_postgres(pid) {
                    break;
                }
            }
        }
        if let Err(error) = fs::remove_dir_all(&self.0) {
            eprintln!("could not remove {}: {error}", self.0.display());
        }
    }
}

/// Whether `pid` is a live (not zombie) `postgres` process: a stale `postmaster.pid` may
/// name a pid that another program has since been given.
fn is_running_postgres(pid: i32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // `<pid> (<comm>) <state> ...`; comm may itself contain parentheses, so split at the last.
    let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
        return false;
    };
    let comm = &stat[open + 1..close];
    let state = stat[close + 1..].trim_start().chars().next();
    comm == "postgres" && !matches!(state, Some('Z') | Some('X'))
}

/// `vigil <args>` as a newcomer runs it: no `DATABASE_URL` and no `VIGIL_*` settings
/// inherited from whoever runs the tests, the data dir given through `VIGIL_DATA_DIR`, and
/// the data dir as working directory, so a stray default `./var` would land there too. Logs
/// are plain text without colours, so that the `port=` field can be read.
pub fn vigil(data_dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(VIGIL);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("VIGIL_") {
            cmd.env_remove(key);
        }
    }
    cmd.args(args)
        .env_remove("DATABASE_URL")
        .env("VIGIL_DATA_DIR", data_dir)
        .env("RUST_LOG", "info,sqlx=warn,actix_server=warn")
        .env("RUST_BACKTRACE", "0")
        .env("NO_COLOR", "1")
        .current_dir(data_dir);
    cmd
}

/// Everything a child wrote on one of its pipes, gathered by a thread so that the child
/// never blocks on a full pipe.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn gather(mut pipe: impl Read + Send + 'static) -> (Self, JoinHandle<()>) {
        let captured = Self::default();
        let sink = captured.clone();
        let reader = std::thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            while let Ok(n @ 1..) = pipe.read(&mut chunk) {
                sink.0.lock().unwrap().extend_from_slice(&chunk[..n]);
            }
        });
        (captured, reader)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// A running `vigil` process with its output; its `Drop` stops it (SIGTERM, so that a server
/// stops its embedded PostgreSQL, then SIGKILL if it does not exit in time).
pub struct Process {
    child: Child,
    stdout: Captured,
    stderr: Captured,
    readers: Vec<JoinHandle<()>>,
    /// Set once the child has been reaped: from then on its pid may belong to another
    /// process and must never be signalled.
    status: Option<ExitStatus>,
}

/// How a one-shot command ended and what it wrote.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Process {
    /// Spawns `cmd` with its output captured.
    ///
    /// Must be called on the test's own thread: the child is also asked to receive SIGTERM
    /// when the thread that spawned it ends, so that it dies with an aborted test run too.
    pub fn spawn(mut cmd: Command) -> Self {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: the closure runs between fork and exec and calls only prctl(2), which is
        // async-signal-safe and touches no memory shared with the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("spawn vigil");
        let (stdout, out_reader) = Captured::gather(child.stdout.take().expect("piped stdout"));
        let (stderr, err_reader) = Captured::gather(child.stderr.take().expect("piped stderr"));
        Self {
            child,
            stdout,
            stderr,
            readers: vec![out_reader, err_reader],
            status: None,
        }
    }

    pub fn stdout(&self) -> String {
        self.stdout.text()
    }

    /// Both outputs, for failure messages.
    pub fn describe(&self) -> String {
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout.text(),
            self.stderr.text()
        )
    }

    /// The exit status, if the child has exited (reaping it).
    fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("poll the child");
        }
        self.status
    }

    fn signal(&mut self, signal: libc::c_int) {
        if self.exited().is_none() {
            let pid = i32::try_from(self.child.id()).expect("pids fit in pid_t");
            // SAFETY: kill(2) has no memory-safety preconditions, and the child is not yet
            // reaped, so its pid cannot have been reused.
            unsafe { libc::kill(pid, signal) };
        }
    }

    /// Waits up to `timeout` for the child to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        poll_for(timeout, || {
            let exited = self.exited();
            async move { exited }
        })
        .await
    }

    /// Sends SIGTERM, as `systemctl stop` or `docker stop` would, and waits for the exit.
    pub async fn terminate(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        match self.wait_exit(STOP_TIMEOUT).await {
            Some(status) => status,
            None => panic!(
                "vigil did not exit within {STOP_TIMEOUT:?} of SIGTERM\n{}",
                self.describe()
            ),
        }
    }

    /// Waits (bounded) until the output pipes are closed, so nothing written just before the
    /// exit is missed. A grandchild holding them open only shortens what is collected.
    async fn drain(&mut self) {
        let readers = &self.readers;
        poll_for(Duration::from_secs(5), || async {
            readers.iter().all(|r| r.is_finished()).then_some(())
        })
        .await;
    }

    /// Waits for `needle` in stdout; fails early if the process exits first.
    pub async fn wait_for_stdout(&mut self, needle: &str, timeout: Duration) -> String {
        let what = format!("vigil to print `{needle}`");
        // `Ok(Err(status))`: the process exited first.
        let printed = eventually_seen(timeout, &what, || {
            let stdout = self.stdout();
            let seen = if stdout.contains(needle) {
                Ok(Ok(stdout))
            } else if let Some(status) = self.exited() {
                Ok(Err(status))
            } else {
                Err(self.describe())
            };
            async move { seen }
        })
        .await;
        match printed {
            Ok(stdout) => stdout,
            Err(status) => {
                self.drain().await;
                panic!(
                    "vigil exited ({status}) before printing `{needle}`\n{}",
                    self.describe()
                );
            }
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        self.signal(libc::SIGTERM);
        // A blocking wait, not `eventually`: `drop` cannot await.
        let deadline = Instant::now() + STOP_TIMEOUT;
        while self.exited().is_none() && Instant::now() < deadline {
            std::thread::sleep(POLL);
        }
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs a one-shot command to completion; one that outlives [`COMMAND_TIMEOUT`] fails the
/// test (and is killed by [`Process`]'s `Drop`).
pub async fn run(cmd: Command) -> Finished {
    let mut process = Process::spawn(cmd);
    let Some(status) = process.wait_exit(COMMAND_TIMEOUT).await else {
        panic!(
            "vigil did not finish within {COMMAND_TIMEOUT:?}\n{}",
            process.describe()
        );
    };
    process.drain().await;
    Finished {
        status,
        stdout: process.stdout.text(),
        stderr: process.stderr.text(),
    }
}

/// A `vigil serve` child listening on a port it chose itself (`--bind 127.0.0.1:0`).
struct Server {
    process: Process,
    port: u16,
    client: reqwest::Client,
}

impl Server {
    /// Starts `vigil serve --bind 127.0.0.1:0 <extra>` in `data` with no other configuration,
    /// reads the port from the `vigil listening` log line, and waits for `/readyz`.
    async fn start(data: &DataDir, extra: &[&str]) -> Self {
        let mut args = vec!["serve", "--bind", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        let mut process = Process::spawn(vigil(data.path(), &args));
        let stdout = process
            .wait_for_stdout("vigil listening", START_TIMEOUT)
            .await;
        let port = listening_port(&stdout)
            .unwrap_or_else(|| panic!("no port in the `vigil listening` line\n{stdout}"));
        let server = Self {
            process,
            port,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("client"),
        };
        server.wait_ready().await;
        server
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    async fn wait_ready(&self) {
        eventually_seen(START_TIMEOUT, "/readyz to answer OK", || async {
            let ready = self.client.get(self.url("/readyz")).send().await;
            if matches!(&ready, Ok(r) if r.status() == StatusCode::OK) {
                return Ok(());
            }
            Err(format!("{ready:?}\n{}", self.process.describe()))
        })
        .await
    }

    async fn post(&self, path: &str, token: &str, body: Option<Value>) -> reqwest::Response {
        let request = self.client.post(self.url(path)).bearer_auth(token);
        let request = match body {
            Some(body) => request.json(&body),
            None => request,
        };
        request.send().await.expect("request")
    }

    /// The whole stream of `hospital` as `token` sees it.
    async fn events(&self, hospital: &str, token: &str) -> Value {
        let response = self
            .client
            .get(self.url(&format!(
                "/api/hospitals/{hospital}/events?after=0&limit=1000"
            )))
            .bearer_auth(token)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.expect("events page")
    }

    /// SIGTERM, then the exit status.
    async fn stop(mut self) -> ExitStatus {
        self.process.terminate().await
    }
}

/// The port in the `vigil listening port=NNNN ...` log line.
fn listening_port(stdout: &str) -> Option<u16> {
    let line = stdout.lines().find(|l| l.contains("vigil listening"))?;
    let after = &line[line.find("port=")? + "port=".len()..];
    let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The positions and types of the events in a page.
fn positions_and_types(page: &Value) -> Vec<(i64, String)> {
    page["events"]
        .as_array()
        .expect("events array")
        .iter()
        .map(|e| {
            (
                e["position"].as_i64().expect("position"),
                e["type"].as_str().expect("type").to_owned(),
            )
        })
        .collect()
}

/// Asserts what a cleanly stopped zero-config server leaves: exit 0, and its PostgreSQL gone.
fn assert_stopped_cleanly(status: ExitStatus, data: &DataDir, postmaster: i32) {
    assert!(status.success(), "vigil serve exits 0 on SIGTERM: {status}");
    assert!(
        !data.postmaster_pid_file().exists(),
        "the embedded PostgreSQL was stopped (postmaster.pid removed)"
    );
    assert!(
        !is_running_postgres(postmaster),
        "the postmaster has exited"
    );
}

#[actix_web::test]
async fn zero_config_serve_then_token_then_raise_and_acknowledge() {
    // Arrange: a fresh data dir and no configuration at all (no DATABASE_URL, no secret).
    let data = DataDir::new();
    let server = Server::start(&data, &[]).await;
    let secret = fs::metadata(data.path().join("jwt-secret")).expect("serve generated a secret");
    assert_eq!(
        secret.permissions().mode() & 0o777,
        0o600,
        "the generated secret is readable by its owner only"
    );

    // Act: `vigil token` finds the same secret in the same data dir.
    let minted = run(vigil(
        data.path(),
        &[
            "token",
            "--hospital",
            "h1",
            "--user",
            "nurse-amy",
            "--role",
            "nurse",
            "--ttl",
            "1h",
        ],
    ))
    .await;
    assert!(minted.status.success(), "vigil token: {}", minted.stderr);
    let token = minted.stdout.trim().to_owned();
    assert_eq!(token.split('.').count(), 3, "one JWT on stdout: {token:?}");

    let raised = server
        .post(
            "/api/hospitals/h1/alerts",
            &token,
            Some(json!({"severity": "critical", "message": "Bed 12: SpO2 82%", "patient": "p-1"})),
        )
        .await;
    assert_eq!(
        raised.status(),
        StatusCode::CREATED,
        "the server accepts the token"
    );
    let raised: Value = raised.json().await.expect("command response");
    let id = raised["aggregate_id"].as_str().expect("aggregate id");
    let acknowledged = server
        .post(
            &format!("/api/hospitals/h1/alerts/{id}/acknowledge"),
            &token,
            None,
        )
        .await;
    assert_eq!(acknowledged.status(), StatusCode::OK);

    // Assert
    let expected = vec![
        (1, "AlertRaised".to_owned()),
        (2, "AlertAcknowledged".to_owned()),
    ];
    assert_eq!(
        positions_and_types(&server.events("h1", &token).await),
        expected
    );

    // SIGTERM stops the server and the PostgreSQL it started.
    let postmaster = data.postmaster_pid().expect("the embedded PostgreSQL runs");
    assert_stopped_cleanly(server.stop().await, &data, postmaster);

    // A second start reuses the cluster, the data and the secret.
    let server = Server::start(&data, &[]).await;
    assert!(
        !server
            .process
            .stdout()
            .contains("initializing a new PostgreSQL cluster"),
        "the existing cluster is reused\n{}",
        server.process.describe()
    );
    assert_eq!(
        positions_and_types(&server.events("h1", &token).await),
        expected
    );
    let postmaster = data.postmaster_pid().expect("the embedded PostgreSQL runs");
    assert_stopped_cleanly(server.stop().await, &data, postmaster);
}

/// The demo's token, from the `export TOKEN=...` line `vigil serve --demo` prints once seeded.
async fn demo_token(server: &mut Server) -> String {
    // "More tokens:" ends the block, so the whole token has been written by then.
    let stdout = server
        .process
        .wait_for_stdout("More tokens:", START_TIMEOUT)
        .await;
    let token = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("export TOKEN="))
        .expect("an `export TOKEN=` line");
    assert!(
        stdout.contains(&format!(
            "http://127.0.0.1:{}/api/hospitals/demo/events",
            server.port
        )),
        "the printed curl examples use the real port\n{stdout}"
    );
    token.to_owned()
}

#[actix_web::test]
async fn serve_demo_prints_a_token_and_seeds_the_demo_hospital() {
    // Arrange
    let data = DataDir::new();

    // Act
    let mut server = Server::start(&data, &["--demo"]).await;
    let token = demo_token(&mut server).await;
    let seeded = server.events("demo", &token).await;

    // Assert: the printed token reads a seeded stream. Policies react to the seed (an
    // out-of-range reading raises alerts, an assigned case notifies) on their own schedule,
    // so compare the seed's own events: those not written by `system`.
    let by_users = |page: &serde_json::Value| -> Vec<serde_json::Value> {
        page["events"]
            .as_array()
            .expect("events")
            .iter()
            .filter(|e| e["metadata"]["user"] != "system")
            .cloned()
            .collect()
    };
    let seeded_events = by_users(&seeded);
    let alerts = seeded_events
        .iter()
        .filter(|e| e["type"] == "AlertRaised")
        .count();
    assert_eq!(alerts, 3, "three open demo alerts: {seeded}");
    assert!(
        seeded_events.len() > alerts,
        "cases, vitals, appointments too: {seeded}"
    );
    assert!(server.process.stdout().contains("demo hospital seeded"));
    assert!(server.stop().await.success());

    // Restarting with --demo prints a fresh token but seeds nothing again.
    let mut server = Server::start(&data, &["--demo"]).await;
    let token = demo_token(&mut server).await;
    let again = server.events("demo", &token).await;
    assert_eq!(by_users(&again), seeded_events, "no duplicated seed");
    // Only policies (as `system`) may have added events since.
    assert!(again["head"].as_i64() >= seeded["head"].as_i64());
    assert!(
        !server.process.stdout().contains("demo hospital seeded"),
        "{}",
        server.process.describe()
    );
    assert!(server.stop().await.success());
}

#[actix_web::test]
async fn token_rejects_bad_arguments() {
    let data = DataDir::new();
    let valid = [
        ("--hospital", "h1"),
        ("--user", "nurse-amy"),
        ("--role", "nurse"),
        ("--ttl", "1h"),
    ];
    for (flag, bad, explanation) in [
        (
            "--role",
            "surgeon",
            "role must be one of admin, physician, nurse, operator, chw, asha",
        ),
        ("--ttl", "0", "the lifetime must be positive"),
        ("--ttl", "5y", "unknown unit `y`"),
        ("--ttl", "soon", "is not a duration"),
        ("--hospital", "BAD_ID", "hospital id may contain only"),
    ] {
        // Arrange: valid arguments with one replaced.
        let mut args = vec!["token"];
        for (name, value) in valid {
            args.extend([name, if name == flag { bad } else { value }]);
        }

        // Act
        let finished = run(vigil(data.path(), &args)).await;

        // Assert: a non-zero exit, the flag, the value and the reason on stderr, no token.
        assert!(!finished.status.success(), "{flag} {bad} was accepted");
        for part in [flag, bad, explanation] {
            assert!(
                finished.stderr.contains(part),
                "{flag} {bad}: stderr lacks `{part}`:\n{}",
                finished.stderr
            );
        }
        assert_eq!(finished.stdout, "", "{flag} {bad}: nothing on stdout");
    }
    assert!(
        !data.path().join("jwt-secret").exists(),
        "refused before touching the data dir"
    );
}

/// A fresh, empty (unmigrated) database on the shared test cluster, dropped with the guard.
async fn empty_database() -> TestDatabase {
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
        .expect("create database");
    admin.close().await.ok();
    TestDatabase {
        url: pg.url(&name),
        name,
    }
}

#[actix_web::test]
async fn migrate_applies_migrations_to_database_url() {
    // Arrange
    let db = empty_database().await;
    let data = DataDir::new();
    let migrate = || {
        let mut cmd = vigil(data.path(), &["migrate"]);
        cmd.env("DATABASE_URL", &db.url);
        cmd
    };

    // Act
    let first = run(migrate()).await;
    let second = run(migrate()).await;

    // Assert: both runs succeed (migrating is idempotent) and every migration is recorded.
    assert!(first.status.success(), "{}\n{}", first.stdout, first.stderr);
    assert!(
        second.status.success(),
        "{}\n{}",
        second.stdout,
        second.stderr
    );
    let pool = PgPool::connect(&db.url).await.expect("connect");
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&pool)
        .await
        .expect("migrations table");
    let known = vigil::store::MIGRATOR
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .count();
    assert!(applied > 0);
    assert_eq!(applied, i64::try_from(known).expect("few migrations"));
    let events_table: bool = sqlx::query_scalar("SELECT to_regclass('public.events') IS NOT NULL")
        .fetch_one(&pool)
        .await
        .expect("query");
    assert!(events_table, "the events table exists");
    assert!(vigil::store::migrations_applied(&pool)
        .await
        .expect("query"));
    pool.close().await;
    assert!(
        !data.path().join("postgres").exists(),
        "no embedded PostgreSQL when DATABASE_URL is set"
    );
}

#[actix_web::test]
async fn serve_with_a_database_url_but_no_jwt_secret_exits_with_a_clear_message() {
    // Arrange: a reachable database, so the refusal cannot be a connection failure.
    let db = TestDatabase::create().await;
    let data = DataDir::new();

    for args in [
        &["serve", "--bind", "127.0.0.1:0"][..],
        &[
            "token",
            "--hospital",
            "h1",
            "--user",
            "nurse-amy",
            "--role",
            "nurse",
        ][..],
    ] {
        // Act: bounded, so a server that starts (or hangs) instead fails the test.
        let mut cmd = vigil(data.path(), args);
        cmd.env("DATABASE_URL", &db.url);
        let finished = run(cmd).await;

        // Assert
        assert!(!finished.status.success(), "`vigil {}` started", args[0]);
        assert!(
            finished
                .stderr
                .contains("VIGIL_JWT_SECRET is required for HS256"),
            "`vigil {}` stderr:\n{}",
            args[0],
            finished.stderr
        );
        assert!(!finished.stdout.contains("vigil listening"));
    }
    assert!(
        !data.path().join("jwt-secret").exists(),
        "no secret is generated when DATABASE_URL is set"
    );
}

/// A busy port is a clear error before anything starts: no panic, and no embedded
/// PostgreSQL left running (it used to be started first and then orphaned).
#[actix_web::test]
async fn serve_on_a_busy_port_fails_cleanly_and_starts_no_database() {
    let data = DataDir::new();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("hold a port");
    let address = busy.local_addr().unwrap().to_string();

    let finished = run(vigil(data.path(), &["serve", "--bind", &address])).await;

    assert!(!finished.status.success());
    assert!(
        finished.stderr.contains(&format!("cannot bind {address}")),
        "stderr:\n{}",
        finished.stderr
    );
    assert!(!finished.stderr.contains("panicked"), "{}", finished.stderr);
    assert!(
        !data.path().join("postgres").exists() && data.postmaster_pid().is_none(),
        "no embedded PostgreSQL was set up"
    );
}

/// Every `WARN` or `ERROR` record in a text log.
fn warnings(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|line| line.contains(" WARN ") || line.contains(" ERROR "))
        .collect()
}

#[actix_web::test]
async fn a_second_serve_on_the_same_data_dir_is_refused_naming_the_owners_pid_and_port() {
    // Arrange: a server owns the data dir.
    let data = DataDir::new();
    let first = Server::start(&data, &[]).await;
    let postmaster = data.postmaster_pid().expect("the embedded PostgreSQL runs");
    let owner_pid = first.process.child.id();

    // Act: a second server on another port, same data dir.
    let second = run(vigil(data.path(), &["serve", "--bind", "127.0.0.1:0"])).await;

    // Assert: refused with one line naming the data dir and the owner's pid and port...
    assert!(!second.status.success(), "the second server started");
    assert!(
        !second.stdout.contains("vigil listening"),
        "{}",
        second.stdout
    );
    let line = second
        .stderr
        .lines()
        .find(|line| line.contains("in use"))
        .unwrap_or_else(|| panic!("no refusal on stderr:\n{}", second.stderr));
    for part in [
        data.path().display().to_string(),
        format!("pid {owner_pid}"),
        format!("port {}", first.port),
    ] {
        assert!(line.contains(&part), "`{part}` missing from: {line}");
    }
    // ...and the first server, and its PostgreSQL, are untouched.
    assert_eq!(data.postmaster_pid(), Some(postmaster));
    first.wait_ready().await;
    assert_stopped_cleanly(first.stop().await, &data, postmaster);
}

#[actix_web::test]
async fn a_postgresql_left_by_a_killed_server_is_adopted_and_stopped_on_exit() {
    // Arrange: a server killed outright, which cannot stop its PostgreSQL.
    let data = DataDir::new();
    let mut crashed = Server::start(&data, &[]).await;
    let postmaster = data.postmaster_pid().expect("the embedded PostgreSQL runs");
    crashed.process.signal(libc::SIGKILL);
    assert!(
        crashed.process.wait_exit(STOP_TIMEOUT).await.is_some(),
        "kill -9 ends vigil"
    );
    assert!(
        is_running_postgres(postmaster),
        "the crash leaves PostgreSQL running"
    );

    // Act: the next server on the data dir.
    let server = Server::start(&data, &[]).await;

    // Assert: it uses the same PostgreSQL, says it adopted it, and stops it on exit.
    assert_eq!(
        data.postmaster_pid(),
        Some(postmaster),
        "adopted, not restarted"
    );
    assert!(
        server.process.stdout().contains("adopting the PostgreSQL"),
        "{}",
        server.process.describe()
    );
    assert_stopped_cleanly(server.stop().await, &data, postmaster);
}

#[actix_web::test]
async fn commands_other_than_serve_need_an_existing_data_dir_and_create_none() {
    // Arrange: a working directory with no data dir in it.
    let cwd = DataDir::new();
    let missing = cwd.path().join("missing");
    let commands: [&[&str]; 4] = [
        &[
            "token",
            "--hospital",
            "h1",
            "--user",
            "u-1",
            "--role",
            "nurse",
        ],
        &["projections", "status"],
        &["projections", "rebuild", "alert_board"],
        &["migrate"],
    ];
    for args in commands {
        for (data_dir, expected) in [
            // VIGIL_DATA_DIR naming a directory that does not exist...
            (Some(&missing), missing.clone()),
            // ...and the default, ./var, run from a directory without one.
            (None, cwd.path().join("var")),
        ] {
            let mut cmd = vigil(cwd.path(), args);
            match data_dir {
                Some(dir) => cmd.env("VIGIL_DATA_DIR", dir),
                None => cmd.env_remove("VIGIL_DATA_DIR"),
            };

            // Act
            let finished = run(cmd).await;

            // Assert: refused, naming the absolute path it looked in and --data-dir.
            assert!(!finished.status.success(), "`vigil {args:?}` succeeded");
            for part in [&expected.display().to_string(), "--data-dir"] {
                assert!(
                    finished.stderr.contains(part),
                    "`vigil {args:?}`: `{part}` missing from stderr:\n{}",
                    finished.stderr
                );
            }
            assert_eq!(
                finished.stdout.trim(),
                "",
                "`vigil {args:?}` printed something"
            );
        }
    }
    let left: Vec<_> = fs::read_dir(cwd.path())
        .expect("read the working directory")
        .collect();
    assert!(left.is_empty(), "nothing created: {left:?}");
}

#[actix_web::test]
async fn an_unreachable_database_url_is_reported_with_its_host_port_and_the_os_error() {
    // Arrange: a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("free port")
        .local_addr()
        .expect("address")
        .port();
    let data = DataDir::new();

    for args in [&["serve", "--bind", "127.0.0.1:0"][..], &["migrate"][..]] {
        let mut cmd = vigil(data.path(), args);
        cmd.env(
            "DATABASE_URL",
            format!("postgres://vigil@127.0.0.1:{port}/vigil"),
        )
        .env(
            "VIGIL_JWT_SECRET",
            "an-unreachable-database-test-secret-0123",
        );

        // Act
        let finished = run(cmd).await;

        // Assert
        assert!(!finished.status.success(), "`vigil {}` succeeded", args[0]);
        let expected =
            format!("cannot connect to PostgreSQL at 127.0.0.1:{port}: Connection refused");
        assert!(
            finished.stderr.contains(&expected),
            "`vigil {}`: `{expected}` missing from stderr:\n{}",
            args[0],
            finished.stderr
        );
        assert!(
            !finished.stderr.contains("timed out"),
            "{}",
            finished.stderr
        );
    }
}

#[actix_web::test]
async fn a_data_dir_that_cannot_be_created_is_named_in_the_error() {
    // Arrange: the data dir would be below a regular file.
    let cwd = DataDir::new();
    let file = cwd.path().join("a-file");
    fs::write(&file, "not a directory").expect("write a file");
    let data_dir = file.join("var");
    let mut cmd = vigil(cwd.path(), &["serve", "--bind", "127.0.0.1:0"]);
    cmd.env("VIGIL_DATA_DIR", &data_dir);

    // Act
    let finished = run(cmd).await;

    // Assert
    assert!(!finished.status.success());
    assert!(
        finished.stderr.contains(&data_dir.display().to_string()),
        "the path is named:\n{}",
        finished.stderr
    );
}

#[actix_web::test]
async fn sigterm_stops_a_busy_server_without_a_warning() {
    // Arrange: a server whose projectors, policies and listeners have work and connections.
    let data = DataDir::new();
    let mut server = Server::start(&data, &["--demo"]).await;
    let token = demo_token(&mut server).await;
    let raised = server
        .post(
            "/api/hospitals/demo/alerts",
            &token,
            Some(json!({"severity": "high", "message": "Bed 3: HR 130", "patient": "p-1"})),
        )
        .await;
    assert_eq!(raised.status(), StatusCode::CREATED);
    let postmaster = data.postmaster_pid().expect("the embedded PostgreSQL runs");

    // Act
    let status = server.process.terminate().await;
    server.process.drain().await;

    // Assert: a clean stop, and nothing in the log an operator would have to look into.
    assert_stopped_cleanly(status, &data, postmaster);
    let log = server.process.describe();
    assert_eq!(warnings(&log), Vec::<&str>::new(), "{log}");
}

#[actix_web::test]
async fn rebuilding_a_hospital_without_events_says_so_and_fails() {
    // Arrange
    let db = TestDatabase::create().await;
    let data = DataDir::new();
    let mut cmd = vigil(
        data.path(),
        &[
            "projections",
            "rebuild",
            "alert_board",
            "--hospital",
            "nosuch",
        ],
    );
    cmd.env("DATABASE_URL", &db.url);

    // Act
    let finished = run(cmd).await;

    // Assert
    assert!(!finished.status.success(), "{}", finished.stdout);
    assert!(
        finished
            .stderr
            .contains("hospital `nosuch` has no events, so there is nothing to rebuild"),
        "{}",
        finished.stderr
    );
}

#[actix_web::test]
async fn serve_help_says_durations_take_units() {
    let data = DataDir::new();
    let help = run(vigil(data.path(), &["serve", "--help"])).await;
    assert!(help.status.success());
    assert!(
        help.stdout.contains("500ms, 30s, 5m, 1h") && help.stdout.contains("A bare number"),
        "{}",
        help.stdout
    );
    let accepted = run(vigil(
        data.path(),
        &["serve", "--heartbeat", "nonsense", "--bind", "127.0.0.1:0"],
    ))
    .await;
    assert!(!accepted.status.success());
    assert!(
        accepted.stderr.contains("is not a duration like 500ms"),
        "{}",
        accepted.stderr
    );
}
