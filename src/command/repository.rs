//! The event repository cqrs-es runs commands against: postgres-es for every read, Vigil's
//! [group commit](super::group_commit) for every write.
//!
//! Why not postgres-es's `persist`: it commits each command in a transaction of its own
//! (`BEGIN`, an `INSERT` per event, `COMMIT`) and returns nothing, so the bus then read the
//! events back to learn their positions. The group commit inserts many commands' events in
//! one statement and returns them as committed; the rows reach the bus through a
//! [task-local receipt](Receipt), because cqrs-es's `execute` returns `()`.

use std::cell::RefCell;

use cqrs_es::persist::{
    PersistedEventRepository, PersistenceError, ReplayStream, SerializedEvent, SerializedSnapshot,
};
use cqrs_es::Aggregate;
use postgres_es::PostgresEventRepository;
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::PgPool;

use super::group_commit::GroupCommit;

tokio::task_local! {
    /// The committed rows of the command the current task is executing, left by
    /// [`EventRepository::persist`] for the bus (see [`Receipt::scope`]).
    static RECEIPT: RefCell<Option<Vec<PgRow>>>;
}

/// Carries a command's committed rows from the repository back to the bus that runs it.
pub struct Receipt;

impl Receipt {
    /// Runs `work` (one `execute` of cqrs-es) and returns its result with the rows the
    /// repository committed during it, if it committed through the group commit.
    pub async fn scope<T>(work: impl std::future::Future<Output = T>) -> (T, Option<Vec<PgRow>>) {
        RECEIPT
            .scope(RefCell::new(None), async {
                let result = work.await;
                let rows = RECEIPT.with(|cell| cell.borrow_mut().take());
                (result, rows)
            })
            .await
    }

    fn leave(rows: Vec<PgRow>) {
        // Outside a scope (a caller that does not want the rows) the rows are dropped.
        let _ = RECEIPT.try_with(|cell| *cell.borrow_mut() = Some(rows));
    }
}

/// What a failed write means to cqrs-es, as postgres-es maps it (its mapping is private): a
/// unique violation is an optimistic-lock conflict, a lost connection a connection error, the
/// rest unknown with the sqlx error itself inside (the bus looks for the guard's SQLSTATE).
fn persistence_error(error: sqlx::Error) -> PersistenceError {
    match &error {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("23505") => {
            PersistenceError::OptimisticLockError
        }
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) => {
            PersistenceError::ConnectionError(Box::new(error))
        }
        _ => PersistenceError::UnknownError(Box::new(error)),
    }
}

/// postgres-es for reads, the group commit for writes.
pub struct EventRepository {
    reads: PostgresEventRepository,
    writes: GroupCommit,
}

impl EventRepository {
    /// A repository over `pool` committing through `writes`.
    pub fn new(pool: PgPool, writes: GroupCommit) -> Self {
        Self {
            reads: PostgresEventRepository::new(pool),
            writes,
        }
    }
}

impl PersistedEventRepository for EventRepository {
    async fn get_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.reads.get_events::<A>(aggregate_id).await
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.reads
            .get_last_events::<A>(aggregate_id, last_sequence)
            .await
    }

    async fn get_snapshot<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        self.reads.get_snapshot::<A>(aggregate_id).await
    }

    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        // Vigil's frameworks keep no snapshots (the event store is the source of truth); a
        // snapshot update would still be postgres-es's to write, in its own transaction.
        if snapshot_update.is_some() {
            return self.reads.persist::<A>(events, snapshot_update).await;
        }
        if events.is_empty() {
            return Ok(());
        }
        match self.writes.commit(events).await {
            Ok(rows) => {
                Receipt::leave(rows);
                Ok(())
            }
            Err(error) => Err(persistence_error(error)),
        }
    }

    async fn stream_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<ReplayStream, PersistenceError> {
        self.reads.stream_events::<A>(aggregate_id).await
    }

    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        self.reads.stream_all_events::<A>().await
    }
}
