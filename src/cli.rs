//! The `vigil` command line: `serve`, `migrate`, `token`, `projections`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aggregates::types::{HospitalId, Role, UserId};
use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressState, ProgressStyle};
use projections::engine::{self, ProjectionError, ReadModel, RebuildReport, Scope};

use crate::config::{
    parse_duration, BareUnit, DatabaseSettings, JwtAlgorithm, JwtSettings, LogFormat,
    ServeSettings, DURATIONS_HELP,
};
use crate::projection::rebuilds::RebuildLock;
use crate::startup::{jwt_keys, Application};
use crate::store::embedded::EmbeddedPostgres;
use crate::store::DataDirPart;
use crate::{demo, store, telemetry};

/// Vigil: realtime, event-sourced engine for hospital software.
#[derive(Debug, Parser)]
#[command(name = "vigil", version, about)]
pub struct Cli {
    /// Log output format.
    #[arg(
        long,
        global = true,
        env = "VIGIL_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
// `Serve` carries every server setting; the enum is built once per process, so its size
// is irrelevant.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server. Without DATABASE_URL it starts its own PostgreSQL under the data dir
    /// (creating the data dir on first start); one server per data dir.
    #[command(after_help = DURATIONS_HELP)]
    Serve(ServeSettings),
    /// Apply database migrations to DATABASE_URL (or the embedded database of an existing
    /// data dir) and exit.
    Migrate(DatabaseSettings),
    /// Print a token signed with the server's configured key.
    Token(TokenArgs),
    /// Inspect and rebuild the read models (projections).
    #[command(subcommand)]
    Projections(ProjectionsCommand),
}

/// `vigil projections ...`: the same operations as `/api/admin/projections`, for an operator
/// with database access (every hospital, no token).
#[derive(Debug, Subcommand)]
pub enum ProjectionsCommand {
    /// Print every read model's version, state, and per-hospital checkpoint, head and lag.
    Status(DatabaseSettings),
    /// Rebuild a read model online, with a progress bar.
    ///
    /// Projects every hospital's stream (or, with `--hospital`, one hospital's) into shadow
    /// tables while the server keeps serving (and may keep running), then swaps them in.
    /// Ctrl-C stops after the current batch; running it again with the same scope resumes.
    Rebuild(RebuildArgs),
}

/// Arguments of `vigil projections rebuild`.
#[derive(Debug, Args)]
pub struct RebuildArgs {
    /// The read model, e.g. `alert_board` (`vigil projections status` lists them).
    pub name: String,
    /// Drop an interrupted rebuild's shadow tables and start from position 0 instead of
    /// resuming.
    #[arg(long)]
    pub restart: bool,
    /// Rebuild only this hospital's rows; the other hospitals' rows are not touched.
    #[arg(long)]
    pub hospital: Option<HospitalId>,

    #[command(flatten)]
    pub database: DatabaseSettings,
}

/// Arguments of `vigil token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// Hospital (tenant) the token is for.
    #[arg(long)]
    pub hospital: HospitalId,
    /// User id (`sub`).
    #[arg(long)]
    pub user: UserId,
    /// Role: admin, physician, nurse, operator, chw or asha.
    #[arg(long)]
    pub role: Role,
    /// Lifetime, e.g. `90s`, `15m`, `1h`, `7d`, `1h30m` (a bare number is seconds).
    #[arg(long, default_value = "1h", value_parser = parse_ttl)]
    pub ttl: Duration,

    #[command(flatten)]
    pub jwt: JwtSettings,

    /// Data dir holding the zero-config secret (same default as `vigil serve`). It must exist:
    /// only `vigil serve` creates one.
    #[arg(long, env = "VIGIL_DATA_DIR", default_value = "./var")]
    pub data_dir: std::path::PathBuf,

    /// Set when the server uses DATABASE_URL (then VIGIL_JWT_SECRET is required).
    #[arg(long, env = "DATABASE_URL", hide = true)]
    pub database_url: Option<String>,
}

/// Parses a token lifetime: a duration (`90s`, `15m`, `1h`, `7d`; a bare number is seconds),
/// which must be positive.
pub fn parse_ttl(raw: &str) -> Result<Duration, String> {
    let ttl = parse_duration(raw, BareUnit::Seconds)?;
    if ttl.is_zero() {
        return Err("the lifetime must be positive".into());
    }
    Ok(ttl)
}

