//! Policies (process managers): the rules that react to events by issuing commands.
//!
//! - [`assignment`]: assigning a case (at opening or later) notifies the assignee.
//! - [`vitals`]: an out-of-range reading raises an alert for that patient and sign, unless
//!   one is already open for the same patient and sign.
//! - [`escalation`]: an alert left unacknowledged past its severity's deadline is escalated
//!   by `system`, and again at each next level; [`scheduler`] fires the deadlines.
//!
//! # Design
//!
//! **Driven by the stream, through their own checkpoints.** A policy reads each hospital's
//! stream like a read model does, through its own row in `projection_checkpoints` (projector
//! `policy:<name>`), locked `FOR UPDATE SKIP LOCKED` for the batch: every node runs every
//! policy, and only one advances a given (policy, hospital) at a time. The policy's own
//! tables (`vitals_alerts`, `alert_deadlines`) change in that same transaction.
//!
//! **Effects are commands, idempotent by construction.** A command cannot join the
//! checkpoint's transaction (cqrs-es commits it on its own connection), so a batch runs as:
//! lock the checkpoint, decide the batch's effects, execute them, then advance the
//! checkpoint and commit. A crash or error anywhere before the commit leaves the checkpoint
//! where it was and the batch is read again, by this node or another — so every command a
//! policy issues has an aggregate id (and command id) derived, as a UUIDv5, from the causing
//! event's (hospital, position): running it again is refused by the aggregate
//! (`AlreadySent`, `AlreadyRaised`), which the runner counts as done. A notification or an
//! alert is therefore created at most once per causing event, and at least once as long as
//! the policy eventually gets through the batch.
//!
//! **Decisions that hold state are made "as of" the causing position.** The vitals policy's
//! "is an alert open for this patient and sign?" is answered from `vitals_alerts` with the
//! positions that opened and closed each alert, so re-reading the stream from anywhere (a
//! retried batch, or a checkpoint reset to 0) reaches the same decisions.
//!
//! **Deadlines are rows, not timers.** The escalation policy keeps one row per raised,
//! unacknowledged alert in `alert_deadlines` (level, due time). A [`scheduler`] on every
//! node claims due rows with `FOR UPDATE SKIP LOCKED`, stamps and commits a command id
//! before executing the escalation, and holds the row's lock while it runs, so one node at a
//! time works on a deadline; a node that dies releases its lock with its connection, and the
//! next node finds the outcome by the stamped command id or re-runs it under the same id. See
//! [`scheduler`] for why each level fires exactly once.
//!
//! **Causation.** A command issued by a policy carries, as its causation id, the command id
//! of the causing event (the convention of [`CommandContext::causation_id`]: an event is
//! identified by the command that produced it; every command here produces exactly one
//! event), and the causing event's correlation id, so a whole chain — reading, alert,
//! escalations — shares one correlation. An event stored without a command id (none are
//! today) would be named by a UUIDv5 of its (hospital, position) instead.
//!
//! **Never during a rebuild.** [`projections::engine::rebuild`] writes only read-model shadow
//! tables and `<model>#rebuild` checkpoints; it never reads or writes a `policy:` checkpoint,
//! and policies are not read models, so rebuilding cannot run a policy's effects again.
//!
//! **Installed policies start at the head.** The migration that creates the policies' tables
//! starts their checkpoints at each existing hospital's head, so installing them on a live
//! database acts on new events only.

pub mod assignment;
pub mod escalation;
pub mod scheduler;
pub mod vitals;

use std::sync::Arc;
use std::time::Duration;

use aggregates::alert::{Alert, AlertCommand, AlertError, Severity};
use aggregates::notification::{
    Notification, NotificationCommand, NotificationContent, NotificationError,
};
use aggregates::types::{AlertMessage, HospitalId, PatientId, Role, UserId};
use chrono::Utc;
use futures_util::future::BoxFuture;
use projections::engine::{self, lagging, ProjectionError};
use projections::event::{kinds, read_batch, read_batch_of, Envelope};
use sqlx::{PgConnection, PgPool, Row};
use tokio::sync::watch;
use uuid::Uuid;

use crate::command::{CommandBus, CommandContext, CommandError};
use crate::stream::announce::Announcer;
use crate::stream::listener::{StreamListener, WakeScope, Wakeups};

/// Events a policy handles per transaction. Smaller than a read model's batch because the
/// batch's commands run while its checkpoint is locked: a small batch keeps that lock short
/// and bounds the work a failed command makes the policy redo.
pub const POLICY_BATCH: i64 = 100;

