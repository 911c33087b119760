//! Load generator for Vigil's realtime gateway: many WebSocket subscribers, an open-loop REST
//! writer, and an exactly-once check of every delivery.
//!
//! Modes (`--mode`):
//! - `steady`: connect `--connections` subscribers to `alerts`, send `--rate` raise-alert
//!   commands per second for `--duration` seconds on an open-loop schedule, and report
//!   deliveries per second and two delivery latencies: from the event's commit time (`ts`,
//!   the server's clock — the same machine's) and from the command's *scheduled* send instant
//!   (so a server that falls behind shows in the numbers instead of slowing the writer);
//! - `connect`: open `--connections` authenticated connections as fast as allowed
//!   (`--connect-rate`, `--connect-concurrency`) and report how many the server accepted
//!   per second, and the failures;
//! - `idle`: open `--connections` subscribed connections and hold them for `--duration`
//!   seconds; with `--server-pid`, report the server's RSS per connection;
//! - `reconnect`: subscribe `--connections` clients, disconnect them all, raise `--owed`
//!   alerts, reconnect them all at once with their last event id, and time until every client
//!   holds everything it was owed;
//! - `vitals`: subscribers of `patient:` topics and closed-loop writers posting
//!   `--batch-size` readings per `vitals:batch` request (1: the single-reading path); reports
//!   readings per second (see `vitals.rs`).
//!
//! Every subscriber keeps a ledger of the positions it received after its subscribe position.
//! At the end the stream is listed through `GET /events` and each subscriber must hold every
//! alert after its subscribe position exactly once; the run exits non-zero otherwise.
//!
//! The table goes to stdout (and a JSON line to `--json-out`); progress goes to stderr.
//! `benches/load/run.sh` starts a server and runs the standard scenarios:
//!
//! ```text
//! cargo bench --bench load -- --mode steady --secret "$VIGIL_JWT_SECRET" \
//!     --connections 1000 --rate 100 --duration 30
//! benches/load/run.sh            # every scenario, ~6 minutes once built
//! benches/load/run.sh --quick    # smoke run of each mode, ~20 seconds once built
//! ```
//!
//! Only loopback servers are accepted unless `--allow-remote` is given: this tool is a
//! denial of service for anything it points at.

mod api;
mod client;
#[path = "../common/mod.rs"]
mod common;
mod report;
mod vitals;
mod writer;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aggregates::types::HospitalId;
use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

use crate::api::{Api, Tokens};
use crate::client::{Ledger, Outcome, RunContext};
use crate::report::{Percentiles, RunResult};
use crate::writer::SendLog;

/// Most connections a run may open: the machine's file limit is 20,000 per process and the
/// tool also needs sockets for the REST writer.
const MAX_CONNECTIONS: u32 = 15_000;

/// File descriptors kept for everything but WebSockets (REST writer, stdio, runtime).
const SPARE_FDS: u64 = writer::MAX_IN_FLIGHT as u64 + 256;

/// Longest run (`--duration`).
const MAX_DURATION_S: u64 = 300;

/// Time allowed for every connection of a phase to come up (or fail).
const LAUNCH_DEADLINE: Duration = Duration::from_secs(300);

/// How often the orchestrator looks at the clients' progress while waiting.
const POLL: Duration = Duration::from_millis(20);

/// Time for clients to close and return their ledgers once told to stop.
const STOP_DEADLINE: Duration = Duration::from_secs(30);

/// Pause between disconnecting every client and raising the owed events (reconnect mode),
/// so the server has unregistered the old sessions before the herd returns.
const SETTLE_AFTER_DISCONNECT: Duration = Duration::from_secs(1);

/// Pause between the last connection coming up and reading the server's RSS (idle mode),
/// so allocations made while accepting have settled.
const SETTLE_BEFORE_RSS: Duration = Duration::from_secs(2);

/// Concurrent requests when raising the owed events in reconnect mode.
const OWED_CONCURRENCY: usize = 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    Steady,
    Connect,
    Idle,
    Reconnect,
    Vitals,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Steady => "steady",
            Mode::Connect => "connect",
            Mode::Idle => "idle",
            Mode::Reconnect => "reconnect",
            Mode::Vitals => "vitals",
        }
    }
}

