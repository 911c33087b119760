//! The alert board: every alert with its status, severity, department, age and escalation
//! level; counts of open alerts per severity; time to acknowledge and to resolve.
//!
//! Table `alert_board` (migration `*_create_read_models.sql`), one row per alert, keyed by
//! (hospital, alert id), indexed for "a hospital's alerts by status, most severe first".

use std::collections::HashMap;

use aggregates::alert::{AlertEvent, Severity, MAX_ESCALATION_LEVEL};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, Postgres, QueryBuilder, Row};

use crate::engine::{ApplyFuture, ReadModel, Tables};
use crate::event::{DomainEvent, Envelope};

/// The alert board read model.
pub struct AlertBoard;

/// Its code version: bump when `apply` changes, and the server rebuilds it at start.
pub const VERSION: i32 = 1;

fn severity_name(s: Severity) -> &'static str {
    match s {
        Severity::Low => "low",
        Severity::Medium => "medium",
        Severity::High => "high",
        Severity::Critical => "critical",
    }
}

fn severity_rank(s: Severity) -> i16 {
    match s {
        Severity::Low => 1,
        Severity::Medium => 2,
        Severity::High => 3,
        Severity::Critical => 4,
    }
}

impl ReadModel for AlertBoard {
    fn name(&self) -> &'static str {
        "alert_board"
    }

    fn version(&self) -> i32 {
        VERSION
    }

    fn tables(&self) -> &'static [&'static str] {
        &["alert_board"]
    }

    fn kinds(&self) -> Option<&'static [&'static str]> {
        Some(&[crate::event::kinds::ALERT])
    }

    // Long by design: one match arm per event type, each a statement or two, so the whole
    // model's reaction to the stream reads as one table; split, it would scatter.
    fn apply<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        tables: &'a Tables,
        e: &'a Envelope,
    ) -> ApplyFuture<'a> {
        Box::pin(async move {
            let DomainEvent::Alert(event) = &e.event else {
                return Ok(());
            };
            let table = tables.get("alert_board")?;
            match event {
                AlertEvent::AlertRaised {
                    severity,
                    message,
                    department,
                    patient,
                    by,
                    at,
                } => {
                    sqlx::query(&format!(
                        "INSERT INTO {table} (hospital, alert_id, severity, severity_rank, status, message, \
                         department, patient, raised_by, raised_at, last_position) \
                         VALUES ($1, $2, $3, $4, 'raised', $5, $6, $7, $8, $9, $10) \
                         ON CONFLICT (hospital, alert_id) DO NOTHING"
                    ))
                    .bind(&e.hospital)
                    .bind(&e.aggregate_id)
                    .bind(severity_name(*severity))
                    .bind(severity_rank(*severity))
                    .bind(message.as_str())
                    .bind(department.as_ref().map(|d| d.as_str()))
                    .bind(patient.as_ref().map(|p| p.as_str()))
                    .bind(by.as_str())
                    .bind(at)
                    .bind(e.position)
                    .execute(&mut *tx)
                    .await?;
                }
                AlertEvent::AlertAcknowledged { by, at, .. } => {
                    sqlx::query(&format!(
                        "UPDATE {table} SET status = 'acknowledged', acknowledged_by = $3, acknowledged_at = $4, \
                         last_position = $5 WHERE hospital = $1 AND alert_id = $2"
                    ))
                    .bind(&e.hospital)
                    .bind(&e.aggregate_id)
                    .bind(by.as_str())
                    .bind(at)
                    .bind(e.position)
                    .execute(&mut *tx)
                    .await?;
                }
                AlertEvent::AlertEscalated { level, at, .. } => {
                    sqlx::query(&format!(
                        "UPDATE {table} SET level = $3, escalated_at = $4, last_position = $5 \
                         WHERE hospital = $1 AND alert_id = $2"
                    ))
                    .bind(&e.hospital)
                    .bind(&e.aggregate_id)
                    .bind(i16::from(*level))
                    .bind(at)
                    .bind(e.position)
                    .execute(&mut *tx)
                    .await?;
                }
                AlertEvent::AlertResolved { note, by, at, .. } => {
                    sqlx::query(&format!(
                        "UPDATE {table} SET status = 'resolved', resolved_by = $3, resolved_at = $4, \
                         resolution_note = $5, last_position = $6 WHERE hospital = $1 AND alert_id = $2"
                    ))
                    .bind(&e.hospital)
                    .bind(&e.aggregate_id)
                    .bind(by.as_str())
                    .bind(at)
                    .bind(note.as_str())
                    .bind(e.position)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            Ok(())
        })
    }

    /// The batch in (at most) two statements instead of one round trip per event — the
    /// per-event round trips held a 1,000,000-event rebuild under 10,000 events/s (see
    /// BENCHMARKS.md, "Projections"). Same result as [`Self::apply`] event by event, because
    /// every change an event makes is "set these columns to the event's values":
    /// 1. the batch's `AlertRaised` rows, inserted as `apply` inserts them (`DO NOTHING` on
    ///    an existing alert, the first raise winning);
    /// 2. every later event folded per alert in position order (a later event's columns
    ///    overwrite an earlier one's; `last_position` is the last event's), then applied in
    ///    one `UPDATE ... FROM unnest(...)` to the rows as they stand after step 1.
    ///
    /// The one difference — an update event that precedes its alert's raise in the same batch
    /// would be applied here and ignored by `apply` — cannot happen: an alert's events follow
    /// its aggregate's sequence, which starts with the raise. Tested against `apply` in
    /// `tests/api/projections_engine.rs`.
    fn apply_all<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        tables: &'a Tables,
        events: &'a [Envelope],
    ) -> ApplyFuture<'a> {
        Box::pin(async move {
            let table = tables.get("alert_board")?;
            let changes = Changes::fold(events);
            if !changes.raised.is_empty() {
                let raised = &changes.raised;
                sqlx::query(&format!(
                    "INSERT INTO {table} (hospital, alert_id, severity, severity_rank, status, message, \
                     department, patient, raised_by, raised_at, last_position) \
                     SELECT hospital, alert_id, severity, severity_rank, 'raised', message, department, \
                            patient, raised_by, raised_at, last_position \
                     FROM unnest($1::text[], $2::text[], $3::text[], $4::int2[], $5::text[], $6::text[], \
                                 $7::text[], $8::text[], $9::timestamptz[], $10::int8[]) \
                          WITH ORDINALITY AS r(hospital, alert_id, severity, severity_rank, message, \
                                               department, patient, raised_by, raised_at, last_position, n) \
                     ORDER BY n \
                     ON CONFLICT (hospital, alert_id) DO NOTHING"
                ))
                .bind(raised.iter().map(|r| r.hospital).collect::<Vec<_>>())
                .bind(raised.iter().map(|r| r.alert_id).collect::<Vec<_>>())
                .bind(raised.iter().map(|r| r.severity).collect::<Vec<_>>())
                .bind(raised.iter().map(|r| r.severity_rank).collect::<Vec<_>>())
                .bind(raised.iter().map(|r| r.message).collect::<Vec<_>>())
                .bind(raised.iter().map(|r| r.department).collect::<Vec<_>>())
                .bind(raised.iter().map(|r| r.patient).collect::<Vec<_>>())
                .bind(raised.iter().map(|r| r.raised_by).collect::<Vec<_>>())
                .bind(raised.iter().map(|r| r.raised_at).collect::<Vec<_>>())
                .bind(raised.iter().map(|r| r.position).collect::<Vec<_>>())
                .execute(&mut *tx)
                .await?;
            }
            if !changes.updates.is_empty() {
                let updates = &changes.updates;
                sqlx::query(&format!(
                    "UPDATE {table} AS b SET \
                       status = coalesce(u.status, b.status), \
                       acknowledged_by = coalesce(u.acknowledged_by, b.acknowledged_by), \
                       acknowledged_at = coalesce(u.acknowledged_at, b.acknowledged_at), \
                       level = coalesce(u.level, b.level), \
                       escalated_at = coalesce(u.escalated_at, b.escalated_at), \
                       resolved_by = coalesce(u.resolved_by, b.resolved_by), \
                       resolved_at = coalesce(u.resolved_at, b.resolved_at), \
                       resolution_note = coalesce(u.resolution_note, b.resolution_note), \
                       last_position = u.last_position \
                     FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], \
                                 $6::int2[], $7::timestamptz[], $8::text[], $9::timestamptz[], \
                                 $10::text[], $11::int8[]) \
                          AS u(hospital, alert_id, status, acknowledged_by, acknowledged_at, level, \
                               escalated_at, resolved_by, resolved_at, resolution_note, last_position) \
                     WHERE b.hospital = u.hospital AND b.alert_id = u.alert_id"
                ))
                .bind(updates.iter().map(|u| u.hospital).collect::<Vec<_>>())
                .bind(updates.iter().map(|u| u.alert_id).collect::<Vec<_>>())
                .bind(updates.iter().map(|u| u.status).collect::<Vec<_>>())
                .bind(updates.iter().map(|u| u.acknowledged_by).collect::<Vec<_>>())
                .bind(updates.iter().map(|u| u.acknowledged_at).collect::<Vec<_>>())
                .bind(updates.iter().map(|u| u.level).collect::<Vec<_>>())
                .bind(updates.iter().map(|u| u.escalated_at).collect::<Vec<_>>())
                .bind(updates.iter().map(|u| u.resolved_by).collect::<Vec<_>>())
                .bind(updates.iter().map(|u| u.resolved_at).collect::<Vec<_>>())
                .bind(updates.iter().map(|u| u.resolution_note).collect::<Vec<_>>())
                .bind(updates.iter().map(|u| u.last_position).collect::<Vec<_>>())
                .execute(&mut *tx)
                .await?;
            }
            Ok(())
        })
    }
}

