//! Stream append benchmark: what the ordered hospital streams cost in write throughput.
//!
//! Every committed event takes the next position of its hospital's stream from a counter row
//! in `stream_heads`, whose row lock is held to commit (see
//! `migrations/20261123000001_create_event_store.sql`). Writers to one hospital therefore
//! serialize for their insert-to-commit window; writers to different hospitals do not. This
//! bench measures that cost against a real PostgreSQL that it starts itself (the embedded
//! launcher, a fresh cluster under `/tmp`, removed afterwards):
//!
//! 1. **commands**: `C` concurrent writers raising alerts through [`CommandBus`] (load the
//!    aggregate, handle, insert in a transaction, commit, read the positions back), all in one
//!    hospital vs. spread over `C` hospitals;
//! 2. **bare inserts**: the same comparison for a single-row `INSERT` in autocommit (one round
//!    trip), which shows the serialized window without cqrs-es's work around it, into three
//!    tables shaped like `events` that differ only in how the position is assigned:
//!    - `events` itself, through the production trigger (counter row lock; since issue 17 no
//!      `pg_notify`: writers announce after commit, see `vigil::stream::announce`);
//!    - a copy whose trigger is the production one plus the in-transaction
//!      `PERFORM pg_notify(...)` it had before issue 17 (derived from the installed function,
//!      so it cannot drift), to show what that NOTIFY cost;
//!    - a copy whose position comes from a sequence (no trigger: neither dense nor
//!      commit-ordered, the design the counter was chosen over);
//! 3. **reads**: `read_after` paging (500 events a page) over one long stream, bulk-loaded
//!    with SQL so that the trigger assigns the positions.
//!
//! It prints a markdown table on stdout; progress goes to stderr through `tracing`.
//!
//! ```text
//! taskset -c 1 cargo bench --bench stream_append        # ~140 s once built
//! VIGIL_BENCH_QUICK=1 cargo bench --bench stream_append # smoke test, ~35 s
//! ```
//!
//! CPU pinning: PostgreSQL inherits the CPU mask of the process that starts it, so under
//! `taskset -c 1` the server would silently share the bench's single core. The bench widens
//! its mask to every CPU while it starts PostgreSQL and restores its own mask before the tokio
//! runtime exists: the bench is pinned, PostgreSQL is not. Both masks are printed.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aggregates::alert::{Alert, AlertCommand, Severity};
use aggregates::types::{AlertMessage, HospitalId, Role, UserId};
use anyhow::{anyhow, bail, Context};
use common::BenchCluster;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::Row;
use uuid::Uuid;
use vigil::command::{CommandBus, CommandContext};
use vigil::store::embedded::EmbeddedPostgres;
use vigil::store::MIGRATOR;
use vigil::stream::read::read_after;

mod common;

/// Concurrent writers per cell: one writer (no contention) up to far more writers than cores.
const CONCURRENCY: [usize; 4] = [1, 4, 16, 64];

/// Events per `read_after` call in the read benchmark: the page size the issue asks about.
const PAGE: i64 = 500;

/// Rows per bulk-load statement. Each row's trigger updates the same `stream_heads` row, and
/// the row versions a still-open transaction makes cannot be pruned, so one huge statement
/// would pile up versions of that row; 1,000 rows keeps each statement's pile small.
const BULK_BATCH: i64 = 1_000;

/// The database created inside the fresh cluster.
const DATABASE: &str = "bench";

/// The bench-only copies of `events` (see [`prepare_insert_variants`]).
const COUNTER_TABLE: &str = "bench_events_counter";
const SEQUENCE_TABLE: &str = "bench_events_sequence";

/// `application_name` of the writers' connections, so the wait sampler sees only them.
const WRITER_APPLICATION: &str = "vigil-bench-writer";

/// How often the wait sampler looks at the writers' backends: often enough for a few hundred
/// samples per cell, rarely enough that its own queries cost nothing measurable.
const SAMPLE_INTERVAL: Duration = Duration::from_millis(20);

/// Wait states below this share of the samples are left out of the report.
const MIN_REPORTED_SHARE: f64 = 0.05;

/// Port naming the socket file; the cluster is private to its directory, so it never collides.
const PORT: u16 = 5432;

/// How long to wait after closing a cell's pool before reading `pg_stat_wal`: backends flush
/// their pending statistics when they exit, shortly after the pool's Terminate message.
const STATS_SETTLE: Duration = Duration::from_millis(300);

/// Durations and sizes of one run.
struct Plan {
    /// Time each write cell runs before it starts counting (connections, caches).
    warmup: Duration,
    /// Counted time of each command cell.
    commands: Duration,
    /// Counted time of each bare-insert cell.
    inserts: Duration,
    /// Events in the stream the read benchmark pages over.
    stream_events: i64,
    /// Counted time of the read benchmark (whole passes; at least one).
    reads: Duration,
}