/// Connections per second to open, or `unlimited`.
#[derive(Clone, Copy, Debug)]
struct ConnectRate(Option<f64>);

fn connect_rate(raw: &str) -> Result<ConnectRate, String> {
    if raw == "unlimited" {
        return Ok(ConnectRate(None));
    }
    match raw.parse::<f64>() {
        Ok(r) if r > 0.0 && r <= 100_000.0 => Ok(ConnectRate(Some(r))),
        _ => Err("a number of connections per second in (0, 100000], or `unlimited`".into()),
    }
}

fn positive_rate(raw: &str) -> Result<f64, String> {
    match raw.parse::<f64>() {
        Ok(r) if r > 0.0 && r <= 20_000.0 => Ok(r),
        _ => Err("a rate in (0, 20000] commands per second".into()),
    }
}

fn hospital(raw: &str) -> Result<HospitalId, String> {
    HospitalId::parse(raw).map_err(|e| e.to_string())
}

/// Load generator for Vigil's realtime gateway.
#[derive(Debug, Parser)]
#[command(name = "load", about)]
struct Args {
    /// Server base URL (the WebSocket URL is derived from it).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,

    /// Hospital to load. A fresh one per run keeps runs independent.
    #[arg(long, default_value = "load", value_parser = hospital)]
    hospital: HospitalId,

    /// The server's HS256 secret (VIGIL_JWT_SECRET): the tool mints its own tokens.
    #[arg(long, env = "VIGIL_JWT_SECRET", hide_env_values = true)]
    secret: Option<String>,

    /// What to measure.
    #[arg(long, value_enum, default_value = "steady")]
    mode: Mode,

    /// WebSocket connections.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=MAX_CONNECTIONS as i64))]
    connections: u32,

    /// Distinct subscriber users the connections are spread over (connection `i` is user
    /// `load-user-{i % users}`), so the per-user connection limit is not what is measured.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=MAX_CONNECTIONS as i64))]
    users: u32,

    /// Send every command with a fresh `Idempotency-Key`, as `@vigil/client` does.
    #[arg(long)]
    keyed: bool,

    /// Commands per second (steady mode).
    #[arg(long, default_value_t = 100.0, value_parser = positive_rate)]
    rate: f64,

    /// Seconds to send commands (steady) or hold connections (idle).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=MAX_DURATION_S))]
    duration: u64,

    /// REST writer users the commands are spread over (command `k` is sent by
    /// `load-writer-{k % writers}`), so the per-user command rate limit is not what is
    /// measured.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
    writers: u32,

    /// Connections opened per second, or `unlimited`.
    #[arg(long, default_value = "unlimited", value_parser = connect_rate)]
    connect_rate: ConnectRate,

    /// Handshakes in progress at once. Caps the SYN burst so the kernel's accept backlog,
    /// not the server, is not what limits an `unlimited` ramp.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=MAX_CONNECTIONS as i64))]
    connect_concurrency: u32,

    /// Events raised while the clients are away (reconnect mode).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    owed: u32,

    /// Readings per request (vitals mode); 1 uses the single-reading endpoint.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=1000))]
    batch_size: u32,

    /// Patients the readings cycle over (vitals mode); subscriber `i` follows patient
    /// `i % patients`.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    patients: u32,

    /// Requests in flight at once, each writer posting back to back (vitals mode).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    concurrency: u32,

    /// Seconds to wait, after the last command, for every subscriber to catch up.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=120))]
    drain_timeout: u64,

    /// The server's process id: its VmRSS is read before and after connecting, and its CPU
    /// time while commands are written.
    #[arg(long)]
    server_pid: Option<u32>,

    /// Its PostgreSQL's postmaster: the CPU time of the postmaster and its backends while
    /// commands are written (a daemonized postmaster is not the server's child).
    #[arg(long)]
    postgres_pid: Option<u32>,

    /// Append the result as one JSON line to this file.
    #[arg(long)]
    json_out: Option<PathBuf>,

    /// Name of this run in the table.
    #[arg(long)]
    label: Option<String>,

    /// Print the table of every run in this `--json-out` file and exit.
    #[arg(long)]
    summarize: Option<PathBuf>,

