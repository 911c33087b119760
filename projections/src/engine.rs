//! The projector engine: checkpoints, batches, multi-node safety, status and online rebuild.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use chrono::{DateTime, Utc};
use futures_util::stream::{self, StreamExt, TryStreamExt};
use serde::Serialize;
use sqlx::{PgConnection, PgPool, Row};

use crate::event::{read_batch, read_batch_of, Envelope};

/// Events applied per transaction in steady state: small batches keep lag low.
pub const LIVE_BATCH: i64 = 500;

/// Events applied per transaction during a rebuild: large batches amortize commits.
pub const REBUILD_BATCH: i64 = 5_000;

/// Hospitals a rebuild projects at the same time (one batch each in flight).
pub const REBUILD_CONCURRENCY: usize = 2;

/// Suffix of a model's shadow tables during a rebuild.
pub const SHADOW_SUFFIX: &str = "_rebuild";

/// Why projecting failed.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("event at position {position} cannot be decoded: {reason}")]
    Corrupt { position: i64, reason: String },
    #[error("cancelled")]
    Cancelled,
    #[error("unknown read model `{0}`")]
    UnknownModel(String),
    /// An interrupted rebuild of another scope holds the shadow tables: resume it with its
    /// own scope, or restart (which drops its progress).
    #[error("an interrupted rebuild of {pending} holds the shadow tables: resume it, or restart")]
    OtherScope { pending: String },
}

/// A future borrowed for the duration of one apply.
pub type ApplyFuture<'a> = Pin<Box<dyn Future<Output = Result<(), sqlx::Error>> + Send + 'a>>;

/// The physical name of each of a model's tables (live or shadow).
#[derive(Clone, Debug)]
pub struct Tables(HashMap<&'static str, String>);

impl Tables {
    /// Live tables: each base name as is.
    pub fn live(model: &dyn ReadModel) -> Self {
        Self(
            model
                .tables()
                .iter()
                .map(|t| (*t, (*t).to_owned()))
                .collect(),
        )
    }

    /// Shadow tables of a rebuild.
    pub fn shadow(model: &dyn ReadModel) -> Self {
        Self(
            model
                .tables()
                .iter()
                .map(|t| (*t, format!("{t}{SHADOW_SUFFIX}")))
                .collect(),
        )
    }

    /// The physical name of base table `base`.
    ///
    /// Fails for a table the model did not declare in [`ReadModel::tables`]: falling back to
    /// the base name would make a rebuild write the *live* table it is meant to leave alone.
    pub fn get(&self, base: &str) -> Result<&str, sqlx::Error> {
        self.0.get(base).map(String::as_str).ok_or_else(|| {
            sqlx::Error::Configuration(
                format!("table `{base}` is not one of the read model's declared tables").into(),
            )
        })
    }
}

/// A read model: tables plus how each event changes them.
pub trait ReadModel: Send + Sync {
    /// Stable name (`alert_board`), used for checkpoints and the admin commands.
    fn name(&self) -> &'static str;
    /// Code version; bumping it makes the server rebuild the model at start.
    fn version(&self) -> i32;
    /// Base names of its tables (created by a migration).
    fn tables(&self) -> &'static [&'static str];
    /// The aggregate types ([`crate::event::kinds`]) whose events change the model, when it
    /// ignores the others: the live projector then reads only those ([`read_batch_of`]), so
    /// a vitals batch costs an alert board one index range check, not 500 decoded events.
    /// `None` (the default): every event.
    fn kinds(&self) -> Option<&'static [&'static str]> {
        None
    }
    /// Applies one event inside the projector's transaction.
    fn apply<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        tables: &'a Tables,
        event: &'a Envelope,
    ) -> ApplyFuture<'a>;
    /// Applies a batch of one hospital's events, in position order, inside the projector's
    /// transaction; the engine always calls this one. The default applies them one by one.
    /// A model overrides it to write a batch in a few set-based statements instead of a round
    /// trip per event (what bounds rebuild speed), provided the tables end up exactly as
    /// applying the events one by one would leave them.
    fn apply_all<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        tables: &'a Tables,
        events: &'a [Envelope],
    ) -> ApplyFuture<'a> {
        Box::pin(async move {
            for event in events {
                self.apply(&mut *tx, tables, event).await?;
            }
            Ok(())
        })
    }
}