impl Plan {
    /// The full plan, or a short one when `VIGIL_BENCH_QUICK` is set (to anything but `0`).
    fn from_env() -> (Self, bool) {
        let quick = std::env::var("VIGIL_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        let plan = if quick {
            Plan {
                warmup: Duration::from_millis(200),
                commands: Duration::from_secs(1),
                inserts: Duration::from_millis(300),
                stream_events: 10_000,
                reads: Duration::from_secs(1),
            }
        } else {
            Plan {
                warmup: Duration::from_millis(700),
                commands: Duration::from_secs(6),
                inserts: Duration::from_millis(2500),
                stream_events: 100_000,
                reads: Duration::from_secs(5),
            }
        };
        (plan, quick)
    }
}

fn main() -> anyhow::Result<()> {
    common::init_tracing("info,sqlx=warn");
    let (plan, quick) = Plan::from_env();
    let run_started = Instant::now();

    let bench_cpus = affinity::current().context("reading the bench's CPU mask")?;
    affinity::set(&affinity::all()).context("widening the CPU mask for PostgreSQL")?;
    let started = BenchCluster::start("vb", PORT, DATABASE);
    affinity::set(&bench_cpus).context("restoring the bench's CPU mask")?;
    let cluster = started?;

    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")
        .and_then(|runtime| {
            let workers = runtime.metrics().num_workers();
            runtime.block_on(run(&cluster.pg, &plan, quick, workers))
        });
    let stopped = cluster.stop();
    let report = result?;
    stopped?;

    common::print_report(&report, run_started)
}

/// Runs every cell and returns the markdown report.
async fn run(
    pg: &EmbeddedPostgres,
    plan: &Plan,
    quick: bool,
    workers: usize,
) -> anyhow::Result<String> {
    let url = pg.url(DATABASE);
    let admin = PgPoolOptions::new()
        .max_connections(2)
        .connect(&url)
        .await
        .context("connecting to the bench database")?;
    MIGRATOR.run(&admin).await.context("migrating")?;
    let template = EventTemplate::capture(&admin).await?;
    prepare_insert_variants(&admin).await?;
    // Instrumentation only (it times each WAL flush), in the bench's own throw-away cluster;
    // the settings that decide what a commit costs are left as the launcher wrote them.
    sqlx::query("ALTER SYSTEM SET track_wal_io_timing = on")
        .execute(&admin)
        .await
        .context("turning on track_wal_io_timing")?;
    sqlx::query("SELECT pg_reload_conf()")
        .execute(&admin)
        .await
        .context("reloading the configuration")?;

    let mut out = String::new();
    writeln!(
        out,
        "## Stream append benchmark{}\n",
        if quick {
            " (QUICK: smoke-test durations, figures not meaningful)"
        } else {
            ""
        }
    )?;
    for (name, value) in common::server_settings(&admin, &SERVER_SETTINGS).await? {
        writeln!(out, "- {name}: {value}")?;
    }
    writeln!(
        out,
        "- bench CPUs: {} (tokio worker threads: {workers}); PostgreSQL postmaster CPUs: {}",
        affinity::describe(Path::new("/proc/self/status")),
        postmaster_cpus(pg)
    )?;
    writeln!(
        out,
        "- load average at start (1, 5, 15 min): {}",
        common::load_average()
    )?;
    writeln!(
        out,
        "- warm-up {:?} per write cell; counted {:?} per command cell, {:?} per insert cell",
        plan.warmup, plan.commands, plan.inserts
    )?;
    writeln!(out)?;

    writeln!(
        out,
        "| workload | writers | hospitals | ops/s | p50 ms | p99 ms | WAL flushes per op | \
         ms per WAL flush | PostgreSQL CPU ms per op | \
         writers' backends (sampled) |"
    )?;
    writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")?;
    let postmaster = postmaster_pid(pg);
    let kinds = [
        Kind::Command,
        Kind::Insert(Positions::Production),
        Kind::Insert(Positions::CounterWithNotify),
        Kind::Insert(Positions::Sequence),
    ];
    for kind in kinds {
        let measure = match kind {
            Kind::Command => plan.commands,
            Kind::Insert(_) => plan.inserts,
        };
        for writers in CONCURRENCY {
            // With one writer both layouts are the same single hospital: measured once.
            let layouts: &[Layout] = if writers == 1 {
                &[Layout::OneHospital]
            } else {
                &[Layout::OneHospital, Layout::Spread]
            };
            for &layout in layouts {
                let cell = Cell {
                    kind,
                    layout,
                    writers,
                };
                tracing::info!(?kind, ?layout, writers, "running write cell");
                let result = cell
                    .run(&url, &admin, &template, plan.warmup, measure, postmaster)
                    .await
                    .with_context(|| format!("{kind:?} {layout:?} x{writers}"))?;
                writeln!(
                    out,
                    "| {} | {writers} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} |",
                    kind.label(),
                    layout.hospitals(writers),
                    result.per_second,
                    ms(result.p50),
                    ms(result.p99),
                    result.wal_flushes_per_op,
                    result.ms_per_wal_flush,
                    result
                        .postgres_cpu_ms_per_op
                        .map_or_else(|| "—".to_owned(), |v| format!("{v:.3}")),
                    result.waits,
                )?;
            }
        }
    }

    tracing::info!(events = plan.stream_events, "bulk-loading the read stream");
    let hospital = HospitalId::parse("read-stream").map_err(|e| anyhow!("{e}"))?;
    let load = bulk_load(&admin, &template, &hospital, plan.stream_events).await?;
    tracing::info!("running the read benchmark");
    let reads = read_cell(&url, &hospital, plan.stream_events, plan.reads).await?;
    writeln!(out)?;
    writeln!(
        out,
        "| read_after over one stream | events | page | pages/s | events/s | p50 ms/page | p99 ms/page |"
    )?;
    writeln!(out, "|---|---:|---:|---:|---:|---:|---:|")?;
    writeln!(
        out,
        "| 1 reader, whole passes from position 0 | {} | {PAGE} | {:.0} | {:.0} | {:.2} | {:.2} |",
        plan.stream_events,
        reads.pages_per_second,
        reads.events_per_second,
        ms(reads.p50),
        ms(reads.p99)
    )?;
    writeln!(
        out,
        "\nBulk load of the read stream (INSERT ... SELECT, {BULK_BATCH} rows a statement, \
         positions from the trigger): {:.0} events/s",
        load
    )?;
    writeln!(
        out,
        "\nLoad average at end (1, 5, 15 min): {}",
        common::load_average()
    )?;
    admin.close().await;
    Ok(out)
}

