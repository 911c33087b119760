//! Projections benchmark: what the read models cost to rebuild, to keep up, and to read.
//!
//! Against a real PostgreSQL that it starts itself (the embedded launcher, a fresh cluster
//! under `/tmp`, removed afterwards), it measures:
//!
//! 1. **rebuild**: `engine::rebuild` of the alert board from position 0 over a realistic
//!    multi-hospital log of N events (default 1,000,000; goal ≥ 50,000 events/s). The log is
//!    written straight into `events` with bulk `INSERT ... SELECT FROM unnest(...)` — the
//!    position trigger assigns every position, as for a committed command — with the
//!    lifecycle mix of real alerts (raised, acknowledged, escalated, resolved) across 20
//!    hospitals, and payloads serialized from `AlertEvent` values, so the projector decodes
//!    exactly what the command path stores;
//! 2. **lag**: the steady-state delay from an event's commit to the alert board's checkpoint
//!    covering it, with commands arriving through [`CommandBus`] at a fixed rate (default
//!    500/s for 20 s) while one projector task runs the server's loop
//!    ([`vigil::projection::follow`]: the hospitals each wake-up names), woken by the stream listener
//!    as in the server. Both ends are database timestamps (`clock_timestamp()`), taken just
//!    before each transaction commits: the event's `recorded_at` and, through a bench-only
//!    trigger, the checkpoint update that covers it;
//! 3. **reads**: the latency of the `GET /alerts` query path (the read-only REPEATABLE READ
//!    snapshot, `as_of`, the page and the counts — what the handler runs, without HTTP) on
//!    a hospital with 10,000 open alerts.
//!
//! It prints a markdown report on stdout; progress goes to stderr through `tracing`.
//!
//! ```text
//! cargo bench --bench rebuild                          # ~3 minutes once built
//! VIGIL_BENCH_EVENTS=50000 VIGIL_BENCH_LAG_SECONDS=3 cargo bench --bench rebuild   # smoke
//! ```
//!
//! `VIGIL_PROJECTION_SPACING_MS` paces the projector as it paces the server's (default 25; 0
//! projects on every wake-up).
//! Other knobs: `VIGIL_BENCH_RATE` (commands/s in the lag phase), `VIGIL_BENCH_OPEN_ALERTS`
//! (size of the read board).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aggregates::alert::{Alert, AlertCommand, AlertEvent, Severity};
use aggregates::types::{
    AlertMessage, Department, HospitalId, Note, PatientId, Reason, Role, UserId,
};
use anyhow::{anyhow, bail, Context};
use chrono::Utc;
use common::BenchCluster;
use cqrs_es::DomainEvent;
use projections::alert_board::{self, AlertBoard, BoardFilter};
use projections::engine;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{PgConnection, Row};
use uuid::Uuid;
use vigil::command::{CommandBus, CommandContext};
use vigil::store::embedded::EmbeddedPostgres;
use vigil::store::MIGRATOR;
use vigil::stream::listener::{StreamListener, Wakeups};

mod common;

/// Hospitals in the generated log: a regional deployment.
const HOSPITALS: usize = 20;

/// Rows per bulk-insert statement: big enough to amortize the round trip, small enough that
/// the row versions of the per-hospital counter rows one statement piles up stay few.
const BULK_BATCH: usize = 2_000;

/// Concurrent bulk loaders, each owning a disjoint set of hospitals (so each hospital's
/// events keep their order).
const LOADERS: usize = 2;

/// Alerts kept open per hospital in the generated log before resolutions dominate: a busy
/// board, not an ever-growing one.
const OPEN_TARGET: usize = 400;

/// Commands in flight at most in the lag phase; past it the dispatcher waits (and the
/// achieved rate, reported, drops below the target).
const MAX_IN_FLIGHT: usize = 64;

/// Read-latency samples.
const READS: usize = 2_000;

/// The database created inside the fresh cluster.
const DATABASE: &str = "bench";

/// Port naming the socket file; the cluster is private to its directory.
const PORT: u16 = 5432;