    /// Allow a server that is not on this machine.
    #[arg(long)]
    allow_remote: bool,

    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> anyhow::Result<ExitCode> {
    common::init_tracing("info");
    let args = Args::parse();
    if let Some(path) = &args.summarize {
        let runs = report::read_json(path)?;
        print(&report::table(&runs))?;
        return Ok(if runs.iter().all(|r| r.ok) {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    if args.secret.is_none() && args.bench {
        // A bare `cargo bench` runs every bench; this one needs a server to point at.
        tracing::info!("skipped: the load bench needs a server; run benches/load/run.sh");
        return Ok(ExitCode::SUCCESS);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let result = runtime.block_on(run(&args))?;
    print(&report::table(std::slice::from_ref(&result)))?;
    if let Some(path) = &args.json_out {
        report::append_json(path, &result)?;
    }
    // Do not wait for stragglers (sockets the server never closed): the result is out.
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(if result.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Writes the report to stdout: it is this program's product, so not through tracing.
fn print(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

/// Refuses anything but a loopback server unless `--allow-remote`.
fn check_target(args: &Args) -> anyhow::Result<reqwest::Url> {
    let url = reqwest::Url::parse(&args.url).with_context(|| format!("--url {}", args.url))?;
    if !matches!(url.scheme(), "http" | "https") {
        bail!("--url must be http:// or https://");
    }
    let host = url.host_str().unwrap_or_default();
    let loopback = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !loopback && !args.allow_remote {
        bail!(
            "{} is not a loopback address; pass --allow-remote if you mean it",
            args.url
        );
    }
    Ok(url)
}

/// Raises the soft open-file limit to the hard one and checks it fits the run.
fn ensure_fd_limit(connections: u32) -> anyhow::Result<()> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by reference.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
    let need = u64::from(connections) + SPARE_FDS;
    if limit.rlim_cur < need {
        bail!(
            "{connections} connections need an open-file limit of {need}, this process has {} (raise `ulimit -n`)",
            limit.rlim_cur
        );
    }
    Ok(())
}

/// The server's VmRSS in KiB.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no VmRSS in /proc/{pid}/status"))
}

/// CPU time (user + system, clock ticks) of each process in `/proc`, with its parent.
fn process_ticks() -> std::collections::HashMap<u32, (u32, u64)> {
    let mut out = std::collections::HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The command name may hold spaces and parentheses: fields start after the last ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // rest[0] is field 3 (state): ppid is field 4, utime 14, stime 15.
        let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
        if let (Some(ppid), Some(utime), Some(stime)) = (field(4), field(14), field(15)) {
            out.insert(pid, (ppid as u32, utime + stime));
        }
    }
    out
}

/// Ticks of `root` and, with `children`, of its direct children (a postmaster's backends).
fn tree_ticks(
    all: &std::collections::HashMap<u32, (u32, u64)>,
    root: u32,
    children: bool,
) -> std::collections::HashMap<u32, u64> {
    all.iter()
        .filter(|(pid, (ppid, _))| **pid == root || (children && *ppid == root))
        .map(|(pid, (_, ticks))| (*pid, *ticks))
        .collect()
}

/// CPU of the server and of its PostgreSQL between two [`process_ticks`] snapshots, % of
/// one core. A process that started in between counts from zero; one that ended is lost
/// (backends live as long as the pool's connections, so not during a steady run).
fn cpu_pct(
    args: &Args,
    before: &std::collections::HashMap<u32, (u32, u64)>,
    after: &std::collections::HashMap<u32, (u32, u64)>,
    elapsed: Duration,
) -> (Option<f64>, Option<f64>) {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let pct = |root: u32, children: bool| {
        let (b, a) = (
            tree_ticks(before, root, children),
            tree_ticks(after, root, children),
        );
        if a.is_empty() {
            return None;
        }
        let used: u64 = a
            .iter()
            .map(|(pid, t)| t.saturating_sub(b.get(pid).copied().unwrap_or(0)))
            .sum();
        Some(used as f64 / hz / elapsed.as_secs_f64().max(1e-3) * 100.0)
    };
    (
        args.server_pid.and_then(|p| pct(p, false)),
        args.postgres_pid.and_then(|p| pct(p, true)),
    )
}

/// Everything a mode needs.
struct Setup {
    api: Api,
    tokens: Tokens,
    ws_url: String,
    result: RunResult,
}

async fn run(args: &Args) -> anyhow::Result<RunResult> {
    let url = check_target(args)?;
    ensure_fd_limit(args.connections)?;
    let secret = args
        .secret
        .as_deref()
        .context("--secret (or VIGIL_JWT_SECRET) is required: the tool mints its own tokens")?;
    let users = args.users.min(args.connections);
    // Valid past the longest run, including ramps and drains.
    let ttl = Duration::from_secs(MAX_DURATION_S * 4);
    let tokens = Tokens::mint(secret, &args.hospital, users, args.writers, ttl)?;
    let api = Api::new(
        url.as_str(),
        &args.hospital,
        writer::MAX_IN_FLIGHT,
        args.keyed,
    )?;
    let mut ws = url.clone();
    // Only http and https get here (checked above); both have WebSocket counterparts.
    let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
    ws.set_scheme(scheme)
        .map_err(|_| anyhow::anyhow!("cannot derive a WebSocket URL from {url}"))?;
    let ws_url = format!(
        "{}/api/hospitals/{}/ws",
        ws.as_str().trim_end_matches('/'),
        args.hospital
    );
    let label = args.label.clone().unwrap_or_else(|| match args.mode {
        Mode::Steady => format!("steady {}×{}/s", args.connections, args.rate),
        Mode::Reconnect => format!("reconnect {} owed {}", args.connections, args.owed),
        Mode::Vitals => format!(
            "vitals {}×patient, batch {}, {} writers",
            args.connections, args.batch_size, args.concurrency
        ),
        mode => format!("{} {}", mode.name(), args.connections),
    });
    let result = RunResult {
        label,
        mode: args.mode.name().to_owned(),
        started_at: chrono::Utc::now().to_rfc3339(),
        hospital: args.hospital.to_string(),
        connections: args.connections,
        ..RunResult::default()
    };
    let setup = Setup {
        api,
        tokens,
        ws_url,
        result,
    };
    tracing::info!(
        mode = args.mode.name(),
        connections = args.connections,
        "starting"
    );
    match args.mode {
        Mode::Steady => steady(args, setup).await,
        Mode::Connect => connect(args, setup).await,
        Mode::Idle => idle(args, setup).await,
        Mode::Reconnect => reconnect(args, setup).await,
        Mode::Vitals => vitals::run(args, setup).await,
    }
}

/// The running clients of one phase.
struct Fleet {
    ctx: Arc<RunContext>,
    handles: Vec<JoinHandle<Outcome>>,
    stop: watch::Sender<bool>,
    /// µs since t0 when the phase started opening connections.
    started_us: u64,
}

/// Opens one client per entry of `resumes` (its resume position and carried-over ledger),
/// paced by `rate` with at most `concurrency` handshakes at once, and waits until each is
/// up or has failed.
async fn launch(
    ctx: Arc<RunContext>,
    resumes: Vec<(Option<i64>, Option<Ledger>)>,
    rate: Option<f64>,
    concurrency: u32,
) -> Fleet {
    let n = resumes.len();
    let (stop, stop_rx) = watch::channel(false);
    let slots = Arc::new(Semaphore::new(concurrency as usize));
    let started = tokio::time::Instant::now();
    let started_us = ctx.micros_since_t0(started.into_std());
    let deadline = started + LAUNCH_DEADLINE;
    let mut handles = Vec::with_capacity(n);
    for (i, (resume, ledger)) in resumes.into_iter().enumerate() {
        if let Some(rate) = rate {
            tokio::time::sleep_until(started + Duration::from_secs_f64(i as f64 / rate)).await;
        }
        let permit = tokio::time::timeout_at(deadline, slots.clone().acquire_owned()).await;
        let Ok(Ok(permit)) = permit else {
            ctx.failed.fetch_add(1, Ordering::Relaxed);
            handles.push(tokio::spawn(async move {
                Outcome {
                    failure: Some("not started before the launch deadline".into()),
                    ledger,
                    ..Outcome::default()
                }
            }));
            continue;
        };
        handles.push(tokio::spawn(client::run(
            ctx.clone(),
            i,
            resume,
            ledger,
            permit,
            stop_rx.clone(),
        )));
    }
    let total = n as u64;
    let mut last_log = Instant::now();
    while tokio::time::Instant::now() < deadline {
        let (ready, failed) = (
            ctx.ready.load(Ordering::Relaxed),
            ctx.failed.load(Ordering::Relaxed),
        );
        if ready + failed >= total {
            break;
        }
        if last_log.elapsed() > Duration::from_secs(5) {
            tracing::info!(ready, failed, total, "connecting");
            last_log = Instant::now();
        }
        tokio::time::sleep(POLL).await;
    }
    tracing::info!(
        ready = ctx.ready.load(Ordering::Relaxed),
        failed = ctx.failed.load(Ordering::Relaxed),
        seconds = started.elapsed().as_secs_f64(),
        "connections up"
    );
    Fleet {
        ctx,
        handles,
        stop,
        started_us,
    }
}

impl Fleet {
    /// Connections per second over the ramp (start → last client up).
    fn connect_rate(&self) -> Option<f64> {
        let ready = self.ctx.ready.load(Ordering::Relaxed);
        let end = self.ctx.last_ready_us.load(Ordering::Relaxed);
        let span = end.saturating_sub(self.started_us);
        (ready > 0 && span > 0).then(|| ready as f64 / (span as f64 / 1e6))
    }

    /// Waits until every client's highest position reaches `target` (or its task ended),
    /// within `timeout`. Returns whether all did.
    async fn wait_for(&self, target: i64, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let behind = self
                .handles
                .iter()
                .zip(&self.ctx.progress)
                .filter(|(h, p)| !h.is_finished() && p.load(Ordering::Relaxed) < target)
                .count();
            if behind == 0 {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(behind, target, "clients still behind at the deadline");
                return false;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Clients whose task already ended (gave up or failed).
    fn ended(&self) -> usize {
        self.handles.iter().filter(|h| h.is_finished()).count()
    }

    /// Tells every client to stop and collects their outcomes.
    async fn stop(self) -> Vec<Outcome> {
        let _ = self.stop.send(true);
        let deadline = tokio::time::Instant::now() + STOP_DEADLINE;
        let mut outcomes = Vec::with_capacity(self.handles.len());
        for handle in self.handles {
            let abort = handle.abort_handle();
            match tokio::time::timeout_at(deadline, handle).await {
                Ok(Ok(outcome)) => outcomes.push(outcome),
                Ok(Err(_)) | Err(_) => {
                    abort.abort();
                    outcomes.push(Outcome {
                        failure: Some("did not stop in time".into()),
                        ..Outcome::default()
                    });
                }
            }
        }
        outcomes
    }
}

/// The exactly-once check of every ledger against the owed positions.
#[derive(Default)]
struct Verdict {
    clients: u32,
    lost: u64,
    duplicated: u64,
    unexpected: u64,
    clients_with_errors: u32,
    deliveries: u64,
    frame_bytes: u64,
    last_delivery_us: u64,
}

/// Checks each ledger: the client must hold every position of `owed` (sorted) after its
/// subscribe position exactly once, and nothing else.
fn verify(outcomes: &[Outcome], owed: &[i64]) -> Verdict {
    let mut v = Verdict::default();
    for ledger in outcomes.iter().filter_map(|o| o.ledger.as_ref()) {
        v.clients += 1;
        v.deliveries += ledger.deliveries;
        v.frame_bytes += ledger.frame_bytes;
        v.last_delivery_us = v.last_delivery_us.max(ledger.last_delivery_us);
        let first = owed.partition_point(|p| *p <= ledger.base);
        let (mut lost, mut duplicated, mut owed_received) = (0u64, 0u64, 0u64);
        for &p in &owed[first..] {
            let copies = u64::from(ledger.count(p));
            owed_received += copies;
            match copies {
                0 => lost += 1,
                1 => {}
                n => duplicated += n - 1,
            }
        }
        let received: u64 = ledger.counts.iter().map(|c| u64::from(*c)).sum();
        let unexpected = ledger.unexpected + received.saturating_sub(owed_received);
        if lost + duplicated + unexpected > 0 {
            v.clients_with_errors += 1;
        }
        v.lost += lost;
        v.duplicated += duplicated;
        v.unexpected += unexpected;
    }
    v
}

/// Fills the result's connection, close, latency and verification fields.
fn summarize(result: &mut RunResult, ctx: &RunContext, outcomes: &[Outcome], verdict: &Verdict) {
    let mut failures = BTreeMap::new();
    let mut closes = BTreeMap::new();
    for o in outcomes {
        if let Some(f) = &o.failure {
            *failures.entry(f.clone()).or_insert(0u32) += 1;
        }
        for c in &o.closes {
            *closes.entry(c.clone()).or_insert(0u32) += 1;
        }
        result.reconnects += o.reconnects;
        result.unrecovered += o.unrecovered;
    }
    result.connected = u32::try_from(ctx.ready.load(Ordering::Relaxed)).unwrap_or(u32::MAX);
    result.connect_failures = failures.values().sum();
    result.failure_reasons = report::top_counts(&failures, 5);
    result.server_closes = report::top_counts(&closes, 5);
    if let Ok(mut recorder) = ctx.recorder.lock() {
        // Deliveries that arrived before their command's 201 was read.
        if let Some(log) = &ctx.send_log {
            for ledger in outcomes.iter().filter_map(|o| o.ledger.as_ref()) {
                for &(position, received_us) in &ledger.pending {
                    if let Some(sent) = log.scheduled_us(position) {
                        report::record(&mut recorder.send, received_us.saturating_sub(sent));
                    }
                }
            }
        }
        result.handshake = Percentiles::of(&recorder.handshake);
        result.commit_to_delivery = Percentiles::of(&recorder.commit);
        result.send_to_delivery = Percentiles::of(&recorder.send);
    }
    result.clients_verified = verdict.clients;
    result.deliveries = verdict.deliveries;
    result.event_frame_bytes =
        (verdict.deliveries > 0).then(|| verdict.frame_bytes as f64 / verdict.deliveries as f64);
    result.lost = verdict.lost;
    result.duplicated = verdict.duplicated;
    result.unexpected = verdict.unexpected;
    result.clients_with_errors = verdict.clients_with_errors;
    result.ok = verdict.lost == 0 && verdict.duplicated == 0 && verdict.unexpected == 0;
}

/// Reads the server's RSS if a pid was given; a failure is logged, not fatal.
fn maybe_rss(args: &Args) -> Option<u64> {
    let pid = args.server_pid?;
    rss_kib(pid)
        .map_err(|e| tracing::warn!(error = %e, "cannot read the server's RSS"))
        .ok()
}

/// Records the server's RSS before and after connecting; with `per_connection`, also the
/// difference per connection. Only idle mode asks for it: it is the mode that runs on a
/// freshly started server (run.sh), so memory the allocator retained from earlier runs
/// cannot be reused and hide what connections cost.
fn record_rss(
    result: &mut RunResult,
    before: Option<u64>,
    after: Option<u64>,
    per_connection: bool,
) {
    result.rss_before_kib = before;
    result.rss_after_kib = after;
    if let (Some(b), Some(a), true) = (before, after, per_connection) {
        if result.connected > 0 {
            result.rss_per_connection_kib =
                Some((a as f64 - b as f64) / f64::from(result.connected));
        }
    }
}

/// A client context for this run's subscribers, with instants measured from `t0`.
fn new_context(args: &Args, setup: &Setup, t0: Instant) -> RunContext {
    RunContext::new(
        setup.ws_url.clone(),
        setup.tokens.subscribers.clone(),
        args.connections as usize,
        t0,
    )
}

fn fresh(n: u32) -> Vec<(Option<i64>, Option<Ledger>)> {
    (0..n).map(|_| (None, None)).collect()
}

/// Steady mode: subscribers, an open-loop writer, exactly-once verification.
async fn steady(args: &Args, setup: Setup) -> anyhow::Result<RunResult> {
    let api = setup.api.clone();
    let reader = setup.tokens.reader.clone();
    let head0 = api.head(&reader).await.context("reading the stream head")?;
    let rss_before = maybe_rss(args);
    let t0 = Instant::now();
    let duration = Duration::from_secs(args.duration);
    let total = (args.rate * duration.as_secs_f64()).round() as u64;
    let log = Arc::new(SendLog::new(head0, total));
    let mut ctx = new_context(args, &setup, t0);
    ctx.reconnect = true;
    ctx.send_log = Some(log.clone());
    let fleet = launch(
        Arc::new(ctx),
        fresh(args.connections),
        args.connect_rate.0,
        args.connect_concurrency,
    )
    .await;
    let rss_after = maybe_rss(args);
    let connects_per_sec = fleet.connect_rate();

    tracing::info!(rate = args.rate, seconds = args.duration, "writing");
    let writing_started_us = fleet.ctx.micros_since_t0(Instant::now());
    let writers = setup.tokens.writers.clone();
    let (ticks_before, cpu_from) = (process_ticks(), Instant::now());
    let wrote = writer::drive(api.clone(), writers, args.rate, duration, log, t0).await;
    let (server_cpu, postgres_cpu) =
        cpu_pct(args, &ticks_before, &process_ticks(), cpu_from.elapsed());
    tracing::info!(
        ok = wrote.ok,
        failed = wrote.failed,
        skipped = wrote.skipped,
        "writing done"
    );

    let head = api.head(&reader).await.context("reading the final head")?;
    let owed = api.alert_positions(&reader, head0, head).await?;
    if let Some(&last) = owed.last() {
        let drained = fleet
            .wait_for(last, Duration::from_secs(args.drain_timeout))
            .await;
        tracing::info!(drained, head, "drain");
    }
    let ended = fleet.ended();
    let ctx = fleet.ctx.clone();
    let outcomes = fleet.stop().await;
    let verdict = verify(&outcomes, &owed);
    let mut result = setup.result;
    summarize(&mut result, &ctx, &outcomes, &verdict);
    if ended > 0 {
        tracing::warn!(ended, "clients ended before the run did");
    }
    record_rss(&mut result, rss_before, rss_after, false);
    result.server_cpu_pct = server_cpu;
    result.postgres_cpu_pct = postgres_cpu;
    result.connects_per_sec = connects_per_sec;
    result.target_rate = Some(args.rate);
    result.duration_s = Some(duration.as_secs_f64());
    result.commands_scheduled = wrote.scheduled;
    result.commands_ok = wrote.ok;
    result.commands_failed = wrote.failed;
    result.commands_skipped = wrote.skipped;
    result.commands_per_sec = Some(wrote.ok as f64 / wrote.elapsed.as_secs_f64().max(1e-3));
    result.command_latency = Percentiles::of(&wrote.latency);
    result.command_failures = report::top_counts(&wrote.failures, 5);
    let span_us = verdict.last_delivery_us.saturating_sub(writing_started_us);
    if span_us > 0 {
        result.deliveries_per_sec = Some(verdict.deliveries as f64 / (span_us as f64 / 1e6));
    }
    Ok(result)
}

/// Connect mode: authenticated connections as fast as allowed.
async fn connect(args: &Args, setup: Setup) -> anyhow::Result<RunResult> {
    let mut ctx = new_context(args, &setup, Instant::now());
    ctx.subscribe = false;
    let mut result = setup.result;
    let rss_before = maybe_rss(args);
    let fleet = launch(
        Arc::new(ctx),
        fresh(args.connections),
        args.connect_rate.0,
        args.connect_concurrency,
    )
    .await;
    let rss_after = maybe_rss(args);
    result.connects_per_sec = fleet.connect_rate();
    let ctx = fleet.ctx.clone();
    let outcomes = fleet.stop().await;
    summarize(&mut result, &ctx, &outcomes, &Verdict::default());
    record_rss(&mut result, rss_before, rss_after, false);
    Ok(result)
}

/// Idle mode: subscribed connections held open; the server's RSS per connection.
async fn idle(args: &Args, setup: Setup) -> anyhow::Result<RunResult> {
    let head0 = setup
        .api
        .head(&setup.tokens.reader)
        .await
        .context("reading the stream head")?;
    let ctx = new_context(args, &setup, Instant::now());
    let mut result = setup.result;
    let rss_before = maybe_rss(args);
    let fleet = launch(
        Arc::new(ctx),
        fresh(args.connections),
        args.connect_rate.0,
        args.connect_concurrency,
    )
    .await;
    result.connects_per_sec = fleet.connect_rate();
    tokio::time::sleep(SETTLE_BEFORE_RSS).await;
    let rss_after = maybe_rss(args);
    tracing::info!(seconds = args.duration, rss_kib = ?rss_after, "holding");
    let hold_until = tokio::time::Instant::now() + Duration::from_secs(args.duration);
    let mut peak = rss_after;
    while tokio::time::Instant::now() < hold_until {
        tokio::time::sleep(Duration::from_secs(1).min(hold_until - tokio::time::Instant::now()))
            .await;
        peak = peak.max(maybe_rss(args));
    }
    let dropped = fleet.ended();
    let head = setup.api.head(&setup.tokens.reader).await?;
    let owed = setup
        .api
        .alert_positions(&setup.tokens.reader, head0, head)
        .await?;
    let ctx = fleet.ctx.clone();
    let outcomes = fleet.stop().await;
    let verdict = verify(&outcomes, &owed);
    summarize(&mut result, &ctx, &outcomes, &verdict);
    record_rss(&mut result, rss_before, rss_after, true);
    result.duration_s = Some(args.duration as f64);
    tracing::info!(dropped, peak_rss_kib = ?peak, "held");
    Ok(result)
}

/// Reconnect mode: a herd of clients returning at once, each owed the same events.
async fn reconnect(args: &Args, setup: Setup) -> anyhow::Result<RunResult> {
    let api = setup.api.clone();
    let reader = setup.tokens.reader.clone();
    let head0 = api.head(&reader).await.context("reading the stream head")?;
    let t0 = Instant::now();

    // 1. Everyone subscribes.
    let ctx = new_context(args, &setup, t0);
    let first = launch(
        Arc::new(ctx),
        fresh(args.connections),
        args.connect_rate.0,
        args.connect_concurrency,
    )
    .await;

    // 2. Everyone leaves.
    let left = first.stop().await;
    tracing::info!(clients = left.len(), "disconnected");
    tokio::time::sleep(SETTLE_AFTER_DISCONNECT).await;

    // 3. Events happen while they are away.
    let raised =
        writer::raise_burst(&api, &setup.tokens.writers, args.owed, OWED_CONCURRENCY).await;
    let head = api
        .head(&reader)
        .await
        .context("reading the head after raising")?;
    let owed = api.alert_positions(&reader, head0, head).await?;
    tracing::info!(raised, head, "raised the owed events");
    if raised != args.owed {
        tracing::warn!(
            raised,
            asked = args.owed,
            "some owed events could not be raised"
        );
    }

    // 4. Everyone returns at once, resuming from the last event they hold.
    let mut resumes = Vec::with_capacity(left.len());
    let mut never_connected = 0u32;
    for outcome in left {
        match outcome.ledger {
            Some(ledger) => resumes.push((Some(ledger.last), Some(ledger))),
            None => never_connected += 1,
        }
    }
    let mut ctx = new_context(args, &setup, t0);
    ctx.reconnect = true;
    ctx.complete_at = owed.last().copied();
    let back_us = ctx.micros_since_t0(Instant::now());
    let fleet = launch(Arc::new(ctx), resumes, None, args.connect_concurrency).await;
    let all_back = match owed.last() {
        Some(&last) => {
            fleet
                .wait_for(last, Duration::from_secs(args.drain_timeout))
                .await
        }
        None => true,
    };
    tracing::info!(all_back, "reconnected");
    let ctx = fleet.ctx.clone();
    let outcomes = fleet.stop().await;

    let mut result = setup.result;
    let verdict = verify(&outcomes, &owed);
    summarize(&mut result, &ctx, &outcomes, &verdict);
    result.connect_failures += never_connected;
    // Replayed events were committed before the clients came back: their commit → receive
    // time measures the absence, not the server. The resume times below are the measure.
    result.commit_to_delivery = None;
    let mut resume = report::histogram();
    let mut slowest = 0u64;
    for o in &outcomes {
        if let Some(done) = o.completed_us {
            let us = done.saturating_sub(back_us);
            report::record(&mut resume, us);
            slowest = slowest.max(us);
        }
    }
    let completed = resume.len();
    result.owed = Some(args.owed);
    result.resume = Percentiles::of(&resume);
    result.resume_all_s = (all_back && completed > 0).then(|| slowest as f64 / 1e6);
    // Each client must have been owed exactly the events raised while it was away.
    if owed.len() != args.owed as usize {
        tracing::warn!(
            owed = owed.len(),
            raised = args.owed,
            "the stream holds other alerts too; verification used the stream's list"
        );
    }
    Ok(result)
}
