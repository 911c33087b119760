//! Auto-escalation, the projector half: keeps `alert_deadlines` — one row per raised,
//! unacknowledged alert, holding the level its next escalation brings it to and when that is
//! due — from the alert events. The [`scheduler`](super::scheduler) fires the due rows.
//!
//! | event                      | deadline row                                                   |
//! |----------------------------|----------------------------------------------------------------|
//! | `AlertRaised`              | level 1, due at raised + deadline(severity)                    |
//! | `AlertEscalated { level }` | level + 1, due at escalated + deadline(severity); none past 5  |
//! | `AlertAcknowledged`        | removed: someone owns the alert                                |
//! | `AlertResolved`            | removed                                                        |
//!
//! Whoever escalated (a user or the scheduler), the next deadline runs from that escalation.
//! An escalation never moves a row back: a row already at a higher level (the stream being
//! handled again) is left alone, and the scheduler checks the alert's real state before
//! acting, so handling the stream again cannot escalate twice.
//!
//! # Deadlines
//!
//! How long an alert may stay unacknowledged is per hospital and per severity, in table
//! `escalation_deadlines` (hospital, severity, seconds); a severity without a row uses
//! [`Deadlines::default`]. An admin sets them with `PUT /api/hospitals/{h}/policies/escalation`
//! (`http::escalation_deadlines`, which calls [`set_deadline`]). A change applies to deadlines armed
//! after it.
//! The arithmetic ([`Deadlines::due_at`], [`next_level`]) is pure, given the event's time, and
//! tested without a clock.

use std::time::Duration;

use aggregates::alert::{AlertEvent, Severity, MAX_ESCALATION_LEVEL};
use chrono::{DateTime, TimeDelta, Utc};
use projections::event::{DomainEvent, Envelope};
use sqlx::{PgConnection, Row};

use super::{kinds, Cause, HandleFuture, Policy};

/// Default deadline of a critical alert: life-threatening, so the next tier is paged if
/// nobody owns it within two minutes.
pub const DEFAULT_CRITICAL: Duration = Duration::from_secs(120);
/// Default deadline of a high alert: "needs attention now", ten minutes.
pub const DEFAULT_HIGH: Duration = Duration::from_secs(600);
/// Default deadline of a medium alert: "this shift", half an hour.
pub const DEFAULT_MEDIUM: Duration = Duration::from_secs(1800);
/// Default deadline of a low alert: informational, an hour.
pub const DEFAULT_LOW: Duration = Duration::from_secs(3600);

/// The wire name of a severity, as stored in `escalation_deadlines` and `alert_deadlines`.
pub fn severity_name(severity: Severity) -> &'static str {
    match severity {
        Severity::Low => "low",
        Severity::Medium => "medium",
        Severity::High => "high",
        Severity::Critical => "critical",
    }
}

/// The severity named `name`.
pub fn parse_severity(name: &str) -> Option<Severity> {
    [
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ]
    .into_iter()
    .find(|s| severity_name(*s) == name)
}

/// One hospital's escalation deadlines, by severity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadlines {
    critical: Duration,
    high: Duration,
    medium: Duration,
    low: Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Self {
            critical: DEFAULT_CRITICAL,
            high: DEFAULT_HIGH,
            medium: DEFAULT_MEDIUM,
            low: DEFAULT_LOW,
        }
    }
}

impl Deadlines {
    /// These deadlines with `severity`'s set to `deadline`.
    pub fn with(mut self, severity: Severity, deadline: Duration) -> Self {
        *self.slot(severity) = deadline;
        self
    }

    fn slot(&mut self, severity: Severity) -> &mut Duration {
        match severity {
            Severity::Critical => &mut self.critical,
            Severity::High => &mut self.high,
            Severity::Medium => &mut self.medium,
            Severity::Low => &mut self.low,
        }
    }

    /// How long an alert of `severity` may stay unacknowledged.
    pub fn of(&self, severity: Severity) -> Duration {
        match severity {
            Severity::Critical => self.critical,
            Severity::High => self.high,
            Severity::Medium => self.medium,
            Severity::Low => self.low,
        }
    }