/// An `AlertRaised` of a batch, as its row's columns.
struct Raised<'e> {
    hospital: &'e str,
    alert_id: &'e str,
    severity: &'static str,
    severity_rank: i16,
    message: &'e str,
    department: Option<&'e str>,
    patient: Option<&'e str>,
    raised_by: &'e str,
    raised_at: DateTime<Utc>,
    position: i64,
}

/// What a batch's later events set on one alert: `None` leaves a column as it is (no event
/// of the batch sets a column to NULL).
struct Update<'e> {
    hospital: &'e str,
    alert_id: &'e str,
    status: Option<&'static str>,
    acknowledged_by: Option<&'e str>,
    acknowledged_at: Option<DateTime<Utc>>,
    level: Option<i16>,
    escalated_at: Option<DateTime<Utc>>,
    resolved_by: Option<&'e str>,
    resolved_at: Option<DateTime<Utc>>,
    resolution_note: Option<&'e str>,
    last_position: i64,
}

/// A batch's changes to the board, folded per alert (see [`AlertBoard::apply_all`]).
struct Changes<'e> {
    raised: Vec<Raised<'e>>,
    updates: Vec<Update<'e>>,
}

impl<'e> Changes<'e> {
    fn fold(events: &'e [Envelope]) -> Self {
        let mut raised = Vec::new();
        let mut updates: Vec<Update<'e>> = Vec::new();
        let mut index: HashMap<(&'e str, &'e str), usize> = HashMap::new();
        for e in events {
            let DomainEvent::Alert(event) = &e.event else {
                continue;
            };
            if let AlertEvent::AlertRaised {
                severity,
                message,
                department,
                patient,
                by,
                at,
            } = event
            {
                raised.push(Raised {
                    hospital: &e.hospital,
                    alert_id: &e.aggregate_id,
                    severity: severity_name(*severity),
                    severity_rank: severity_rank(*severity),
                    message: message.as_str(),
                    department: department.as_ref().map(|d| d.as_str()),
                    patient: patient.as_ref().map(|p| p.as_str()),
                    raised_by: by.as_str(),
                    raised_at: *at,
                    position: e.position,
                });
                continue;
            }
            let key = (e.hospital.as_str(), e.aggregate_id.as_str());
            let slot = *index.entry(key).or_insert_with(|| {
                updates.push(Update {
                    hospital: key.0,
                    alert_id: key.1,
                    status: None,
                    acknowledged_by: None,
                    acknowledged_at: None,
                    level: None,
                    escalated_at: None,
                    resolved_by: None,
                    resolved_at: None,
                    resolution_note: None,
                    last_position: e.position,
                });
                updates.len() - 1
            });
            let update = &mut updates[slot];
            update.last_position = e.position;
            match event {
                AlertEvent::AlertRaised { .. } => {}
                AlertEvent::AlertAcknowledged { by, at, .. } => {
                    update.status = Some("acknowledged");
                    update.acknowledged_by = Some(by.as_str());
                    update.acknowledged_at = Some(*at);
                }
                AlertEvent::AlertEscalated { level, at, .. } => {
                    update.level = Some(i16::from(*level));
                    update.escalated_at = Some(*at);
                }
                AlertEvent::AlertResolved { note, by, at, .. } => {
                    update.status = Some("resolved");
                    update.resolved_by = Some(by.as_str());
                    update.resolved_at = Some(*at);
                    update.resolution_note = Some(note.as_str());
                }
            }
        }
        Self { raised, updates }
    }
}

