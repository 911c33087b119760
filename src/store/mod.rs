//! The database: where it is (an external server from `DATABASE_URL`, or an embedded one
//! Vigil starts and owns), the connection pool, the migrations, and the reconnecting LISTEN
//! connection that hears notifications ([`listen`]).

pub mod embedded;
pub mod listen;

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use sqlx::postgres::{PgPool, PgPoolOptions};

use crate::config::DatabaseSettings;
use embedded::EmbeddedPostgres;

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
    /// The embedded server, when Vigil owns it; stopped on shutdown.
    pub embedded: Option<EmbeddedPostgres>,
}

/// Where the database is: the URL for sqlx and the config for tokio-postgres, plus the
/// embedded server when Vigil started one.
pub struct Location {
    pub url: String,
    pub listen_config: String,
    pub embedded: Option<EmbeddedPostgres>,
}

/// Resolves `DATABASE_URL`, or starts (or reuses) the embedded PostgreSQL under the data dir.
pub async fn locate(settings: &DatabaseSettings) -> anyhow::Result<Location> {
    if let Some(url) = &settings.database_url {
        return Ok(Location {
            url: url.clone(),
            listen_config: listen_config_for(url)?,
            embedded: None,
        });
    }
    let dir = settings.data_dir.join("postgres");
    let embedded = start_embedded(&dir).await?;
    Ok(Location {
        url: embedded.url(EMBEDDED_DATABASE),
        listen_config: embedded.tokio_postgres_config(EMBEDDED_DATABASE),
        embedded: Some(embedded),
    })
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

/// Starts the embedded cluster in `dir` and makes sure Vigil's database exists.
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

/// Connects (pool) and applies migrations.
pub async fn connect(settings: &DatabaseSettings) -> anyhow::Result<Database> {
    let location = locate(settings).await?;
    let pool = pool(&location.url, settings.db_pool_size)
        .await
        .context("cannot connect to PostgreSQL")?;
    MIGRATOR
        .run(&pool)
        .await
        .context("cannot apply migrations")?;
    Ok(Database {
        pool,
        listen_config: location.listen_config,
        embedded: location.embedded,
    })
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
