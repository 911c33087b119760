//! The data dir's owner: at most one Vigil process at a time runs the embedded PostgreSQL
//! of a data dir and may stop it.
//!
//! Ownership is an OS file lock (`flock`, through [`File::try_lock`]) on `<data_dir>/vigil.lock`,
//! held for the life of the owning process. The kernel drops it when the process ends, however
//! it ends, so a `kill -9` never leaves a data dir locked: the next process takes the lock, and
//! a PostgreSQL still running there can only have been left by a crashed owner, so it adopts
//! and later stops it. After taking the lock the owner writes who it is (pid, command, and the
//! HTTP port of a server) into the file, so that a refused process can say whom it met.
//!
//! Who takes it:
//! - `vigil serve` (embedded mode), for its whole life; a second `vigil serve` on the same data
//!   dir is refused with [`DataDirError::InUse`].
//! - A one-shot command (`vigil migrate`, `vigil projections ...`) that finds no server: it
//!   owns the data dir while it runs (starting and then stopping PostgreSQL). When a server
//!   owns it, the command uses that server's PostgreSQL and leaves it alone; when another
//!   one-shot command owns it, the command waits for it.
//!
//! With `DATABASE_URL` nothing here applies: the data dir holds no database then.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Name of the lock file inside the data dir.
pub const LOCK_FILE: &str = "vigil.lock";

/// How long a refused process waits for the owner to write its name: the owner writes it
/// right after taking the lock, so only a process starting at the same instant sees it empty.
const OWNER_NAME_WAIT: Duration = Duration::from_secs(2);

/// How often the owner's name is re-read meanwhile.
const OWNER_NAME_POLL: Duration = Duration::from_millis(20);

/// What a data dir problem is; each message names the path involved.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// Another `vigil serve` owns the data dir.
    #[error(
        "the data dir {data_dir} is in use by {owner}: stop that server first, or give this \
         one its own --data-dir"
    )]
    InUse {
        /// The data dir, as resolved.
        data_dir: String,
        /// Who owns it.
        owner: Owner,
    },

    /// A command other than `vigil serve` found no data dir (only `serve` creates one).
    #[error(
        "no Vigil data dir at {data_dir} ({missing}): `vigil serve` creates one on its first \
         start; to use an existing one, pass --data-dir <dir> (or set VIGIL_DATA_DIR)"
    )]
    Missing {
        /// The data dir looked for, made absolute so the message says where it looked.
        data_dir: String,
        /// What is missing, as a clause: "the directory does not exist", "it holds no ...".
        missing: String,
    },

    /// A file-system operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, with the path.
        context: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// Who owns a data dir, as written in its lock file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The owning process.
    pub pid: Option<u32>,
    /// Its HTTP port, when it is a server.
    pub port: Option<u16>,
    /// `serve`, `migrate`, `projections status`, ...
    pub command: String,
}

impl Owner {
    /// This process, running `command` (with `port` if it is a server).
    fn this_process(command: &str, port: Option<u16>) -> Self {
        Self {
            pid: Some(std::process::id()),
            port,
            command: command.to_owned(),
        }
    }

    /// Whether the owner is a server (which keeps its PostgreSQL running for others).
    pub fn is_server(&self) -> bool {
        self.command == "serve"
    }

    /// The lock file's contents: one `key=value` per line.
    fn render(&self) -> String {
        let mut text = String::new();
        if let Some(pid) = self.pid {
            text.push_str(&format!("pid={pid}\n"));
        }
        if let Some(port) = self.port {
            text.push_str(&format!("port={port}\n"));
        }
        text.push_str(&format!("command={}\n", self.command));
        text
    }

    /// Reads [`Self::render`]'s format; `None` while the file is still empty.
    fn parse(text: &str) -> Option<Self> {
        let mut owner = Self {
            pid: None,
            port: None,
            command: String::new(),
        };
        for line in text.lines() {
            match line.split_once('=') {
                Some(("pid", pid)) => owner.pid = pid.trim().parse().ok(),
                Some(("port", port)) => owner.port = port.trim().parse().ok(),
                Some(("command", command)) => command.trim().clone_into(&mut owner.command),
                _ => {}
            }
        }
        (!owner.command.is_empty()).then_some(owner)
    }
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`vigil {}`", self.command)?;
        let pid = self
            .pid
            .map_or_else(|| "pid unknown".to_owned(), |pid| format!("pid {pid}"));
        match (self.is_server(), self.port) {
            (true, Some(port)) => write!(f, " ({pid}, port {port})"),
            (true, None) => write!(f, " ({pid}, port not yet known)"),
            (false, _) => write!(f, " ({pid})"),
        }
    }
}

