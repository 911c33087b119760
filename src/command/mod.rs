//! The command bus: runs a command through its cqrs-es aggregate, persists the resulting
//! events with Vigil's metadata, and reports where they landed in the hospital's stream.
//!
//! cqrs-es's `execute` returns nothing, so the bus tags every event of a command with a
//! fresh `command_id` (metadata, copied into an indexed column by the position trigger) and
//! reads the committed events back by that id. This is exact: it reports what the database
//! committed, including the positions the database assigned. The same read gives the events
//! to the bus's [`Announcer`], which wakes every node's readers after the commit and hands
//! this node's hospital actor the events without a second read.

use std::collections::HashMap;
use std::time::Duration;

use aggregates::alert::Alert;
use aggregates::appointment::Appointment;
use aggregates::case_thread::CaseThread;
use aggregates::notification::Notification;
use aggregates::types::{HospitalId, Role, UserId};
use aggregates::vitals::PatientVitals;
use cqrs_es::persist::PersistedEventStore;
use cqrs_es::{Aggregate, AggregateError, CqrsFramework};
use serde::Serialize;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::stream::announce::Announcer;
use crate::stream::read::decode_row;
use crate::stream::{store_key, Position};

pub mod group_commit;
pub mod repository;
pub mod vitals_batch;

use group_commit::GroupCommit;
use repository::{EventRepository, Receipt};

/// A cqrs-es framework over the PostgreSQL event store, writing through the group commit.
pub type Cqrs<A> = CqrsFramework<A, PersistedEventStore<EventRepository, A>>;

/// How many times a command is re-run when another writer changed its aggregate between
/// load and commit. Each attempt re-validates against the new state, so a retry never
/// applies a command the new state would reject.
pub const CONFLICT_RETRIES: usize = 3;

/// Who issues a command and why: written into every resulting event's metadata.
#[derive(Clone, Debug)]
pub struct CommandContext {
    /// The tenant.
    pub hospital: HospitalId,
    /// The acting user (`system` for policies).
    pub user: UserId,
    /// The acting user's role.
    pub role: Role,
    /// Unique per command; also the id of an aggregate the command creates.
    pub command_id: Uuid,
    /// Groups everything caused by one intent (a client may send `X-Correlation-Id`).
    pub correlation_id: Uuid,
    /// What directly caused the command: the command itself for a user request, the causing
    /// event's command for a policy.
    pub causation_id: Uuid,
}

impl CommandContext {
    fn metadata(&self) -> HashMap<String, String> {
        HashMap::from([
            ("hospital".to_owned(), self.hospital.to_string()),
            ("user".to_owned(), self.user.to_string()),
            ("role".to_owned(), self.role.as_str().to_owned()),
            ("command_id".to_owned(), self.command_id.to_string()),
            ("correlation_id".to_owned(), self.correlation_id.to_string()),
            ("causation_id".to_owned(), self.causation_id.to_string()),
        ])
    }
}

/// One event a command produced, as the client needs to know it.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq, ToSchema)]
pub struct CommittedEvent {
    /// Position in the hospital's stream: subscribe or poll after it to see what follows.
    pub position: Position,
    /// The aggregate's version after this event.
    pub sequence: i64,
    /// Event name, e.g. `AlertAcknowledged`.
    #[serde(rename = "type")]
    pub event_type: String,
}

/// The result of an accepted command.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq, ToSchema)]
pub struct CommandOutcome {
    /// The aggregate the command acted on (or created).
    pub aggregate_id: String,
    /// The aggregate's version after the command.
    pub version: i64,
    /// Every event the command produced, in stream order.
    pub events: Vec<CommittedEvent>,
}

/// Why a command did not answer with its outcome.
///
/// Every variant but [`CommandError::OutcomeUnknown`] is *certain*: nothing of the command
/// was persisted and nothing ever will be (see [`CommandBus::resolve`] for how the bus makes
/// a database failure certain before it reports one).
#[derive(Debug, thiserror::Error)]
pub enum CommandError<E: std::error::Error> {
    /// The aggregate refused the command (a business rule).
    #[error("{0}")]
    Rejected(E),
    /// Concurrent writers kept changing the aggregate; retries were exhausted.
    #[error("the aggregate was changed concurrently; retry")]
    Conflict,
    /// The database could not be reached, and the command certainly did not commit.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The database failed around the commit and could not be asked afterwards: the command
    /// may or may not have committed. [`CommandBus::resolve`] decides it later.
    #[error("the outcome of command {command_id} is unknown: {reason}")]
    OutcomeUnknown {
        /// The command to resolve later.
        command_id: Uuid,
        /// What failed.
        reason: String,
    },
    /// Anything else (corrupt events, unexpected database errors); nothing committed.
    #[error("event store error: {0}")]
    Store(String),
}

