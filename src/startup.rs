//! Building and running the server: connect the database, start the stream listener, bind
//! the HTTP server. Tests build an [`Application`] on port 0 and read its port.

use std::time::Duration;

use actix_codec::Framed;
use actix_http::{h1, HttpService, KeepAlive, Request};
use actix_service::{fn_service, map_config};
use actix_web::dev::{AppConfig, Server};
use actix_web::middleware::NormalizePath;
use actix_web::{web, App};
use anyhow::Context;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tracing_actix_web::TracingLogger;

use crate::auth::keys::load_or_create_secret;
use crate::auth::JwtKeys;
use crate::command::CommandBus;
use crate::config::{JwtAlgorithm, ServeSettings, IDEMPOTENCY_RETENTION};
use crate::http::{self, idempotency, AppState};
use crate::metrics::Metrics;
use crate::rate_limit::KeyedLimiter;
use crate::realtime::hospital::Directory;
use crate::realtime::presence::{Elsewhere, Leave, Peers, PresenceHub};
use crate::realtime::Realtime;
use crate::store::{self, Database};
use crate::stream::announce::Announcer;
use crate::stream::listener::StreamListener;
use crate::telemetry::RequestSpan;

/// How often expired idempotency keys are purged.
const PURGE_INTERVAL: Duration = Duration::from_secs(15 * 60);

/// Pending-connection queue of the listening socket. The OS default (128) overflows when
/// thousands of clients reconnect at once (after a restart or a network blip), and each
/// overflow costs a client a 1 s SYN retry; 4,096 absorbs such a storm.
const LISTEN_BACKLOG: u32 = 4096;

/// How long a client has to send a request's head (actix-web's default).
const CLIENT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a closing HTTP connection is given to shut down (actix-web's default).
const CLIENT_DISCONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How long shutdown waits after telling connections to go, before stopping the server.
const SHUTDOWN_DRAIN: Duration = Duration::from_millis(500);

/// How long shutdown waits for the node to leave the presence cluster; past it, the other
/// nodes sweep it after the node timeout as if it had died.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(3);

/// A built, bound, not yet running server.
pub struct Application {
    port: u16,
    server: Server,
    state: web::Data<AppState>,
    database: Database,
    shutdown: Shutdown,
}

/// Starts a graceful shutdown: stop accepting, send every realtime connection its shutdown
/// frame (clients resume elsewhere), drain, exit. SIGTERM and SIGINT do the same.
#[derive(Clone)]
pub struct Shutdown {
    signal: std::sync::Arc<watch::Sender<bool>>,
    handle: actix_web::dev::ServerHandle,
    presence: actix::Addr<PresenceHub>,
}

impl Shutdown {
    /// Shuts the server down gracefully.
    pub async fn trigger(&self) {
        tracing::info!("shutting down: closing realtime connections");
        let _ = self.signal.send(true);
        tokio::time::sleep(SHUTDOWN_DRAIN).await;
        // Before the server stops (run_until_stopped closes the pool once it has): the other
        // nodes forget this one now rather than after the node timeout.
        match tokio::time::timeout(LEAVE_TIMEOUT, self.presence.send(Leave)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "cannot leave the presence cluster"),
            Err(_) => tracing::warn!("leaving the presence cluster timed out"),
        }
        self.handle.stop(true).await;
    }
}

/// Resolves the JWT keys: configured ones, or in zero-config mode (HS256 with no secret and
/// no DATABASE_URL) the secret generated once in the data dir. RS256/ES256 never touch the
/// data dir: they would not use the secret, and `vigil token` must work where it is unwritable.
pub fn jwt_keys(settings: &ServeSettings) -> anyhow::Result<JwtKeys> {
    let zero_config = settings.jwt.algorithm == JwtAlgorithm::Hs256
        && settings.jwt.secret.is_none()
        && settings.database.database_url.is_none();
    let generated = if zero_config {
        Some(
            load_or_create_secret(&settings.database.data_dir).with_context(|| {
                format!(
                    "cannot read or create the JWT secret {}",
                    settings.database.data_dir.join("jwt-secret").display()
                )
            })?,
        )
    } else {
        None
    };
    Ok(JwtKeys::from_settings(&settings.jwt, generated.as_deref())?)
}