/// The held lock; dropping it (or the process ending) releases the data dir.
#[derive(Debug)]
pub struct OwnerLock {
    /// The open, locked file. `flock` locks belong to the open file, so it must stay open.
    _file: File,
    /// The lock file's path, for logs.
    path: PathBuf,
}

impl OwnerLock {
    /// Takes the data dir's lock for this process running `command` (with its HTTP `port` for a
    /// server), or says who holds it. The data dir must exist.
    pub fn try_acquire(
        data_dir: &Path,
        command: &str,
        port: Option<u16>,
    ) -> Result<Result<Self, Owner>, DataDirError> {
        let (mut file, path) = open(data_dir)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Ok(Err(read_owner(&mut file, &path)?)),
            Err(TryLockError::Error(source)) => {
                return Err(DataDirError::Io {
                    context: format!("locking {}", path.display()),
                    source,
                })
            }
        }
        write_owner(&mut file, &path, &Owner::this_process(command, port))?;
        Ok(Ok(Self { _file: file, path }))
    }

    /// Waits for the data dir's lock (held by a one-shot command), then takes it.
    pub fn acquire(data_dir: &Path, command: &str) -> Result<Self, DataDirError> {
        let (mut file, path) = open(data_dir)?;
        file.lock().map_err(|source| DataDirError::Io {
            context: format!("locking {}", path.display()),
            source,
        })?;
        write_owner(&mut file, &path, &Owner::this_process(command, None))?;
        Ok(Self { _file: file, path })
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Opens (creating) `<data_dir>/vigil.lock` for reading and writing.
fn open(data_dir: &Path) -> Result<(File, PathBuf), DataDirError> {
    let path = data_dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|source| DataDirError::Io {
            context: format!("opening {}", path.display()),
            source,
        })?;
    Ok((file, path))
}

/// Replaces the lock file's contents with `owner`.
fn write_owner(file: &mut File, path: &Path, owner: &Owner) -> Result<(), DataDirError> {
    let io = |source| DataDirError::Io {
        context: format!("writing {}", path.display()),
        source,
    };
    file.set_len(0).map_err(io)?;
    file.rewind().map_err(io)?;
    file.write_all(owner.render().as_bytes()).map_err(io)?;
    file.flush().map_err(io)
}

/// Reads who holds the lock, waiting briefly for an owner that has not yet written its name.
fn read_owner(file: &mut File, path: &Path) -> Result<Owner, DataDirError> {
    let deadline = Instant::now() + OWNER_NAME_WAIT;
    loop {
        let mut text = String::new();
        file.rewind()
            .and_then(|()| file.read_to_string(&mut text))
            .map_err(|source| DataDirError::Io {
                context: format!("reading {}", path.display()),
                source,
            })?;
        if let Some(owner) = Owner::parse(&text) {
            return Ok(owner);
        }
        if Instant::now() >= deadline {
            return Ok(Owner {
                pid: None,
                port: None,
                command: "(unknown command)".to_owned(),
            });
        }
        std::thread::sleep(OWNER_NAME_POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_owner_survives_the_round_trip_through_the_lock_file() {
        let server = Owner::this_process("serve", Some(8080));
        assert_eq!(Owner::parse(&server.render()), Some(server.clone()));
        assert_eq!(Owner::parse(""), None, "an empty file names no owner yet");
        assert_eq!(
            server.to_string(),
            format!("`vigil serve` (pid {}, port 8080)", std::process::id())
        );
    }

    #[test]
    fn a_second_lock_on_the_same_data_dir_names_the_first_owner() {
        let dir = std::env::temp_dir().join(format!("vigil-owner-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");

        let first = OwnerLock::try_acquire(&dir, "serve", Some(8123))
            .expect("lock")
            .expect("free");
        // flock locks are per open file, so a second open in the same process conflicts too.
        let refused = OwnerLock::try_acquire(&dir, "serve", Some(9000)).expect("lock");
        let owner = refused.expect_err("held");
        assert_eq!(owner.port, Some(8123));
        assert_eq!(owner.pid, Some(std::process::id()));

        drop(first);
        let again = OwnerLock::try_acquire(&dir, "migrate", None).expect("lock");
        assert!(again.is_ok(), "released when dropped");
        drop(again);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