/// One alert on the board.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct AlertRow {
    pub alert_id: String,
    pub severity: String,
    pub status: String,
    pub message: String,
    pub department: Option<String>,
    pub patient: Option<String>,
    pub level: i16,
    pub raised_by: String,
    pub raised_at: DateTime<Utc>,
    pub acknowledged_by: Option<String>,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub resolved_at: Option<DateTime<Utc>>,
    /// Seconds since it was raised.
    pub age_seconds: f64,
    /// When the system escalates this alert unless someone acknowledges it first: `None`
    /// once it is acknowledged or resolved, or at the last level. Carried on the row so every
    /// role that sees the board sees the countdown — the deadlines themselves are an admin
    /// setting (see [`list`] for where the time comes from).
    pub escalation_due_at: Option<DateTime<Utc>>,
}

/// How long an alert of each severity may stay raised, in seconds: the hospital's escalation
/// deadlines as the escalation policy reads them (`crate`'s caller loads them; this crate does
/// not know the policy's defaults).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EscalationSeconds {
    pub critical: f64,
    pub high: f64,
    pub medium: f64,
    pub low: f64,
}

/// Board filters. `status = None` means open alerts (raised or acknowledged).
#[derive(Clone, Debug, Default)]
pub struct BoardFilter {
    pub status: Option<String>,
    pub severity: Option<String>,
    pub department: Option<String>,
    pub patient: Option<String>,
    /// Only alerts raised by this user (field workers see only their own).
    pub raised_by: Option<String>,
    pub limit: i64,
    pub offset: i64,
    /// The hospital's deadlines, for the due time of a raised alert whose deadline the
    /// escalation policy has not armed yet; `None` leaves such an alert without a due time.
    pub deadlines: Option<EscalationSeconds>,
}

