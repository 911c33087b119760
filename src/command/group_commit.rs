//! Group commit: the events of many commands, from many requests, in one statement.
//!
//! Why: every command used to commit its own transaction — `BEGIN`, one `INSERT` per event,
//! `COMMIT`, then a read of what was committed — four round trips and one WAL flush each. A
//! hospital's stream head is a row lock held from a command's insert to its commit, so one
//! hospital could not commit faster than one fsync after another (~1,370 commands/s here),
//! and PostgreSQL spent 0.28–0.35 ms of CPU per command across hospitals (BENCHMARKS.md).
//!
//! Now the repository hands a command's events to a *lane*; a lane takes everything queued
//! on it and inserts it with **one** `INSERT … SELECT FROM unnest … RETURNING` in autocommit:
//! one round trip, one transaction and one WAL flush for the whole batch, and the returned
//! rows are each command's committed events (positions included), so nothing is read back.
//! While a batch commits, the next one fills: the busier the server, the larger the batches.
//!
//! What stays exactly as before, because the same trigger runs on every row:
//! - positions are dense and commit-ordered per hospital (the head row is locked by the
//!   batch's transaction until it commits, like any other writer's);
//! - the command-id guard refuses a command that committed before or was fenced;
//! - a command whose aggregate changed since it was loaded fails on the primary key and is
//!   retried by cqrs-es against the new state.
//!
//! A batch is one transaction, so one refused command would refuse its neighbours. When the
//! batch's statement fails with an error PostgreSQL *reported* (a constraint, the guard), the
//! statement certainly rolled back, and each command of the batch is run again on its own,
//! so each gets its own answer. When the failure may have hidden a commit (the connection
//! dropped, the server shut down), every command of the batch gets that failure and the
//! command bus resolves each one by its id (fence, then read), as it did before.
//!
//! Lanes partition hospitals (a hospital always goes to the same lane), so two batches of
//! one node never wait for each other's head locks; within a batch, rows are ordered by
//! hospital so that batches of different nodes take head locks in one order and cannot
//! deadlock each other.
//!
//! The price: hospitals that share a lane share its waits. A batch waiting on one hospital's
//! head lock — that hospital's 1,000-reading `vitals:batch` holds it ~20 ms — holds back the
//! other hospitals of its lane as long, where before only that hospital's commands waited.
//! More lanes (`--commit-lanes`) shrink the share; a lane never waits on another lane.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use cqrs_es::persist::SerializedEvent;
use sqlx::postgres::PgRow;
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};

/// The columns a stream event has, returned by the insert: what the command bus reports and
/// hands to this node's readers (the same list as the bus's committed-events query).
pub const RETURNED_COLUMNS: &str = "hospital, position, aggregate_type, aggregate_id, sequence, \
     event_type, event_version, payload, metadata, recorded_at";

/// Inserts many commands' events in the order given (the trigger assigns positions row by row
/// in that order) and returns them as committed. The seven columns are postgres-es's.
const INSERT_EVENTS: &str = "INSERT INTO events \
       (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
     SELECT t.aggregate_type, t.aggregate_id, t.sequence, t.event_type, t.event_version, \
            t.payload::json, t.metadata::json \
     FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], \
                 $7::text[]) WITH ORDINALITY \
          AS t(aggregate_type, aggregate_id, sequence, event_type, event_version, payload, \
               metadata, n) \
     ORDER BY t.n \
     RETURNING hospital, position, aggregate_type, aggregate_id, sequence, \
               event_type, event_version, payload, metadata, recorded_at";

/// The most events one batch inserts: bounds a statement's parameter arrays and the time a
/// batch holds its hospitals' head locks.
pub const MAX_BATCH_EVENTS: usize = 512;

/// Lanes when the operator does not choose (`VIGIL_COMMIT_LANES`): enough that hospitals
/// commit side by side, few enough that batches stay large under load.
pub const DEFAULT_LANES: usize = 4;