/// A policy wakes at least this often even without notifications (the NOTIFY wake-up is the
/// fast path; this is the safety net, as for read models).
pub const POLL_INTERVAL: Duration = crate::projection::POLL_INTERVAL;

/// Delay before retrying a batch that failed (database or command error).
const RETRY: Duration = Duration::from_millis(500);

/// Version written into policies' checkpoint rows. Policies are never rebuilt, so this only
/// fills the column.
const CHECKPOINT_VERSION: i32 = 1;

/// Namespace of the UUIDv5 ids policies derive from causing events.
const NAMESPACE: Uuid = Uuid::from_u128(0x6c0f_9d1e_4b7a_4f0e_9a53_2f1d_8e6b_c7a4);

/// The user policies act as.
pub fn system_user() -> UserId {
    // A constant of valid characters and length: parsing cannot fail.
    UserId::parse("system").expect("`system` is a valid user id")
}

/// A deterministic id for the effect `purpose` of the event at (`hospital`, `position`):
/// every run of a policy over that event derives the same id.
pub fn derived_id(hospital: &str, position: i64, purpose: &str) -> Uuid {
    Uuid::new_v5(
        &NAMESPACE,
        format!("{hospital}/{position}/{purpose}").as_bytes(),
    )
}

/// A hospital id read back from the database (where only valid ids are ever written).
pub(crate) fn hospital_id(raw: &str) -> Result<HospitalId, sqlx::Error> {
    HospitalId::parse(raw).map_err(|e| sqlx::Error::Decode(e.message().to_owned().into()))
}

/// The checkpoint name of policy `name` in `projection_checkpoints`.
pub fn checkpoint_name(name: &str) -> String {
    format!("policy:{name}")
}

/// The event that causes a command: where it is, and the ids its command is traced by.
#[derive(Clone, Debug, PartialEq)]
pub struct Cause {
    /// The causing event's hospital.
    pub hospital: HospitalId,
    /// Its position in the hospital's stream.
    pub position: i64,
    /// The command that produced it.
    pub command_id: Option<Uuid>,
    /// The correlation id it carries.
    pub correlation_id: Option<Uuid>,
}

impl Cause {
    /// Reads the ids of the event at `event`'s position (a primary-key lookup).
    pub async fn of(conn: &mut PgConnection, event: &Envelope) -> Result<Self, sqlx::Error> {
        let row = sqlx::query(
            "SELECT command_id, metadata ->> 'correlation_id' AS correlation_id \
             FROM events WHERE hospital = $1 AND position = $2",
        )
        .bind(&event.hospital)
        .bind(event.position)
        .fetch_one(&mut *conn)
        .await?;
        let correlation: Option<String> = row.try_get("correlation_id")?;
        Ok(Self {
            hospital: hospital_id(&event.hospital)?,
            position: event.position,
            command_id: row.try_get("command_id")?,
            correlation_id: correlation.and_then(|c| Uuid::parse_str(&c).ok()),
        })
    }

    /// The causation id of the commands it causes: the causing event's command id.
    pub fn causation_id(&self) -> Uuid {
        self.command_id
            .unwrap_or_else(|| derived_id(self.hospital.as_str(), self.position, "event"))
    }

    /// The correlation id of the commands it causes: the causing event's, so a chain of
    /// policies stays in the correlation of the user intent that started it.
    pub fn correlation_id(&self) -> Uuid {
        self.correlation_id.unwrap_or_else(|| self.causation_id())
    }

    /// The context of a command `command_id` issued by a policy because of this event.
    pub fn context(&self, command_id: Uuid) -> CommandContext {
        system_context(
            self.hospital.clone(),
            command_id,
            self.causation_id(),
            self.correlation_id(),
        )
    }
}

/// The context of a command issued by `system` (role admin, the service account's role).
pub fn system_context(
    hospital: HospitalId,
    command_id: Uuid,
    causation_id: Uuid,
    correlation_id: Uuid,
) -> CommandContext {
    CommandContext {
        hospital,
        user: system_user(),
        role: Role::Admin,
        command_id,
        correlation_id,
        causation_id,
    }
}

/// A command a policy decided to issue. Its `id` is derived from the cause, and is both the
/// id of the aggregate it creates and the command id.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Send a notification.
    SendNotification {
        /// The notification's id.
        id: Uuid,
        /// Who is told.
        recipient: UserId,
        /// What they are told.
        content: NotificationContent,
    },
    /// Raise an alert.
    RaiseAlert {
        /// The alert's id.
        id: Uuid,
        /// How urgent it is.
        severity: Severity,
        /// What is wrong.
        message: AlertMessage,
        /// The patient it concerns.
        patient: PatientId,
    },
}