/// Open alerts per severity.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct SeverityCounts {
    pub critical: i64,
    pub high: i64,
    pub medium: i64,
    pub low: i64,
}

/// The board: alerts matching `filter`, most severe and oldest first.
///
/// Each raised alert's `escalation_due_at` is the scheduler's own due time, read from the
/// escalation policy's `alert_deadlines` row, so the countdown ends when the escalation
/// really happens: a deadline change applies to deadlines armed after it, a rebuild of the
/// board does not move it, an acknowledgement removes it. The policy arms that row from the
/// stream through its own checkpoint, which may trail the board's by a moment; until it does,
/// the due time is what the policy will arm — the last raise or escalation plus the
/// hospital's deadline (`filter.deadlines`) — so a read at the raise's position already
/// carries it. A row armed for an earlier level (the policy has not yet re-armed it after an
/// escalation the board already shows) is not the alert's next deadline and is ignored. Alerts at the last level have none (nothing more is armed).
pub async fn list(
    conn: &mut PgConnection,
    hospital: &str,
    filter: &BoardFilter,
) -> Result<Vec<AlertRow>, sqlx::Error> {
    let mut q: QueryBuilder<Postgres> = QueryBuilder::new(
        "SELECT alert_id, severity, status, message, department, patient, level, raised_by, raised_at, \
         acknowledged_by, acknowledged_at, resolved_at, \
         extract(epoch FROM clock_timestamp() - raised_at)::float8 AS age_seconds, \
         CASE WHEN status = 'raised' AND level < ",
    );
    q.push_bind(i16::from(MAX_ESCALATION_LEVEL)).push(
        " THEN coalesce((SELECT d.due_at FROM alert_deadlines d \
         WHERE d.hospital = b.hospital AND d.alert_id = b.alert_id AND d.level = b.level + 1), ",
    );
    push_expected_due(&mut q, filter.deadlines);
    q.push(
        " END AS escalation_due_at \
         FROM alert_board b WHERE hospital = ",
    );
    q.push_bind(hospital);
    match &filter.status {
        Some(status) => {
            q.push(" AND status = ").push_bind(status);
        }
        None => {
            q.push(" AND status IN ('raised', 'acknowledged')");
        }
    }
    if let Some(severity) = &filter.severity {
        q.push(" AND severity = ").push_bind(severity);
    }
    if let Some(department) = &filter.department {
        q.push(" AND department = ").push_bind(department);
    }
    if let Some(patient) = &filter.patient {
        q.push(" AND patient = ").push_bind(patient);
    }
    if let Some(raised_by) = &filter.raised_by {
        q.push(" AND raised_by = ").push_bind(raised_by);
    }
    q.push(" ORDER BY severity_rank DESC, raised_at, alert_id LIMIT ")
        .push_bind(filter.limit)
        .push(" OFFSET ")
        .push_bind(filter.offset);
    let rows = q.build().fetch_all(&mut *conn).await?;
    rows.iter().map(alert_row).collect()
}

