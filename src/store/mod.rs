//! The database: where it is (an external server from `DATABASE_URL`, or an embedded one
//! Vigil starts and owns), the connection pool, the migrations, and the reconnecting LISTEN
//! connection that hears notifications ([`listen`]).

pub mod embedded;
pub mod listen;
pub mod owner;

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use sqlx::postgres::{PgPool, PgPoolOptions};

use crate::config::DatabaseSettings;
use embedded::EmbeddedPostgres;
use owner::{DataDirError, OwnerLock};

/// Name of the database Vigil uses inside its embedded cluster.
pub const EMBEDDED_DATABASE: &str = "vigil";

/// Port number of the embedded cluster. It only names the Unix socket file
/// (`.s.PGSQL.5432`) inside the data dir: the embedded server listens on no TCP port.
pub const EMBEDDED_PORT: u16 = 5432;

/// How long to wait for a pooled connection before failing a request with 503.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// The migrations in `migrations/`, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// A connected database.
pub struct Database {
    /// Pool for commands and queries.
    pub pool: PgPool,
    /// tokio-postgres connection string for the LISTEN connection (see `stream::listener`).
    pub listen_config: String,
    /// The embedded server, when Vigil uses one; stopped on shutdown if it owns it
    /// ([`EmbeddedPostgres::owns_server`]), which also releases the data dir.
    pub embedded: Option<EmbeddedPostgres>,
}

/// Where the database is: the URL for sqlx and the config for tokio-postgres, plus the
/// embedded server when Vigil uses one.
pub struct Location {
    pub url: String,
    pub listen_config: String,
    pub embedded: Option<EmbeddedPostgres>,
}

/// Which Vigil command opens the database, which decides what it may do to the data dir.
#[derive(Debug, Clone, Copy)]
pub enum Opener<'a> {
    /// `vigil serve`, listening on `port`: creates the data dir if needed, and owns it for
    /// its whole life or refuses to start.
    Server {
        /// The bound HTTP port, written into the lock file for a refused second server.
        port: u16,
    },
    /// A one-shot command (`migrate`, `projections status`, ...): needs an existing data dir;
    /// uses a running server's PostgreSQL, or owns the data dir while it runs.
    Tool {
        /// The command's name, written into the lock file (`migrate`, `projections rebuild`).
        command: &'a str,
    },
}

/// Resolves `DATABASE_URL`, or starts (or reuses) the embedded PostgreSQL under the data dir,
/// taking the data dir's owner lock as `opener` requires (see [`owner`]).
pub async fn locate(settings: &DatabaseSettings, opener: Opener<'_>) -> anyhow::Result<Location> {
    if let Some(url) = &settings.database_url {
        return Ok(Location {
            url: url.clone(),
            listen_config: listen_config_for(url)?,
            embedded: None,
        });
    }
    let data_dir = settings.data_dir.clone();
    let command = match opener {
        Opener::Server { .. } => "serve".to_owned(),
        Opener::Tool { command } => command.to_owned(),
    };
    let port = match opener {
        Opener::Server { port } => Some(port),
        Opener::Tool { .. } => None,
    };
    let embedded = tokio::task::spawn_blocking(move || -> anyhow::Result<EmbeddedPostgres> {
        let (lock, data_dir) = match port {
            Some(port) => (Some(own_as_server(&data_dir, port)?), data_dir),
            None => {
                require_data_dir(&data_dir, &[DataDirPart::Cluster])?;
                (own_as_tool(&data_dir, &command)?, data_dir)
            }
        };
        let dir = data_dir.join("postgres");
        let pg = match lock {
            Some(lock) => EmbeddedPostgres::start_owned(&dir, EMBEDDED_PORT, lock)?,
            None => {
                let mut pg = EmbeddedPostgres::start(&dir, EMBEDDED_PORT)?;
                pg.disown();
                pg
            }
        };
        ensure_database(&pg)?;
        Ok(pg)
    })
    .await
    .context("embedded PostgreSQL start-up panicked")??;
    Ok(Location {
        url: embedded.url(EMBEDDED_DATABASE),
        listen_config: embedded.tokio_postgres_config(EMBEDDED_DATABASE),
        embedded: Some(embedded),
    })
}