/// What each writer does once per operation.
#[derive(Clone, Copy, Debug)]
enum Kind {
    /// `CommandBus::execute::<Alert>` with a `Raise` for a new alert.
    Command,
    /// One event row inserted in autocommit, its position assigned as given.
    Insert(Positions),
}

/// How a bare insert's position is assigned.
#[derive(Clone, Copy, Debug)]
enum Positions {
    /// Into `events`, by the production trigger: counter row lock, no notification.
    Production,
    /// Into [`COUNTER_TABLE`], by the production trigger plus an in-transaction `pg_notify`
    /// (the trigger before issue 17).
    CounterWithNotify,
    /// Into [`SEQUENCE_TABLE`], from a sequence: no trigger, no lock, no notification.
    Sequence,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Command => "command via CommandBus",
            Kind::Insert(Positions::Production) => "INSERT, production trigger",
            Kind::Insert(Positions::CounterWithNotify) => "INSERT, trigger plus NOTIFY (pre-17)",
            Kind::Insert(Positions::Sequence) => "INSERT, sequence position",
        }
    }

    /// A short tag for hospital ids, so every cell starts on fresh stream heads.
    fn tag(self) -> &'static str {
        match self {
            Kind::Command => "cmd",
            Kind::Insert(Positions::Production) => "ins",
            Kind::Insert(Positions::CounterWithNotify) => "ctr",
            Kind::Insert(Positions::Sequence) => "seq",
        }
    }
}

/// Where the writers of a cell write.
#[derive(Clone, Copy, Debug)]
enum Layout {
    /// Every writer in the same hospital: they contend for one `stream_heads` row.
    OneHospital,
    /// Writer `i` in hospital `i`: no two writers share a stream.
    Spread,
}

impl Layout {
    fn hospitals(self, writers: usize) -> usize {
        match self {
            Layout::OneHospital => 1,
            Layout::Spread => writers,
        }
    }
}

/// One measured combination.
struct Cell {
    kind: Kind,
    layout: Layout,
    writers: usize,
}

/// What a write cell measured.
struct CellResult {
    /// Operations completed inside the counted window, per second of it.
    per_second: f64,
    /// Median latency of those operations.
    p50: Duration,
    /// 99th-percentile latency of those operations.
    p99: Duration,
    /// `pg_stat_wal.wal_sync` over the cell divided by the operations of the cell (warm-up
    /// included): below 1 means commits shared a WAL flush (group commit).
    wal_flushes_per_op: f64,
    /// Mean duration of those flushes (`pg_stat_wal.wal_sync_time`): the disk's commit cost.
    ms_per_wal_flush: f64,
    /// CPU time of the PostgreSQL cluster (postmaster, its live children, and the children it
    /// reaped) over the counted window, per counted operation: carries the figure to a larger
    /// database host. `None` when the postmaster's pid cannot be read.
    postgres_cpu_ms_per_op: Option<f64>,
    /// Where the writers' backends were during the counted window (see [`sample_waits`]).
    waits: String,
}

