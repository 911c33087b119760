//! Auto-escalation, the timer half: fires the due rows of `alert_deadlines`, on every node,
//! each level exactly once.
//!
//! Every [`TICK`] each node:
//!
//! 1. **Claims** due rows (`due_at <= now`, by the database's clock, so nodes' clocks need not
//!    agree) with `FOR UPDATE SKIP LOCKED`, stamping each with a command id (a new UUIDv4,
//!    unless a previous attempt already stamped one) and `fired_at`, and commits: from then on
//!    the escalation of that level is known by that id, on every node.
//! 2. **Fires** each claimed row in its own transaction that locks the row (`SKIP LOCKED`:
//!    a row another node is firing is left to it) and holds the lock until the outcome is
//!    recorded. Under the lock it reconciles, then acts:
//!    - the stamped command already committed (a previous attempt died after executing it):
//!      done;
//!    - the alert, read from its events (the truth, not a projection), is resolved or
//!      acknowledged, or gone: the row is dropped;
//!    - the alert is already at the row's level or beyond (someone escalated it by hand, or a
//!      stale row re-armed by the stream being handled again): done;
//!    - otherwise `Escalate` runs as `system` **under the stamped command id**, with the
//!      causing event's command id as causation id.
//!
//!    Done means `due_at = NULL`: the escalation policy's projector re-arms the row for the
//!    next level when it reads the resulting `AlertEscalated`. A failure (database, conflict)
//!    rolls back; the row keeps its command id and is fired again at a later tick.
//!
//! Why exactly once: a row is fired by one transaction at a time (its lock); a node that
//! dies mid-way releases the lock with its connection, and the next node reconciles by the
//! stamped command id before doing anything — if the escalation committed, it is found; if
//! not, it is re-run under the same id. The level check against the alert's events stops a
//! row armed twice for one level from escalating twice.
//!
//! Racing a person: the check above reads the alert, and a user may acknowledge or escalate
//! it in the instant before the escalation commits. The command therefore carries
//! [`EscalationGuard::Unacknowledged`] with the level it was decided at: the aggregate
//! re-checks both on the state it commits against (the bus re-runs the command on a version
//! conflict), so the system never escalates an alert someone just took or escalated — the
//! row is then dropped (acknowledged) or left for the projector to re-arm (escalated).

use std::sync::Arc;
use std::time::Duration;

use aggregates::alert::{
    Alert, AlertCommand, AlertError, AlertEvent, AlertStatus, EscalationGuard,
};
use aggregates::types::Reason;
use chrono::Utc;
use cqrs_es::Aggregate;
use sqlx::{PgConnection, PgPool, Row};
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use uuid::Uuid;

use super::{shutting_down, system_context, system_user, PolicyError};
use crate::command::{CommandBus, CommandError};

/// How often each node looks for due deadlines. Deadlines are minutes long; half a second
/// adds at most that much to an escalation, for one cheap indexed query per tick.
pub const TICK: Duration = Duration::from_millis(500);

/// Most deadlines one node claims per tick; the rest wait for the next tick (or another
/// node), so one node does not hoard a burst.
pub const CLAIM_BATCH: i64 = 50;

/// A due deadline this node claimed.
#[derive(Clone, Debug, PartialEq)]
pub struct Claim {
    /// The alert's hospital.
    pub hospital: String,
    /// The alert.
    pub alert_id: String,
    /// Its severity's wire name, for the escalation's reason.
    pub severity: String,
    /// The level the escalation brings it to.
    pub level: i16,
    /// The escalation's command id, stable across attempts.
    pub command_id: Uuid,
    /// The command id of the event that armed the deadline.
    pub causation_id: Uuid,
    /// Its correlation id.
    pub correlation_id: Uuid,
}

/// What to do with a claimed deadline, given the alert's current state (`None`: no such
/// alert).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Escalate it now.
    Escalate,
    /// This level happened already: wait for the projector to re-arm the row.
    Done,
    /// Nothing will ever be due: delete the row.
    Drop,
}

/// What firing a row ended with.
enum Outcome {
    /// The level's escalation exists: the row waits, `due_at` cleared, to be re-armed.
    Done,
    /// Nothing more is due: the row is deleted.
    Drop,
}