/// The hospital whose board the read benchmark queries.
const READ_HOSPITAL: &str = "read-board";

/// Sizes and durations of one run.
struct Plan {
    /// Events in the rebuilt log.
    events: usize,
    /// Commands per second in the lag phase.
    rate: u32,
    /// Length of the lag phase.
    lag_phase: Duration,
    /// Open alerts on the read board.
    open_alerts: usize,
}

impl Plan {
    fn from_env() -> anyhow::Result<Self> {
        fn var<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T> {
            match std::env::var(name) {
                Ok(v) => v
                    .trim()
                    .replace('_', "")
                    .parse()
                    .map_err(|_| anyhow!("{name}={v} is not a number")),
                Err(_) => Ok(default),
            }
        }
        Ok(Self {
            events: var("VIGIL_BENCH_EVENTS", 1_000_000)?,
            rate: var("VIGIL_BENCH_RATE", 500)?,
            lag_phase: Duration::from_secs(var("VIGIL_BENCH_LAG_SECONDS", 20)?),
            open_alerts: var("VIGIL_BENCH_OPEN_ALERTS", 10_000)?,
        })
    }
}

fn main() -> anyhow::Result<()> {
    common::init_tracing("info,sqlx=warn");
    let plan = Plan::from_env()?;
    let run_started = Instant::now();
    let cluster = BenchCluster::start("vr", PORT, DATABASE)?;
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")
        .and_then(|runtime| runtime.block_on(run(&cluster.pg, &plan)));
    let stopped = cluster.stop();
    let report = result?;
    stopped?;
    common::print_report(&report, run_started)
}

async fn run(pg: &EmbeddedPostgres, plan: &Plan) -> anyhow::Result<String> {
    let url = pg.url(DATABASE);
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .connect(&url)
        .await
        .context("connecting to the bench database")?;
    MIGRATOR.run(&pool).await.context("migrating")?;

    let mut out = String::new();
    writeln!(out, "## Projections benchmark\n")?;
    for (name, value) in common::server_settings(&pool, &SERVER_SETTINGS).await? {
        writeln!(out, "- {name}: {value}")?;
    }
    writeln!(
        out,
        "- CPUs: {}; load average at start (1, 5, 15 min): {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        common::load_average()
    )?;
    writeln!(out)?;

    // 1. Rebuild.
    tracing::info!(events = plan.events, "generating the event log");
    let load_started = Instant::now();
    let generated = load_log(&pool, plan.events).await?;
    let load_rate = plan.events as f64 / load_started.elapsed().as_secs_f64();
    sqlx::query("VACUUM ANALYZE events")
        .execute(&pool)
        .await
        .context("vacuuming the log")?;
    tracing::info!("rebuilding the alert board");
    let never = AtomicBool::new(false);
    let mut next_log = 0.0;
    let report = engine::rebuild(&pool, &AlertBoard, true, &never, |done, total| {
        let share = done as f64 / total.max(1) as f64;
        if share >= next_log {
            tracing::info!(done, total, "rebuild progress");
            next_log = share + 0.1;
        }
    })
    .await
    .context("rebuilding the alert board")?;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM alert_board")
        .fetch_one(&pool)
        .await?;
    if rows != generated.alerts as i64 {
        bail!(
            "the board has {rows} rows, the log raised {}",
            generated.alerts
        );
    }
    writeln!(
        out,
        "| rebuild of alert_board | events | hospitals | alerts | seconds | events/s |"
    )?;
    writeln!(out, "|---|---:|---:|---:|---:|---:|")?;
    writeln!(
        out,
        "| from position 0, one process | {} | {HOSPITALS} | {} | {:.1} | {:.0} |",
        report.events, generated.alerts, report.seconds, report.events_per_second
    )?;
    writeln!(
        out,
        "\nLog mix: {} raised, {} acknowledged, {} escalated, {} resolved; bulk-loaded at {:.0} \
         events/s (positions from the trigger).\n",
        generated.alerts,
        generated.acknowledged,
        generated.escalated,
        generated.resolved,
        load_rate
    )?;

    // 2. Lag.
    tracing::info!(
        rate = plan.rate,
        seconds = plan.lag_phase.as_secs(),
        "measuring lag"
    );
    let lag = lag_phase(pg, &pool, plan).await?;
    writeln!(
        out,
        "| projector lag (commit → checkpoint) | target cmd/s | achieved cmd/s | events | p50 ms | p99 ms | max ms |"
    )?;
    writeln!(out, "|---|---:|---:|---:|---:|---:|---:|")?;
    writeln!(
        out,
        "| CommandBus writers, {HOSPITALS} hospitals, 1 projector task | {} | {:.0} | {} | {:.1} | {:.1} | {:.1} |",
        plan.rate, lag.achieved, lag.events, lag.p50_ms, lag.p99_ms, lag.max_ms
    )?;
    writeln!(
        out,
        "\nCommand latency during the lag phase (execute → commit → positions read back): \
         p50 {:.1} ms, p99 {:.1} ms.\n",
        lag.command_p50_ms, lag.command_p99_ms
    )?;

    // 3. Reads.
    tracing::info!(open = plan.open_alerts, "measuring reads");
    let reads = read_phase(&pool, plan.open_alerts).await?;
    writeln!(
        out,
        "| GET /alerts query path ({} open alerts) | page | reads | p50 ms | p99 ms |",
        plan.open_alerts
    )?;
    writeln!(out, "|---|---:|---:|---:|---:|")?;
    for (label, page, p50, p99) in reads {
        writeln!(out, "| {label} | {page} | {READS} | {p50:.2} | {p99:.2} |")?;
    }
    writeln!(
        out,
        "\nLoad average at end (1, 5, 15 min): {}",
        common::load_average()
    )?;
    pool.close().await;
    Ok(out)
}