/// Commands a lane may have waiting; a command beyond it waits for room (back-pressure on
/// the request, not unbounded memory).
const LANE_QUEUE: usize = 4096;

/// Why a batch insert did not deliver a command's rows.
pub type CommitResult = Result<Vec<PgRow>, sqlx::Error>;

/// Counters of what the lanes did, for benchmarks and tests.
#[derive(Debug, Default)]
pub struct GroupCommitStats {
    /// Statements that inserted a batch (or tried to).
    pub batches: AtomicU64,
    /// Commands those statements carried.
    pub commands: AtomicU64,
    /// Commands run again on their own after their batch's statement was refused.
    pub retried_alone: AtomicU64,
}

impl GroupCommitStats {
    /// The counters in Prometheus text form, with `waiting` commands queued on the lanes:
    /// `commands / batches` is the mean batch, `retried_alone` how often batches were refused.
    pub fn render(&self, waiting: usize) -> String {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        format!(
            "# HELP vigil_commit_batches_total Group-commit statements (one transaction each).\n\
             # TYPE vigil_commit_batches_total counter\n\
             vigil_commit_batches_total {}\n\
             # HELP vigil_commit_batched_commands_total Commands those statements carried.\n\
             # TYPE vigil_commit_batched_commands_total counter\n\
             vigil_commit_batched_commands_total {}\n\
             # HELP vigil_commit_retried_alone_total Commands run alone after their batch was refused.\n\
             # TYPE vigil_commit_retried_alone_total counter\n\
             vigil_commit_retried_alone_total {}\n\
             # HELP vigil_commit_waiting Commands queued on the group-commit lanes.\n\
             # TYPE vigil_commit_waiting gauge\n\
             vigil_commit_waiting {waiting}\n",
            get(&self.batches),
            get(&self.commands),
            get(&self.retried_alone),
        )
    }
}

/// One command's events, ready for the statement.
struct Request {
    hospital: String,
    /// The command id in the events' metadata: two runs of one command never share a batch.
    command_id: Option<String>,
    events: Vec<Row>,
    reply: oneshot::Sender<CommitResult>,
}

/// One event row as the statement binds it.
struct Row {
    aggregate_type: String,
    aggregate_id: String,
    sequence: i64,
    event_type: String,
    event_version: String,
    payload: String,
    metadata: String,
}

/// The lanes of a node: where command events go to be committed together.
#[derive(Clone)]
pub struct GroupCommit {
    lanes: Arc<[mpsc::Sender<Request>]>,
    stats: Arc<GroupCommitStats>,
}

impl GroupCommit {
    /// `lanes` lanes over `pool`, each a task on the current runtime.
    pub fn spawn(pool: PgPool, lanes: usize) -> Self {
        let stats = Arc::new(GroupCommitStats::default());
        let senders: Vec<_> = (0..lanes.max(1))
            .map(|_| {
                let (tx, rx) = mpsc::channel(LANE_QUEUE);
                tokio::spawn(run_lane(pool.clone(), rx, Arc::clone(&stats)));
                tx
            })
            .collect();
        Self {
            lanes: senders.into(),
            stats,
        }
    }

    /// The lanes' counters.
    pub fn stats(&self) -> &GroupCommitStats {
        &self.stats
    }

    /// Commands sent to the lanes and not yet taken into a batch: how far commits are behind.
    pub fn waiting(&self) -> usize {
        self.lanes
            .iter()
            .map(|lane| lane.max_capacity() - lane.capacity())
            .sum()
    }