/// An effect and the event that caused it.
#[derive(Clone, Debug, PartialEq)]
pub struct Planned {
    /// The causing event.
    pub cause: Cause,
    /// The command to issue.
    pub effect: Effect,
}

/// What a policy's `handle` returns: the effects it decided on.
pub type HandleFuture<'a> = BoxFuture<'a, Result<Vec<Planned>, sqlx::Error>>;

/// A policy: reacts to one event inside its checkpoint's transaction by updating its own
/// tables and returning the commands to issue.
pub trait Policy: Send + Sync {
    /// Stable name; its checkpoint is `policy:<name>`.
    fn name(&self) -> &'static str;
    /// Handles one event. Must decide the same way however often the event is handled (see
    /// the module docs): it may be handled again after a failed batch.
    fn handle<'a>(&'a self, tx: &'a mut PgConnection, event: &'a Envelope) -> HandleFuture<'a>;
    /// The aggregate types ([`projections::event::kinds`]) whose events it handles, when it
    /// ignores the others: only those are read ([`read_batch_of`]). `None`: every event.
    fn kinds(&self) -> Option<&'static [&'static str]> {
        None
    }
}

/// Why a policy batch failed; the batch is retried.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error(transparent)]
    Projection(#[from] ProjectionError),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("command failed: {0}")]
    Command(String),
}

/// Every policy driven by the stream.
pub fn policies() -> Vec<Arc<dyn Policy>> {
    vec![
        Arc::new(assignment::AssignmentPolicy),
        Arc::new(vitals::VitalsPolicy),
        Arc::new(escalation::EscalationPolicy),
    ]
}