/// Decides a claimed deadline for `row_level`: see the module docs.
pub fn decide(row_level: i16, state: Option<(AlertStatus, u8)>) -> Decision {
    match state {
        None | Some((AlertStatus::Resolved | AlertStatus::Acknowledged, _)) => Decision::Drop,
        Some((AlertStatus::Raised, level)) if i16::from(level) >= row_level => Decision::Done,
        Some((AlertStatus::Raised, level)) if i16::from(level) + 1 == row_level => {
            Decision::Escalate
        }
        // A row ahead of the alert by more than a level cannot be armed from its events;
        // escalating would not reach that level, so the row is discarded.
        Some((AlertStatus::Raised, _)) => Decision::Drop,
    }
}

/// The alert as its events have it: status and escalation level.
async fn alert_state(
    conn: &mut PgConnection,
    hospital: &str,
    alert_id: &str,
) -> Result<Option<(AlertStatus, u8)>, sqlx::Error> {
    let payloads: Vec<serde_json::Value> = sqlx::query_scalar(
        "SELECT payload FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 \
         ORDER BY sequence",
    )
    .bind(Alert::TYPE)
    .bind(format!("{hospital}/{alert_id}"))
    .fetch_all(&mut *conn)
    .await?;
    let mut alert = Alert::default();
    for payload in payloads {
        let event: AlertEvent =
            serde_json::from_value(payload).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
        alert.apply(event);
    }
    Ok(alert.status().map(|s| (s, alert.escalation_level())))
}

/// Phase 1: claims up to [`CLAIM_BATCH`] due rows.
pub async fn claim(pool: &PgPool) -> Result<Vec<Claim>, sqlx::Error> {
    let rows = sqlx::query(
        "UPDATE alert_deadlines d \
         SET command_id = coalesce(d.command_id, gen_random_uuid()), \
             fired_at = coalesce(d.fired_at, clock_timestamp()) \
         FROM (SELECT hospital, alert_id FROM alert_deadlines \
               WHERE due_at <= clock_timestamp() ORDER BY due_at LIMIT $1 \
               FOR UPDATE SKIP LOCKED) due \
         WHERE d.hospital = due.hospital AND d.alert_id = due.alert_id \
         RETURNING d.hospital, d.alert_id, d.severity, d.level, d.command_id, \
                   d.causation_id, d.correlation_id",
    )
    .bind(CLAIM_BATCH)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Claim {
                hospital: r.try_get("hospital")?,
                alert_id: r.try_get("alert_id")?,
                severity: r.try_get("severity")?,
                level: r.try_get("level")?,
                command_id: r.try_get("command_id")?,
                causation_id: r.try_get("causation_id")?,
                correlation_id: r.try_get("correlation_id")?,
            })
        })
        .collect()
}