/// The counted window of a cell, shared by its writers.
#[derive(Clone, Copy)]
struct Window {
    start: Instant,
    end: Instant,
}

/// What one writer did.
#[derive(Default)]
struct WriterStats {
    /// Every operation it completed, warm-up included.
    completed: u64,
    /// Latencies (µs) of the operations that completed inside the counted window.
    counted_us: Vec<u64>,
}

/// The shared means of writing, one per cell.
enum Target {
    // Boxed: the bus holds five cqrs-es frameworks, and clippy rightly flags the size gap.
    Bus(Box<CommandBus>),
    Insert(PgPool, Arc<EventTemplate>, Positions),
}

impl Cell {
    async fn run(
        &self,
        url: &str,
        admin: &PgPool,
        template: &Arc<EventTemplate>,
        warmup: Duration,
        measure: Duration,
        postmaster: Option<u32>,
    ) -> anyhow::Result<CellResult> {
        // One connection per writer: writers never wait for the pool, only for each other.
        let options = url
            .parse::<sqlx::postgres::PgConnectOptions>()
            .context("parsing the database URL")?
            .application_name(WRITER_APPLICATION);
        let pool = PgPoolOptions::new()
            .max_connections(self.writers as u32)
            .min_connections(self.writers as u32)
            .connect_with(options)
            .await
            .context("connecting the writers' pool")?;
        let target = Arc::new(match self.kind {
            Kind::Command => Target::Bus(Box::new(CommandBus::new(pool.clone()))),
            Kind::Insert(positions) => Target::Insert(pool.clone(), template.clone(), positions),
        });
        let wal_before = wal_syncs(admin).await?;

        let begin = Instant::now();
        let window = Window {
            start: begin + warmup,
            end: begin + warmup + measure,
        };
        let mut tasks = Vec::with_capacity(self.writers);
        for i in 0..self.writers {
            let hospital = match self.layout {
                Layout::OneHospital => format!("{}-one-{}", self.kind.tag(), self.writers),
                Layout::Spread => format!("{}-spread-{}-{i}", self.kind.tag(), self.writers),
            };
            let hospital = HospitalId::parse(&hospital).map_err(|e| anyhow!("{e}"))?;
            let user = UserId::parse(&format!("bench-writer-{i}")).map_err(|e| anyhow!("{e}"))?;
            tasks.push(tokio::spawn(writer(target.clone(), hospital, user, window)));
        }
        let sampler = tokio::spawn(sample_waits(admin.clone(), window));
        let cpu = tokio::spawn(async move {
            let postmaster = postmaster?;
            tokio::time::sleep_until(window.start.into()).await;
            let before = cluster_cpu_ms(postmaster)?;
            tokio::time::sleep_until(window.end.into()).await;
            Some(cluster_cpu_ms(postmaster)? - before)
        });
        let mut completed = 0u64;
        let mut latencies = Vec::new();
        for task in tasks {
            let stats = task.await.context("writer panicked")??;
            completed += stats.completed;
            latencies.extend(stats.counted_us);
        }
        let waits = sampler.await.context("wait sampler panicked")??;
        let cpu_ms = cpu.await.context("CPU sampler panicked")?;

        drop(target);
        pool.close().await;
        tokio::time::sleep(STATS_SETTLE).await;
        let wal_after = wal_syncs(admin).await?;

        latencies.sort_unstable();
        Ok(CellResult {
            per_second: latencies.len() as f64 / measure.as_secs_f64(),
            p50: percentile(&latencies, 0.50),
            p99: percentile(&latencies, 0.99),
            wal_flushes_per_op: (wal_after.flushes - wal_before.flushes) as f64
                / completed.max(1) as f64,
            ms_per_wal_flush: (wal_after.flush_ms - wal_before.flush_ms)
                / (wal_after.flushes - wal_before.flushes).max(1) as f64,
            postgres_cpu_ms_per_op: cpu_ms.map(|ms| ms / latencies.len().max(1) as f64),
            waits,
        })
    }
}

