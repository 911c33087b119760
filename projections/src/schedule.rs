//! The schedule: every appointment of a hospital with its slot, clinician and status
//! (`scheduled`, `checked_in` or `cancelled`).
//!
//! Table `schedule` (migration `*_create_more_read_models.sql`), one row per appointment,
//! keyed by (hospital, appointment id), indexed by start for "a day of the hospital" and by
//! (clinician, start) for "a day of one clinician".

use aggregates::appointment::AppointmentEvent;
use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use sqlx::{PgConnection, Postgres, QueryBuilder, Row};

use crate::engine::{ApplyFuture, ReadModel, Tables};
use crate::event::{DomainEvent, Envelope};

/// The schedule read model.
pub struct Schedule;

/// Its code version: bump when `apply` changes, and the server rebuilds it at start.
pub const VERSION: i32 = 1;

/// Every status an appointment can have here.
pub const STATUSES: [&str; 3] = ["scheduled", "checked_in", "cancelled"];

impl ReadModel for Schedule {
    fn name(&self) -> &'static str {
        "schedule"
    }

    fn version(&self) -> i32 {
        VERSION
    }

    fn tables(&self) -> &'static [&'static str] {
        &["schedule"]
    }

    fn kinds(&self) -> Option<&'static [&'static str]> {
        Some(&[crate::event::kinds::APPOINTMENT])
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
            let DomainEvent::Appointment(event) = &e.event else {
                return Ok(());
            };
            let table = tables.get("schedule")?;
            match event {
                AppointmentEvent::AppointmentScheduled {
                    patient,
                    clinician,
                    start,
                    end,
                    reason,
                    at,
                    ..
                } => {
                    sqlx::query(&format!(
                        "INSERT INTO {table} (hospital, appointment_id, patient, clinician, \
                         starts_at, ends_at, status, reason, updated_at, last_position) \
                         VALUES ($1, $2, $3, $4, $5, $6, 'scheduled', $7, $8, $9) \
                         ON CONFLICT (hospital, appointment_id) DO NOTHING"
                    ))
                    .bind(&e.hospital)
                    .bind(&e.aggregate_id)
                    .bind(patient.as_str())
                    .bind(clinician.as_str())
                    .bind(start)
                    .bind(end)
                    .bind(reason.as_ref().map(|r| r.as_str()))
                    .bind(at)
                    .bind(e.position)
                    .execute(&mut *tx)
                    .await?;
                }
                AppointmentEvent::AppointmentRescheduled { start, end, at, .. } => {
                    sqlx::query(&format!(
                        "UPDATE {table} SET starts_at = $3, ends_at = $4, updated_at = $5, \
                         last_position = $6 WHERE hospital = $1 AND appointment_id = $2"
                    ))
                    .bind(&e.hospital)
                    .bind(&e.aggregate_id)
                    .bind(start)
                    .bind(end)
                    .bind(at)
                    .bind(e.position)
                    .execute(&mut *tx)
                    .await?;
                }
                AppointmentEvent::PatientCheckedIn { at, .. } => {
                    sqlx::query(&format!(
                        "UPDATE {table} SET status = 'checked_in', checked_in_at = $3, \
                         updated_at = $3, last_position = $4 \
                         WHERE hospital = $1 AND appointment_id = $2"
                    ))
                    .bind(&e.hospital)
                    .bind(&e.aggregate_id)
                    .bind(at)
                    .bind(e.position)
                    .execute(&mut *tx)
                    .await?;
                }
                AppointmentEvent::AppointmentCancelled { reason, at, .. } => {
                    sqlx::query(&format!(
                        "UPDATE {table} SET status = 'cancelled', cancel_reason = $3, \
                         updated_at = $4, last_position = $5 \
                         WHERE hospital = $1 AND appointment_id = $2"
                    ))
                    .bind(&e.hospital)
                    .bind(&e.aggregate_id)
                    .bind(reason.as_str())
                    .bind(at)
                    .bind(e.position)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            Ok(())
        })
    }
}