/// Creates Vigil's database in `pg`; if that fails, stops the server it owns before
/// reporting, so a failed start leaves nothing running.
fn ensure_database(pg: &EmbeddedPostgres) -> anyhow::Result<()> {
    if let Err(error) = pg.ensure_database(EMBEDDED_DATABASE) {
        if let Err(stop) = pg.stop() {
            tracing::debug!(error = %stop, "cannot stop PostgreSQL after a failed start");
        }
        return Err(error.into());
    }
    Ok(())
}

/// `vigil serve`'s claim on its data dir: creates it, then takes the owner lock or fails
/// naming the server that holds it.
fn own_as_server(data_dir: &Path, port: u16) -> Result<OwnerLock, DataDirError> {
    std::fs::create_dir_all(data_dir).map_err(|source| DataDirError::Io {
        context: format!("creating the data dir {}", data_dir.display()),
        source,
    })?;
    match OwnerLock::try_acquire(data_dir, "serve", Some(port))? {
        Ok(lock) => Ok(lock),
        Err(owner) => Err(DataDirError::InUse {
            data_dir: absolute(data_dir),
            owner,
        }),
    }
}

/// A one-shot command's claim on its data dir: the owner lock if no server holds it (waiting
/// for another one-shot command that does), `None` to use a running server's PostgreSQL.
fn own_as_tool(data_dir: &Path, command: &str) -> Result<Option<OwnerLock>, DataDirError> {
    match OwnerLock::try_acquire(data_dir, command, None)? {
        Ok(lock) => Ok(Some(lock)),
        Err(owner) if owner.is_server() => {
            tracing::debug!(%owner, "the data dir belongs to a running server: using its PostgreSQL");
            Ok(None)
        }
        Err(owner) => {
            tracing::info!(%owner, data_dir = %data_dir.display(), "waiting for another command using this data dir to finish");
            OwnerLock::acquire(data_dir, command).map(Some)
        }
    }
}

/// What a command other than `vigil serve` needs to find in the data dir.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataDirPart {
    /// The embedded PostgreSQL cluster (`postgres/pgdata`).
    Cluster,
    /// The generated JWT secret (`jwt-secret`).
    JwtSecret,
}

/// Fails with [`DataDirError::Missing`], naming the absolute path, unless the data dir exists
/// with every part in `parts`: only `vigil serve` creates a data dir, so that a command run
/// from the wrong directory cannot make a second, empty one (with its own secret) unnoticed.
pub fn require_data_dir(data_dir: &Path, parts: &[DataDirPart]) -> Result<(), DataDirError> {
    let missing = |what: String| DataDirError::Missing {
        data_dir: absolute(data_dir),
        missing: what,
    };
    if !data_dir.is_dir() {
        return Err(missing("the directory does not exist".to_owned()));
    }
    for part in parts {
        let (path, what) = match part {
            DataDirPart::Cluster => (
                data_dir.join("postgres/pgdata/PG_VERSION"),
                "it holds no PostgreSQL cluster, postgres/pgdata",
            ),
            DataDirPart::JwtSecret => (
                data_dir.join("jwt-secret"),
                "it holds no JWT secret, jwt-secret",
            ),
        };
        if !path.is_file() {
            return Err(missing(what.to_owned()));
        }
    }
    Ok(())
}