/// One writer: operations back to back until the window ends.
async fn writer(
    target: Arc<Target>,
    hospital: HospitalId,
    user: UserId,
    window: Window,
) -> anyhow::Result<WriterStats> {
    let message = AlertMessage::parse("benchmark alert").map_err(|e| anyhow!("{e}"))?;
    let mut stats = WriterStats::default();
    loop {
        let started = Instant::now();
        if started >= window.end {
            return Ok(stats);
        }
        let command_id = Uuid::new_v4();
        match &*target {
            Target::Bus(bus) => {
                let ctx = CommandContext {
                    hospital: hospital.clone(),
                    user: user.clone(),
                    role: Role::Nurse,
                    command_id,
                    correlation_id: command_id,
                    causation_id: command_id,
                };
                let at = chrono::Utc::now();
                bus.execute::<Alert>(&ctx, &command_id.to_string(), || AlertCommand::Raise {
                    severity: Severity::High,
                    message: message.clone(),
                    department: None,
                    patient: None,
                    by: user.clone(),
                    at,
                })
                .await
                .map_err(|e| anyhow!("command failed: {e}"))?;
            }
            Target::Insert(pool, template, positions) => {
                template
                    .insert(pool, *positions, &hospital, command_id)
                    .await?;
            }
        }
        let finished = Instant::now();
        stats.completed += 1;
        if started >= window.start && finished <= window.end {
            stats
                .counted_us
                .push((finished - started).as_micros() as u64);
        }
    }
}

/// A stored `AlertRaised` row, copied from one the bus really wrote, so rows inserted with
/// plain SQL decode exactly as committed commands do.
struct EventTemplate {
    aggregate_type: String,
    event_type: String,
    event_version: String,
    payload: String,
    metadata: String,
}

impl EventTemplate {
    /// Raises one alert through the bus and reads its stored row back.
    async fn capture(pool: &PgPool) -> anyhow::Result<Arc<Self>> {
        let hospital = HospitalId::parse("template").map_err(|e| anyhow!("{e}"))?;
        let user = UserId::parse("bench-template").map_err(|e| anyhow!("{e}"))?;
        let command_id = Uuid::new_v4();
        let ctx = CommandContext {
            hospital: hospital.clone(),
            user: user.clone(),
            role: Role::Nurse,
            command_id,
            correlation_id: command_id,
            causation_id: command_id,
        };
        let message = AlertMessage::parse("benchmark alert").map_err(|e| anyhow!("{e}"))?;
        let at = chrono::Utc::now();
        CommandBus::new(pool.clone())
            .execute::<Alert>(&ctx, &command_id.to_string(), || AlertCommand::Raise {
                severity: Severity::High,
                message: message.clone(),
                department: None,
                patient: None,
                by: user.clone(),
                at,
            })
            .await
            .map_err(|e| anyhow!("raising the template alert: {e}"))?;
        let row = sqlx::query(
            "SELECT aggregate_type, event_type, event_version, payload::text AS payload, \
                    metadata::text AS metadata \
             FROM events WHERE command_id = $1",
        )
        .bind(command_id)
        .fetch_one(pool)
        .await
        .context("reading the template event back")?;
        Ok(Arc::new(Self {
            aggregate_type: row.try_get("aggregate_type")?,
            event_type: row.try_get("event_type")?,
            event_version: row.try_get("event_version")?,
            payload: row.try_get("payload")?,
            metadata: row.try_get("metadata")?,
        }))
    }

    /// Inserts one event of a new aggregate in `hospital`, in autocommit, with its position
    /// assigned as `positions` says. The trigger variants get exactly the columns
    /// postgres-es inserts; the sequence variant also fills the columns the trigger would.
    async fn insert(
        &self,
        pool: &PgPool,
        positions: Positions,
        hospital: &HospitalId,
        command_id: Uuid,
    ) -> anyhow::Result<()> {
        const METADATA: &str =
            "($6::jsonb || jsonb_build_object('hospital', $7::text, 'command_id', $8::text))::json";
        let sql = match positions {
            Positions::Production | Positions::CounterWithNotify => {
                let table = match positions {
                    Positions::Production => "events",
                    _ => COUNTER_TABLE,
                };
                format!(
                    "INSERT INTO {table} \
                         (aggregate_type, aggregate_id, sequence, event_type, event_version, \
                          payload, metadata) \
                     VALUES ($1, $2, 1, $3, $4, $5::json, {METADATA})"
                )
            }
            Positions::Sequence => format!(
                "INSERT INTO {SEQUENCE_TABLE} \
                     (aggregate_type, aggregate_id, sequence, event_type, event_version, \
                      payload, metadata, hospital, position, command_id) \
                 VALUES ($1, $2, 1, $3, $4, $5::json, {METADATA}, $7, \
                         nextval('{SEQUENCE_TABLE}_position'), $8::uuid)"
            ),
        };
        sqlx::query(&sql)
            .bind(&self.aggregate_type)
            .bind(format!("{hospital}/{command_id}"))
            .bind(&self.event_type)
            .bind(&self.event_version)
            .bind(&self.payload)
            .bind(&self.metadata)
            .bind(hospital.as_str())
            .bind(command_id.to_string())
            .execute(pool)
            .await
            .context("bare insert")?;
        Ok(())
    }
}