/// Runs the parsed command line: the command on an actix runtime, then, once that runtime
/// and every task on it have ended, the stop of the embedded PostgreSQL `vigil serve` owns.
///
/// That order is what lets a server stop without a warning: stopped earlier, PostgreSQL would
/// go away under the stream listeners and projectors, which would log it as a failure.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    telemetry::init(cli.log_format);
    let system = actix_web::rt::System::new();
    let (result, embedded) = system.block_on(run_command(cli.command));
    drop(system);
    if let Some(pg) = embedded {
        let stopped = pg.stop().context("cannot stop the embedded PostgreSQL");
        // The command's own failure is what the operator must see first.
        if let (Err(error), Err(_)) = (&stopped, &result) {
            tracing::error!(error = %format!("{error:#}"), "cannot stop the embedded PostgreSQL");
            return result;
        }
        stopped?;
    }
    result
}

/// Runs one command; returns with its result the embedded PostgreSQL left for [`run`] to stop.
async fn run_command(command: Command) -> (anyhow::Result<()>, Option<EmbeddedPostgres>) {
    match command {
        Command::Serve(settings) => serve(settings).await,
        Command::Migrate(settings) => (migrate(settings).await, None),
        Command::Projections(command) => (projections(command).await, None),
        Command::Token(args) => (token(args), None),
    }
}

/// `vigil migrate`: connects (which migrates) and stops what it started.
async fn migrate(settings: DatabaseSettings) -> anyhow::Result<()> {
    let db = store::connect(&settings, "migrate").await?;
    tracing::info!("migrations applied");
    db.pool.close().await;
    if let Some(pg) = db.embedded.filter(|pg| pg.owns_server()) {
        tokio::task::spawn_blocking(move || pg.stop()).await??;
    }
    Ok(())
}

/// `vigil token`: prints a token signed with the server's key.
fn token(args: TokenArgs) -> anyhow::Result<()> {
    let zero_config = args.jwt.algorithm == JwtAlgorithm::Hs256
        && args.jwt.secret.is_none()
        && args.database_url.is_none();
    if zero_config {
        // The secret is the server's: a missing one means the wrong data dir, and a new one
        // would only mint tokens the server rejects ("bad signature").
        store::require_data_dir(&args.data_dir, &[DataDirPart::JwtSecret])?;
    }
    let settings = ServeSettings {
        bind: ([127, 0, 0, 1], 0).into(),
        database: DatabaseSettings {
            database_url: args.database_url.clone(),
            data_dir: args.data_dir.clone(),
            db_pool_size: 1,
        },
        jwt: args.jwt.clone(),
        command_rate: 1.0,
        command_burst: 1.0,
        projection_spacing_ms: crate::config::DEFAULT_PROJECTION_SPACING_MS,
        workers: None,
        demo: false,
        realtime: Default::default(),
        presence: Default::default(),
        ingest: Default::default(),
        node_id: None,
    };
    let keys = jwt_keys(&settings)?;
    let token = keys
        .mint(&args.user, &args.hospital, args.role, args.ttl)
        .context("cannot mint a token")?;
    // The token is the command's output, for shells to capture: stdout, not a log.
    #[allow(clippy::print_stdout)]
    {
        println!("{token}");
    }
    Ok(())
}

/// `vigil serve`: runs the server; returns its embedded PostgreSQL for [`run`] to stop.
async fn serve(settings: ServeSettings) -> (anyhow::Result<()>, Option<EmbeddedPostgres>) {
    let mut app = match Application::build(&settings).await {
        Ok(app) => app,
        Err(error) => return (Err(error), None),
    };
    let embedded = app.take_embedded();
    tracing::info!(port = app.port(), bind = %settings.bind, "vigil listening");
    if settings.demo {
        if let Err(error) = demo::seed(&app.state(), &settings, app.port()).await {
            return (Err(error), embedded);
        }
    }
    (app.run_until_stopped().await, embedded)
}