/// A listening socket on `addr` with Vigil's accept backlog (the kernel's default of 128
/// drops connections in a reconnect storm), non-blocking as the server's event loop needs.
fn bind_listener(addr: std::net::SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG as i32)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

impl Application {
    /// Connects, migrates, and binds the HTTP server (not yet running).
    ///
    /// Long by design: the node's wiring list, each part built once in dependency order and
    /// handed to the parts that use it; split, the order would be scattered over helpers.
    pub async fn build(settings: &ServeSettings) -> anyhow::Result<Self> {
        // The port first: a busy port then fails before an embedded PostgreSQL or any actor
        // is started, so there is nothing to stop (it used to leave PostgreSQL running).
        let listener = bind_listener(settings.bind)
            .with_context(|| format!("cannot bind {}", settings.bind))?;
        let keys = jwt_keys(settings)?;
        let port = listener
            .local_addr()
            .context("the listener has no address")?;
        let database = store::connect_server(&settings.database, port.port()).await?;
        let metrics = std::sync::Arc::new(Metrics::default());
        let stream_listener = StreamListener::spawn_with_head_poll(
            database.listen_config.clone(),
            database.pool.clone(),
            settings.realtime.stream_head_poll,
        );
        // One announcer for every writer of this node: their commits coalesce into one
        // NOTIFY statement per wake-up, and its handoffs feed this node's hospital actors.
        let announcer = Announcer::spawn(database.pool.clone());
        let realtime_settings = std::sync::Arc::new(settings.realtime.clone());
        let (shutdown_signal, shutdown_receiver) = watch::channel(false);
        let node_id = settings.node_id.unwrap_or_else(uuid::Uuid::new_v4);
        let peers = std::sync::Arc::new(Peers::default());
        let presence = PresenceHub::start(
            database.pool.clone(),
            database.listen_config.clone(),
            node_id,
            settings.presence.clone(),
            peers.clone(),
        );
        let realtime = std::sync::Arc::new(Realtime {
            directory: Directory::new(
                database.pool.clone(),
                stream_listener.clone(),
                announcer.clone(),
                realtime_settings.clone(),
                metrics.clone(),
                presence.clone(),
            ),
            presence,
            settings: realtime_settings,
            metrics: metrics.clone(),
            keys: keys.clone(),
            pool: database.pool.clone(),
            shutdown: shutdown_receiver,
            peers,
            elsewhere: Elsewhere::spawn(
                database.pool.clone(),
                node_id,
                settings.presence.admission_liveness(),
            ),
            database_identity: Realtime::database_identity(&database.pool).await,
        });
        let state = web::Data::new(AppState {
            pool: database.pool.clone(),
            keys,
            bus: CommandBus::with_lanes(
                database.pool.clone(),
                announcer.clone(),
                settings.ingest.commit_lanes,
            ),
            command_limiter: KeyedLimiter::new(settings.command_rate, settings.command_burst),
            listener: stream_listener,
            realtime,
            metrics,
            rebuilds: Default::default(),
            ingest: settings.ingest.clone(),
        });
        spawn_idempotency_purge(state.clone());
        let spacing = std::time::Duration::from_millis(settings.projection_spacing_ms);
        crate::projection::spawn(database.pool.clone(), &state.listener, spacing);
        crate::policy::spawn(
            database.pool.clone(),
            &state.listener,
            announcer,
            state.realtime.shutdown.clone(),
            spacing,
        );
        let (server, port) = http_server(settings, listener, state.clone())?;
        let server = server.shutdown_timeout(10).disable_signals().run();
        let shutdown = Shutdown {
            signal: std::sync::Arc::new(shutdown_signal),
            handle: server.handle(),
            presence: state.realtime.presence.clone(),
        };
        tracing::info!(%node_id, "node started");
        Ok(Self {
            port,
            server,
            state,
            database,
            shutdown,
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

    /// A handle that shuts the server down gracefully.
    pub fn shutdown_handle(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// Hands the embedded PostgreSQL (and with it the data dir's lock) to the caller, which
    /// then stops it itself instead of [`Self::run_until_stopped`]: `vigil serve` stops it only
    /// once its runtime has ended, so that no background task still running sees the database
    /// go away and logs it as a failure.
    pub fn take_embedded(&mut self) -> Option<store::embedded::EmbeddedPostgres> {
        self.database.embedded.take()
    }

    /// Runs until the server stops (SIGINT/SIGTERM or [`Shutdown::trigger`]), then stops the
    /// embedded PostgreSQL if this process owns it.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let shutdown = self.shutdown.clone();
        actix_web::rt::spawn(async move {
            wait_for_signal().await;
            shutdown.trigger().await;
        });
        let result = self.server.await;
        self.database.pool.close().await;
        if let Some(pg) = self.database.embedded {
            if pg.owns_server() {
                tokio::task::spawn_blocking(move || pg.stop())
                    .await
                    .context("stopping PostgreSQL panicked")??;
            }
        }
        result.context("HTTP server failed")
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the server");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The HTTP server on `listener`: actix-web's router for every request, except WebSocket
/// upgrades, which actix-http hands with their socket to [`http::ws::upgrade`] (so a
/// connection does not keep actix-http's two 8 KiB buffers for its whole life). This is
/// what `actix_web::HttpServer` builds, plus the upgrade service it does not offer, with
/// its timeouts.
fn http_server(
    settings: &ServeSettings,
    listener: std::net::TcpListener,
    state: web::Data<AppState>,
) -> anyhow::Result<(actix_server::ServerBuilder, u16)> {
    let addr = listener
        .local_addr()
        .context("the listener has no address")?;
    let mut builder = actix_server::Server::build();
    if let Some(workers) = settings.workers {
        builder = builder.workers(workers);
    }
    let builder = builder
        .listen("vigil-http", listener, move || {
            let realtime = state.realtime.clone();
            let shutdown = state.realtime.shutdown.clone();
            let app = App::new()
                .wrap(actix_web::middleware::from_fn(http::cors::cors))
                .wrap(NormalizePath::trim())
                .wrap(TracingLogger::<RequestSpan>::new())
                .app_data(state.clone())
                .configure(http::configure);
            HttpService::build()
                .keep_alive(KeepAlive::default())
                .client_request_timeout(CLIENT_REQUEST_TIMEOUT)
                .client_disconnect_timeout(CLIENT_DISCONNECT_TIMEOUT)
                // A client that closes its side is gone: the connection is shut down and a
                // response still streaming (SSE) is dropped at once, releasing the stream's
                // per-user slot, instead of when a later heartbeat write fails (18-30 s).
                .h1_allow_half_closed(false)
                .local_addr(addr)
                // Idle keep-alive connections close when shutdown starts, as with
                // `HttpServer` (which uses this same hook), instead of holding the drain
                // until their keep-alive expires.
                .graceful_shutdown_signal(move || {
                    let mut shutdown = shutdown.clone();
                    async move {
                        let _ = shutdown.wait_for(|stopping| *stopping).await;
                    }
                })
                .upgrade(fn_service(
                    move |(req, framed): (Request, Framed<TcpStream, h1::Codec>)| {
                        let realtime = realtime.clone();
                        async move {
                            http::ws::upgrade(realtime, req, framed).await;
                            Ok::<_, actix_web::Error>(())
                        }
                    },
                ))
                // The configured host is only a fallback for a request without `Host`
                // (URL generation, which Vigil does not use).
                .finish(map_config(app, move |()| AppConfig::default()))
                .tcp()
        })
        .with_context(|| format!("cannot listen on {addr}"))?;
    Ok((builder, addr.port()))
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