/// Creates the bench-only copies of `events` that the bare-insert variants write to (this
/// database is the bench's own and is thrown away with its cluster).
///
/// The counter variant's trigger function is the installed production function with the
/// in-transaction `PERFORM pg_notify(...)` of the trigger before issue 17 put back before
/// its `RETURN NEW`, so the pair differs in that statement only.
async fn prepare_insert_variants(pool: &PgPool) -> anyhow::Result<()> {
    const PRODUCTION: &str = "vigil_assign_stream_position";
    const NOTIFYING: &str = "bench_assign_stream_position_notifying";
    let definition: String = sqlx::query_scalar("SELECT pg_get_functiondef($1::text::regproc)")
        .bind(PRODUCTION)
        .fetch_one(pool)
        .await
        .context("reading the production trigger function")?;
    if definition.contains("pg_notify(") {
        bail!("the production trigger notifies again: update the bench");
    }
    let returns = definition
        .rfind("RETURN NEW;")
        .context("cannot find the trigger's RETURN NEW")?;
    let notifying = format!(
        "{}PERFORM pg_notify('vigil_events', NEW.hospital || ' ' || NEW.position);\n    {}",
        &definition[..returns],
        &definition[returns..]
    );
    if !notifying.contains(PRODUCTION) {
        bail!("cannot find the function's name in its definition");
    }
    let notifying = notifying.replacen(PRODUCTION, NOTIFYING, 1);

    let statements = [
        notifying,
        format!("CREATE TABLE {COUNTER_TABLE} (LIKE events INCLUDING ALL)"),
        format!(
            "CREATE TRIGGER {COUNTER_TABLE}_position BEFORE INSERT ON {COUNTER_TABLE} \
             FOR EACH ROW EXECUTE FUNCTION {NOTIFYING}()"
        ),
        format!("CREATE TABLE {SEQUENCE_TABLE} (LIKE events INCLUDING ALL)"),
        format!("CREATE SEQUENCE {SEQUENCE_TABLE}_position"),
    ];
    for statement in statements {
        sqlx::raw_sql(&statement)
            .execute(pool)
            .await
            .with_context(|| format!("bench setup: {statement}"))?;
    }
    Ok(())
}

/// Appends `events` copies of the template to `hospital`'s stream with `INSERT ... SELECT`,
/// then vacuums so the reads see a settled table. Returns events loaded per second.
async fn bulk_load(
    pool: &PgPool,
    template: &EventTemplate,
    hospital: &HospitalId,
    events: i64,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut first = 1;
    while first <= events {
        let last = (first + BULK_BATCH - 1).min(events);
        sqlx::query(
            "INSERT INTO events \
                 (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
             SELECT $1, $2 || '/bulk-' || g, 1, $3, $4, $5::json, \
                    ($6::jsonb || jsonb_build_object('hospital', $2::text, \
                                                     'command_id', gen_random_uuid()::text))::json \
             FROM generate_series($7::bigint, $8::bigint) AS g",
        )
        .bind(&template.aggregate_type)
        .bind(hospital.as_str())
        .bind(&template.event_type)
        .bind(&template.event_version)
        .bind(&template.payload)
        .bind(&template.metadata)
        .bind(first)
        .bind(last)
        .execute(pool)
        .await
        .context("bulk insert")?;
        first = last + 1;
    }
    let rate = events as f64 / started.elapsed().as_secs_f64();
    sqlx::query("VACUUM ANALYZE events")
        .execute(pool)
        .await
        .context("vacuuming after the bulk load")?;
    Ok(rate)
}

/// What the read benchmark measured.
struct ReadResult {
    pages_per_second: f64,
    events_per_second: f64,
    p50: Duration,
    p99: Duration,
}

/// One reader pages through the whole stream from position 0, pass after pass, checking that
/// every page continues exactly where the last one ended. One pass warms the cache first.
async fn read_cell(
    url: &str,
    hospital: &HospitalId,
    events: i64,
    measure: Duration,
) -> anyhow::Result<ReadResult> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .context("connecting the reader")?;
    read_pass(&pool, hospital, events, &mut Vec::new()).await?;
    let mut latencies = Vec::new();
    let mut read = 0i64;
    let started = Instant::now();
    while read == 0 || started.elapsed() < measure {
        read += read_pass(&pool, hospital, events, &mut latencies).await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    pool.close().await;
    let pages = latencies.len();
    latencies.sort_unstable();
    Ok(ReadResult {
        pages_per_second: pages as f64 / elapsed,
        events_per_second: read as f64 / elapsed,
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
    })
}

