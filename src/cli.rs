//! The `vigil` command line: `serve`, `migrate`, `token`.

use std::time::Duration;

use aggregates::types::{HospitalId, Role, UserId};
use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::config::{DatabaseSettings, JwtSettings, LogFormat, ServeSettings};
use crate::startup::{jwt_keys, Application};
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
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server. Without DATABASE_URL it starts its own PostgreSQL under the data dir.
    Serve(ServeSettings),
    /// Apply database migrations to DATABASE_URL (or the embedded database) and exit.
    Migrate(DatabaseSettings),
    /// Print a token signed with the server's configured key.
    Token(TokenArgs),
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
    /// Lifetime, e.g. `90s`, `15m`, `1h`, `7d`.
    #[arg(long, default_value = "1h", value_parser = parse_ttl)]
    pub ttl: Duration,

    #[command(flatten)]
    pub jwt: JwtSettings,

    /// Data dir holding the zero-config secret (same default as `vigil serve`).
    #[arg(long, env = "VIGIL_DATA_DIR", default_value = "./var")]
    pub data_dir: std::path::PathBuf,

    /// Set when the server uses DATABASE_URL (then VIGIL_JWT_SECRET is required).
    #[arg(long, env = "DATABASE_URL", hide = true)]
    pub database_url: Option<String>,
}

/// Parses `<n>[s|m|h|d]` (a bare number is seconds).
pub fn parse_ttl(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let (digits, unit) = match raw.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => raw.split_at(i),
        None => (raw, "s"),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{raw}` is not a duration like 90s, 15m, 1h or 7d"))?;
    let secs = match unit {
        "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        "d" => n.saturating_mul(86_400),
        _ => return Err(format!("unknown unit `{unit}` (use s, m, h or d)")),
    };
    if secs == 0 {
        return Err("the lifetime must be positive".into());
    }
    Ok(Duration::from_secs(secs))
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    telemetry::init(cli.log_format);
    match cli.command {
        Command::Serve(settings) => serve(settings).await,
        Command::Migrate(settings) => {
            let db = store::connect(&settings).await?;
            tracing::info!("migrations applied");
            db.pool.close().await;
            if let Some(pg) = db.embedded.filter(|pg| pg.started_by_us()) {
                tokio::task::spawn_blocking(move || pg.stop()).await??;
            }
            Ok(())
        }
        Command::Token(args) => {
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
                workers: None,
                demo: false,
                realtime: Default::default(),
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
    }
}

async fn serve(settings: ServeSettings) -> anyhow::Result<()> {
    let app = Application::build(&settings).await?;
    tracing::info!(port = app.port(), bind = %settings.bind, "vigil listening");
    if settings.demo {
        demo::seed(&app.state(), &settings, app.port()).await?;
    }
    app.run_until_stopped().await
}