/// Runs a `vigil projections` command against DATABASE_URL or the embedded database (started
/// for the command and stopped after it, as `vigil migrate` does, unless a server owns it).
async fn projections(command: ProjectionsCommand) -> anyhow::Result<()> {
    let (settings, name) = match &command {
        ProjectionsCommand::Status(settings) => (settings, "projections status"),
        ProjectionsCommand::Rebuild(args) => (&args.database, "projections rebuild"),
    };
    let db = store::connect(settings, name).await?;
    let result = match &command {
        ProjectionsCommand::Status(_) => projection_status(&db.pool).await,
        ProjectionsCommand::Rebuild(args) => rebuild(&db.pool, args).await,
    };
    db.pool.close().await;
    if let Some(pg) = db.embedded.filter(|pg| pg.owns_server()) {
        tokio::task::spawn_blocking(move || pg.stop()).await??;
    }
    result
}

/// `vigil projections status`: one line per (model, hospital).
async fn projection_status(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    let models = crate::projection::models();
    let refs: Vec<&dyn ReadModel> = models.iter().map(|m| m.as_ref()).collect();
    let statuses = engine::status(pool, &refs)
        .await
        .context("cannot read the projector status")?;
    let mut out = String::new();
    writeln!(
        out,
        "{:<20} {:>7}  {:<14} {:<24} {:>10} {:>10} {:>8} {:>8}",
        "MODEL", "VERSION", "STATE", "HOSPITAL", "CHECKPOINT", "HEAD", "LAG", "LAG_S"
    )?;
    for status in &statuses {
        if status.hospitals.is_empty() {
            writeln!(
                out,
                "{:<20} {:>7}  {:<14} {:<24} {:>10} {:>10} {:>8} {:>8}",
                status.name, status.version, status.state, "-", "-", "-", "-", "-"
            )?;
        }
        for h in &status.hospitals {
            writeln!(
                out,
                "{:<20} {:>7}  {:<14} {:<24} {:>10} {:>10} {:>8} {:>8.1}",
                status.name,
                status.version,
                status.state,
                h.hospital,
                h.checkpoint,
                h.head,
                h.lag_events,
                h.lag_seconds
            )?;
        }
        if let Some(progress) = &status.rebuild {
            let scope = progress
                .hospital
                .as_ref()
                .map(|h| format!(" --hospital {h}"))
                .unwrap_or_default();
            writeln!(
                out,
                "{:<20} rebuild in progress or interrupted: {} of {} events in the shadow tables \
                 (`vigil projections rebuild {}{scope}` resumes it)",
                status.name, progress.done, progress.total, status.name
            )?;
        }
    }
    // The table is the command's output, for people and scripts: stdout, not a log.
    #[allow(clippy::print_stdout)]
    {
        print!("{out}");
    }
    Ok(())
}

/// `vigil projections rebuild <name>`: the engine's online rebuild, in this process, with a
/// progress bar; Ctrl-C sets the cancel flag, which the engine reads after every batch.
async fn rebuild(pool: &sqlx::PgPool, args: &RebuildArgs) -> anyhow::Result<()> {
    let model = named_model(&args.name)?;
    if let Some(hospital) = &args.hospital {
        ensure_hospital_has_events(pool, hospital.as_str()).await?;
    }
    let Some(lock) = RebuildLock::try_acquire(pool, model.name())
        .await
        .context("cannot take the rebuild lock")?
    else {
        anyhow::bail!(
            "a rebuild of `{}` is already running (on a server node or another `vigil projections rebuild`)",
            model.name()
        );
    };
    let scope = match &args.hospital {
        Some(hospital) => Scope::Hospital(hospital.as_str().to_owned()),
        None => Scope::All,
    };
    let bar = progress_bar(&format!("rebuilding {} ({scope})", model.name()))?;
    let (cancel, on_ctrl_c) = cancel_on_ctrl_c(&bar);
    // The engine reports model-wide totals after each batch; the first report may include an
    // interrupted rebuild's progress, shown as done but kept out of the speed estimate.
    let mut first = true;
    let result = engine::rebuild_scoped(
        pool,
        model.as_ref(),
        &scope,
        args.restart,
        &cancel,
        |done, total| {
            bar.set_length(total.max(0) as u64);
            bar.set_position(done.max(0) as u64);
            if first {
                bar.reset_eta();
                first = false;
            }
        },
    )
    .await;
    on_ctrl_c.abort();
    lock.release().await;
    // Cleared, not finished: indicatif leaves a finished bar's line open, and the log
    // line that follows would be written onto its end.
    bar.finish_and_clear();
    rebuild_outcome(result, model.name(), args)
}