/// What the generator wrote.
#[derive(Default)]
struct Generated {
    alerts: usize,
    acknowledged: usize,
    escalated: usize,
    resolved: usize,
}

/// One event row, ready to insert.
struct EventRow {
    aggregate_id: String,
    sequence: i64,
    event_type: String,
    payload: String,
    metadata: String,
}

/// An open alert of the generator.
struct OpenAlert {
    id: String,
    sequence: i64,
    acknowledged: bool,
    level: u8,
}

/// Generates one hospital's alert traffic.
struct HospitalLog {
    hospital: String,
    open: Vec<OpenAlert>,
    rng: StdRng,
    users: Vec<UserId>,
    departments: Vec<Department>,
}

impl HospitalLog {
    fn new(hospital: String, seed: u64) -> anyhow::Result<Self> {
        let parse = |e: aggregates::types::InvalidValue| anyhow!("{e}");
        Ok(Self {
            hospital,
            open: Vec::new(),
            rng: StdRng::seed_from_u64(seed),
            users: (0..30)
                .map(|i| UserId::parse(&format!("nurse-{i}")).map_err(parse))
                .collect::<anyhow::Result<_>>()?,
            departments: ["icu", "er", "ward-3", "ward-4", "maternity", "pediatrics"]
                .iter()
                .map(|d| Department::parse(d).map_err(parse))
                .collect::<anyhow::Result<_>>()?,
        })
    }

