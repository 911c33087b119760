//! Building and running the server: connect the database, start the stream listener, bind
//! the HTTP server. Tests build an [`Application`] on port 0 and read its port.

use std::net::TcpListener;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::middleware::NormalizePath;
use actix_web::{web, App, HttpServer};
use anyhow::Context;
use tracing_actix_web::TracingLogger;

use crate::auth::keys::load_or_create_secret;
use crate::auth::JwtKeys;
use crate::command::CommandBus;
use crate::config::{ServeSettings, IDEMPOTENCY_RETENTION};
use crate::http::{self, idempotency, AppState};
use crate::rate_limit::KeyedLimiter;
use crate::store::{self, Database};
use crate::stream::listener::StreamListener;

/// How often expired idempotency keys are purged.
const PURGE_INTERVAL: Duration = Duration::from_secs(15 * 60);

/// A built, bound, not yet running server.
pub struct Application {
    port: u16,
    server: Server,
    state: web::Data<AppState>,
    database: Database,
}

/// Resolves the JWT keys: configured ones, or in zero-config mode (no DATABASE_URL) the
/// secret generated once in the data dir.
pub fn jwt_keys(settings: &ServeSettings) -> anyhow::Result<JwtKeys> {
    let generated = if settings.jwt.secret.is_none() && settings.database.database_url.is_none() {
        Some(
            load_or_create_secret(&settings.database.data_dir)
                .context("cannot read or create the JWT secret in the data dir")?,
        )
    } else {
        None
    };
    Ok(JwtKeys::from_settings(&settings.jwt, generated.as_deref())?)
}

impl Application {
    /// Connects, migrates, and binds the HTTP server (not yet running).
    pub async fn build(settings: &ServeSettings) -> anyhow::Result<Self> {
        let keys = jwt_keys(settings)?;
        let database = store::connect(&settings.database).await?;
        let listener = TcpListener::bind(settings.bind)
            .with_context(|| format!("cannot bind {}", settings.bind))?;
        let port = listener.local_addr()?.port();
        let state = web::Data::new(AppState {
            pool: database.pool.clone(),
            keys,
            bus: CommandBus::new(database.pool.clone()),
            command_limiter: KeyedLimiter::new(settings.command_rate, settings.command_burst),
            listener: StreamListener::spawn(database.listen_config.clone()),
        });
        spawn_idempotency_purge(state.clone());
        let server_state = state.clone();
        let mut server = HttpServer::new(move || {
            App::new()
                .wrap(NormalizePath::trim())
                .wrap(TracingLogger::default())
                .app_data(server_state.clone())
                .configure(http::configure)
        })
        .listen(listener)?;
        if let Some(workers) = settings.workers {
            server = server.workers(workers);
        }
        let server = server.shutdown_timeout(10).run();
        Ok(Self {
            port,
            server,
            state,
            database,
        })
    }

    /// The bound port (useful with port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Shared state, for the CLI's demo seeding and for tests.
    pub fn state(&self) -> web::Data<AppState> {
        self.state.clone()
    }

    /// A handle that stops the server gracefully.
    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    /// Runs until the server stops (SIGINT/SIGTERM or a handle's `stop`), then stops the
    /// embedded PostgreSQL if this process started it.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let result = self.server.await;
        self.database.pool.close().await;
        if let Some(pg) = self.database.embedded {
            if pg.started_by_us() {
                tokio::task::spawn_blocking(move || pg.stop())
                    .await
                    .context("stopping PostgreSQL panicked")??;
            }
        }
        result.context("HTTP server failed")
    }
}

fn spawn_idempotency_purge(state: web::Data<AppState>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(PURGE_INTERVAL);
        loop {
            tick.tick().await;
            match idempotency::purge_expired(&state.pool, IDEMPOTENCY_RETENTION).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(purged = n, "expired idempotency keys purged"),
                Err(error) => tracing::warn!(%error, "idempotency purge failed"),
            }
        }
    });
}
