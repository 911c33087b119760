//! The embedded PostgreSQL launcher: starts, reuses and stops a private PostgreSQL cluster.
//!
//! `vigil serve` without `DATABASE_URL` owns its own PostgreSQL, and the integration-test
//! harness starts its shared test cluster through the same code, so what runs in tests is what
//! runs in production. The launcher drives the stock PostgreSQL binaries (`initdb`, `pg_ctl`,
//! `postgres`, `psql`) with [`std::process`]: it runs once at start-up, so it is synchronous and
//! async callers wrap it in `spawn_blocking`.
//!
//! Layout of a data directory:
//!
//! ```text
//! <data_dir>/pgdata         the cluster (initdb -U vigil --auth=trust -E UTF8 --no-locale)
//! <data_dir>/pgdata/vigil.conf  our settings, rewritten before every start, included last
//! <data_dir>/socket         the Unix-socket directory (mode 0700): the only way in, no TCP
//! <data_dir>/postgres.log   the server log (pg_ctl -l)
//! <data_dir>/.vigil.lock    exclusive lock held while initializing, starting or stopping
//! ```
//!
//! Invariants:
//! - The server never listens on TCP (`listen_addresses = ''`); the port only names the socket
//!   file, so clusters in different data directories never collide and need no free port.
//! - Only the user the server runs as (and root) can connect: the socket directory is 0700, which
//!   is what makes `--auth=trust` safe.
//! - PostgreSQL never runs as root (it refuses to): when vigil runs as root, as it does in CI and
//!   containers, every PostgreSQL binary runs as the unprivileged `postgres` system user.
//! - A process stops only a server it owns ([`EmbeddedPostgres::owns_server`]): one it started
//!   itself, or, with [`EmbeddedPostgres::start_owned`], one it adopted. So several test
//!   processes can share one cluster without pulling it from under each other, while `vigil
//!   serve`, which holds its data dir's owner lock (`store::owner`), stops a PostgreSQL left
//!   running by a crashed predecessor, because under that lock nobody else can be using it.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::thread;
use std::time::Duration;

/// The port PostgreSQL names its socket after (`.s.PGSQL.5432`) when the caller has no reason
/// to pick another; clients default to it too. Nothing listens on TCP.
pub const DEFAULT_PORT: u16 = 5432;

/// The superuser initdb creates and every connection uses. It is not `postgres`, so that the
/// role vigil connects as is named for what owns the data.
const SUPERUSER: &str = "vigil";

/// The unprivileged system user the PostgreSQL binaries run as when vigil runs as root; Debian
/// and Ubuntu packages create it, and PostgreSQL refuses to run as root.
const SYSTEM_USER: &str = "postgres";

/// Where Debian and Ubuntu install each major version (`/usr/lib/postgresql/<version>/bin`),
/// searched when the binaries are not on `PATH` (they usually are not: the packages put only
/// client wrappers in `/usr/bin`).
const VERSIONED_ROOT: &str = "/usr/lib/postgresql";

/// Settings file, inside the cluster, that holds everything vigil needs from the server. It is
/// rewritten before every start so a reused cluster gets the current socket directory and port.
const CONF_FILE: &str = "vigil.conf";

/// The line appended to `postgresql.conf` to pull in [`CONF_FILE`]; last, so it wins.
const INCLUDE_LINE: &str = "include 'vigil.conf'";

/// Connection slots. The default (100) runs out when many integration tests, each with a pool
/// and stream listeners, share one cluster; 200 still fits the default shared memory.
const MAX_CONNECTIONS: u32 = 200;

/// Seconds `pg_ctl` waits for the server to start or stop. Above its default of 60 because a
/// start after a crash replays WAL first, and a slow CI machine should not fail on that.
const PG_CTL_TIMEOUT_SECS: u32 = 120;

/// Longest socket file path a Unix socket address holds (`sun_path` is 108 bytes with the NUL
/// on Linux). A longer data directory would make the server fail with an obscure message.
const MAX_SOCKET_PATH_BYTES: usize = 107;

/// How much of a failed command's output (and of the server log) goes into an error: enough to
/// show the cause, short enough for one log record.
const MAX_ERROR_OUTPUT_BYTES: usize = 4000;

/// How often, and how long apart, a start is retried while the processes of a crashed server
/// still hold its shared memory: they notice their postmaster died within a moment and exit.
const STALE_SHMEM_RETRIES: u32 = 10;
const STALE_SHMEM_RETRY_DELAY: Duration = Duration::from_millis(500);