/// What the log says about a command id once it has been fenced: final, never to change.
#[derive(Clone, Debug, PartialEq)]
pub enum Resolution {
    /// The command committed these events.
    Committed(CommandOutcome),
    /// The command did not commit, and can no longer commit.
    NeverCommitted,
}

/// How long the bus keeps asking the database for a failed command's outcome before it
/// answers [`CommandError::OutcomeUnknown`]. A fast PostgreSQL restart fits in it; an outage
/// does not, and the caller is told the truth: unknown.
pub const RESOLVE_WITHIN: Duration = Duration::from_secs(2);

/// Pause between two resolution attempts inside [`RESOLVE_WITHIN`].
const RESOLVE_RETRY: Duration = Duration::from_millis(200);

/// SQLSTATE raised by the event trigger when a command id already committed in another
/// transaction, or was fenced (`migrations/*_guard_command_ids.sql`).
const ALREADY_COMMITTED_OR_FENCED: &str = "VG001";

/// Why a run failed, kept while the bus resolves the command.
struct Failure {
    /// The database was unreachable (503) rather than faulty (500).
    unavailable: bool,
    /// What failed, for the error.
    reason: String,
}

/// Bounds the fence's wait for a transaction of the same command that is still running.
const FENCE_TIMEOUT: &str = "SET LOCAL statement_timeout = '1500ms'";

/// How one run of the framework ended, before the bus reads or resolves the outcome.
enum Attempt<E: std::error::Error> {
    /// The command committed: its rows as the insert returned them (`None` if the write did
    /// not go through the group commit, and they must be read).
    Committed(Option<Vec<PgRow>>),
    /// The guard refused the events: the id committed before, or was fenced.
    Guarded,
    /// Certain failures: nothing persisted.
    Refused(CommandError<E>),
    /// A database failure around the commit: resolved before answering.
    Failed {
        /// The database was unreachable (503) rather than faulty (500).
        unavailable: bool,
        /// What failed.
        reason: String,
    },
}