/// Handles one batch of `hospital`'s events with `policy` and issues the resulting commands,
/// then advances the checkpoint — all while holding the checkpoint's row lock. Returns the
/// new checkpoint and the number of events handled, or `None` if another node holds the
/// checkpoint or nothing was pending.
pub async fn run_batch(
    pool: &PgPool,
    bus: &CommandBus,
    policy: &dyn Policy,
    hospital: &str,
    batch: i64,
) -> Result<Option<(i64, usize)>, PolicyError> {
    let checkpoint = checkpoint_name(policy.name());
    let mut tx = pool.begin().await?;
    let position =
        engine::lock_checkpoint(&mut tx, &checkpoint, hospital, CHECKPOINT_VERSION, false).await?;
    let Some(position) = position else {
        return Ok(None);
    };
    let (events, last, event_time, covered) = match policy.kinds() {
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
    let mut planned = Vec::new();
    for event in &events {
        planned.extend(policy.handle(&mut tx, event).await?);
    }
    for p in &planned {
        execute(bus, policy.name(), p).await?;
    }
    sqlx::query(
        "UPDATE projection_checkpoints SET position = $3, updated_at = clock_timestamp(), \
         event_time = $4 WHERE projector = $1 AND hospital = $2",
    )
    .bind(&checkpoint)
    .bind(hospital)
    .bind(last)
    .bind(event_time)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    // Positions covered, not events handled: a batch that is not full means caught up.
    Ok(Some((last, usize::try_from(covered).unwrap_or(usize::MAX))))
}

/// Brings `policy` up to date for every hospital; returns the events handled.
pub async fn catch_up(
    pool: &PgPool,
    bus: &CommandBus,
    policy: &dyn Policy,
) -> Result<usize, PolicyError> {
    let checkpoint = checkpoint_name(policy.name());
    let lagging = lagging(pool, &checkpoint).await?;
    catch_up_hospitals(pool, bus, policy, lagging.into_iter().map(|(h, _, _)| h)).await
}

/// Brings `policy` up to date for `hospitals` (those a wake-up named); returns the events
/// handled. A hospital stops at its first batch that is not full: later commits come with
/// their own wake-up.
pub async fn catch_up_hospitals(
    pool: &PgPool,
    bus: &CommandBus,
    policy: &dyn Policy,
    hospitals: impl IntoIterator<Item = String>,
) -> Result<usize, PolicyError> {
    let mut handled = 0;
    for hospital in hospitals {
        while let Some((_, n)) = run_batch(pool, bus, policy, &hospital, POLICY_BATCH).await? {
            handled += n;
            if (n as i64) < POLICY_BATCH {
                break;
            }
        }
    }
    Ok(handled)
}

/// Issues one planned command. Done when it commits or when the aggregate says it already
/// happened (a retried batch); a transient failure fails the batch so it is retried.
async fn execute(bus: &CommandBus, policy: &str, planned: &Planned) -> Result<(), PolicyError> {
    let at = Utc::now();
    match &planned.effect {
        Effect::SendNotification {
            id,
            recipient,
            content,
        } => {
            let ctx = planned.cause.context(*id);
            let result = bus
                .execute::<Notification>(&ctx, &id.to_string(), || NotificationCommand::Send {
                    recipient: recipient.clone(),
                    content: content.clone(),
                    by: ctx.user.clone(),
                    at,
                })
                .await;
            match result {
                Ok(_) => Ok(()),
                Err(CommandError::Rejected(NotificationError::AlreadySent)) => {
                    tracing::debug!(policy, notification = %id, "notification already sent");
                    Ok(())
                }
                Err(CommandError::Rejected(rejection)) => {
                    // Not a retriable condition: retrying would block the policy for ever.
                    tracing::error!(policy, notification = %id, %rejection, "policy command refused");
                    Ok(())
                }
                Err(error) => Err(PolicyError::Command(error.to_string())),
            }
        }
        Effect::RaiseAlert {
            id,
            severity,
            message,
            patient,
        } => {
            let ctx = planned.cause.context(*id);
            let result = bus
                .execute::<Alert>(&ctx, &id.to_string(), || AlertCommand::Raise {
                    severity: *severity,
                    message: message.clone(),
                    department: None,
                    patient: Some(patient.clone()),
                    by: ctx.user.clone(),
                    at,
                })
                .await;
            match result {
                Ok(_) => Ok(()),
                Err(CommandError::Rejected(AlertError::AlreadyRaised)) => {
                    tracing::debug!(policy, alert = %id, "alert already raised");
                    Ok(())
                }
                Err(CommandError::Rejected(rejection)) => {
                    tracing::error!(policy, alert = %id, %rejection, "policy command refused");
                    Ok(())
                }
                Err(error) => Err(PolicyError::Command(error.to_string())),
            }
        }
    }
}

/// Starts the policy runner and the escalation scheduler. Every node runs them: the
/// checkpoint and deadline locks make that safe. They stop when `shutdown` turns true.
///
/// One task runs every policy in turn rather than one task each: a policy holds a pooled
/// connection for its batch's transaction while its commands take another, so running them
/// one at a time bounds what policies take from the shared pool to two connections (plus two
/// for the scheduler), and policies are cheap next to that budget. A failing policy is
/// logged and does not stop the others. Passes are at least `spacing` apart (see
/// [`Wakeups`]).
pub fn spawn(
    pool: PgPool,
    listener: &StreamListener,
    announcer: Announcer,
    shutdown: watch::Receiver<bool>,
    spacing: Duration,
) {
    // Policies commit a few commands at a time: one lane batches them all.
    let bus = Arc::new(CommandBus::with_lanes(pool.clone(), announcer, 1));
    let mut wakeups = Wakeups::new(listener.subscribe(), POLL_INTERVAL, spacing);
    let runner_pool = pool.clone();
    let runner_bus = bus.clone();
    let mut stop = shutdown.clone();
    tokio::spawn(async move {
        let (pool, bus) = (runner_pool, runner_bus);
        let policies = policies();
        // Every hospital at start and after a failure; then those the wake-ups name.
        let mut scope = WakeScope::All;
        loop {
            if pool.is_closed() {
                return;
            }
            let mut failed = false;
            for policy in &policies {
                let result = match &scope {
                    WakeScope::Hospitals(hospitals) => {
                        let hospitals = hospitals.iter().cloned();
                        catch_up_hospitals(&pool, &bus, policy.as_ref(), hospitals).await
                    }
                    WakeScope::All => catch_up(&pool, &bus, policy.as_ref()).await,
                    WakeScope::Closed => return,
                };
                if let Err(error) = result {
                    tracing::warn!(policy = policy.name(), %error, "policy failed; retrying");
                    failed = true;
                }
            }
            if failed {
                scope = WakeScope::All;
                tokio::select! {
                    _ = tokio::time::sleep(RETRY) => continue,
                    _ = shutting_down(&mut stop) => return,
                }
            }
            scope = tokio::select! {
                scope = wakeups.next() => scope,
                _ = shutting_down(&mut stop) => return,
            };
        }
    });
    scheduler::spawn(pool, bus, shutdown);
}

/// Resolves when the server shuts down (or can no longer be told to).
pub(crate) async fn shutting_down(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}
