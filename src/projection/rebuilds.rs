//! The rebuilds of read models started on this node, and the lock every rebuild takes.
//!
//! Two guards keep rebuilds to one per model at a time: the node's [`Rebuilds`] registry
//! (which also remembers how the last one ended, for the status), and a PostgreSQL advisory
//! lock ([`RebuildLock`]) that the other nodes and `vigil projections rebuild` take too. The
//! admin endpoints (`http::admin`), the CLI and the automatic rebuild at start all use them,
//! so they live on the projection side, below every edge.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use chrono::{DateTime, Utc};
use projections::engine::RebuildReport;
use sqlx::{Connection, PgConnection, PgPool};

/// The advisory-lock namespace (first key) of rebuild locks; the second key is the hash of the
/// model's name. Any fixed value works: it only has to differ from other users of advisory
/// locks in the database (there are none today).
const REBUILD_LOCK_NAMESPACE: &str = "vigil.projections.rebuild";

/// A rebuild's exclusive right to its model's shadow tables, across every node and the CLI: a
/// session-level PostgreSQL advisory lock held on a connection of its own (not a pooled one,
/// which would carry the lock back into the pool). Released by [`RebuildLock::release`], or
/// by PostgreSQL when the connection dies with its process.
pub struct RebuildLock {
    conn: PgConnection,
}

impl RebuildLock {
    /// Takes the lock of `model` if no other rebuild holds it.
    pub async fn try_acquire(pool: &PgPool, model: &str) -> Result<Option<Self>, sqlx::Error> {
        let mut conn = PgConnection::connect_with(&pool.connect_options()).await?;
        let acquired: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext($1), hashtext($2))")
                .bind(REBUILD_LOCK_NAMESPACE)
                .bind(model)
                .fetch_one(&mut conn)
                .await?;
        if acquired {
            Ok(Some(Self { conn }))
        } else {
            conn.close().await?;
            Ok(None)
        }
    }

    /// Releases the lock (closing the session releases it).
    pub async fn release(self) {
        if let Err(error) = self.conn.close().await {
            // The server drops the session's locks with the connection anyway.
            tracing::warn!(%error, "closing the rebuild lock's connection failed");
        }
    }
}

/// How a rebuild started on this node ended.
#[derive(Clone, Debug)]
pub(crate) enum Outcome {
    Completed(RebuildReport),
    Cancelled,
    Failed(String),
}

/// One rebuild started on this node: its cancel flag, its progress, and how it ended.
pub(crate) struct Task {
    /// Read by the engine after every batch.
    pub(crate) cancel: AtomicBool,
    /// Model-wide events projected into the shadow tables (all hospitals), from the engine's
    /// progress callback.
    pub(crate) done: AtomicI64,
    /// `done` when the first batch reported, and when: the base of the events/s figure
    /// (a resumed rebuild starts from its earlier progress, not from 0).
    pub(crate) first: Mutex<Option<(i64, Instant)>>,
    pub(crate) started_at: DateTime<Utc>,
    /// `None` while running.
    pub(crate) outcome: Mutex<Option<(Outcome, DateTime<Utc>)>>,
}

/// Locks a mutex, recovering the data if a panicking thread poisoned it: every value guarded
/// here is replaced whole, so it is never observed half-written.
pub(crate) fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Task {
    pub(crate) fn new() -> Self {
        Self {
            cancel: AtomicBool::new(false),
            done: AtomicI64::new(0),
            first: Mutex::new(None),
            started_at: Utc::now(),
            outcome: Mutex::new(None),
        }
    }

    pub(crate) fn running(&self) -> bool {
        locked(&self.outcome).is_none()
    }

    pub(crate) fn progress(&self, done: i64) {
        self.done.store(done, Ordering::Relaxed);
        locked(&self.first).get_or_insert((done, Instant::now()));
    }

    pub(crate) fn events_per_second(&self) -> Option<f64> {
        let (base, since) = (*locked(&self.first))?;
        let seconds = since.elapsed().as_secs_f64();
        (seconds > 0.0).then(|| (self.done.load(Ordering::Relaxed) - base) as f64 / seconds)
    }
}

/// A task and how it had ended (`None`: running) when the status was read.
pub(crate) type Snapshot = (Arc<Task>, Option<(Outcome, DateTime<Utc>)>);

/// The rebuilds started on this node, one entry per model: the running one, or else the last
/// one (so the status can say how it ended). Shared by every worker of the node.
#[derive(Default)]
pub struct Rebuilds {
    tasks: Mutex<HashMap<&'static str, Arc<Task>>>,
}

impl Rebuilds {
    /// Registers a new running rebuild of `model`, unless one is running here already.
    pub(crate) fn start(&self, model: &'static str) -> Option<Arc<Task>> {
        let mut tasks = locked(&self.tasks);
        if tasks.get(model).is_some_and(|t| t.running()) {
            return None;
        }
        let task = Arc::new(Task::new());
        tasks.insert(model, task.clone());
        Some(task)
    }

    /// Forgets a registration whose rebuild never started (the advisory lock was taken).
    pub(crate) fn abandon(&self, model: &'static str, task: &Arc<Task>) {
        let mut tasks = locked(&self.tasks);
        if tasks.get(model).is_some_and(|t| Arc::ptr_eq(t, task)) {
            tasks.remove(model);
        }
    }

    pub(crate) fn get(&self, model: &str) -> Option<Arc<Task>> {
        locked(&self.tasks).get(model).cloned()
    }
}