/// Checkpoint key of a model's live projection or of its rebuild.
fn checkpoint_name(model: &dyn ReadModel, rebuild: bool) -> String {
    if rebuild {
        format!("{}#rebuild", model.name())
    } else {
        model.name().to_owned()
    }
}

/// Locks the checkpoint row of `checkpoint` for `hospital` in `tx` (creating it at 0 the
/// first time) and returns its position, or `None` if another transaction holds it (another
/// node is advancing it). One statement in the usual case — the lock, and with
/// `asynchronous_commit` the transaction's commit mode — since consumers run one such
/// transaction per hospital per commit; the row is only inserted when the lock found none.
/// Shared by the read-model projectors and the policies.
pub async fn lock_checkpoint(
    tx: &mut PgConnection,
    checkpoint: &str,
    hospital: &str,
    version: i32,
    asynchronous_commit: bool,
) -> Result<Option<i64>, sqlx::Error> {
    let lock = if asynchronous_commit {
        "SELECT position, set_config('synchronous_commit', 'off', true) \
         FROM projection_checkpoints WHERE projector = $1 AND hospital = $2 \
         FOR UPDATE SKIP LOCKED"
    } else {
        "SELECT position, '' FROM projection_checkpoints WHERE projector = $1 AND hospital = $2 \
         FOR UPDATE SKIP LOCKED"
    };
    let row: Option<(i64, String)> = sqlx::query_as(lock)
        .bind(checkpoint)
        .bind(hospital)
        .fetch_optional(&mut *tx)
        .await?;
    if let Some((position, _)) = row {
        return Ok(Some(position));
    }
    // No row yet, or another node holds it: create it if missing, then lock it.
    let created = sqlx::query(
        "INSERT INTO projection_checkpoints (projector, hospital, position, version) \
         VALUES ($1, $2, 0, $3) ON CONFLICT DO NOTHING",
    )
    .bind(checkpoint)
    .bind(hospital)
    .bind(version)
    .execute(&mut *tx)
    .await?;
    if created.rows_affected() == 0 {
        return Ok(None);
    }
    let row: Option<(i64, String)> = sqlx::query_as(lock)
        .bind(checkpoint)
        .bind(hospital)
        .fetch_optional(&mut *tx)
        .await?;
    Ok(row.map(|(position, _)| position))
}

/// Applies one batch of `hospital`'s events to `tables`, in one transaction with the
/// checkpoint. Returns the new checkpoint, or `None` if another node holds this checkpoint
/// right now (it will advance it) or nothing was pending.
///
/// Round trips are the cost here (a live projector runs one batch per hospital per commit
/// under light load): see [`lock_checkpoint`].
pub async fn apply_batch(
    pool: &PgPool,
    model: &dyn ReadModel,
    tables: &Tables,
    checkpoint: &str,
    hospital: &str,
    batch: i64,
) -> Result<Option<(i64, usize)>, ProjectionError> {
    let mut tx = pool.begin().await?;
    // Asynchronous commit: a read model is derived data, and its rows and checkpoint commit
    // together, so a PostgreSQL crash can only lose whole batches — rows and checkpoint at
    // once — which are re-applied from the older checkpoint. Nothing is double-applied or
    // skipped, and the projector no longer waits for a WAL flush per batch (what bounded its
    // lag). The events themselves are committed synchronously by the command path.
    let Some(position) =
        lock_checkpoint(&mut tx, checkpoint, hospital, model.version(), true).await?
    else {
        return Ok(None);
    };
    let (events, last, event_time, covered) = match model.kinds() {
        Some(kinds) => {
            let Some(read) = read_batch_of(&mut tx, hospital, position, batch, kinds).await? else {
                return Ok(None);
            };
            (read.events, read.last, read.last_recorded_at, read.covered)
        }
        None => {
            let events = read_batch(&mut tx, hospital, position, batch).await?;
            let Some((last, at)) = events.last().map(|e| (e.position, e.recorded_at)) else {
                return Ok(None);
            };
            let covered = events.len() as i64;
            (events, last, Some(at), covered)
        }
    };
    let applied = async {
        model.apply_all(&mut tx, tables, &events).await?;
        sqlx::query(
            "UPDATE projection_checkpoints SET position = $3, updated_at = clock_timestamp(), \
             event_time = $4 WHERE projector = $1 AND hospital = $2",
        )
        .bind(checkpoint)
        .bind(hospital)
        .bind(last)
        .bind(event_time)
        .execute(&mut *tx)
        .await
    }
    .await;
    if let Err(error) = applied {
        // Roll back now rather than when the pooled connection is next used (what dropping
        // the transaction does): until then the checkpoint row stays locked, and every pass
        // here or on another node skips the hospital (`SKIP LOCKED`) as if it were busy.
        // A rollback that fails means the connection is gone, and its locks with it.
        let _ = tx.rollback().await;
        return Err(error.into());
    }
    tx.commit().await?;
    // Positions covered, not events applied: a batch that is not full means caught up.
    Ok(Some((last, usize::try_from(covered).unwrap_or(usize::MAX))))
}