    /// When an alert of `severity` raised or escalated at `since` is due for escalation.
    pub fn due_at(&self, severity: Severity, since: DateTime<Utc>) -> DateTime<Utc> {
        // Deadlines are stored as positive `integer` seconds: they always fit.
        since + TimeDelta::from_std(self.of(severity)).unwrap_or(TimeDelta::MAX)
    }

    /// `hospital`'s deadlines: its rows in `escalation_deadlines` over the defaults.
    pub async fn load(conn: &mut PgConnection, hospital: &str) -> Result<Self, sqlx::Error> {
        let rows: Vec<(String, i32)> = sqlx::query_as(
            "SELECT severity, seconds FROM escalation_deadlines WHERE hospital = $1",
        )
        .bind(hospital)
        .fetch_all(&mut *conn)
        .await?;
        Ok(rows
            .into_iter()
            .fold(Self::default(), |deadlines, (severity, seconds)| {
                match (parse_severity(&severity), u64::try_from(seconds)) {
                    (Some(severity), Ok(seconds)) => {
                        deadlines.with(severity, Duration::from_secs(seconds))
                    }
                    _ => deadlines,
                }
            }))
    }
}

/// Sets `hospital`'s deadline for `severity` (whole seconds, at least one).
pub async fn set_deadline(
    conn: &mut PgConnection,
    hospital: &str,
    severity: Severity,
    deadline: Duration,
) -> Result<(), sqlx::Error> {
    let seconds = i32::try_from(deadline.as_secs().max(1)).unwrap_or(i32::MAX);
    sqlx::query(
        "INSERT INTO escalation_deadlines (hospital, severity, seconds) VALUES ($1, $2, $3) \
         ON CONFLICT (hospital, severity) DO UPDATE SET seconds = EXCLUDED.seconds",
    )
    .bind(hospital)
    .bind(severity_name(severity))
    .bind(seconds)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The level the next escalation of an alert now at `level` brings it to, or `None` when it
/// is at the last tier and nothing more is to be armed.
pub fn next_level(level: u8) -> Option<u8> {
    (level < MAX_ESCALATION_LEVEL).then_some(level + 1)
}

/// The escalation policy (projector of `alert_deadlines`).
pub struct EscalationPolicy;

impl EscalationPolicy {
    async fn arm_first(
        tx: &mut PgConnection,
        e: &Envelope,
        severity: Severity,
        raised_at: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        let due_at = Deadlines::load(tx, &e.hospital)
            .await?
            .due_at(severity, raised_at);
        let cause = Cause::of(tx, e).await?;
        sqlx::query(
            "INSERT INTO alert_deadlines (hospital, alert_id, severity, level, due_at, \
             causation_id, correlation_id) VALUES ($1, $2, $3, 1, $4, $5, $6) \
             ON CONFLICT (hospital, alert_id) DO NOTHING",
        )
        .bind(&e.hospital)
        .bind(&e.aggregate_id)
        .bind(severity_name(severity))
        .bind(due_at)
        .bind(cause.causation_id())
        .bind(cause.correlation_id())
        .execute(&mut *tx)
        .await?;
        Ok(())
    }

    async fn rearm(
        tx: &mut PgConnection,
        e: &Envelope,
        escalated_to: u8,
        escalated_at: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        let Some(next) = next_level(escalated_to) else {
            return Self::disarm(tx, e).await;
        };
        let row = sqlx::query(
            "SELECT severity, level FROM alert_deadlines WHERE hospital = $1 AND alert_id = $2 \
             FOR UPDATE",
        )
        .bind(&e.hospital)
        .bind(&e.aggregate_id)
        .fetch_optional(&mut *tx)
        .await?;
        // No row: the alert was acknowledged (or predates the policy) — nothing to re-arm.
        let Some(row) = row else {
            return Ok(());
        };
        // Already armed for this level or beyond: the stream is being handled again.
        let level: i16 = row.try_get("level")?;
        if level >= i16::from(next) {
            return Ok(());
        }
        let severity: String = row.try_get("severity")?;
        let Some(severity) = parse_severity(&severity) else {
            return Ok(());
        };
        let due_at = Deadlines::load(tx, &e.hospital)
            .await?
            .due_at(severity, escalated_at);
        let cause = Cause::of(tx, e).await?;
        sqlx::query(
            "UPDATE alert_deadlines SET level = $3, due_at = $4, command_id = NULL, \
             fired_at = NULL, causation_id = $5, correlation_id = $6 \
             WHERE hospital = $1 AND alert_id = $2",
        )
        .bind(&e.hospital)
        .bind(&e.aggregate_id)
        .bind(i16::from(next))
        .bind(due_at)
        .bind(cause.causation_id())
        .bind(cause.correlation_id())
        .execute(&mut *tx)
        .await?;
        Ok(())
    }

    async fn disarm(tx: &mut PgConnection, e: &Envelope) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM alert_deadlines WHERE hospital = $1 AND alert_id = $2")
            .bind(&e.hospital)
            .bind(&e.aggregate_id)
            .execute(&mut *tx)
            .await?;
        Ok(())
    }
}