/// `path` made absolute against the working directory, for messages that must say where a
/// relative `./var` really is.
fn absolute(path: &Path) -> String {
    std::path::absolute(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
}

/// The tokio-postgres connection string for the LISTEN connection to the server at `url`.
///
/// A plain URL is understood by both drivers. A Unix-socket URL in sqlx's form
/// (`postgres://user@localhost/db?host=/socket/dir`) is not: tokio-postgres would treat
/// `localhost` and the socket as two hosts and might LISTEN on a different server. Such URLs
/// are rewritten to the unambiguous key-value form.
pub fn listen_config_for(url: &str) -> anyhow::Result<String> {
    use std::str::FromStr;
    let options = sqlx::postgres::PgConnectOptions::from_str(url)
        .with_context(|| "DATABASE_URL is not a valid PostgreSQL URL".to_owned())?;
    let Some(socket) = options.get_socket() else {
        return Ok(url.to_owned());
    };
    let quote = |v: &str| format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"));
    let mut config = format!(
        "host={} port={} user={}",
        quote(&socket.display().to_string()),
        options.get_port(),
        quote(options.get_username()),
    );
    if let Some(db) = options.get_database() {
        config.push_str(&format!(" dbname={}", quote(db)));
    }
    Ok(config)
}

/// Starts the embedded cluster in `dir` (shared: a running one is reused and not owned) and
/// makes sure Vigil's database exists.
pub async fn start_embedded(dir: &Path) -> anyhow::Result<EmbeddedPostgres> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || -> anyhow::Result<EmbeddedPostgres> {
        let pg = EmbeddedPostgres::start(&dir, EMBEDDED_PORT)?;
        pg.ensure_database(EMBEDDED_DATABASE)?;
        Ok(pg)
    })
    .await
    .context("embedded PostgreSQL start-up panicked")?
}

/// Connects (pool) and applies migrations, for a one-shot `command` (see [`Opener::Tool`]).
pub async fn connect(settings: &DatabaseSettings, command: &str) -> anyhow::Result<Database> {
    connect_as(settings, Opener::Tool { command }).await
}

/// Connects (pool) and applies migrations for `vigil serve` listening on `port`
/// (see [`Opener::Server`]).
pub async fn connect_server(settings: &DatabaseSettings, port: u16) -> anyhow::Result<Database> {
    connect_as(settings, Opener::Server { port }).await
}

/// Connects (pool) and applies migrations.
pub async fn connect_as(
    settings: &DatabaseSettings,
    opener: Opener<'_>,
) -> anyhow::Result<Database> {
    let location = locate(settings, opener).await?;
    let connected = async {
        probe(&location.url).await?;
        let pool = pool(&location.url, settings.db_pool_size)
            .await
            .context("cannot connect to PostgreSQL")?;
        MIGRATOR
            .run(&pool)
            .await
            .context("cannot apply migrations")?;
        anyhow::Ok(pool)
    }
    .await;
    match connected {
        Ok(pool) => Ok(Database {
            pool,
            listen_config: location.listen_config,
            embedded: location.embedded,
        }),
        Err(error) => {
            if let Some(pg) = location.embedded {
                // Nothing is left running by a failed start.
                let _ = tokio::task::spawn_blocking(move || pg.stop()).await;
            }
            Err(error)
        }
    }
}

/// One connection attempt to `url`, so that an unreachable server is reported with its
/// address and the OS error ("connection refused", "no route to host") instead of the pool's
/// "pool timed out while waiting for an open connection", which names neither.
async fn probe(url: &str) -> anyhow::Result<()> {
    use sqlx::{ConnectOptions, Connection};
    use std::str::FromStr;
    let options = sqlx::postgres::PgConnectOptions::from_str(url)
        .context("DATABASE_URL is not a valid PostgreSQL URL")?;
    let target = match options.get_socket() {
        Some(dir) => format!(
            "the Unix socket {}/.s.PGSQL.{}",
            dir.display(),
            options.get_port()
        ),
        None => format!("{}:{}", options.get_host(), options.get_port()),
    };
    let cause = match tokio::time::timeout(ACQUIRE_TIMEOUT, options.connect()).await {
        Ok(Ok(connection)) => {
            let _ = connection.close().await;
            return Ok(());
        }
        Err(_) => format!("no answer within {} s", ACQUIRE_TIMEOUT.as_secs()),
        Ok(Err(sqlx::Error::Io(error))) => error.to_string(),
        Ok(Err(error)) => error.to_string(),
    };
    anyhow::bail!("cannot connect to PostgreSQL at {target}: {cause}")
}

/// A connection pool to `url`.
pub async fn pool(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect(url)
        .await
}

/// Whether every migration this binary knows has been applied (for `/readyz`).
pub async fn migrations_applied(pool: &PgPool) -> Result<bool, sqlx::Error> {
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(pool)
            .await?;
    Ok(MIGRATOR
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .all(|m| applied.contains(&m.version)))
}