/// Hospitals whose stream is ahead of `checkpoint`: (hospital, checkpoint, head).
pub async fn lagging(
    pool: &PgPool,
    checkpoint: &str,
) -> Result<Vec<(String, i64, i64)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT h.hospital, coalesce(c.position, 0) AS checkpoint, h.position AS head \
         FROM stream_heads h LEFT JOIN projection_checkpoints c \
           ON c.projector = $1 AND c.hospital = h.hospital \
         WHERE h.position > coalesce(c.position, 0) ORDER BY h.hospital",
    )
    .bind(checkpoint)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get("hospital")?,
                r.try_get("checkpoint")?,
                r.try_get("head")?,
            ))
        })
        .collect()
}

/// Hospitals a live projector catches up at the same time. Each holds a pooled connection
/// while its batch runs, so this times the number of models is the most connections the
/// projectors take from the pool at once.
pub const CATCH_UP_CONCURRENCY: usize = 3;

/// Brings a model's live tables up to date for every hospital; returns events applied.
pub async fn catch_up(pool: &PgPool, model: &dyn ReadModel) -> Result<usize, ProjectionError> {
    let lagging = lagging(pool, &checkpoint_name(model, false)).await?;
    catch_up_hospitals(pool, model, lagging.into_iter().map(|(h, _, _)| h)).await
}

/// Brings a model's live tables up to date for `hospitals` (those a wake-up named); returns
/// events applied.
///
/// Hospitals are caught up [`CATCH_UP_CONCURRENCY`] at a time, each in its own transactions:
/// under load most hospitals lag by a few events at every wake-up, and doing them one after
/// the other put every commit's round trips end to end (the lag of the last hospital was the
/// sum of all of them). A hospital stops at its first batch that is not full: what was
/// committed since comes with its own wake-up, so no transaction is spent finding nothing.
pub async fn catch_up_hospitals(
    pool: &PgPool,
    model: &dyn ReadModel,
    hospitals: impl IntoIterator<Item = String>,
) -> Result<usize, ProjectionError> {
    let tables = Tables::live(model);
    let checkpoint = checkpoint_name(model, false);
    let (tables, checkpoint) = (&tables, checkpoint.as_str());
    stream::iter(hospitals)
        .map(|hospital| async move {
            let mut applied = 0;
            while let Some((_, n)) =
                apply_batch(pool, model, tables, checkpoint, &hospital, LIVE_BATCH).await?
            {
                applied += n;
                if (n as i64) < LIVE_BATCH {
                    break;
                }
            }
            Ok::<_, ProjectionError>(applied)
        })
        .buffer_unordered(CATCH_UP_CONCURRENCY)
        .try_fold(0, |total, n| async move { Ok(total + n) })
        .await
}

/// A model's checkpoint for a hospital (0 if it has projected nothing).
pub async fn checkpoint(pool: &PgPool, model: &str, hospital: &str) -> Result<i64, sqlx::Error> {
    Ok(sqlx::query_scalar(
        "SELECT position FROM projection_checkpoints WHERE projector = $1 AND hospital = $2",
    )
    .bind(model)
    .bind(hospital)
    .fetch_optional(pool)
    .await?
    .unwrap_or(0))
}

/// One hospital's progress in a projector.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct HospitalStatus {
    pub hospital: String,
    pub checkpoint: i64,
    pub head: i64,
    pub lag_events: i64,
    /// Age of the oldest unprojected event, in seconds (0 when caught up).
    pub lag_seconds: f64,
}