impl Policy for EscalationPolicy {
    fn name(&self) -> &'static str {
        "escalation"
    }

    fn kinds(&self) -> Option<&'static [&'static str]> {
        Some(&[kinds::ALERT])
    }

    fn handle<'a>(&'a self, tx: &'a mut PgConnection, e: &'a Envelope) -> HandleFuture<'a> {
        Box::pin(async move {
            let DomainEvent::Alert(event) = &e.event else {
                return Ok(vec![]);
            };
            match event {
                AlertEvent::AlertRaised { severity, at, .. } => {
                    Self::arm_first(tx, e, *severity, *at).await?
                }
                AlertEvent::AlertEscalated { level, at, .. } => {
                    Self::rearm(tx, e, *level, *at).await?
                }
                AlertEvent::AlertAcknowledged { .. } | AlertEvent::AlertResolved { .. } => {
                    Self::disarm(tx, e).await?
                }
            }
            // The escalations themselves are issued by the scheduler, when due.
            Ok(vec![])
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + seconds, 0).unwrap()
    }

    #[test]
    fn default_deadlines_shorten_with_severity() {
        let d = Deadlines::default();
        assert_eq!(d.due_at(Severity::Critical, at(0)), at(120));
        assert_eq!(d.due_at(Severity::High, at(0)), at(600));
        assert_eq!(d.due_at(Severity::Medium, at(0)), at(1800));
        assert_eq!(d.due_at(Severity::Low, at(0)), at(3600));
    }

    #[test]
    fn a_hospital_override_changes_only_its_severity() {
        let d = Deadlines::default().with(Severity::Critical, Duration::from_secs(1));
        assert_eq!(d.due_at(Severity::Critical, at(10)), at(11));
        assert_eq!(d.due_at(Severity::High, at(10)), at(610));
    }

    #[test]
    fn the_next_deadline_runs_from_the_last_escalation() {
        // Raised at 0, escalated (by anyone) at 500: level 2 is due a deadline after 500.
        let d = Deadlines::default();
        assert_eq!(d.due_at(Severity::High, at(500)), at(1100));
    }

    #[test]
    fn nothing_is_armed_past_the_last_tier() {
        assert_eq!(next_level(0), Some(1));
        assert_eq!(
            next_level(MAX_ESCALATION_LEVEL - 1),
            Some(MAX_ESCALATION_LEVEL)
        );
        assert_eq!(next_level(MAX_ESCALATION_LEVEL), None);
    }

    #[test]
    fn severity_names_round_trip() {
        for s in [
            Severity::Low,
            Severity::Medium,
            Severity::High,
            Severity::Critical,
        ] {
            assert_eq!(parse_severity(severity_name(s)), Some(s));
        }
        assert_eq!(parse_severity("urgent"), None);
    }
}