    /// Commits one command's events (all of one hospital) and returns them as committed, in
    /// position order. An `Err` carries the database's own error when the command was refused
    /// alone, and a copy of the batch's failure when the batch may or may not have committed.
    pub async fn commit(&self, events: &[SerializedEvent]) -> CommitResult {
        let meta = |name: &str| {
            events
                .first()
                .and_then(|e| e.metadata.get(name))
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        };
        let hospital = meta("hospital").unwrap_or_default();
        let command_id = meta("command_id");
        let rows = events
            .iter()
            .map(|e| Row {
                aggregate_type: e.aggregate_type.clone(),
                aggregate_id: e.aggregate_id.clone(),
                sequence: i64::try_from(e.sequence).unwrap_or(i64::MAX),
                event_type: e.event_type.clone(),
                event_version: e.event_version.clone(),
                payload: e.payload.to_string(),
                metadata: e.metadata.to_string(),
            })
            .collect();
        let (reply, answer) = oneshot::channel();
        let lane = &self.lanes[lane_of(&hospital, self.lanes.len())];
        let request = Request {
            hospital,
            command_id,
            events: rows,
            reply,
        };
        // Not sent: nothing was given to the database, so nothing can have committed.
        if lane.send(request).await.is_err() {
            return Err(unavailable("the commit lane has stopped"));
        }
        // Dropped without an answer: the lane died with the batch in flight — unknown,
        // which the bus resolves by the command's id.
        answer
            .await
            .unwrap_or_else(|_| Err(unavailable("the commit lane stopped during the batch")))
    }
}

/// The lane of a hospital: stable for the process, spread over the lanes.
fn lane_of(hospital: &str, lanes: usize) -> usize {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    hospital.hash(&mut hasher);
    (hasher.finish() % lanes.max(1) as u64) as usize
}

/// A lane: takes whatever is queued (up to [`MAX_BATCH_EVENTS`]) and commits it as one.
async fn run_lane(pool: PgPool, mut queue: mpsc::Receiver<Request>, stats: Arc<GroupCommitStats>) {
    let mut carried: Option<Request> = None;
    loop {
        let first = match carried.take() {
            Some(request) => request,
            None => match queue.recv().await {
                Some(request) => request,
                None => return,
            },
        };
        let mut events = first.events.len();
        let mut batch = vec![first];
        while events < MAX_BATCH_EVENTS {
            match queue.try_recv() {
                Ok(request) if events + request.events.len() > MAX_BATCH_EVENTS => {
                    carried = Some(request);
                    break;
                }
                Ok(request) => {
                    events += request.events.len();
                    batch.push(request);
                }
                Err(_) => break,
            }
        }
        commit_batch(&pool, batch, &stats).await;
    }
}

/// Commits a batch: one statement for the commands that can share it, then, on its own,
/// each command that could not (a second command of an aggregate already in the batch, or
/// every command of a batch whose statement was refused).
async fn commit_batch(pool: &PgPool, mut batch: Vec<Request>, stats: &GroupCommitStats) {
    // Stable: a hospital's commands keep their arrival order; hospitals are ordered so that
    // every batch (on every node) takes head locks in the same order.
    batch.sort_by(|a, b| a.hospital.cmp(&b.hospital));
    let (together, alone) = split_unshareable(batch);
    stats.batches.fetch_add(1, Ordering::Relaxed);
    stats
        .commands
        .fetch_add(together.len() as u64, Ordering::Relaxed);
    let mut retry = alone;
    if together.len() == 1 {
        // Nothing to share: its own answer, whatever it is.
        retry.insert(0, together.into_iter().next().expect("one request"));
    } else {
        match insert(pool, together.iter().flat_map(|r| r.events.iter())).await {
            Ok(rows) => deliver(together, rows),
            Err(error) if rolled_back_alone(&error) => {
                tracing::debug!(%error, commands = together.len(), "batch refused; each command runs alone");
                stats
                    .retried_alone
                    .fetch_add(together.len() as u64, Ordering::Relaxed);
                let mut again = together;
                again.append(&mut retry);
                retry = again;
            }
            Err(error) => {
                for request in together {
                    let _ = request.reply.send(Err(copy_of(&error)));
                }
            }
        }
    }
    for request in retry {
        let result = insert(pool, request.events.iter()).await;
        let _ = request.reply.send(result);
    }
}