/// A projector's status.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ProjectorStatus {
    pub name: &'static str,
    pub version: i32,
    /// `caught_up`, `catching_up`, `rebuilding` or `stale_version` (a rebuild is due).
    pub state: &'static str,
    /// Rebuild progress (events projected into the shadow tables / total), when rebuilding.
    pub rebuild: Option<RebuildProgress>,
    pub hospitals: Vec<HospitalStatus>,
}

/// Progress of a rebuild.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct RebuildProgress {
    pub done: i64,
    pub total: i64,
    /// The one hospital being rebuilt, or `None` when the rebuild covers every hospital.
    pub hospital: Option<String>,
}

/// Status of every model.
pub async fn status(
    pool: &PgPool,
    models: &[&dyn ReadModel],
) -> Result<Vec<ProjectorStatus>, sqlx::Error> {
    let mut out = Vec::new();
    for model in models {
        let rows = sqlx::query(
            "SELECT h.hospital, coalesce(c.position, 0) AS checkpoint, h.position AS head, \
                    coalesce(c.version, $2) AS version, \
                    coalesce(extract(epoch FROM clock_timestamp() - ( \
                        SELECT e.recorded_at FROM events e WHERE e.hospital = h.hospital \
                        AND e.position = coalesce(c.position, 0) + 1)), 0)::float8 AS lag_seconds \
             FROM stream_heads h LEFT JOIN projection_checkpoints c \
               ON c.projector = $1 AND c.hospital = h.hospital ORDER BY h.hospital",
        )
        .bind(model.name())
        .bind(model.version())
        .fetch_all(pool)
        .await?;
        let mut stale = false;
        let mut hospitals = Vec::new();
        for r in rows {
            let checkpoint: i64 = r.try_get("checkpoint")?;
            let head: i64 = r.try_get("head")?;
            let version: i32 = r.try_get("version")?;
            stale |= version != model.version();
            hospitals.push(HospitalStatus {
                hospital: r.try_get("hospital")?,
                checkpoint,
                head,
                lag_events: head - checkpoint,
                lag_seconds: if head > checkpoint {
                    r.try_get("lag_seconds")?
                } else {
                    0.0
                },
            });
        }
        // Progress over the hospitals in the rebuild's scope (all, or the one it rebuilds).
        let rebuild: Option<(i64, i64, Option<String>)> = sqlx::query_as(
            "SELECT coalesce(sum(c.position), 0)::bigint, \
                    (SELECT coalesce(sum(h.position), 0)::bigint FROM stream_heads h \
                     WHERE s.hospital IS NULL OR h.hospital = s.hospital), \
                    s.hospital \
             FROM projection_checkpoints c \
             LEFT JOIN projection_rebuilds s ON s.projector = $2 \
             WHERE c.projector = $1 GROUP BY s.hospital",
        )
        .bind(checkpoint_name(*model, true))
        .bind(model.name())
        .fetch_optional(pool)
        .await?;
        let state = if rebuild.is_some() {
            "rebuilding"
        } else if stale {
            "stale_version"
        } else if hospitals.iter().any(|h| h.lag_events > 0) {
            "catching_up"
        } else {
            "caught_up"
        };
        out.push(ProjectorStatus {
            name: model.name(),
            version: model.version(),
            state,
            rebuild: rebuild.map(|(done, total, hospital)| RebuildProgress {
                done,
                total,
                hospital,
            }),
            hospitals,
        });
    }
    Ok(out)
}

/// Whether any hospital's checkpoint of `model` was written by another code version.
pub async fn version_changed(pool: &PgPool, model: &dyn ReadModel) -> Result<bool, sqlx::Error> {
    let stale: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM projection_checkpoints WHERE projector = $1 AND version <> $2",
    )
    .bind(model.name())
    .bind(model.version())
    .fetch_one(pool)
    .await?;
    Ok(stale > 0)
}

/// What a finished rebuild did.
#[derive(Clone, Debug, Serialize)]
pub struct RebuildReport {
    pub events: i64,
    pub seconds: f64,
    pub events_per_second: f64,
}