/// One appointment.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct AppointmentRow {
    pub appointment_id: String,
    pub patient: String,
    pub clinician: String,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    /// `scheduled`, `checked_in` or `cancelled`.
    pub status: String,
    /// Why the patient comes, if given.
    pub reason: Option<String>,
    pub checked_in_at: Option<DateTime<Utc>>,
    /// Why it was cancelled, if it was.
    pub cancel_reason: Option<String>,
    pub updated_at: DateTime<Utc>,
}

/// The UTC day `date` as a half-open interval of instants: `[00:00, next day's 00:00)`;
/// `None` for the last day chrono can represent (it has no next day).
pub fn utc_day(date: NaiveDate) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let next = date.succ_opt()?;
    let midnight = |d: NaiveDate| d.and_time(chrono::NaiveTime::MIN).and_utc();
    Some((midnight(date), midnight(next)))
}

/// Which appointments a schedule holds.
#[derive(Clone, Debug)]
pub struct ScheduleFilter {
    /// Appointments starting at or after this instant...
    pub from: DateTime<Utc>,
    /// ...and before this one.
    pub until: DateTime<Utc>,
    /// Only this clinician's.
    pub clinician: Option<String>,
    /// Only those with this status.
    pub status: Option<String>,
    pub limit: i64,
    pub offset: i64,
}

/// A hospital's appointments matching `filter`, in start order.
pub async fn list(
    conn: &mut PgConnection,
    hospital: &str,
    filter: &ScheduleFilter,
) -> Result<Vec<AppointmentRow>, sqlx::Error> {
    let mut q: QueryBuilder<Postgres> = QueryBuilder::new(
        "SELECT appointment_id, patient, clinician, starts_at, ends_at, status, reason, \
         checked_in_at, cancel_reason, updated_at FROM schedule WHERE hospital = ",
    );
    q.push_bind(hospital);
    if let Some(clinician) = &filter.clinician {
        q.push(" AND clinician = ").push_bind(clinician);
    }
    q.push(" AND starts_at >= ")
        .push_bind(filter.from)
        .push(" AND starts_at < ")
        .push_bind(filter.until);
    if let Some(status) = &filter.status {
        q.push(" AND status = ").push_bind(status);
    }
    q.push(" ORDER BY starts_at, appointment_id LIMIT ")
        .push_bind(filter.limit)
        .push(" OFFSET ")
        .push_bind(filter.offset);
    let rows = q.build().fetch_all(&mut *conn).await?;
    rows.iter()
        .map(|r| {
            Ok(AppointmentRow {
                appointment_id: r.try_get("appointment_id")?,
                patient: r.try_get("patient")?,
                clinician: r.try_get("clinician")?,
                starts_at: r.try_get("starts_at")?,
                ends_at: r.try_get("ends_at")?,
                status: r.try_get("status")?,
                reason: r.try_get("reason")?,
                checked_in_at: r.try_get("checked_in_at")?,
                cancel_reason: r.try_get("cancel_reason")?,
                updated_at: r.try_get("updated_at")?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_utc_day_runs_from_midnight_to_the_next_midnight() {
        let (from, until) = utc_day(NaiveDate::from_ymd_opt(2026, 3, 14).unwrap()).unwrap();
        assert_eq!(from.to_rfc3339(), "2026-03-14T00:00:00+00:00");
        assert_eq!(until.to_rfc3339(), "2026-03-15T00:00:00+00:00");
    }

    #[test]
    fn the_last_day_of_a_year_ends_on_new_years_day() {
        let (_, until) = utc_day(NaiveDate::from_ymd_opt(2026, 12, 31).unwrap()).unwrap();
        assert_eq!(until.to_rfc3339(), "2027-01-01T00:00:00+00:00");
    }

    #[test]
    fn the_last_representable_day_has_no_interval() {
        assert_eq!(utc_day(NaiveDate::MAX), None);
    }
}