/// Splits off every command that may not share the batch with an earlier one:
/// - a second command of an aggregate already in the batch: both were loaded at the same
///   version, so together they would refuse the whole batch on the primary key. Alone, after
///   the batch, the second one conflicts (and is retried by cqrs-es against the new state) or
///   commits if the first did not;
/// - a second run of a command id already in the batch (a client's retry racing its first
///   attempt): the command-id guard admits an id once *per transaction*, so inside one batch
///   both runs would commit and the command would apply twice. Alone, the second one is
///   refused by the guard and answered the first one's outcome.
fn split_unshareable(batch: Vec<Request>) -> (Vec<Request>, Vec<Request>) {
    let mut aggregates = HashSet::new();
    let mut commands = HashSet::new();
    batch.into_iter().partition(|request| {
        let fresh_command = match &request.command_id {
            Some(id) => commands.insert(id.clone()),
            None => true,
        };
        let fresh_aggregates = request
            .events
            .iter()
            .map(|e| (e.aggregate_type.clone(), e.aggregate_id.clone()))
            .collect::<HashSet<_>>()
            .into_iter()
            .all(|key| aggregates.insert(key));
        fresh_command && fresh_aggregates
    })
}

/// Hands each command the rows of its own events, matched by their primary key.
fn deliver(batch: Vec<Request>, rows: Vec<PgRow>) {
    use sqlx::Row as _;
    let mut by_key: HashMap<(String, String, i64), PgRow> = HashMap::with_capacity(rows.len());
    for row in rows {
        let key = (
            row.try_get::<String, _>("aggregate_type"),
            row.try_get::<String, _>("aggregate_id"),
            row.try_get::<i64, _>("sequence"),
        );
        if let (Ok(t), Ok(id), Ok(seq)) = key {
            by_key.insert((t, id, seq), row);
        }
    }
    for request in batch {
        let mine: Vec<PgRow> = request
            .events
            .iter()
            .filter_map(|e| {
                by_key.remove(&(e.aggregate_type.clone(), e.aggregate_id.clone(), e.sequence))
            })
            .collect();
        // Every row or none: a partial answer would misreport the command, while a failure
        // makes the bus ask the log (fence, then read), which is exact.
        let answer = if mine.len() == request.events.len() {
            Ok(mine)
        } else {
            Err(sqlx::Error::Protocol(
                "the batch's returned rows do not match its commands".to_owned(),
            ))
        };
        let _ = request.reply.send(answer);
    }
}

/// The batch statement over `events`, in order: one array per column.
async fn insert<'a>(pool: &PgPool, events: impl Iterator<Item = &'a Row>) -> CommitResult {
    let events: Vec<&Row> = events.collect();
    let text = |column: fn(&Row) -> &str| events.iter().map(|e| column(e)).collect::<Vec<_>>();
    sqlx::query(INSERT_EVENTS)
        .bind(text(|e| &e.aggregate_type))
        .bind(text(|e| &e.aggregate_id))
        .bind(events.iter().map(|e| e.sequence).collect::<Vec<_>>())
        .bind(text(|e| &e.event_type))
        .bind(text(|e| &e.event_version))
        .bind(text(|e| &e.payload))
        .bind(text(|e| &e.metadata))
        .fetch_all(pool)
        .await
}

/// Whether a failed batch statement certainly committed nothing *and* may succeed in part
/// when its commands run alone: an error PostgreSQL reported for the statement itself (a
/// constraint, the command-id guard, a deadlock), not one that ended the session (shutdown,
/// lost connection, resources) and may have come after the commit.
fn rolled_back_alone(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => {
            let code = db.code();
            let class = code.as_deref().map(|c| c.get(..2).unwrap_or(c));
            !matches!(
                class,
                None | Some("08") | Some("53") | Some("57") | Some("58") | Some("XX")
            )
        }
        _ => false,
    }
}