/// What a rebuild re-projects.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "scope", content = "hospital", rename_all = "snake_case")]
pub enum Scope {
    /// Every hospital: the shadow tables replace the live ones.
    All,
    /// One hospital: its rows in the live tables are replaced by the shadow's, the other
    /// hospitals' rows and checkpoints are not touched. For repairing one tenant (a bug
    /// that hit one hospital's data) without re-projecting everybody's log.
    Hospital(String),
}

impl Scope {
    fn hospital(&self) -> Option<&str> {
        match self {
            Scope::All => None,
            Scope::Hospital(h) => Some(h),
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::All => f.write_str("every hospital"),
            Scope::Hospital(h) => write!(f, "hospital {h}"),
        }
    }
}

/// Rebuilds `model` for every hospital: [`rebuild_scoped`] with [`Scope::All`].
pub async fn rebuild(
    pool: &PgPool,
    model: &dyn ReadModel,
    restart: bool,
    cancel: &AtomicBool,
    progress: impl FnMut(i64, i64),
) -> Result<RebuildReport, ProjectionError> {
    rebuild_scoped(pool, model, &Scope::All, restart, cancel, progress).await
}

/// The scope of `model`'s interrupted rebuild, if its shadow tables exist.
pub async fn pending_rebuild(
    pool: &PgPool,
    model: &dyn ReadModel,
) -> Result<Option<Scope>, sqlx::Error> {
    let exists: bool =
        sqlx::query_scalar("SELECT count(*) > 0 FROM projection_checkpoints WHERE projector = $1")
            .bind(checkpoint_name(model, true))
            .fetch_one(pool)
            .await?;
    if !exists {
        return Ok(None);
    }
    let hospital: Option<Option<String>> =
        sqlx::query_scalar("SELECT hospital FROM projection_rebuilds WHERE projector = $1")
            .bind(model.name())
            .fetch_optional(pool)
            .await?;
    // Shadow checkpoints without a scope row were written before scopes existed: all.
    Ok(Some(match hospital.flatten() {
        Some(h) => Scope::Hospital(h),
        None => Scope::All,
    }))
}

/// Rebuilds `model` online: projects the log (of every hospital, or of one) into shadow
/// tables while the live tables keep serving (and the live projector keeps advancing them),
/// then swaps the shadow in within one transaction that first catches it up to the live
/// checkpoints. Readers see the old model or the new one, never a half-built one: for
/// [`Scope::All`] the tables are renamed into place; for [`Scope::Hospital`] that hospital's
/// rows are replaced by the shadow's in the same transaction.
///
/// A rebuild interrupted (crash, `cancel`) resumes from its own checkpoints when run again
/// with the same scope, unless `restart` drops its shadow tables first; another scope is
/// refused ([`ProjectionError::OtherScope`]) until then. `progress(done, total)` is called
/// after every batch. Policies never run here: rebuilds only write read-model tables.
pub async fn rebuild_scoped(
    pool: &PgPool,
    model: &dyn ReadModel,
    scope: &Scope,
    restart: bool,
    cancel: &AtomicBool,
    mut progress: impl FnMut(i64, i64),
) -> Result<RebuildReport, ProjectionError> {
    let started = Instant::now();
    let shadow = Tables::shadow(model);
    let checkpoint = checkpoint_name(model, true);
    let pending = pending_rebuild(pool, model).await?;
    if let (Some(pending), false) = (&pending, restart) {
        if pending != scope {
            return Err(ProjectionError::OtherScope {
                pending: pending.to_string(),
            });
        }
    }
    let only = scope.hospital();
    if restart || pending.is_none() {
        prepare_shadow(pool, model, &shadow, &checkpoint, only).await?;
    }
    let (start_done, done) = fill_shadow(
        pool,
        model,
        &shadow,
        &checkpoint,
        only,
        cancel,
        &mut progress,
    )
    .await?;
    let done = swap_in(pool, model, &shadow, &checkpoint, only, done).await?;
    progress(done, done);
    let seconds = started.elapsed().as_secs_f64();
    let events = done - start_done;
    Ok(RebuildReport {
        events,
        seconds,
        events_per_second: if seconds > 0.0 {
            events as f64 / seconds
        } else {
            0.0
        },
    })
}