/// Reads the stream once, recording each page's latency (µs); returns events read.
async fn read_pass(
    pool: &PgPool,
    hospital: &HospitalId,
    events: i64,
    latencies: &mut Vec<u64>,
) -> anyhow::Result<i64> {
    let mut last = 0;
    loop {
        let started = Instant::now();
        let page = read_after(pool, hospital, last, PAGE)
            .await
            .context("read_after")?;
        latencies.push(started.elapsed().as_micros() as u64);
        let Some(tail) = page.last() else { break };
        if page[0].position != last + 1 || tail.position != last + page.len() as i64 {
            bail!(
                "page after {last} is not dense: {}..={}",
                page[0].position,
                tail.position
            );
        }
        last = tail.position;
    }
    if last != events {
        bail!("read {last} events, expected {events}");
    }
    Ok(last)
}

/// Samples, every [`SAMPLE_INTERVAL`] of the counted window, what each writer's backend is
/// doing (`pg_stat_activity`), and returns the most frequent states with their share of all
/// samples, e.g. `head row lock 70%, WAL fsync 12%`. This is where the time goes, as the
/// server sees it: waiting for another writer's lock, flushing WAL, running, or idle waiting
/// for the client (which includes the bench's own scheduling on its pinned core).
async fn sample_waits(admin: PgPool, window: Window) -> anyhow::Result<String> {
    tokio::time::sleep_until(window.start.into()).await;
    let mut counts: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    let mut total = 0u64;
    let mut tick = tokio::time::interval(SAMPLE_INTERVAL);
    while Instant::now() < window.end {
        tick.tick().await;
        let rows = sqlx::query(
            "SELECT state, wait_event_type, wait_event FROM pg_stat_activity \
             WHERE application_name = $1 AND pid <> pg_backend_pid()",
        )
        .bind(WRITER_APPLICATION)
        .fetch_all(&admin)
        .await
        .context("sampling pg_stat_activity")?;
        for row in rows {
            let state: Option<String> = row.try_get("state")?;
            let kind: Option<String> = row.try_get("wait_event_type")?;
            let event: Option<String> = row.try_get("wait_event")?;
            *counts
                .entry(wait_label(
                    state.as_deref(),
                    kind.as_deref(),
                    event.as_deref(),
                ))
                .or_default() += 1;
            total += 1;
        }
    }
    let mut shares: Vec<(String, f64)> = counts
        .into_iter()
        .map(|(label, n)| (label, n as f64 / total.max(1) as f64))
        .filter(|(_, share)| *share >= MIN_REPORTED_SHARE)
        .collect();
    shares.sort_by(|a, b| b.1.total_cmp(&a.1));
    Ok(shares
        .iter()
        .map(|(label, share)| format!("{label} {:.0}%", share * 100.0))
        .collect::<Vec<_>>()
        .join(", "))
}

/// A readable name for one backend's state in `pg_stat_activity`.
fn wait_label(state: Option<&str>, kind: Option<&str>, event: Option<&str>) -> String {
    match (state, kind, event) {
        (Some("idle"), _, _) => "client".to_owned(),
        (Some("idle in transaction"), _, _) => "client, in tx".to_owned(),
        // Waiting for the transaction that holds the `stream_heads` row to end.
        (_, Some("Lock"), Some("transactionid" | "tuple")) => "head row lock".to_owned(),
        // The cluster-wide lock PreCommit_Notify holds from queueing to after commit.
        (_, Some("Lock"), Some("object")) => "NOTIFY commit lock".to_owned(),
        (_, Some("IO"), Some("WALSync")) => "WAL fsync".to_owned(),
        (_, Some("LWLock"), Some("WALWrite")) => "waiting for a WAL flush".to_owned(),
        (Some("active"), None, _) => "CPU".to_owned(),
        (_, Some(kind), Some(event)) => format!("{kind}:{event}"),
        (state, _, _) => state.unwrap_or("unknown").to_owned(),
    }
}

/// WAL flush counters of the whole cluster, from `pg_stat_wal`.
struct WalFlushes {
    /// `wal_sync`: WAL flushes (fdatasync or equivalent) issued so far.
    flushes: i64,
    /// `wal_sync_time`: milliseconds spent in them (timed because the bench turns on
    /// `track_wal_io_timing`).
    flush_ms: f64,
}