    /// The next event: a new alert, or the next step of an open one.
    fn next(&mut self, counts: &mut Generated) -> anyhow::Result<EventRow> {
        let at = Utc::now();
        let by = self.users[self.rng.gen_range(0..self.users.len())].clone();
        let raise = self.open.is_empty()
            || (self.open.len() < OPEN_TARGET && self.rng.gen_bool(0.45))
            || self.rng.gen_bool(0.2);
        let (id, sequence, event) = if raise {
            let severity = [
                Severity::Low,
                Severity::Medium,
                Severity::High,
                Severity::Critical,
            ][self.rng.gen_range(0..4)];
            let patient = PatientId::parse(&format!("p-{}", self.rng.gen_range(0..5_000)))
                .map_err(|e| anyhow!("{e}"))?;
            let id = Uuid::new_v4().to_string();
            self.open.push(OpenAlert {
                id: id.clone(),
                sequence: 1,
                acknowledged: false,
                level: 0,
            });
            counts.alerts += 1;
            let event = AlertEvent::AlertRaised {
                severity,
                message: AlertMessage::parse(&format!(
                    "{patient}: SpO2 {}%",
                    80 + self.rng.gen_range(0..10)
                ))
                .map_err(|e| anyhow!("{e}"))?,
                department: Some(
                    self.departments[self.rng.gen_range(0..self.departments.len())].clone(),
                ),
                patient: Some(patient),
                by,
                at,
            };
            (id, 1, event)
        } else {
            let index = self.rng.gen_range(0..self.open.len());
            let roll: f64 = self.rng.gen();
            let alert = &mut self.open[index];
            alert.sequence += 1;
            let (id, sequence) = (alert.id.clone(), alert.sequence);
            let event = if !alert.acknowledged && roll < 0.55 {
                alert.acknowledged = true;
                counts.acknowledged += 1;
                AlertEvent::AlertAcknowledged {
                    patient: None,
                    by,
                    at,
                }
            } else if alert.level < 3 && roll < 0.75 {
                alert.level += 1;
                counts.escalated += 1;
                AlertEvent::AlertEscalated {
                    patient: None,
                    level: alert.level,
                    reason: Reason::parse("no response from the ward")
                        .map_err(|e| anyhow!("{e}"))?,
                    by,
                    at,
                }
            } else {
                self.open.swap_remove(index);
                counts.resolved += 1;
                AlertEvent::AlertResolved {
                    patient: None,
                    note: Note::parse("oxygen increased, stable").map_err(|e| anyhow!("{e}"))?,
                    by,
                    at,
                }
            };
            (id, sequence, event)
        };
        let command_id = Uuid::new_v4().to_string();
        Ok(EventRow {
            aggregate_id: format!("{}/{id}", self.hospital),
            sequence,
            event_type: event.event_type(),
            payload: serde_json::to_string(&event)?,
            metadata: serde_json::json!({
                "hospital": self.hospital,
                "user": "bench",
                "role": "nurse",
                "command_id": command_id,
                "correlation_id": command_id,
                "causation_id": command_id,
            })
            .to_string(),
        })
    }
}

/// Writes `events` events across [`HOSPITALS`] hospitals with [`LOADERS`] concurrent
/// loaders; returns what was written.
async fn load_log(pool: &PgPool, events: usize) -> anyhow::Result<Generated> {
    let mut loaders = Vec::new();
    for loader in 0..LOADERS {
        let pool = pool.clone();
        let hospitals: Vec<String> = (0..HOSPITALS)
            .filter(|h| h % LOADERS == loader)
            .map(|h| format!("hospital-{h:02}"))
            .collect();
        let share = events * hospitals.len() / HOSPITALS;
        loaders.push(tokio::spawn(async move {
            let mut logs = hospitals
                .into_iter()
                .enumerate()
                .map(|(i, h)| HospitalLog::new(h, (loader * 1000 + i) as u64))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let mut counts = Generated::default();
            let mut rng = StdRng::seed_from_u64(loader as u64);
            let mut written = 0;
            while written < share {
                let n = BULK_BATCH.min(share - written);
                let mut rows = Vec::with_capacity(n);
                for _ in 0..n {
                    let i = rng.gen_range(0..logs.len());
                    rows.push(logs[i].next(&mut counts)?);
                }
                insert_rows(&pool, &rows).await?;
                written += n;
            }
            Ok::<_, anyhow::Error>(counts)
        }));
    }
    let mut total = Generated::default();
    for loader in loaders {
        let counts = loader.await.context("a loader panicked")??;
        total.alerts += counts.alerts;
        total.acknowledged += counts.acknowledged;
        total.escalated += counts.escalated;
        total.resolved += counts.resolved;
    }
    Ok(total)
}