/// A fresh rebuild: empty shadow tables, no shadow checkpoints but one at 0 per hospital in
/// scope, and the rebuild's scope recorded (so an interrupted rebuild resumes in its scope).
async fn prepare_shadow(
    pool: &PgPool,
    model: &dyn ReadModel,
    shadow: &Tables,
    checkpoint: &str,
    only: Option<&str>,
) -> Result<(), ProjectionError> {
    let mut tx = pool.begin().await?;
    for table in model.tables() {
        let name = shadow.get(table)?;
        sqlx::query(&format!("DROP TABLE IF EXISTS {name}"))
            .execute(&mut *tx)
            .await?;
        sqlx::query(&format!("CREATE TABLE {name} (LIKE {table} INCLUDING ALL)"))
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query("DELETE FROM projection_checkpoints WHERE projector = $1")
        .bind(checkpoint)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO projection_rebuilds (projector, hospital) VALUES ($1, $2) \
         ON CONFLICT (projector) DO UPDATE SET hospital = EXCLUDED.hospital, \
         started_at = clock_timestamp()",
    )
    .bind(model.name())
    .bind(only)
    .execute(&mut *tx)
    .await?;
    // Seed a checkpoint per hospital in scope so status reports the rebuild from the
    // start (a hospital without events yet gets one too: the swap needs a row to lock).
    sqlx::query(
        "INSERT INTO projection_checkpoints (projector, hospital, position, version) \
         SELECT $1, hospital, 0, $2 FROM stream_heads WHERE $3::text IS NULL OR hospital = $3 \
         UNION SELECT $1, $3, 0, $2 WHERE $3::text IS NOT NULL \
         ON CONFLICT DO NOTHING",
    )
    .bind(checkpoint)
    .bind(model.version())
    .bind(only)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Phase 1, in bulk and outside any lock: projects every hospital in scope into the shadow
/// tables, batch by batch, until none lags. Returns the events done when it started and now.
async fn fill_shadow(
    pool: &PgPool,
    model: &dyn ReadModel,
    shadow: &Tables,
    checkpoint: &str,
    only: Option<&str>,
    cancel: &AtomicBool,
    progress: &mut impl FnMut(i64, i64),
) -> Result<(i64, i64), ProjectionError> {
    let total = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT coalesce(sum(position), 0)::bigint FROM stream_heads \
             WHERE $1::text IS NULL OR hospital = $1",
        )
        .bind(only)
        .fetch_one(pool)
        .await
    };
    let done_now = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT coalesce(sum(position), 0)::bigint FROM projection_checkpoints WHERE projector = $1",
        )
        .bind(checkpoint)
        .fetch_one(pool)
        .await
    };
    let mut done = done_now().await?;
    let start_done = done;
    loop {
        let pending: Vec<_> = lagging(pool, checkpoint)
            .await?
            .into_iter()
            .filter(|(hospital, _, _)| only.is_none_or(|h| h == hospital))
            .collect();
        if pending.is_empty() {
            break;
        }
        let mut advanced = false;
        // One batch per lagging hospital per pass, a few hospitals at once: a batch is
        // mostly PostgreSQL work, so two in flight keep both of a small machine's cores busy.
        let mut batches = stream::iter(pending)
            .map(|(hospital, _, _)| async move {
                apply_batch(pool, model, shadow, checkpoint, &hospital, REBUILD_BATCH).await
            })
            .buffer_unordered(REBUILD_CONCURRENCY);
        while let Some(result) = batches.next().await {
            if let Some((_, n)) = result? {
                advanced = true;
                if cancel.load(Ordering::Relaxed) {
                    // Dropping the stream rolls back the batches still in flight.
                    return Err(ProjectionError::Cancelled);
                }
                done += n as i64;
                progress(done, total().await?);
            }
        }
        if !advanced {
            if cancel.load(Ordering::Relaxed) {
                return Err(ProjectionError::Cancelled);
            }
            // Another process holds these checkpoints (a concurrent rebuild): don't spin.
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    Ok((start_done, done))
}

/// Phase 2, the swap, in one transaction. Locking the live checkpoints in scope pauses the
/// live projector there on every node; the shadow is then caught up to the last committed
/// event and put in place, and the live checkpoint is set to where the shadow stands — the
/// live projector continues from there on the new rows. Writers are never blocked. Returns
/// the events done, counting the catch-up.
///
/// One function because it is one transaction: the checkpoint locks taken first are what make
/// the catch-up and the swap safe against the live projector, so the steps share `tx` in order.
async fn swap_in(
    pool: &PgPool,
    model: &dyn ReadModel,
    shadow: &Tables,
    checkpoint: &str,
    only: Option<&str>,
    mut done: i64,
) -> Result<i64, ProjectionError> {
    let mut tx = pool.begin().await?;
    if let Some(hospital) = only {
        // The live row may not exist yet (nothing projected): create it so it can be locked.
        sqlx::query(
            "INSERT INTO projection_checkpoints (projector, hospital, position, version) \
             VALUES ($1, $2, 0, $3) ON CONFLICT DO NOTHING",
        )
        .bind(model.name())
        .bind(hospital)
        .bind(model.version())
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query(
        "SELECT hospital FROM projection_checkpoints WHERE projector = $1 \
         AND ($2::text IS NULL OR hospital = $2) FOR UPDATE",
    )
    .bind(model.name())
    .bind(only)
    .fetch_all(&mut *tx)
    .await?;
    let hospitals: Vec<String> = match only {
        Some(hospital) => vec![hospital.to_owned()],
        None => {
            sqlx::query_scalar("SELECT hospital FROM stream_heads")
                .fetch_all(&mut *tx)
                .await?
        }
    };
    for hospital in hospitals {
        let mut at: i64 = sqlx::query_scalar(
            "SELECT coalesce((SELECT position FROM projection_checkpoints WHERE projector = $1 AND hospital = $2), 0)",
        )
        .bind(checkpoint)
        .bind(&hospital)
        .fetch_one(&mut *tx)
        .await?;
        loop {
            let events = read_batch(&mut tx, &hospital, at, REBUILD_BATCH).await?;
            let Some(last) = events.last().map(|e| e.position) else {
                break;
            };
            model.apply_all(&mut tx, shadow, &events).await?;
            done += events.len() as i64;
            at = last;
        }
        sqlx::query(
            "INSERT INTO projection_checkpoints (projector, hospital, position, version) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (projector, hospital) DO UPDATE SET position = $3, version = $4, updated_at = clock_timestamp()",
        )
        .bind(model.name())
        .bind(&hospital)
        .bind(at)
        .bind(model.version())
        .execute(&mut *tx)
        .await?;
    }
    for table in model.tables() {
        let name = shadow.get(table)?;
        match only {
            None => {
                sqlx::query(&format!("DROP TABLE {table}"))
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(&format!("ALTER TABLE {name} RENAME TO {table}"))
                    .execute(&mut *tx)
                    .await?;
            }
            Some(hospital) => {
                // Generated columns cannot be inserted: copy the stored ones only.
                let columns: String = sqlx::query_scalar(
                    "SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) \
                     FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 \
                     AND NOT attisdropped AND attgenerated = ''",
                )
                .bind(*table)
                .fetch_one(&mut *tx)
                .await?;
                sqlx::query(&format!("DELETE FROM {table} WHERE hospital = $1"))
                    .bind(hospital)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(&format!(
                    "INSERT INTO {table} ({columns}) SELECT {columns} FROM {name} WHERE hospital = $1"
                ))
                .bind(hospital)
                .execute(&mut *tx)
                .await?;
                sqlx::query(&format!("DROP TABLE {name}"))
                    .execute(&mut *tx)
                    .await?;
            }
        }
    }
    sqlx::query("DELETE FROM projection_checkpoints WHERE projector = $1")
        .bind(checkpoint)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM projection_rebuilds WHERE projector = $1")
        .bind(model.name())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(done)
}

/// When a hospital's stream head was last read by a model (for `as_of` timestamps).
pub type AsOf = (i64, Option<DateTime<Utc>>);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert_board::AlertBoard;

    #[test]
    fn shadow_tables_are_named_apart_from_the_live_ones() {
        let shadow = Tables::shadow(&AlertBoard);
        assert_eq!(
            shadow.get("alert_board").unwrap(),
            format!("alert_board{SHADOW_SUFFIX}")
        );
        assert_eq!(
            Tables::live(&AlertBoard).get("alert_board").unwrap(),
            "alert_board"
        );
    }

    #[test]
    fn a_table_the_model_did_not_declare_is_an_error_not_the_live_table() {
        let shadow = Tables::shadow(&AlertBoard);
        assert!(shadow.get("case_list").is_err());
    }
}