/// The read model called `name`, or an error listing the known ones.
fn named_model(name: &str) -> anyhow::Result<Arc<dyn ReadModel>> {
    crate::projection::model(name).ok_or_else(|| {
        let known: Vec<_> = crate::projection::models()
            .iter()
            .map(|m| m.name())
            .collect();
        anyhow::anyhow!(
            "no read model is called `{name}`; known: {}",
            known.join(", ")
        )
    })
}

/// The rebuild's progress bar (events done of the stream's, with a rate and an ETA),
/// already ticking.
fn progress_bar(message: &str) -> anyhow::Result<ProgressBar> {
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template(
            "{spinner} {msg} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} events, \
             {rate}, ETA {eta}",
        )
        .context("progress bar template")?
        // indicatif's own `{per_sec}` prints four decimals ("1234.5678/s").
        .with_key(
            "rate",
            |state: &ProgressState, out: &mut dyn std::fmt::Write| {
                let _ = write!(out, "{:.0} events/s", state.per_sec());
            },
        ),
    );
    bar.set_message(message.to_owned());
    bar.enable_steady_tick(Duration::from_millis(200));
    Ok(bar)
}

/// The cancel flag the engine reads after every batch, set by Ctrl-C (the bar says so); the
/// task is aborted once the rebuild ends.
fn cancel_on_ctrl_c(bar: &ProgressBar) -> (Arc<AtomicBool>, tokio::task::JoinHandle<()>) {
    let cancel = Arc::new(AtomicBool::new(false));
    let on_ctrl_c = {
        let cancel = cancel.clone();
        let bar = bar.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                cancel.store(true, Ordering::Relaxed);
                bar.set_message("cancelling after the current batch");
            }
        })
    };
    (cancel, on_ctrl_c)
}

/// Logs a completed rebuild; a cancelled one is an error that says how to resume it.
fn rebuild_outcome(
    result: Result<RebuildReport, ProjectionError>,
    name: &str,
    args: &RebuildArgs,
) -> anyhow::Result<()> {
    match result {
        Ok(report) => {
            tracing::info!(
                model = name,
                events = report.events,
                seconds = %format_args!("{:.1}", report.seconds),
                events_per_second = %format_args!("{:.0}", report.events_per_second),
                "rebuild completed"
            );
            Ok(())
        }
        Err(ProjectionError::Cancelled) => {
            let again = match &args.hospital {
                Some(hospital) => format!("{name} --hospital {hospital}"),
                None => name.to_owned(),
            };
            anyhow::bail!(
                "rebuild of `{name}` cancelled; its shadow tables are kept: run \
                 `vigil projections rebuild {again}` to resume, or add --restart to start over"
            )
        }
        Err(error) => Err(error).with_context(|| format!("rebuild of `{name}` failed")),
    }
}

/// Fails, naming the hospitals that have events, unless `hospital`'s stream has any: a
/// `--hospital` with no events is almost always a typo, and rebuilding it would succeed
/// silently with 0 events.
async fn ensure_hospital_has_events(pool: &sqlx::PgPool, hospital: &str) -> anyhow::Result<()> {
    let head: Option<i64> =
        sqlx::query_scalar("SELECT position FROM stream_heads WHERE hospital = $1")
            .bind(hospital)
            .fetch_optional(pool)
            .await
            .context("cannot read the hospitals' streams")?;
    if head.is_some() {
        return Ok(());
    }
    let known: Vec<String> =
        sqlx::query_scalar("SELECT hospital FROM stream_heads ORDER BY hospital LIMIT 21")
            .fetch_all(pool)
            .await
            .context("cannot read the hospitals' streams")?;
    let known = match known.len() {
        0 => "no hospital has any yet".to_owned(),
        1..=20 => format!("hospitals with events: {}", known.join(", ")),
        _ => format!(
            "hospitals with events include: {}, ...",
            known[..20].join(", ")
        ),
    };
    anyhow::bail!("hospital `{hospital}` has no events, so there is nothing to rebuild ({known})")
}