/// Whether the event trigger refused the command's events because its id already committed
/// (another attempt of the same command) or was fenced.
fn is_guarded(error: &(dyn std::error::Error + Send + Sync + 'static)) -> bool {
    matches!(
        error.downcast_ref::<sqlx::Error>(),
        Some(sqlx::Error::Database(db)) if db.code().as_deref() == Some(ALREADY_COMMITTED_OR_FENCED)
    )
}

/// Whether an event-store error means "the database cannot be reached right now" (pool
/// exhausted or closed, connection lost) — a 503 to retry, not a server fault. postgres-es
/// reports these as unexpected errors wrapping the sqlx error.
fn is_unavailable(error: &(dyn std::error::Error + Send + Sync + 'static)) -> bool {
    match error.downcast_ref::<sqlx::Error>() {
        Some(sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_)) => true,
        Some(sqlx::Error::Database(db)) => {
            // admin_shutdown, cannot_connect_now: PostgreSQL is restarting.
            matches!(db.code().as_deref(), Some("57P01") | Some("57P03"))
        }
        _ => false,
    }
}

/// Gives the bus the framework of one aggregate type.
pub trait Routes<A: Aggregate> {
    /// The framework that runs `A`'s commands.
    fn framework(&self) -> &Cqrs<A>;
}

/// How a command's committed events are found: by `command_id` alone, the hospital checked
/// on the rows. With `AND hospital = $2` in the query, PostgreSQL — when the table's
/// statistics are stale, as after a bulk load or before the first autoanalyze — AND-ed the
/// command index with a scan of the whole hospital's `(hospital, position)` range: every
/// command paid for the hospital's entire history (0.27 ms per command at 2,000 events,
/// growing without bound). The command id alone is one index probe whatever the statistics.
pub const OUTCOME_QUERY: &str = "SELECT hospital, aggregate_id, position, sequence, event_type \
     FROM events WHERE command_id = $1 ORDER BY position";

/// [`OUTCOME_QUERY`] with every column a stream event has, for the handoff: the same
/// single probe of the command index.
const COMMITTED_QUERY: &str = "SELECT hospital, position, aggregate_type, aggregate_id, sequence, \
     event_type, event_version, payload, metadata, recorded_at \
     FROM events WHERE command_id = $1 ORDER BY position";

/// One cqrs-es framework per aggregate, sharing the pool.
pub struct CommandBus {
    pool: PgPool,
    /// Tells every node (and hands this node's readers the events) once a command committed.
    announcer: Announcer,
    /// The lanes every framework of this bus writes through.
    commits: GroupCommit,
    alerts: Cqrs<Alert>,
    cases: Cqrs<CaseThread>,
    vitals: Cqrs<PatientVitals>,
    appointments: Cqrs<Appointment>,
    notifications: Cqrs<Notification>,
}

macro_rules! route {
    ($aggregate:ty, $field:ident) => {
        impl Routes<$aggregate> for CommandBus {
            fn framework(&self) -> &Cqrs<$aggregate> {
                &self.$field
            }
        }
    };
}
route!(Alert, alerts);
route!(CaseThread, cases);
route!(PatientVitals, vitals);
route!(Appointment, appointments);
route!(Notification, notifications);

fn framework<A: Aggregate<Services = ()>>(pool: &PgPool, commits: &GroupCommit) -> Cqrs<A> {
    // No cqrs-es queries: read models are built from the ordered streams by the projector,
    // in the transaction that advances their checkpoint (cqrs-es's in-process dispatch runs
    // after commit and is lost if the process dies in between).
    let store =
        PersistedEventStore::new_event_store(EventRepository::new(pool.clone(), commits.clone()));
    CqrsFramework::new(store, vec![], ())
}

impl CommandBus {
    /// A bus over `pool` with an announcer of its own (spawned on the current runtime). A
    /// server shares one announcer between its buses: [`Self::with_announcer`].
    pub fn new(pool: PgPool) -> Self {
        let announcer = Announcer::spawn(pool.clone());
        Self::with_announcer(pool, announcer)
    }

    /// A bus over `pool` that announces its commits through `announcer`, with the default
    /// number of group-commit lanes.
    pub fn with_announcer(pool: PgPool, announcer: Announcer) -> Self {
        Self::with_lanes(pool, announcer, group_commit::DEFAULT_LANES)
    }

    /// A bus over `pool` that announces through `announcer` and commits through `lanes`
    /// group-commit lanes (spawned on the current runtime; see [`group_commit`]).
    pub fn with_lanes(pool: PgPool, announcer: Announcer, lanes: usize) -> Self {
        let commits = GroupCommit::spawn(pool.clone(), lanes);
        Self {
            announcer,
            alerts: framework(&pool, &commits),
            cases: framework(&pool, &commits),
            vitals: framework(&pool, &commits),
            appointments: framework(&pool, &commits),
            notifications: framework(&pool, &commits),
            commits,
            pool,
        }
    }

    /// The group commit's counters (batches, commands, commands run alone).
    pub fn commit_stats(&self) -> &group_commit::GroupCommitStats {
        self.commits.stats()
    }

    /// Commands waiting for a group-commit lane to take them.
    pub fn commits_waiting(&self) -> usize {
        self.commits.waiting()
    }

    /// The announcer this bus announces through; other writers of events on this node (the
    /// vitals batch endpoint) announce through it too.
    pub fn announcer(&self) -> &Announcer {
        &self.announcer
    }

    /// Runs `make_command()` against aggregate `id` of the context's hospital, retrying on
    /// concurrency conflicts, and reports the committed events.
    ///
    /// At most once: the event trigger refuses events of a command id that already committed,
    /// so running the same [`CommandContext::command_id`] again (a retry) answers the first
    /// run's outcome instead of applying twice. When the database fails around the commit,
    /// the bus [resolves](Self::resolve) the command before answering, so every error but
    /// [`CommandError::OutcomeUnknown`] means "nothing persisted, ever".
    pub async fn execute<A>(
        &self,
        ctx: &CommandContext,
        id: &str,
        make_command: impl Fn() -> A::Command,
    ) -> Result<CommandOutcome, CommandError<A::Error>>
    where
        Self: Routes<A>,
        A: Aggregate,
    {
        let reason = match self.attempt::<A>(ctx, id, make_command).await {
            Attempt::Refused(error) => return Err(error),
            Attempt::Committed(Some(rows)) => {
                match self.accept(ctx.command_id, &ctx.hospital, rows) {
                    Ok(Some(outcome)) => return Ok(outcome),
                    // Cannot be: the insert returned no row of this hospital. The log says.
                    Ok(None) | Err(_) => Failure {
                        unavailable: false,
                        reason: "the committed rows could not be read".to_owned(),
                    },
                }
            }
            Attempt::Committed(None) | Attempt::Guarded => {
                match self.committed(ctx.command_id, &ctx.hospital).await {
                    Ok(Some(outcome)) => return Ok(outcome),
                    // Guarded with no events: the id was fenced before this run could commit.
                    Ok(None) => {
                        return Err(CommandError::Unavailable(format!(
                            "command {} was withdrawn before it committed; nothing was persisted",
                            ctx.command_id
                        )))
                    }
                    Err(error) => Failure {
                        unavailable: true,
                        reason: format!("reading the committed events back failed: {error}"),
                    },
                }
            }
            Attempt::Failed {
                unavailable,
                reason,
            } => Failure {
                unavailable,
                reason,
            },
        };
        match self.resolve_within(ctx.command_id, &ctx.hospital).await {
            Some(Resolution::Committed(outcome)) => {
                // Its announcement may be among what failed: announcing twice costs nothing.
                if let Some(last) = outcome.events.last() {
                    self.announcer.committed(&ctx.hospital, last.position);
                }
                Ok(outcome)
            }
            Some(Resolution::NeverCommitted) if reason.unavailable => {
                Err(CommandError::Unavailable(reason.reason))
            }
            Some(Resolution::NeverCommitted) => Err(CommandError::Store(reason.reason)),
            None => Err(CommandError::OutcomeUnknown {
                command_id: ctx.command_id,
                reason: reason.reason,
            }),
        }
    }

    /// One run of the framework, conflicts retried, classified by what is certain.
    async fn attempt<A>(
        &self,
        ctx: &CommandContext,
        id: &str,
        make_command: impl Fn() -> A::Command,
    ) -> Attempt<A::Error>
    where
        Self: Routes<A>,
        A: Aggregate,
    {
        let key = store_key(&ctx.hospital, id);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (result, rows) = Receipt::scope(self.framework().execute_with_metadata(
                &key,
                make_command(),
                ctx.metadata(),
            ))
            .await;
            return match result {
                Ok(()) => Attempt::Committed(rows),
                Err(AggregateError::UserError(e)) => Attempt::Refused(CommandError::Rejected(e)),
                Err(AggregateError::AggregateConflict) if attempt <= CONFLICT_RETRIES => {
                    tracing::debug!(attempt, aggregate = %key, "concurrency conflict; retrying");
                    continue;
                }
                // A unique violation rolled the transaction back: certain.
                Err(AggregateError::AggregateConflict) => Attempt::Refused(CommandError::Conflict),
                Err(AggregateError::UnexpectedError(e)) if is_guarded(e.as_ref()) => {
                    Attempt::Guarded
                }
                Err(AggregateError::DatabaseConnectionError(e)) => Attempt::Failed {
                    unavailable: true,
                    reason: e.to_string(),
                },
                Err(AggregateError::UnexpectedError(e)) => Attempt::Failed {
                    unavailable: is_unavailable(e.as_ref()),
                    reason: e.to_string(),
                },
                Err(other) => Attempt::Failed {
                    unavailable: false,
                    reason: other.to_string(),
                },
            };
        }
    }

    /// [`Self::resolve`], retried for at most [`RESOLVE_WITHIN`]; `None` if the database
    /// could not be asked in that time.
    async fn resolve_within(&self, command_id: Uuid, hospital: &HospitalId) -> Option<Resolution> {
        let deadline = tokio::time::Instant::now() + RESOLVE_WITHIN;
        loop {
            match tokio::time::timeout_at(deadline, self.resolve(command_id, hospital)).await {
                Ok(Ok(resolution)) => return Some(resolution),
                Ok(Err(error)) => {
                    tracing::debug!(%command_id, %error, "cannot resolve the command yet")
                }
                Err(_elapsed) => return None,
            }
            if tokio::time::Instant::now() + RESOLVE_RETRY >= deadline {
                return None;
            }
            tokio::time::sleep(RESOLVE_RETRY).await;
        }
    }

    /// Decides, for good, whether `command_id` committed in `hospital`.
    ///
    /// It first *fences* the id (a `command_ids` row with no committing transaction), then
    /// looks for its events. The fence is the key to certainty: if the id had not committed,
    /// no transaction can commit it afterwards (the event trigger refuses ids with a row),
    /// and a transaction committing it right now makes the fence wait for its end. So once
    /// this returns, its answer never changes. Costs one row for an id that never committed.
    pub async fn resolve(
        &self,
        command_id: Uuid,
        hospital: &HospitalId,
    ) -> Result<Resolution, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        // A transaction of the command still running holds the fence up; bounded so the
        // caller can answer "unknown" instead of hanging with it.
        sqlx::query(FENCE_TIMEOUT).execute(&mut *tx).await?;
        sqlx::query(
            "INSERT INTO command_ids (command_id, fenced) VALUES ($1, true)              ON CONFLICT (command_id) DO NOTHING",
        )
        .bind(command_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(match self.outcome_of(command_id, hospital).await? {
            Some(outcome) => Resolution::Committed(outcome),
            None => Resolution::NeverCommitted,
        })
    }

    /// The outcome of `command_id`, which has just committed (or had committed before, on a
    /// retry), read with its events' full rows so that they are announced and handed to
    /// this node's readers (see [`crate::stream::announce`]) before the caller is answered.
    async fn committed(
        &self,
        command_id: Uuid,
        hospital: &HospitalId,
    ) -> Result<Option<CommandOutcome>, sqlx::Error> {
        let rows = sqlx::query(COMMITTED_QUERY)
            .bind(command_id)
            .fetch_all(&self.pool)
            .await?;
        self.accept(command_id, hospital, rows)
    }

    /// The outcome in `rows` (a command's committed events, as the insert returned them or
    /// as read back), announced and handed to this node's readers.
    fn accept(
        &self,
        command_id: Uuid,
        hospital: &HospitalId,
        rows: Vec<PgRow>,
    ) -> Result<Option<CommandOutcome>, sqlx::Error> {
        let prefix = format!("{hospital}/");
        let mut outcome: Option<CommandOutcome> = None;
        let mut events = Vec::with_capacity(rows.len());
        for row in rows.iter().filter(|row| {
            row.try_get::<&str, _>("hospital")
                .is_ok_and(|h| h == hospital.as_str())
        }) {
            let committed = CommittedEvent {
                position: row.try_get("position")?,
                sequence: row.try_get("sequence")?,
                event_type: row.try_get("event_type")?,
            };
            let outcome = outcome.get_or_insert_with(|| CommandOutcome {
                aggregate_id: String::new(),
                version: 0,
                events: Vec::new(),
            });
            if outcome.events.is_empty() {
                let stored_id: String = row.try_get("aggregate_id")?;
                let id = stored_id.strip_prefix(&prefix).unwrap_or(&stored_id);
                outcome.aggregate_id = id.to_owned();
            }
            outcome.version = committed.sequence;
            outcome.events.push(committed);
            match decode_row(row, &prefix) {
                Ok(event) => events.push(event),
                // Readers decode it from the table and report it there; the announcement
                // still goes out.
                Err(error) => tracing::warn!(%command_id, %error, "committed event not handed off"),
            }
        }
        if let Some(outcome) = &outcome {
            let last = outcome.events.last().map(|e| e.position).unwrap_or(0);
            if events.len() == outcome.events.len() {
                self.announcer.handed_off(hospital, events);
            } else {
                self.announcer.committed(hospital, last);
            }
        }
        Ok(outcome)
    }

    /// The user who issued `command_id`, if it committed (from its events' metadata).
    pub async fn issuer_of(&self, command_id: Uuid) -> Result<Option<String>, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT metadata ->> 'user' FROM events WHERE command_id = $1 ORDER BY position LIMIT 1",
        )
        .bind(command_id)
        .fetch_optional(&self.pool)
        .await
        .map(Option::flatten)
    }

    /// The committed events of `command_id`, if it committed any (in `hospital`: another
    /// hospital's events are never an outcome here).
    pub async fn outcome_of(
        &self,
        command_id: Uuid,
        hospital: &HospitalId,
    ) -> Result<Option<CommandOutcome>, sqlx::Error> {
        let mut rows = sqlx::query(OUTCOME_QUERY)
            .bind(command_id)
            .fetch_all(&self.pool)
            .await?;
        rows.retain(|row| {
            row.try_get::<&str, _>("hospital")
                .is_ok_and(|stored| stored == hospital.as_str())
        });
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let stored_id: String = first.try_get("aggregate_id")?;
        let prefix = format!("{hospital}/");
        let id = stored_id.strip_prefix(&prefix).unwrap_or(&stored_id);
        let events = rows
            .iter()
            .map(|row| {
                Ok(CommittedEvent {
                    position: row.try_get("position")?,
                    sequence: row.try_get("sequence")?,
                    event_type: row.try_get("event_type")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        Ok(Some(CommandOutcome {
            aggregate_id: id.to_owned(),
            version: events.last().map(|e| e.sequence).unwrap_or(0),
            events,
        }))
    }
}