/// Phase 2: fires one claimed row. Returns whether this call escalated the alert.
///
/// One function because it is one transaction: the row lock taken first is what makes the
/// decision and the escalation safe against other nodes, so the steps share `tx` in order.
pub async fn fire(pool: &PgPool, bus: &CommandBus, claim: &Claim) -> Result<bool, PolicyError> {
    let mut tx = pool.begin().await?;
    let locked: Option<i16> = sqlx::query_scalar(
        "SELECT level FROM alert_deadlines WHERE hospital = $1 AND alert_id = $2 \
         AND command_id = $3 AND due_at IS NOT NULL FOR UPDATE SKIP LOCKED",
    )
    .bind(&claim.hospital)
    .bind(&claim.alert_id)
    .bind(claim.command_id)
    .fetch_optional(&mut *tx)
    .await?;
    // Fired by another node already, being fired right now, or re-armed meanwhile.
    let Some(level) = locked else {
        return Ok(false);
    };
    let hospital = super::hospital_id(&claim.hospital)?;
    let mut escalated = false;
    let outcome = if bus.outcome_of(claim.command_id, &hospital).await?.is_some() {
        tracing::info!(alert = %claim.alert_id, level, "escalation found committed by an earlier attempt");
        Outcome::Done
    } else {
        match decide(
            level,
            alert_state(&mut tx, &claim.hospital, &claim.alert_id).await?,
        ) {
            Decision::Escalate => {
                let ctx = system_context(
                    hospital,
                    claim.command_id,
                    claim.causation_id,
                    claim.correlation_id,
                );
                let reason = reason(&claim.severity, level);
                let at = Utc::now();
                // `decide` escalates only one level up from a level 0..=MAX-1.
                let from_level = u8::try_from(level - 1).unwrap_or(u8::MAX);
                let result = bus
                    .execute::<Alert>(&ctx, &claim.alert_id, || AlertCommand::Escalate {
                        reason: reason.clone(),
                        guard: EscalationGuard::Unacknowledged { from_level },
                        by: system_user(),
                        at,
                    })
                    .await;
                match result {
                    Ok(_) => {
                        escalated = true;
                        tracing::info!(alert = %claim.alert_id, level, command_id = %claim.command_id, "alert escalated automatically");
                        Outcome::Done
                    }
                    // Someone escalated it meanwhile: their escalation re-arms the row.
                    Err(CommandError::Rejected(AlertError::EscalationLevelChanged)) => {
                        tracing::info!(alert = %claim.alert_id, level, "escalated by someone else meanwhile");
                        Outcome::Done
                    }
                    Err(CommandError::Rejected(
                        AlertError::AlreadyResolved
                        | AlertError::AlreadyAcknowledged
                        | AlertError::NotFound
                        | AlertError::MaxEscalationReached
                        | AlertError::AlreadyRaised,
                    )) => Outcome::Drop,
                    Err(error) => return Err(PolicyError::Command(error.to_string())),
                }
            }
            Decision::Done => Outcome::Done,
            Decision::Drop => Outcome::Drop,
        }
    };
    let sql = match outcome {
        Outcome::Done => {
            "UPDATE alert_deadlines SET due_at = NULL \
             WHERE hospital = $1 AND alert_id = $2 AND command_id = $3"
        }
        Outcome::Drop => {
            "DELETE FROM alert_deadlines WHERE hospital = $1 AND alert_id = $2 AND command_id = $3"
        }
    };
    sqlx::query(sql)
        .bind(&claim.hospital)
        .bind(&claim.alert_id)
        .bind(claim.command_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(escalated)
}

/// Why the system escalated: for the people paged.
fn reason(severity: &str, level: i16) -> Reason {
    let text = format!(
        "Not acknowledged within the {severity} alert deadline: escalated automatically to level {level}"
    );
    // Short, non-empty, no control characters: always a valid reason.
    Reason::parse(&text).expect("a valid escalation reason")
}

/// One tick: claims due rows and fires them. Returns how many alerts it escalated.
pub async fn tick(pool: &PgPool, bus: &CommandBus) -> Result<usize, PolicyError> {
    let mut escalated = 0;
    for claim in claim(pool).await? {
        match fire(pool, bus, &claim).await {
            Ok(true) => escalated += 1,
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(alert = %claim.alert_id, level = claim.level, %error, "escalation failed; will retry");
            }
        }
    }
    Ok(escalated)
}

/// Starts this node's scheduler; it stops when `shutdown` turns true or the pool closes.
pub fn spawn(pool: PgPool, bus: Arc<CommandBus>, mut shutdown: watch::Receiver<bool>) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(TICK);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = shutting_down(&mut shutdown) => return,
            }
            if pool.is_closed() {
                return;
            }
            if let Err(error) = tick(&pool, &bus).await {
                tracing::warn!(%error, "escalation scheduler failed; retrying");
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_raised_alert_one_level_below_the_deadline_is_escalated() {
        assert_eq!(
            decide(1, Some((AlertStatus::Raised, 0))),
            Decision::Escalate
        );
        assert_eq!(
            decide(3, Some((AlertStatus::Raised, 2))),
            Decision::Escalate
        );
    }

    #[test]
    fn a_level_already_reached_is_not_escalated_again() {
        assert_eq!(decide(1, Some((AlertStatus::Raised, 1))), Decision::Done);
        assert_eq!(decide(2, Some((AlertStatus::Raised, 4))), Decision::Done);
    }

    #[test]
    fn an_acknowledged_resolved_or_missing_alert_drops_its_deadline() {
        assert_eq!(
            decide(1, Some((AlertStatus::Acknowledged, 0))),
            Decision::Drop
        );
        assert_eq!(decide(1, Some((AlertStatus::Resolved, 0))), Decision::Drop);
        assert_eq!(decide(1, None), Decision::Drop);
    }

    #[test]
    fn the_escalation_reason_is_a_valid_reason() {
        assert!(reason("critical", 5).as_str().contains("level 5"));
    }
}