/// The cluster's WAL flush counters now.
async fn wal_syncs(pool: &PgPool) -> anyhow::Result<WalFlushes> {
    let row = sqlx::query("SELECT wal_sync, wal_sync_time FROM pg_stat_wal")
        .fetch_one(pool)
        .await
        .context("reading pg_stat_wal")?;
    Ok(WalFlushes {
        flushes: row.try_get("wal_sync")?,
        flush_ms: row.try_get("wal_sync_time")?,
    })
}

/// The server settings that decide what a commit costs, for the report.
const SERVER_SETTINGS: [&str; 7] = [
    "synchronous_commit",
    "fsync",
    "wal_sync_method",
    "commit_delay",
    "shared_buffers",
    "max_connections",
    "track_wal_io_timing",
];

/// The CPUs the postmaster may run on (its backends inherit them).
/// The pid of the cluster's postmaster, from its pid file.
fn postmaster_pid(pg: &EmbeddedPostgres) -> Option<u32> {
    let pid_file = pg.data_dir().join("pgdata").join("postmaster.pid");
    std::fs::read_to_string(pid_file)
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

/// CPU time (user + system, ms) the cluster has used so far: the postmaster's own and its
/// reaped children's (`cutime`, `cstime`: backends that have exited), plus its live
/// children's (backends, background workers).
fn cluster_cpu_ms(postmaster: u32) -> Option<f64> {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    // Fields after the command name (which may hold spaces): state is field 3.
    let fields = |pid: &str| -> Option<Vec<u64>> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let (_, rest) = stat.rsplit_once(')')?;
        Some(
            rest.split_whitespace()
                .map(|v| v.parse::<u64>().unwrap_or(0))
                .collect(),
        )
    };
    let at = |f: &[u64], n: usize| f.get(n - 3).copied().unwrap_or(0);
    let own = fields(&postmaster.to_string())?;
    let mut ticks = at(&own, 14) + at(&own, 15) + at(&own, 16) + at(&own, 17);
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        if let Some(f) = fields(pid) {
            if at(&f, 4) == u64::from(postmaster) {
                ticks += at(&f, 14) + at(&f, 15);
            }
        }
    }
    Some(ticks as f64 * 1000.0 / hz)
}

fn postmaster_cpus(pg: &EmbeddedPostgres) -> String {
    let pid_file = pg.data_dir().join("pgdata").join("postmaster.pid");
    match std::fs::read_to_string(&pid_file) {
        Ok(text) => match text.lines().next() {
            Some(pid) => affinity::describe(&Path::new("/proc").join(pid.trim()).join("status")),
            None => "unknown (empty postmaster.pid)".to_owned(),
        },
        Err(e) => format!("unknown ({}: {e})", pid_file.display()),
    }
}

/// The `q` quantile of sorted microsecond latencies (nearest rank).
fn percentile(sorted_us: &[u64], q: f64) -> Duration {
    if sorted_us.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * sorted_us.len() as f64).ceil() as usize).clamp(1, sorted_us.len());
    Duration::from_micros(sorted_us[rank - 1])
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The calling thread's CPU mask, via `sched_{get,set}affinity`. Threads and processes
/// created afterwards inherit it, which is what the bench relies on.
mod affinity {
    use std::io;
    use std::path::Path;

    /// The calling thread's CPU mask.
    pub fn current() -> io::Result<libc::cpu_set_t> {
        // SAFETY: cpu_set_t is plain bits; all-zero is a valid (empty) set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a live cpu_set_t and its exact size is passed.
        let rc =
            unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
        if rc == 0 {
            Ok(set)
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Sets the calling thread's CPU mask.
    pub fn set(set: &libc::cpu_set_t) -> io::Result<()> {
        // SAFETY: `set` is a live cpu_set_t and its exact size is passed.
        let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Every CPU the system has configured (the kernel ignores offline ones).
    pub fn all() -> libc::cpu_set_t {
        // SAFETY: sysconf has no preconditions.
        let configured = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) };
        let count = usize::try_from(configured).unwrap_or(1).max(1);
        // SAFETY: cpu_set_t is plain bits; all-zero is a valid (empty) set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        for cpu in 0..count.min(libc::CPU_SETSIZE as usize) {
            // SAFETY: `cpu` is below CPU_SETSIZE, so the bit is inside `set`.
            unsafe { libc::CPU_SET(cpu, &mut set) };
        }
        set
    }

    /// `Cpus_allowed_list` from a `/proc/<pid>/status` file, for the report.
    pub fn describe(status: &Path) -> String {
        match std::fs::read_to_string(status) {
            Ok(text) => text
                .lines()
                .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
                .map(|cpus| cpus.trim().to_owned())
                .unwrap_or_else(|| "unknown".to_owned()),
            Err(e) => format!("unknown ({}: {e})", status.display()),
        }
    }
}