/// What can go wrong while finding, initializing, starting or stopping the embedded server.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    /// No PostgreSQL server installation; the message says how to get one or avoid needing one.
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found on PATH or in \
         /usr/lib/postgresql/*/bin: install them (Debian/Ubuntu: `apt-get install postgresql`) \
         or set DATABASE_URL to use an existing PostgreSQL server"
    )]
    BinariesNotFound,

    /// Running as root, but there is no unprivileged user to run PostgreSQL as.
    #[error(
        "running as root, but the system user `{user}` that PostgreSQL must run as does not \
         exist (PostgreSQL refuses to run as root): install the PostgreSQL packages, which \
         create it, or run vigil as an ordinary user"
    )]
    SystemUserMissing {
        /// The user that was looked up.
        user: String,
    },

    /// The data directory is so deep that the socket path does not fit a Unix socket address.
    #[error(
        "the PostgreSQL socket path {path} is {len} bytes, longer than the {max} bytes a Unix \
         socket allows: choose a shorter data directory"
    )]
    SocketPathTooLong {
        /// The socket file path that would be used.
        path: String,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },

    /// `<data_dir>/pgdata` exists but is not a cluster; it is left alone rather than wiped.
    #[error(
        "{path} exists but holds no PostgreSQL cluster (no PG_VERSION): move it aside or \
         remove it, and vigil will create a new cluster"
    )]
    NotACluster {
        /// The directory that was expected to hold the cluster.
        path: String,
    },

    /// A file-system or process-spawning operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, with the path involved.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// A PostgreSQL binary exited unsuccessfully.
    #[error("`{command}` failed ({status}): {output}")]
    CommandFailed {
        /// The command line that was run.
        command: String,
        /// Its exit status.
        status: String,
        /// The tail of its output (and of the server log, for a failed start).
        output: String,
    },
}

/// Builds an [`EmbeddedError::Io`] from a description of what was being done.
fn io_error(context: impl Into<String>) -> impl FnOnce(io::Error) -> EmbeddedError {
    let context = context.into();
    move |source| EmbeddedError::Io { context, source }
}

/// A PostgreSQL cluster in a data directory, started (or found running) by [`Self::start`].
///
/// Dropping it leaves the server running: the owner stops it explicitly with [`Self::stop`],
/// because a shared test cluster must outlive the process that happened to start it.
#[derive(Debug)]
pub struct EmbeddedPostgres {
    /// The canonical data directory holding the cluster, the socket directory and the log.
    data_dir: PathBuf,
    /// The cluster directory (`<data_dir>/pgdata`), what `pg_ctl -D` takes.
    pgdata: PathBuf,
    /// Where the server puts its socket; absolute, because clients take it as the "host".
    socket_dir: PathBuf,
    /// Where the server log goes.
    log_file: PathBuf,
    /// The directory holding `initdb`, `pg_ctl` and `postgres` (and usually `psql`).
    bin_dir: PathBuf,
    /// The port naming the socket file; that of the running server when one was reused.
    port: u16,
    /// The user to run PostgreSQL binaries as, when vigil runs as root; `None` runs them directly.
    run_as: Option<SystemUser>,
    /// Whether this value owns the server (launched it, or adopted it under the data dir's
    /// owner lock), and so whether `stop` may stop it.
    owned: bool,
    /// The data dir's owner lock, held while this value owns the server so that no other
    /// Vigil process starts using (or stopping) it meanwhile; released when this is dropped.
    owner_lock: Option<super::owner::OwnerLock>,
}

/// An unprivileged user to run PostgreSQL as, and how to switch to it.
#[derive(Debug, Clone)]
struct SystemUser {
    /// The user's name, given to `runuser`/`su`.
    name: &'static str,
    /// Its uid, for chown and permission checks.
    uid: u32,
    /// Its primary gid, for chown and permission checks.
    gid: u32,
    /// The program that switches to it.
    switch: Switch,
}

/// How a root process runs a command as another user.
#[derive(Debug, Clone)]
enum Switch {
    /// `runuser -u <user> -- <cmd>`: util-linux, no shell and no quoting involved.
    Runuser(PathBuf),
    /// `su -s /bin/sh <user> -c '<cmd>'`: the fallback where runuser is missing.
    Su(PathBuf),
}

/// What `pg_ctl status` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerState {
    Running,
    NotRunning,
}

impl EmbeddedPostgres {
    /// Starts (or reuses) the cluster in `data_dir`; creates it on first use.
    ///
    /// Creates `data_dir` if needed. If the cluster is already running (started by another
    /// process, such as another test binary), it is reused and [`Self::owns_server`] is false.
    /// Initialization and start happen under an exclusive lock on `<data_dir>/.vigil.lock`, so
    /// concurrent callers neither initialize twice nor start two servers.
    #[tracing::instrument(name = "embedded_postgres_start", skip_all, fields(data_dir = %data_dir.display(), port = port))]
    pub fn start(data_dir: &Path, port: u16) -> Result<Self, EmbeddedError> {
        Self::start_as(data_dir, port, None)
    }

    /// Starts the cluster in `data_dir` as its sole owner, holding `lock` (the Vigil data dir's
    /// owner lock) until this value is dropped.
    ///
    /// A server found already running is adopted: under the owner lock no other Vigil uses the
    /// data dir, so it can only have been left by one that crashed (`kill -9`), and this value
    /// stops it like one it started. Creates `data_dir` if needed.
    #[tracing::instrument(name = "embedded_postgres_start", skip_all, fields(data_dir = %data_dir.display(), port = port))]
    pub fn start_owned(
        data_dir: &Path,
        port: u16,
        lock: super::owner::OwnerLock,
    ) -> Result<Self, EmbeddedError> {
        Self::start_as(data_dir, port, Some(lock))
    }

    /// [`Self::start`] and [`Self::start_owned`].
    fn start_as(
        data_dir: &Path,
        port: u16,
        owner_lock: Option<super::owner::OwnerLock>,
    ) -> Result<Self, EmbeddedError> {
        let bin_dir = locate_binaries()?;
        let run_as = if running_as_root() {
            Some(SystemUser::postgres()?)
        } else {
            None
        };

        fs::create_dir_all(data_dir)
            .map_err(io_error(format!("creating {}", data_dir.display())))?;
        let data_dir = fs::canonicalize(data_dir)
            .map_err(io_error(format!("resolving {}", data_dir.display())))?;
        let socket_dir = data_dir.join("socket");
        check_socket_path(&socket_dir, port)?;

        let mut pg = Self {
            pgdata: data_dir.join("pgdata"),
            log_file: data_dir.join("postgres.log"),
            socket_dir,
            data_dir,
            bin_dir,
            port,
            run_as,
            owned: false,
            owner_lock,
        };
        tracing::debug!(bin_dir = %pg.bin_dir.display(), run_as = ?pg.run_as.as_ref().map(|u| u.name), "found PostgreSQL");

        let _lock = pg.lock()?;
        pg.prepare_directories()?;
        pg.initialize_if_needed()?;
        match pg.status()? {
            ServerState::Running if pg.owner_lock.is_some() => {
                pg.adopt_running_server();
                pg.owned = true;
                let postmaster = read_pid_file(&pg.pgdata.join("postmaster.pid"))
                    .and_then(|lines| lines.first().map(|pid| pid.trim().to_owned()))
                    .unwrap_or_default();
                tracing::warn!(
                    postmaster,
                    socket_dir = %pg.socket_dir.display(),
                    "adopting the PostgreSQL a previous Vigil left running in this data dir (it \
                     ended without stopping it); it is stopped on exit"
                );
            }
            ServerState::Running => {
                pg.adopt_running_server();
                tracing::info!(socket_dir = %pg.socket_dir.display(), port = pg.port, "reusing running PostgreSQL");
            }
            ServerState::NotRunning => {
                pg.start_server()?;
                pg.owned = true;
                tracing::info!(socket_dir = %pg.socket_dir.display(), port = pg.port, "started PostgreSQL");
            }
        }
        Ok(pg)
    }

    /// The sqlx connection URL for `database`, over the Unix socket
    /// (`postgres://vigil@localhost/<db>?host=<socket dir>&port=<port>`); the `host` query
    /// parameter, being a path, makes sqlx use the socket, and `localhost` is never contacted.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://{SUPERUSER}@localhost/{}?host={}&port={}",
            percent_encode(database.as_bytes(), b""),
            percent_encode(self.socket_dir.as_os_str().as_bytes(), b"/"),
            self.port
        )
    }

    /// The tokio-postgres key-value configuration for `database`
    /// (`host=<socket dir> port=<port> user=vigil dbname=<db>`), for the connections that
    /// LISTEN, which sqlx pools do not serve.
    pub fn tokio_postgres_config(&self, database: &str) -> String {
        format!(
            "host={} port={} user={SUPERUSER} dbname={}",
            quote_config_value(&self.socket_dir.to_string_lossy()),
            self.port,
            quote_config_value(database)
        )
    }

    /// The directory holding the server's Unix socket; clients pass it as the host.
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// The (canonical) data directory this cluster lives in.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The port naming the socket file (`.s.PGSQL.<port>`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether this value owns the server: [`Self::start`] launched it (rather than reusing a
    /// running one), or [`Self::start_owned`] launched or adopted it. Only then does
    /// [`Self::stop`] stop it.
    pub fn owns_server(&self) -> bool {
        self.owned
    }

    /// Gives up ownership without stopping the server: a command that found the data dir owned
    /// by a running `vigil serve` must leave the server to it, even if it started it itself
    /// (the server, still starting, then adopts it).
    pub fn disown(&mut self) {
        self.owned = false;
    }

    /// Stops the server with a fast shutdown (sessions are disconnected, transactions rolled
    /// back), if this value owns it; a reused server is left to whoever started it.
    pub fn stop(&self) -> Result<(), EmbeddedError> {
        if !self.owned {
            tracing::debug!(data_dir = %self.data_dir.display(), "not stopping PostgreSQL: another process started it");
            return Ok(());
        }
        let _lock = self.lock()?;
        self.stop_server()
    }

    /// Restart (stop fast + start) — used by tests that prove readers survive a PostgreSQL restart.
    ///
    /// Unlike [`Self::stop`], it restarts a reused server too: the server comes back, so the
    /// other processes using it see what they would see after any restart.
    pub fn restart(&self) -> Result<(), EmbeddedError> {
        let _lock = self.lock()?;
        self.stop_server()?;
        self.start_server()?;
        tracing::info!(data_dir = %self.data_dir.display(), "restarted PostgreSQL");
        Ok(())
    }

    /// Crash and restart (`pg_ctl stop -m immediate` + start): the server quits without a
    /// checkpoint or a final WAL flush, as after a power cut of PostgreSQL alone — used by
    /// tests that prove what survives a crash (commits without a synchronous flush may not).
    pub fn crash_restart(&self) -> Result<(), EmbeddedError> {
        let _lock = self.lock()?;
        self.stop_server_with("immediate")?;
        self.start_server()?;
        tracing::info!(data_dir = %self.data_dir.display(), "crashed and restarted PostgreSQL");
        Ok(())
    }

    /// Creates database `name` if it does not exist yet (initdb creates only `postgres`,
    /// `template0` and `template1`). Uses `psql` over the socket, under the data directory's
    /// lock, and tolerates a concurrent creator outside it.
    pub fn ensure_database(&self, name: &str) -> Result<(), EmbeddedError> {
        let _lock = self.lock()?;
        if self.database_exists(name)? {
            return Ok(());
        }
        let create = format!("CREATE DATABASE {}", quote_identifier(name));
        match self.psql(&create) {
            Ok(_) => {
                tracing::info!(database = name, "created database");
                Ok(())
            }
            // Someone else (the server itself, over SQL) may have created it meanwhile.
            Err(err) if self.database_exists(name)? => {
                tracing::debug!(database = name, error = %err, "database created concurrently");
                Ok(())
            }
            Err(err) => Err(err),
        }
    }

    /// Whether database `name` exists.
    fn database_exists(&self, name: &str) -> Result<bool, EmbeddedError> {
        let query = format!(
            "SELECT 1 FROM pg_database WHERE datname = {}",
            quote_literal(name)
        );
        Ok(self.psql(&query)?.trim() == "1")
    }

    /// Runs one SQL statement with `psql` against the `postgres` database, returning its
    /// unaligned, tuples-only output.
    fn psql(&self, sql: &str) -> Result<String, EmbeddedError> {
        let psql = self.client_binary("psql")?;
        let socket_dir = self.socket_dir.as_os_str();
        let port = self.port.to_string();
        let args: [&OsStr; 16] = [
            "-X".as_ref(), // no ~/.psqlrc
            "-w".as_ref(), // never prompt for a password
            "-q".as_ref(),
            "-A".as_ref(),
            "-t".as_ref(),
            "-v".as_ref(),
            "ON_ERROR_STOP=1".as_ref(),
            "-h".as_ref(),
            socket_dir,
            "-p".as_ref(),
            port.as_ref(),
            "-U".as_ref(),
            SUPERUSER.as_ref(),
            "-d".as_ref(),
            "postgres".as_ref(),
            "-c".as_ref(),
        ];
        let mut all_args = args.to_vec();
        all_args.push(sql.as_ref());
        let output = self.run(&psql, &all_args)?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// A client program from the server's bin directory, or from `PATH` if that directory lacks
    /// it (distributions package the client separately).
    fn client_binary(&self, name: &str) -> Result<PathBuf, EmbeddedError> {
        let local = self.bin_dir.join(name);
        if is_executable(&local) {
            return Ok(local);
        }
        std::env::var_os("PATH")
            .iter()
            .flat_map(std::env::split_paths)
            .map(|dir| dir.join(name))
            .find(|path| is_executable(path))
            .ok_or_else(|| EmbeddedError::Io {
                context: format!("finding {name} in {} or on PATH", self.bin_dir.display()),
                source: io::Error::from(io::ErrorKind::NotFound),
            })
    }

    /// Takes the data directory's exclusive lock; it is released when the file is dropped.
    ///
    /// Every caller takes it once, at the public entry point: `flock` locks are per open file,
    /// so taking it again in a helper would deadlock against ourselves.
    fn lock(&self) -> Result<File, EmbeddedError> {
        let path = self.data_dir.join(".vigil.lock");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_error(format!("opening {}", path.display())))?;
        file.lock()
            .map_err(io_error(format!("locking {}", path.display())))?;
        Ok(file)
    }

    /// Creates the socket directory and log file and, as root, hands them to the server's user
    /// and makes the way to them traversable for it.
    fn prepare_directories(&self) -> Result<(), EmbeddedError> {
        if let Some(user) = &self.run_as {
            user.ensure_traversable(&self.data_dir)?;
        }
        self.create_private_dir(&self.socket_dir)?;
        if !self.log_file.exists() {
            File::create(&self.log_file)
                .map_err(io_error(format!("creating {}", self.log_file.display())))?;
        }
        self.give_to_server_user(&self.log_file, 0o600)
    }

    /// Creates `dir` (if missing) as a 0700 directory owned by the server's user.
    fn create_private_dir(&self, dir: &Path) -> Result<(), EmbeddedError> {
        match fs::create_dir(dir) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
            Err(err) => return Err(io_error(format!("creating {}", dir.display()))(err)),
        }
        self.give_to_server_user(dir, 0o700)
    }

    /// Sets `path`'s mode and, as root, makes the server's user own it.
    fn give_to_server_user(&self, path: &Path, mode: u32) -> Result<(), EmbeddedError> {
        if let Some(user) = &self.run_as {
            std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid)).map_err(io_error(
                format!("giving {} to user {}", path.display(), user.name),
            ))?;
        }
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_error(format!(
            "setting permissions of {}",
            path.display()
        )))
    }

    /// Runs initdb if `pgdata` holds no cluster yet.
    ///
    /// initdb writes into a staging directory renamed to `pgdata` only on success, so a crash
    /// mid-way never leaves a half-made cluster that would later be mistaken for a real one.
    fn initialize_if_needed(&self) -> Result<(), EmbeddedError> {
        if self.pgdata.join("PG_VERSION").is_file() {
            return Ok(());
        }
        if self.pgdata.exists() {
            let empty = fs::read_dir(&self.pgdata)
                .map_err(io_error(format!("reading {}", self.pgdata.display())))?
                .next()
                .is_none();
            if !empty {
                return Err(EmbeddedError::NotACluster {
                    path: self.pgdata.display().to_string(),
                });
            }
            fs::remove_dir(&self.pgdata).map_err(io_error(format!(
                "removing empty {}",
                self.pgdata.display()
            )))?;
        }

        let staging = self.data_dir.join("pgdata.initdb");
        if staging.exists() {
            tracing::warn!(path = %staging.display(), "removing a cluster left half-made by an interrupted initdb");
            fs::remove_dir_all(&staging)
                .map_err(io_error(format!("removing {}", staging.display())))?;
        }
        self.create_private_dir(&staging)?;

        tracing::info!(pgdata = %self.pgdata.display(), "initializing a new PostgreSQL cluster");
        let initdb = self.bin_dir.join("initdb");
        let args: [&OsStr; 7] = [
            "-D".as_ref(),
            staging.as_os_str(),
            "-U".as_ref(),
            SUPERUSER.as_ref(),
            "--auth=trust".as_ref(),
            "--encoding=UTF8".as_ref(),
            // The C locale: byte-order collation, identical on every machine, and it needs no
            // locale to be generated on minimal images (C.UTF-8 is missing on some).
            "--no-locale".as_ref(),
        ];
        self.run(&initdb, &args)?;
        fs::rename(&staging, &self.pgdata).map_err(io_error(format!(
            "renaming {} to {}",
            staging.display(),
            self.pgdata.display()
        )))
    }

    /// Asks `pg_ctl status` whether a postmaster runs for the cluster, discarding a
    /// `postmaster.pid` whose process id now belongs to some other program.
    fn status(&self) -> Result<ServerState, EmbeddedError> {
        let pg_ctl = self.bin_dir.join("pg_ctl");
        let args: [&OsStr; 3] = ["status".as_ref(), "-D".as_ref(), self.pgdata.as_os_str()];
        let (command, output) = self.run_unchecked(&pg_ctl, &args)?;
        match output.status.code() {
            Some(0) => {}
            // 3: not running; 4: no accessible data directory, which initialize_if_needed
            // rules out, so treat it the same and let the start report the real problem.
            Some(3 | 4) => return Ok(ServerState::NotRunning),
            _ => return Err(command_failed(command, &output, None)),
        }

        // pg_ctl only checks that the pid in postmaster.pid exists. After a crash the pid may
        // be a zombie nobody reaps (containers without an init), or, after a container
        // restart, reused by an unrelated process; the postmaster would then refuse to start
        // ("lock file already exists"), so the stale lock files go.
        let pid_file = self.pgdata.join("postmaster.pid");
        let Some(pid) =
            read_pid_file(&pid_file).and_then(|lines| lines.first()?.trim().parse::<u32>().ok())
        else {
            return Ok(ServerState::Running);
        };
        match process_liveness(pid) {
            Liveness::Postgres | Liveness::Unknown => Ok(ServerState::Running),
            Liveness::Stale(what) => {
                tracing::warn!(pid, process = %what, "postmaster.pid names no live PostgreSQL: removing the stale lock files");
                let socket_lock = self.socket_dir.join(format!(".s.PGSQL.{}.lock", self.port));
                for file in [&pid_file, &socket_lock] {
                    match fs::remove_file(file) {
                        Ok(()) => {}
                        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                        Err(err) => {
                            return Err(io_error(format!("removing stale {}", file.display()))(err))
                        }
                    }
                }
                Ok(ServerState::NotRunning)
            }
        }
    }

    /// Takes the port and socket directory from the running server's `postmaster.pid`, which
    /// is what clients must use even if this start asked for others.
    fn adopt_running_server(&mut self) {
        let Some(lines) = read_pid_file(&self.pgdata.join("postmaster.pid")) else {
            return;
        };
        // Lines: pid, data directory, start time, port, socket directories, listen address, ...
        if let Some(port) = lines
            .get(3)
            .and_then(|line| line.trim().parse::<u16>().ok())
        {
            if port != self.port {
                tracing::warn!(
                    requested = self.port,
                    running = port,
                    "the running PostgreSQL uses another port; using it"
                );
                self.port = port;
            }
        }
        if let Some(dir) = lines
            .get(4)
            .and_then(|line| line.split(',').next())
            .map(str::trim)
            .filter(|dir| dir.starts_with('/'))
        {
            if Path::new(dir) != self.socket_dir {
                tracing::warn!(requested = %self.socket_dir.display(), running = dir, "the running PostgreSQL uses another socket directory; using it");
                self.socket_dir = PathBuf::from(dir);
            }
        }
    }

    /// Writes our settings and starts the server, waiting until it accepts connections.
    fn start_server(&self) -> Result<(), EmbeddedError> {
        self.write_settings()?;
        let pg_ctl = self.bin_dir.join("pg_ctl");
        let timeout = PG_CTL_TIMEOUT_SECS.to_string();
        let args: [&OsStr; 8] = [
            "start".as_ref(),
            "-w".as_ref(),
            "-t".as_ref(),
            timeout.as_ref(),
            "-D".as_ref(),
            self.pgdata.as_os_str(),
            "-l".as_ref(),
            self.log_file.as_os_str(),
        ];
        let mut attempt = 0;
        loop {
            let log_len_before = fs::metadata(&self.log_file).map_or(0, |m| m.len());
            let (command, output) = self.run_unchecked(&pg_ctl, &args)?;
            if output.status.success() {
                return Ok(());
            }
            let log_tail = read_log_since(&self.log_file, log_len_before);
            // After a crash (kill -9 of the postmaster) its children may still hold the old
            // shared memory for a moment; they exit as soon as they notice. Wait for them.
            if log_tail.contains("pre-existing shared memory block")
                && attempt < STALE_SHMEM_RETRIES
            {
                attempt += 1;
                tracing::warn!(
                    attempt,
                    "processes of a crashed PostgreSQL still hold its shared memory; retrying"
                );
                thread::sleep(STALE_SHMEM_RETRY_DELAY);
                continue;
            }
            return Err(command_failed(command, &output, Some(&log_tail)));
        }
    }

    /// Stops the server (fast shutdown) if it is running.
    fn stop_server(&self) -> Result<(), EmbeddedError> {
        self.stop_server_with("fast")
    }

    /// Stops the server with shutdown `mode` (`fast`, or `immediate` for a crash) if it is
    /// running.
    fn stop_server_with(&self, mode: &str) -> Result<(), EmbeddedError> {
        if self.status()? == ServerState::NotRunning {
            tracing::debug!(data_dir = %self.data_dir.display(), "PostgreSQL already stopped");
            return Ok(());
        }
        let pg_ctl = self.bin_dir.join("pg_ctl");
        let timeout = PG_CTL_TIMEOUT_SECS.to_string();
        let args: [&OsStr; 8] = [
            "stop".as_ref(),
            "-m".as_ref(),
            mode.as_ref(),
            "-w".as_ref(),
            "-t".as_ref(),
            timeout.as_ref(),
            "-D".as_ref(),
            self.pgdata.as_os_str(),
        ];
        self.run(&pg_ctl, &args)?;
        tracing::info!(data_dir = %self.data_dir.display(), "stopped PostgreSQL");
        Ok(())
    }

    /// Writes [`CONF_FILE`] and makes sure `postgresql.conf` includes it.
    fn write_settings(&self) -> Result<(), EmbeddedError> {
        let settings = format!(
            "# Written by vigil before every start; edits here are overwritten.\n\
             listen_addresses = ''\n\
             port = {port}\n\
             unix_socket_directories = {socket_dir}\n\
             unix_socket_permissions = 0700\n\
             max_connections = {MAX_CONNECTIONS}\n",
            port = self.port,
            socket_dir = quote_literal(&self.socket_dir.to_string_lossy()),
        );
        let conf = self.pgdata.join(CONF_FILE);
        fs::write(&conf, settings).map_err(io_error(format!("writing {}", conf.display())))?;
        self.give_to_server_user(&conf, 0o600)?;

        let main_conf = self.pgdata.join("postgresql.conf");
        let current = fs::read_to_string(&main_conf)
            .map_err(io_error(format!("reading {}", main_conf.display())))?;
        if !current.lines().any(|line| line.trim() == INCLUDE_LINE) {
            let mut file = OpenOptions::new()
                .append(true)
                .open(&main_conf)
                .map_err(io_error(format!("opening {}", main_conf.display())))?;
            writeln!(
                file,
                "\n# Settings vigil needs (socket only, no TCP).\n{INCLUDE_LINE}"
            )
            .map_err(io_error(format!("appending to {}", main_conf.display())))?;
        }
        Ok(())
    }

    /// Runs a PostgreSQL binary as the server's user and fails unless it exits successfully.
    fn run(&self, program: &Path, args: &[&OsStr]) -> Result<Output, EmbeddedError> {
        let (command, output) = self.run_unchecked(program, args)?;
        if output.status.success() {
            Ok(output)
        } else {
            Err(command_failed(command, &output, None))
        }
    }

    /// Runs a PostgreSQL binary as the server's user, returning its printable command line and
    /// its output whatever its exit status.
    ///
    /// The working directory is the data directory, which the server's user can reach (ours may
    /// be a private home directory), and `PG*` variables are removed so a `PGDATA` or
    /// `PGOPTIONS` meant for another server cannot redirect these commands.
    fn run_unchecked(
        &self,
        program: &Path,
        args: &[&OsStr],
    ) -> Result<(String, Output), EmbeddedError> {
        let mut command = match &self.run_as {
            None => {
                let mut command = Command::new(program);
                command.args(args);
                command
            }
            Some(user) => user.command(program, args),
        };
        command.current_dir(&self.data_dir);
        for (key, _) in std::env::vars_os() {
            if key.as_bytes().starts_with(b"PG") {
                command.env_remove(key);
            }
        }
        let printable = printable_command(program, args);
        tracing::debug!(command = %printable, "running");
        let output = command
            .output()
            .map_err(io_error(format!("running `{printable}`")))?;
        Ok((printable, output))
    }
}

impl SystemUser {
    /// The `postgres` system user and the way to switch to it; only meaningful as root.
    fn postgres() -> Result<Self, EmbeddedError> {
        let (uid, gid) =
            lookup_user(SYSTEM_USER)?.ok_or_else(|| EmbeddedError::SystemUserMissing {
                user: SYSTEM_USER.to_owned(),
            })?;
        let find = |name: &str| {
            std::env::var_os("PATH")
                .iter()
                .flat_map(std::env::split_paths)
                .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
                .map(|dir| dir.join(name))
                .find(|path| is_executable(path))
        };
        let switch = match (find("runuser"), find("su")) {
            (Some(runuser), _) => Switch::Runuser(runuser),
            (None, Some(su)) => Switch::Su(su),
            (None, None) => {
                return Err(EmbeddedError::Io {
                    context: format!(
                        "finding runuser or su to run PostgreSQL as user {SYSTEM_USER}"
                    ),
                    source: io::Error::from(io::ErrorKind::NotFound),
                })
            }
        };
        Ok(Self {
            name: SYSTEM_USER,
            uid,
            gid,
            switch,
        })
    }

    /// A command running `program args` as this user.
    fn command(&self, program: &Path, args: &[&OsStr]) -> Command {
        match &self.switch {
            Switch::Runuser(runuser) => {
                let mut command = Command::new(runuser);
                command
                    .args(["-u", self.name, "--"])
                    .arg(program)
                    .args(args);
                command
            }
            Switch::Su(su) => {
                let script = std::iter::once(program.as_os_str())
                    .chain(args.iter().copied())
                    .map(shell_quote)
                    .collect::<Vec<_>>()
                    .join(" ");
                let mut command = Command::new(su);
                command.args(["-s", "/bin/sh", self.name, "-c"]).arg(script);
                command
            }
        }
    }

    /// Makes `dir` and every directory above it searchable by this user, adding only the one
    /// execute bit that applies to it (owner, group or other) where it is missing.
    ///
    /// Only the execute bit: it lets the server reach its own directories by name without
    /// letting it list anything on the way. A root-owned `/root` needs it when the data
    /// directory lives there; that change is logged.
    fn ensure_traversable(&self, dir: &Path) -> Result<(), EmbeddedError> {
        for ancestor in dir.ancestors() {
            let meta = fs::metadata(ancestor)
                .map_err(io_error(format!("inspecting {}", ancestor.display())))?;
            let mode = meta.mode() & 0o7777;
            let bit = if meta.uid() == self.uid {
                0o100
            } else if meta.gid() == self.gid {
                0o010
            } else {
                0o001
            };
            if mode & bit == 0 {
                tracing::warn!(directory = %ancestor.display(), user = self.name, "making directory traversable so PostgreSQL can reach its data directory");
                fs::set_permissions(ancestor, fs::Permissions::from_mode(mode | bit)).map_err(
                    io_error(format!("making {} traversable", ancestor.display())),
                )?;
            }
        }
        Ok(())
    }
}

/// Whether this process runs as root, in which case PostgreSQL must run as another user.
fn running_as_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The uid and primary gid of user `name`, through NSS like every other program (nix's
/// `User::from_name` wraps the thread-safe `getpwnam_r` and grows its buffer as needed).
fn lookup_user(name: &str) -> Result<Option<(u32, u32)>, EmbeddedError> {
    nix::unistd::User::from_name(name)
        .map(|user| user.map(|user| (user.uid.as_raw(), user.gid.as_raw())))
        .map_err(|errno| EmbeddedError::Io {
            context: format!("looking up user {name}"),
            source: io::Error::from(errno),
        })
}

/// The directory holding `initdb`, `pg_ctl` and `postgres`: where `initdb` on `PATH` really
/// lives, else the highest version under `/usr/lib/postgresql`.
fn locate_binaries() -> Result<PathBuf, EmbeddedError> {
    locate_binaries_in(
        std::env::var_os("PATH").as_deref(),
        Path::new(VERSIONED_ROOT),
    )
}

/// [`locate_binaries`] with the search places given, so tests can point it elsewhere.
///
/// Symbolic links on `PATH` (Debian's `/usr/local/bin/initdb -> /usr/lib/postgresql/15/bin`)
/// are resolved, because `initdb` and `pg_ctl` look for `postgres` beside their real file and
/// `psql` is found there too.
fn locate_binaries_in(
    path_var: Option<&OsStr>,
    versioned_root: &Path,
) -> Result<PathBuf, EmbeddedError> {
    let on_path = path_var
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("initdb"))
        .filter(|initdb| is_executable(initdb))
        .filter_map(|initdb| Some(fs::canonicalize(initdb).ok()?.parent()?.to_path_buf()))
        .find(|dir| has_server_binaries(dir));
    if let Some(dir) = on_path {
        return Ok(dir);
    }

    let mut versions: Vec<(Vec<u32>, PathBuf)> = fs::read_dir(versioned_root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry
                .file_name()
                .to_str()?
                .split('.')
                .map(|part| part.parse::<u32>().ok())
                .collect::<Option<Vec<u32>>>()?;
            let bin = entry.path().join("bin");
            has_server_binaries(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .ok_or(EmbeddedError::BinariesNotFound)
}

/// Whether `dir` holds all three server binaries.
fn has_server_binaries(dir: &Path) -> bool {
    ["initdb", "pg_ctl", "postgres"]
        .iter()
        .all(|name| is_executable(&dir.join(name)))
}

/// Whether `path` is a file someone may execute.
fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|meta| meta.is_file() && meta.mode() & 0o111 != 0)
}

/// Fails early, with a clear message, if the socket file path would not fit a socket address.
fn check_socket_path(socket_dir: &Path, port: u16) -> Result<(), EmbeddedError> {
    let socket = socket_dir.join(format!(".s.PGSQL.{port}"));
    let len = socket.as_os_str().len();
    if len > MAX_SOCKET_PATH_BYTES {
        return Err(EmbeddedError::SocketPathTooLong {
            path: socket.display().to_string(),
            len,
            max: MAX_SOCKET_PATH_BYTES,
        });
    }
    Ok(())
}

/// What the process named by a `postmaster.pid` is.
#[derive(Debug, PartialEq, Eq)]
enum Liveness {
    /// A live PostgreSQL process.
    Postgres,
    /// A zombie, or another program: the pid file is stale. Holds what was found, for the log.
    Stale(String),
    /// `/proc` cannot tell (not Linux, or gone in between); trust `pg_ctl`.
    Unknown,
}

/// Looks at `/proc/<pid>/stat`: the program name (in parentheses, and possibly containing
/// them) and the state letter after it.
fn process_liveness(pid: u32) -> Liveness {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Liveness::Unknown;
    };
    let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
        return Liveness::Unknown;
    };
    let name = stat.get(open + 1..close).unwrap_or_default();
    let state = stat
        .get(close + 1..)
        .unwrap_or_default()
        .trim_start()
        .chars()
        .next();
    match state {
        Some('Z' | 'X') => Liveness::Stale(format!("{name} (zombie)")),
        _ if matches!(name, "postgres" | "postmaster") => Liveness::Postgres,
        _ => Liveness::Stale(name.to_owned()),
    }
}

/// The lines of a `postmaster.pid`, if it can be read.
fn read_pid_file(path: &Path) -> Option<Vec<String>> {
    let text = fs::read_to_string(path).ok()?;
    Some(text.lines().map(str::to_owned).collect())
}

/// What the server logged after byte `offset` of its log, at most
/// [`MAX_ERROR_OUTPUT_BYTES`] of it; empty if the log cannot be read.
fn read_log_since(path: &Path, offset: u64) -> String {
    let Ok(bytes) = fs::read(path) else {
        return String::new();
    };
    let start = usize::try_from(offset).unwrap_or(0).min(bytes.len());
    tail(&String::from_utf8_lossy(&bytes[start..]))
}

/// A [`EmbeddedError::CommandFailed`] carrying the end of the command's output and, if given,
/// of the server log.
fn command_failed(command: String, output: &Output, log_tail: Option<&str>) -> EmbeddedError {
    let mut text = String::from_utf8_lossy(&output.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !stdout.trim().is_empty() {
        text = format!("{stdout}\n{text}");
    }
    if let Some(log) = log_tail.filter(|log| !log.trim().is_empty()) {
        text = format!("{text}\nserver log:\n{log}");
    }
    EmbeddedError::CommandFailed {
        command,
        status: output.status.to_string(),
        output: tail(text.trim()),
    }
}

/// The last [`MAX_ERROR_OUTPUT_BYTES`] of `text`, cut at a character boundary.
fn tail(text: &str) -> String {
    if text.len() <= MAX_ERROR_OUTPUT_BYTES {
        return text.to_owned();
    }
    let mut start = text.len() - MAX_ERROR_OUTPUT_BYTES;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("...{}", &text[start..])
}

/// A command line for logs and errors.
fn printable_command(program: &Path, args: &[&OsStr]) -> String {
    std::iter::once(program.as_os_str())
        .chain(args.iter().copied())
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// `arg` quoted for `sh`: inside single quotes nothing is special but the quote itself.
fn shell_quote(arg: &OsStr) -> String {
    format!("'{}'", arg.to_string_lossy().replace('\'', r"'\''"))
}

/// `value` as an SQL (and postgresql.conf) string literal.
fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// `name` as an SQL identifier, so any database name is taken literally.
fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `value` as a libpq key-value configuration value: quoted when it is empty or holds spaces,
/// quotes or backslashes.
fn quote_config_value(value: &str) -> String {
    let plain = !value.is_empty()
        && !value
            .chars()
            .any(|c| c.is_whitespace() || c == '\'' || c == '\\');
    if plain {
        value.to_owned()
    } else {
        format!("'{}'", value.replace('\\', r"\\").replace('\'', r"\'"))
    }
}

/// Percent-encodes every byte except URL-unreserved ones and those in `keep`.
fn percent_encode(bytes: &[u8], keep: &[u8]) -> String {
    let mut encoded = String::with_capacity(bytes.len());
    for &byte in bytes {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) || keep.contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            encoded.push('%');
            encoded.push(char::from(HEX[usize::from(byte >> 4)]));
            encoded.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::Connection;

    /// A fresh directory under /tmp, world-traversable so the `postgres` user can reach it
    /// when the tests run as root, and removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(label: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("vigil-embedded-{label}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).expect("create test dir");
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod test dir");
            Self(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
    }

    /// `SELECT 1` through sqlx with [`EmbeddedPostgres::url`].
    fn select_one_sqlx(url: &str) -> i32 {
        runtime().block_on(async {
            let mut conn = sqlx::PgConnection::connect(url)
                .await
                .expect("sqlx connect");
            let one: i32 = sqlx::query_scalar("SELECT 1")
                .fetch_one(&mut conn)
                .await
                .expect("select 1");
            conn.close().await.expect("close");
            one
        })
    }

    /// `SELECT 1` through tokio-postgres with [`EmbeddedPostgres::tokio_postgres_config`].
    fn select_one_tokio_postgres(config: &str) -> i32 {
        runtime().block_on(async {
            let (client, connection) = tokio_postgres::connect(config, tokio_postgres::NoTls)
                .await
                .expect("tokio-postgres connect");
            let driver = tokio::spawn(connection);
            let row = client.query_one("SELECT 1", &[]).await.expect("select 1");
            drop(client);
            let _ = driver.await;
            row.get(0)
        })
    }

    #[test]
    fn a_cluster_is_created_reused_restarted_and_stopped() {
        let dir = TempDir::new("test");
        let data_dir = dir.0.join("data");

        // Arrange / Act: first start creates the cluster.
        let pg = EmbeddedPostgres::start(&data_dir, DEFAULT_PORT).expect("first start");
        assert!(pg.owns_server());
        assert!(pg.data_dir().join("pgdata/PG_VERSION").is_file());
        assert!(pg.socket_dir().is_absolute());
        let mode = fs::metadata(pg.socket_dir()).expect("socket dir").mode() & 0o777;
        assert_eq!(mode, 0o700, "only the server's user may reach the socket");

        pg.ensure_database("vigil").expect("create database");
        pg.ensure_database("vigil").expect("database already there");
        assert_eq!(select_one_sqlx(&pg.url("vigil")), 1);
        assert_eq!(
            select_one_tokio_postgres(&pg.tokio_postgres_config("vigil")),
            1
        );

        // A second start on the same directory reuses the running server.
        let again = EmbeddedPostgres::start(&data_dir, DEFAULT_PORT).expect("second start");
        assert!(!again.owns_server());
        assert_eq!(again.url("vigil"), pg.url("vigil"));
        again.stop().expect("stop of a reused server is a no-op");
        assert_eq!(select_one_sqlx(&pg.url("vigil")), 1);

        // Restart: the server comes back and accepts connections.
        pg.restart().expect("restart");
        assert_eq!(select_one_sqlx(&pg.url("vigil")), 1);

        pg.stop().expect("stop");
        assert_eq!(pg.status().expect("status"), ServerState::NotRunning);
        pg.stop().expect("stopping twice is harmless");

        // Start again: the existing cluster (with its database) is reused, not re-created.
        let pg = EmbeddedPostgres::start(&data_dir, DEFAULT_PORT).expect("start on existing");
        assert!(pg.owns_server());
        assert_eq!(select_one_sqlx(&pg.url("vigil")), 1);
        pg.stop().expect("final stop");
    }

    #[test]
    fn a_crashed_server_leaves_nothing_that_prevents_a_start() {
        let dir = TempDir::new("crash");
        let data_dir = dir.0.join("data");
        let pg = EmbeddedPostgres::start(&data_dir, 5433).expect("start");

        // Arrange: kill the postmaster outright, leaving postmaster.pid and the socket lock.
        let pid_file = pg.data_dir().join("pgdata/postmaster.pid");
        let pid = read_pid_file(&pid_file).expect("pid file")[0]
            .trim()
            .to_owned();
        let killed = Command::new("kill")
            .args(["-KILL", &pid])
            .status()
            .expect("kill");
        assert!(killed.success());
        for _ in 0..100 {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
        assert!(pid_file.exists(), "the crash leaves a stale postmaster.pid");

        // Act
        let pg = EmbeddedPostgres::start(&data_dir, 5433).expect("start after crash");

        // Assert
        assert!(pg.owns_server());
        assert_eq!(select_one_sqlx(&pg.url("postgres")), 1);
        pg.stop().expect("stop");
    }

    #[test]
    fn a_pid_file_naming_a_reused_pid_does_not_block_a_start() {
        let dir = TempDir::new("reused-pid");
        let data_dir = dir.0.join("data");
        let pg = EmbeddedPostgres::start(&data_dir, 5435).expect("start");
        let pid_file = pg.data_dir().join("pgdata/postmaster.pid");
        let contents = fs::read_to_string(&pid_file).expect("pid file");
        pg.stop().expect("stop");

        // Arrange: the old pid now belongs to another program of the server's user, which is
        // what pg_ctl (and the postmaster) would take for a running server.
        let script: [&OsStr; 2] = ["-c".as_ref(), "echo $$; exec sleep 60".as_ref()];
        let mut command = match &pg.run_as {
            Some(user) => user.command(Path::new("/bin/sh"), &script),
            None => {
                let mut command = Command::new("/bin/sh");
                command.args(script);
                command
            }
        };
        let mut impostor = command
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn impostor");
        let mut pid = String::new();
        io::BufRead::read_line(
            &mut io::BufReader::new(impostor.stdout.take().expect("stdout")),
            &mut pid,
        )
        .expect("impostor pid");
        let pid = pid.trim().to_owned();
        let rest = contents.split_once('\n').expect("pid line").1;
        fs::write(&pid_file, format!("{pid}\n{rest}")).expect("fake pid file");
        assert_eq!(pg.status().expect("status"), ServerState::NotRunning);
        fs::write(&pid_file, format!("{pid}\n{rest}")).expect("fake pid file again");

        // Act
        let restarted = EmbeddedPostgres::start(&data_dir, 5435);
        let _ = Command::new("kill").arg(&pid).status();
        let _ = impostor.wait();

        // Assert
        let pg = restarted.expect("start despite the stale pid file");
        assert!(pg.owns_server());
        assert_eq!(select_one_sqlx(&pg.url("postgres")), 1);
        pg.stop().expect("stop");
    }

    #[test]
    fn the_data_dirs_owner_adopts_a_server_left_running_and_stops_it() {
        let dir = TempDir::new("adopt");
        let data_dir = dir.0.join("data");
        // Arrange: a server whose starter went away without stopping it, as after a kill -9.
        let left = EmbeddedPostgres::start(&data_dir, 5437).expect("start");
        assert!(left.owns_server());
        drop(left);

        // Act
        let lock = super::super::owner::OwnerLock::try_acquire(&dir.0, "serve", Some(1))
            .expect("lock")
            .expect("free");
        let pg = EmbeddedPostgres::start_owned(&data_dir, 5437, lock).expect("adopt");

        // Assert: the same server, now owned, so stop stops it.
        assert!(pg.owns_server());
        assert_eq!(select_one_sqlx(&pg.url("postgres")), 1);
        pg.stop().expect("stop");
        assert_eq!(pg.status().expect("status"), ServerState::NotRunning);
    }

    #[test]
    fn concurrent_starts_initialize_once_and_start_one_server() {
        let dir = TempDir::new("concurrent");
        let data_dir = dir.0.join("data");

        let starts: Vec<_> = (0..4)
            .map(|_| {
                let data_dir = data_dir.clone();
                thread::spawn(move || EmbeddedPostgres::start(&data_dir, 5434))
            })
            .collect();
        let started: Vec<EmbeddedPostgres> = starts
            .into_iter()
            .map(|handle| handle.join().expect("thread").expect("start"))
            .collect();

        // Invariant: exactly one caller started the server; the others reused it.
        assert_eq!(started.iter().filter(|pg| pg.owns_server()).count(), 1);
        for pg in &started {
            assert_eq!(select_one_sqlx(&pg.url("postgres")), 1);
        }
        for pg in &started {
            pg.stop().expect("stop");
        }
    }

    #[test]
    fn a_pid_reused_by_another_program_is_stale() {
        assert_eq!(
            process_liveness(std::process::id()),
            Liveness::Stale(
                fs::read_to_string("/proc/self/comm")
                    .expect("comm")
                    .trim()
                    .to_owned()
            )
        );
        assert_eq!(process_liveness(u32::MAX), Liveness::Unknown);
    }

    #[test]
    fn the_su_fallback_runs_commands_as_the_server_user() {
        if !running_as_root() {
            return; // switching users needs root; the direct path is what ordinary users get
        }
        let Ok(su) = SystemUser::postgres() else {
            return;
        };
        let su = SystemUser {
            switch: Switch::Su(PathBuf::from("/bin/su")),
            ..su
        };
        let args: [&OsStr; 2] = ["-c".as_ref(), "id -un; echo \"$0\"".as_ref()];
        let output = su
            .command(Path::new("/bin/sh"), &args)
            .output()
            .expect("run through su");
        assert!(output.status.success(), "{output:?}");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(stdout.lines().next(), Some(SYSTEM_USER));
    }

    #[test]
    fn a_data_dir_below_a_private_directory_is_made_reachable() {
        let dir = TempDir::new("private");
        let private = dir.0.join("private");
        fs::create_dir(&private).expect("private dir");
        fs::set_permissions(&private, fs::Permissions::from_mode(0o700)).expect("chmod");

        let pg = EmbeddedPostgres::start(&private.join("data"), 5436).expect("start");
        assert_eq!(select_one_sqlx(&pg.url("postgres")), 1);
        pg.stop().expect("stop");

        let mode = fs::metadata(&private).expect("private dir").mode() & 0o777;
        if running_as_root() {
            assert_eq!(
                mode, 0o701,
                "only the execute bit is added for the server's user"
            );
        } else {
            assert_eq!(
                mode, 0o700,
                "nothing changes when the server runs as ourselves"
            );
        }
    }

    #[test]
    fn missing_binaries_give_one_line_saying_how_to_install_them() {
        let empty = TempDir::new("nobin");
        let err =
            locate_binaries_in(Some(empty.0.as_os_str()), &empty.0).expect_err("no binaries there");
        let message = err.to_string();
        assert!(matches!(err, EmbeddedError::BinariesNotFound));
        assert!(!message.contains('\n'));
        assert!(message.contains("apt-get install postgresql"));
        assert!(message.contains("DATABASE_URL"));
    }

    #[test]
    fn the_highest_installed_version_is_chosen() {
        let root = TempDir::new("versions");
        for version in ["9.6", "15", "13"] {
            let bin = root.0.join(version).join("bin");
            fs::create_dir_all(&bin).expect("bin dir");
            for name in ["initdb", "pg_ctl", "postgres"] {
                let path = bin.join(name);
                fs::write(&path, "").expect("fake binary");
                fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
            }
        }
        let found = locate_binaries_in(None, &root.0).expect("found");
        assert_eq!(found, root.0.join("15/bin"));
    }

    #[test]
    fn urls_and_configs_survive_awkward_paths_and_names() {
        let pg = EmbeddedPostgres {
            data_dir: PathBuf::from("/d"),
            pgdata: PathBuf::from("/d/pgdata"),
            socket_dir: PathBuf::from("/tmp/a b+c'd/socket"),
            log_file: PathBuf::from("/d/postgres.log"),
            bin_dir: PathBuf::from("/bin"),
            port: 5999,
            run_as: None,
            owned: false,
            owner_lock: None,
        };
        assert_eq!(
            pg.url("my db/1"),
            "postgres://vigil@localhost/my%20db%2F1?host=/tmp/a%20b%2Bc%27d/socket&port=5999"
        );
        let options: sqlx::postgres::PgConnectOptions =
            pg.url("my db/1").parse().expect("sqlx parses the URL");
        assert_eq!(
            options.get_socket(),
            Some(&PathBuf::from("/tmp/a b+c'd/socket"))
        );
        assert_eq!(options.get_port(), 5999);
        assert_eq!(options.get_database(), Some("my db/1"));
        assert_eq!(options.get_username(), "vigil");

        let config: tokio_postgres::Config = pg
            .tokio_postgres_config("my db")
            .parse()
            .expect("tokio-postgres parses the config");
        assert_eq!(
            config.get_hosts(),
            &[tokio_postgres::config::Host::Unix(PathBuf::from(
                "/tmp/a b+c'd/socket"
            ))]
        );
        assert_eq!(config.get_ports(), &[5999]);
        assert_eq!(config.get_dbname(), Some("my db"));
        assert_eq!(config.get_user(), Some("vigil"));
    }
}