/// Inserts rows in one statement, in order: the trigger gives them consecutive positions of
/// their hospitals' streams.
async fn insert_rows(pool: &PgPool, rows: &[EventRow]) -> anyhow::Result<()> {
    let column = |f: fn(&EventRow) -> String| rows.iter().map(f).collect::<Vec<_>>();
    sqlx::query(
        "INSERT INTO events \
             (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         SELECT 'alert', aggregate_id, sequence, event_type, '1.0', payload::json, metadata::json \
         FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[]) \
              WITH ORDINALITY AS r(aggregate_id, sequence, event_type, payload, metadata, n) \
         ORDER BY n",
    )
    .bind(column(|r| r.aggregate_id.clone()))
    .bind(rows.iter().map(|r| r.sequence).collect::<Vec<_>>())
    .bind(column(|r| r.event_type.clone()))
    .bind(column(|r| r.payload.clone()))
    .bind(column(|r| r.metadata.clone()))
    .execute(pool)
    .await
    .context("bulk insert")?;
    Ok(())
}

/// What the lag phase measured.
struct Lag {
    achieved: f64,
    events: i64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    command_p50_ms: f64,
    command_p99_ms: f64,
}

/// Runs commands at `plan.rate` for `plan.lag_phase` while a projector task keeps the alert
/// board up to date, then reads each event's lag from the database.
async fn lag_phase(pg: &EmbeddedPostgres, pool: &PgPool, plan: &Plan) -> anyhow::Result<Lag> {
    // Every checkpoint update of the live alert board, with its time.
    sqlx::raw_sql(
        "CREATE TABLE bench_checkpoint_log (hospital text, position bigint, at timestamptz); \
         CREATE FUNCTION bench_log_checkpoint() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN INSERT INTO bench_checkpoint_log VALUES (NEW.hospital, NEW.position, NEW.updated_at); \
               RETURN NEW; END $$; \
         CREATE TRIGGER bench_log_checkpoint AFTER INSERT OR UPDATE ON projection_checkpoints \
         FOR EACH ROW WHEN (NEW.projector = 'alert_board') EXECUTE FUNCTION bench_log_checkpoint();",
    )
    .execute(pool)
    .await
    .context("installing the checkpoint log")?;
    let heads: Vec<(String, i64)> = sqlx::query_as("SELECT hospital, position FROM stream_heads")
        .fetch_all(pool)
        .await?;

    // The projector: the server's loop for one model (`vigil::projection::spawn` runs it for
    // every model; the others would first replay the whole bulk log here).
    let listener = StreamListener::spawn(pg.tokio_postgres_config(DATABASE));
    // As many connections as the projector uses at once (the server's pool is shared).
    let projector_pool = PgPoolOptions::new()
        .max_connections(engine::CATCH_UP_CONCURRENCY as u32)
        .connect(&pg.url(DATABASE))
        .await?;
    let projector = tokio::spawn(vigil::projection::follow(
        projector_pool,
        Arc::new(AlertBoard),
        Wakeups::new(
            listener.subscribe(),
            vigil::projection::POLL_INTERVAL,
            Duration::from_millis(
                std::env::var("VIGIL_PROJECTION_SPACING_MS")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(vigil::config::DEFAULT_PROJECTION_SPACING_MS),
            ),
        ),
    ));
    // Let the listener connect before counting.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let writers = PgPoolOptions::new()
        .max_connections(16)
        .connect(&pg.url(DATABASE))
        .await?;
    let bus = Arc::new(CommandBus::new(writers.clone()));
    let raised: Arc<Mutex<Vec<VecDeque<String>>>> =
        Arc::new(Mutex::new(vec![VecDeque::new(); HOSPITALS]));
    let hospitals: Arc<Vec<HospitalId>> = Arc::new(
        (0..HOSPITALS)
            .map(|h| HospitalId::parse(&format!("hospital-{h:02}")).map_err(|e| anyhow!("{e}")))
            .collect::<anyhow::Result<_>>()?,
    );
    let latencies: Arc<Mutex<Vec<f64>>> = Arc::default();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(plan.rate)));
    let started = Instant::now();
    let mut issued = 0u64;
    let mut tasks = Vec::new();
    while started.elapsed() < plan.lag_phase {
        tick.tick().await;
        let permit = slots.clone().acquire_owned().await?;
        let (bus, raised, hospitals, latencies) = (
            bus.clone(),
            raised.clone(),
            hospitals.clone(),
            latencies.clone(),
        );
        let h = (issued as usize) % HOSPITALS;
        let acknowledge = issued % 3 == 2;
        issued += 1;
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let hospital = &hospitals[h];
            let user = UserId::parse("bench-nurse").map_err(|e| anyhow!("{e}"))?;
            let command_id = Uuid::new_v4();
            let ctx = CommandContext {
                hospital: hospital.clone(),
                user: user.clone(),
                role: Role::Nurse,
                command_id,
                correlation_id: command_id,
                causation_id: command_id,
            };
            let target = if acknowledge {
                raised.lock().map_err(|_| anyhow!("poisoned"))?[h].pop_front()
            } else {
                None
            };
            let at = Utc::now();
            let began = Instant::now();
            match target {
                Some(id) => {
                    bus.execute::<Alert>(&ctx, &id, || AlertCommand::Acknowledge {
                        by: user.clone(),
                        at,
                    })
                    .await
                    .map_err(|e| anyhow!("acknowledge: {e}"))?;
                }
                None => {
                    let message =
                        AlertMessage::parse("bench: SpO2 85%").map_err(|e| anyhow!("{e}"))?;
                    let id = command_id.to_string();
                    bus.execute::<Alert>(&ctx, &id, || AlertCommand::Raise {
                        severity: Severity::High,
                        message: message.clone(),
                        department: None,
                        patient: None,
                        by: user.clone(),
                        at,
                    })
                    .await
                    .map_err(|e| anyhow!("raise: {e}"))?;
                    raised.lock().map_err(|_| anyhow!("poisoned"))?[h].push_back(id);
                }
            }
            latencies
                .lock()
                .map_err(|_| anyhow!("poisoned"))?
                .push(began.elapsed().as_secs_f64() * 1000.0);
            Ok::<_, anyhow::Error>(())
        }));
    }
    for task in tasks {
        task.await.context("a writer panicked")??;
    }
    let achieved = issued as f64 / started.elapsed().as_secs_f64();
    // Let the projector cover the last commands.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let behind: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM stream_heads h LEFT JOIN projection_checkpoints c \
               ON c.projector = 'alert_board' AND c.hospital = h.hospital \
             WHERE coalesce(c.position, 0) < h.position",
        )
        .fetch_one(pool)
        .await?;
        if behind == 0 {
            break;
        }
        if Instant::now() > deadline {
            bail!("the projector did not catch up within 30 s of the last command");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    projector.abort();
    writers.close().await;

    let (hospital_names, head_positions): (Vec<String>, Vec<i64>) = heads.into_iter().unzip();
    let row = sqlx::query(
        "WITH before AS (SELECT * FROM unnest($1::text[], $2::bigint[]) AS b(hospital, position)), \
         lags AS ( \
           SELECT extract(epoch FROM ( \
                    SELECT min(l.at) FROM bench_checkpoint_log l \
                    WHERE l.hospital = e.hospital AND l.position >= e.position) \
                  - e.recorded_at) * 1000 AS ms \
           FROM events e JOIN before b USING (hospital) WHERE e.position > b.position) \
         SELECT count(*) AS n, \
                percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) AS p50, \
                percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) AS p99, \
                max(ms)::float8 AS max \
         FROM lags",
    )
    .bind(&hospital_names)
    .bind(&head_positions)
    .fetch_one(pool)
    .await
    .context("computing the lags")?;
    let mut commands = latencies.lock().map_err(|_| anyhow!("poisoned"))?.clone();
    commands.sort_by(f64::total_cmp);
    Ok(Lag {
        achieved,
        events: row.try_get("n")?,
        p50_ms: row.try_get::<Option<f64>, _>("p50")?.unwrap_or(f64::NAN),
        p99_ms: row.try_get::<Option<f64>, _>("p99")?.unwrap_or(f64::NAN),
        max_ms: row.try_get::<Option<f64>, _>("max")?.unwrap_or(f64::NAN),
        command_p50_ms: percentile(&commands, 0.50),
        command_p99_ms: percentile(&commands, 0.99),
    })
}