/// The batch's failure, for each of its commands (errors are not `Clone`): one that means
/// "the database is away" stays one (the bus answers 503 when it resolves to nothing
/// committed); anything else keeps its message.
fn copy_of(error: &sqlx::Error) -> sqlx::Error {
    let away = match error {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => true,
        sqlx::Error::Database(db) => {
            matches!(db.code().as_deref(), Some("57P01") | Some("57P03"))
        }
        _ => false,
    };
    if away {
        unavailable(&error.to_string())
    } else {
        sqlx::Error::Protocol(format!("the batch this command was in failed: {error}"))
    }
}

/// An error the bus classifies as "database unavailable".
fn unavailable(reason: &str) -> sqlx::Error {
    sqlx::Error::Io(io::Error::new(
        io::ErrorKind::ConnectionAborted,
        reason.to_owned(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(hospital: &str, aggregate: &str) -> Request {
        run_of(
            hospital,
            aggregate,
            &format!("command-of-{aggregate}-{}", next_number()),
        )
    }

    fn next_number() -> u64 {
        use std::sync::atomic::AtomicU64;
        static NEXT: AtomicU64 = AtomicU64::new(0);
        NEXT.fetch_add(1, Ordering::Relaxed)
    }

    fn run_of(hospital: &str, aggregate: &str, command_id: &str) -> Request {
        let (reply, _answer) = oneshot::channel();
        Request {
            hospital: hospital.to_owned(),
            command_id: Some(command_id.to_owned()),
            events: vec![Row {
                aggregate_type: "alert".to_owned(),
                aggregate_id: aggregate.to_owned(),
                sequence: 1,
                event_type: "AlertRaised".to_owned(),
                event_version: "1".to_owned(),
                payload: "{}".to_owned(),
                metadata: "{}".to_owned(),
            }],
            reply,
        }
    }

    #[test]
    fn a_second_command_of_one_aggregate_waits_outside_the_batch() {
        let batch = vec![
            request("h1", "h1/a"),
            request("h1", "h1/b"),
            request("h1", "h1/a"),
            request("h2", "h2/a"),
        ];
        let (together, alone) = split_unshareable(batch);
        fn ids(v: &[Request]) -> Vec<&str> {
            v.iter()
                .map(|r| r.events[0].aggregate_id.as_str())
                .collect()
        }
        assert_eq!(ids(&together), ["h1/a", "h1/b", "h2/a"]);
        assert_eq!(ids(&alone), ["h1/a"]);
    }

    #[test]
    fn a_second_run_of_one_command_id_waits_outside_the_batch() {
        let batch = vec![
            run_of("h1", "h1/a", "c1"),
            run_of("h1", "h1/b", "c1"),
            run_of("h1", "h1/c", "c2"),
        ];
        let (together, alone) = split_unshareable(batch);
        assert_eq!(together.len(), 2);
        assert_eq!(alone.len(), 1);
        assert_eq!(alone[0].events[0].aggregate_id, "h1/b");
    }

    #[test]
    fn a_hospital_always_goes_to_the_same_lane() {
        for hospital in ["st-mary", "general", "h-000042"] {
            let lane = lane_of(hospital, 4);
            assert!(lane < 4);
            assert_eq!(lane, lane_of(hospital, 4));
        }
        assert_eq!(lane_of("anything", 1), 0);
    }

    #[test]
    fn only_errors_reported_for_the_statement_send_commands_alone() {
        assert!(!rolled_back_alone(&sqlx::Error::Io(io::Error::other(
            "reset"
        ))));
        assert!(!rolled_back_alone(&sqlx::Error::PoolTimedOut));
        assert!(!rolled_back_alone(&sqlx::Error::Protocol("odd".into())));
    }

    #[test]
    fn a_copied_failure_keeps_saying_the_database_is_away() {
        let copy = copy_of(&sqlx::Error::PoolTimedOut);
        assert!(matches!(copy, sqlx::Error::Io(_)));
        let copy = copy_of(&sqlx::Error::Protocol("odd".into()));
        assert!(matches!(copy, sqlx::Error::Protocol(_)));
    }
}