/// The due time the policy will arm when it has not yet: the last raise or escalation plus
/// the hospital's deadline for the alert's severity (`NULL` without deadlines).
fn push_expected_due(q: &mut QueryBuilder<Postgres>, deadlines: Option<EscalationSeconds>) {
    match deadlines {
        Some(d) => {
            q.push("coalesce(escalated_at, raised_at) + make_interval(secs => CASE severity");
            for (name, seconds) in [
                ("critical", d.critical),
                ("high", d.high),
                ("medium", d.medium),
                ("low", d.low),
            ] {
                q.push(" WHEN ")
                    .push_bind(name)
                    .push(" THEN ")
                    .push_bind(seconds);
            }
            q.push(" END))");
        }
        None => {
            q.push("NULL)");
        }
    }
}

fn alert_row(r: &sqlx::postgres::PgRow) -> Result<AlertRow, sqlx::Error> {
    Ok(AlertRow {
        alert_id: r.try_get("alert_id")?,
        severity: r.try_get("severity")?,
        status: r.try_get("status")?,
        message: r.try_get("message")?,
        department: r.try_get("department")?,
        patient: r.try_get("patient")?,
        level: r.try_get("level")?,
        raised_by: r.try_get("raised_by")?,
        raised_at: r.try_get("raised_at")?,
        acknowledged_by: r.try_get("acknowledged_by")?,
        acknowledged_at: r.try_get("acknowledged_at")?,
        resolved_at: r.try_get("resolved_at")?,
        age_seconds: r.try_get("age_seconds")?,
        escalation_due_at: r.try_get("escalation_due_at")?,
    })
}

/// Open alerts per severity.
pub async fn counts(
    conn: &mut PgConnection,
    hospital: &str,
) -> Result<SeverityCounts, sqlx::Error> {
    // Grouped by rank so the partial "open alerts" index answers it with an index-only scan.
    let rows: Vec<(i16, i64)> = sqlx::query_as(
        "SELECT severity_rank, count(*) FROM alert_board WHERE hospital = $1 \
         AND status IN ('raised', 'acknowledged') GROUP BY severity_rank",
    )
    .bind(hospital)
    .fetch_all(&mut *conn)
    .await?;
    let mut counts = SeverityCounts::default();
    for (rank, n) in rows {
        match rank {
            4 => counts.critical = n,
            3 => counts.high = n,
            2 => counts.medium = n,
            _ => counts.low = n,
        }
    }
    Ok(counts)
}

/// Mean seconds from raise to acknowledge and from raise to resolve (None without data).
pub async fn response_times(
    conn: &mut PgConnection,
    hospital: &str,
) -> Result<(Option<f64>, Option<f64>), sqlx::Error> {
    let row = sqlx::query(
        "SELECT avg(extract(epoch FROM acknowledged_at - raised_at))::float8 AS ack, \
                avg(extract(epoch FROM resolved_at - raised_at))::float8 AS res \
         FROM alert_board WHERE hospital = $1",
    )
    .bind(hospital)
    .fetch_one(&mut *conn)
    .await?;
    Ok((row.try_get("ack")?, row.try_get("res")?))
}
