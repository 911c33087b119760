//! The alert board: every alert with its status, severity, department, age and escalation
//! level; counts of open alerts per severity; time to acknowledge and to resolve.
//!
//! Table `alert_board` (migration `*_create_read_models.sql`), one row per alert, keyed by
//! (hospital, alert id), indexed for "a hospital's alerts by status, most severe first".

use aggregates::alert::{AlertEvent, Severity};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder, Row};

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
            let table = tables.get("alert_board");
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
pub async fn list(
    conn: &mut PgConnection,
    hospital: &str,
    filter: &BoardFilter,
) -> Result<Vec<AlertRow>, sqlx::Error> {
    let mut q: QueryBuilder<Postgres> = QueryBuilder::new(
        "SELECT alert_id, severity, status, message, department, patient, level, raised_by, raised_at, \
         acknowledged_by, acknowledged_at, resolved_at, \
         extract(epoch FROM clock_timestamp() - raised_at)::float8 AS age_seconds \
         FROM alert_board WHERE hospital = ",
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
    rows.iter()
        .map(|r| {
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
            })
        })
        .collect()
}

/// Open alerts per severity.
pub async fn counts(
    conn: &mut PgConnection,
    hospital: &str,
) -> Result<SeverityCounts, sqlx::Error> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT severity, count(*) FROM alert_board WHERE hospital = $1 \
         AND status IN ('raised', 'acknowledged') GROUP BY severity",
    )
    .bind(hospital)
    .fetch_all(&mut *conn)
    .await?;
    let mut counts = SeverityCounts::default();
    for (severity, n) in rows {
        match severity.as_str() {
            "critical" => counts.critical = n,
            "high" => counts.high = n,
            "medium" => counts.medium = n,
            _ => counts.low = n,
        }
    }
    Ok(counts)
}

/// Mean seconds from raise to acknowledge and from raise to resolve (None without data).
pub async fn response_times(
    pool: &PgPool,
    hospital: &str,
) -> Result<(Option<f64>, Option<f64>), sqlx::Error> {
    let row = sqlx::query(
        "SELECT avg(extract(epoch FROM acknowledged_at - raised_at))::float8 AS ack, \
                avg(extract(epoch FROM resolved_at - raised_at))::float8 AS res \
         FROM alert_board WHERE hospital = $1",
    )
    .bind(hospital)
    .fetch_one(pool)
    .await?;
    Ok((row.try_get("ack")?, row.try_get("res")?))
}
