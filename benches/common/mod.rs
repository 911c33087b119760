//! Set-up the benches share: logging to stderr, a private PostgreSQL cluster for one run,
//! the report's footer and the machine facts it states (server settings, load average).
//!
//! Each bench is its own crate and includes this file with `mod common;` (the load
//! generator with `#[path]`), so every bench uses only part of it.
#![allow(dead_code)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use sqlx::PgPool;
use vigil::store::embedded::EmbeddedPostgres;

/// Logs to stderr (stdout carries the bench's report), at `default` unless `RUST_LOG` says
/// otherwise.
pub fn init_tracing(default: &str) {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default)),
        )
        .init();
}

/// A PostgreSQL cluster of the bench's own, in a fresh directory under `/tmp` that is
/// removed when the cluster stops: a run never reuses or leaves behind another's data.
pub struct BenchCluster {
    /// The running server.
    pub pg: EmbeddedPostgres,
    /// Its directory, removed by [`BenchCluster::stop`].
    dir: PathBuf,
}

impl BenchCluster {
    /// Starts a cluster in `/tmp/<prefix>-<pid>` (a short path: the socket file must fit a
    /// Unix socket address) listening on `port` (which only names the socket file), with
    /// `database` created. Refuses a directory that already exists; removes it on failure.
    pub fn start(prefix: &str, port: u16, database: &str) -> anyhow::Result<Self> {
        let dir = PathBuf::from(format!("/tmp/{prefix}-{}", std::process::id()));
        if dir.exists() {
            bail!("{} already exists: remove it and run again", dir.display());
        }
        let started = EmbeddedPostgres::start(&dir, port)
            .context("starting the embedded PostgreSQL")
            .and_then(|pg| {
                pg.ensure_database(database)
                    .context("creating the bench database")?;
                Ok(pg)
            });
        match started {
            Ok(pg) => Ok(Self { pg, dir }),
            Err(e) => {
                remove_dir(&dir);
                Err(e)
            }
        }
    }

    /// Stops the server and removes its directory (even when stopping failed).
    pub fn stop(self) -> anyhow::Result<()> {
        let stopped = self.pg.stop().context("stopping the embedded PostgreSQL");
        remove_dir(&self.dir);
        stopped
    }
}

/// Removes the bench's cluster directory, logging (not failing) if it cannot.
fn remove_dir(dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir) {
        tracing::warn!(dir = %dir.display(), error = %e, "could not remove the bench cluster");
    }
}

/// Writes the report to stdout as is (it is the bench's product, not a log), then how long
/// the whole run took since `run_started`.
pub fn print_report(report: &str, run_started: Instant) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(report.as_bytes())?;
    writeln!(
        stdout,
        "\nWhole run (PostgreSQL start to stop): {:.0} s",
        run_started.elapsed().as_secs_f64()
    )?;
    Ok(())
}

/// The server's version and the settings `names` (`SHOW <name>`), for the report.
pub async fn server_settings(
    pool: &PgPool,
    names: &[&str],
) -> anyhow::Result<Vec<(String, String)>> {
    let version: String = sqlx::query_scalar("SELECT version()")
        .fetch_one(pool)
        .await?;
    let mut settings = vec![("PostgreSQL".to_owned(), version)];
    for name in names {
        let value: String = sqlx::query_scalar(&format!("SHOW {name}"))
            .fetch_one(pool)
            .await
            .with_context(|| format!("SHOW {name}"))?;
        settings.push(((*name).to_owned(), value));
    }
    Ok(settings)
}

/// The first three fields of `/proc/loadavg`: a busy machine (another build, another test
/// cluster) shows here, and its figures should not be trusted.
pub fn load_average() -> String {
    match std::fs::read_to_string("/proc/loadavg") {
        Ok(text) => text
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        Err(e) => format!("unknown ({e})"),
    }
}