/// Fills [`READ_HOSPITAL`]'s board with `open` open alerts, then times the `GET /alerts`
/// query path; returns (label, page size, p50 ms, p99 ms) per variant.
async fn read_phase(
    pool: &PgPool,
    open: usize,
) -> anyhow::Result<Vec<(&'static str, i64, f64, f64)>> {
    let mut log = HospitalLog::new(READ_HOSPITAL.to_owned(), 42)?;
    let mut counts = Generated::default();
    let mut written = 0;
    while written < open {
        let n = BULK_BATCH.min(open - written);
        let mut rows = Vec::with_capacity(n);
        while rows.len() < n {
            // Raises only: every alert stays open.
            log.open.clear();
            rows.push(log.next(&mut counts)?);
        }
        insert_rows(pool, &rows).await?;
        written += n;
    }
    engine::catch_up(pool, &AlertBoard).await?;
    sqlx::query("VACUUM ANALYZE alert_board")
        .execute(pool)
        .await?;
    let board: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM alert_board WHERE hospital = $1 AND status IN ('raised', 'acknowledged')",
    )
    .bind(READ_HOSPITAL)
    .fetch_one(pool)
    .await?;
    if board != open as i64 {
        bail!("the read board has {board} open alerts, expected {open}");
    }
    let mut conn = pool.acquire().await?;
    let mut results = Vec::new();
    let variants: [(&'static str, BoardFilter); 3] = [
        (
            "open alerts, default page",
            BoardFilter {
                limit: 100,
                ..BoardFilter::default()
            },
        ),
        (
            "open alerts, largest page",
            BoardFilter {
                limit: 500,
                ..BoardFilter::default()
            },
        ),
        (
            "one department, critical only",
            BoardFilter {
                limit: 100,
                severity: Some("critical".into()),
                department: Some("icu".into()),
                ..BoardFilter::default()
            },
        ),
    ];
    for (label, filter) in variants {
        // Warm-up, then samples.
        for _ in 0..50 {
            board_read(&mut conn, &filter).await?;
        }
        let mut samples = Vec::with_capacity(READS);
        for _ in 0..READS {
            let began = Instant::now();
            board_read(&mut conn, &filter).await?;
            samples.push(began.elapsed().as_secs_f64() * 1000.0);
        }
        samples.sort_by(f64::total_cmp);
        results.push((
            label,
            filter.limit,
            percentile(&samples, 0.50),
            percentile(&samples, 0.99),
        ));
    }
    Ok(results)
}

/// What `GET /alerts` runs: a read-only REPEATABLE READ snapshot, the checkpoint as `as_of`,
/// the page and the counts.
async fn board_read(conn: &mut PgConnection, filter: &BoardFilter) -> anyhow::Result<()> {
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    let _as_of: i64 = sqlx::query_scalar(
        "SELECT coalesce((SELECT position FROM projection_checkpoints WHERE projector = $1 AND hospital = $2), 0)",
    )
    .bind("alert_board")
    .bind(READ_HOSPITAL)
    .fetch_one(&mut *tx)
    .await?;
    let rows = alert_board::list(&mut tx, READ_HOSPITAL, filter).await?;
    if rows.is_empty() {
        bail!("the board read returned no rows");
    }
    alert_board::counts(&mut tx, READ_HOSPITAL).await?;
    tx.commit().await?;
    Ok(())
}

/// The server settings that decide what a rebuild costs, for the report.
const SERVER_SETTINGS: [&str; 5] = [
    "synchronous_commit",
    "fsync",
    "shared_buffers",
    "work_mem",
    "max_wal_size",
];

/// The `q` quantile of sorted samples (nearest rank).
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}
