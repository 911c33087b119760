//! The schedule over the `schedule` read model: one UTC day of a hospital's appointments
//! (optionally one clinician's, or one status), in start order.
//!
//! Field workers (CHW, ASHA) may not read appointments (see `reads_access`).

use actix_web::{web, HttpResponse};
use aggregates::routing::Category;
use chrono::{NaiveDate, Utc};
use projections::schedule::{self, AppointmentRow, ScheduleFilter, STATUSES};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{hospital_from_path, Authenticated, Query};
use super::problem::ApiError;
use super::reads::{page, snapshot, MAX_PAGE};
use super::reads_access::{confine, one_of, user_param};
use super::responses::ReadErrors;
use super::AppState;
use crate::access::authorize;
use crate::access::Action;

/// The read model this endpoint reads.
const MODEL: &str = "schedule";

/// Query of `GET /appointments`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AppointmentsQuery {
    /// The day, `YYYY-MM-DD`, **in UTC**: appointments starting from 00:00:00Z that day
    /// until 00:00:00Z the next. Clients in other time zones ask for each UTC day their
    /// local day overlaps. Default: today (UTC).
    pub date: Option<String>,
    /// Only this clinician's appointments.
    pub clinician: Option<String>,
    /// `scheduled`, `checked_in` or `cancelled`; default: all.
    pub status: Option<String>,
    /// Page size (1..500, default 500: a whole day).
    pub limit: Option<i64>,
    /// Rows to skip.
    pub offset: Option<i64>,
    /// Wait until the schedule reflects this stream position (read-your-writes).
    pub min_position: Option<i64>,
}

/// A day of the schedule.
#[derive(Debug, Serialize, ToSchema)]
pub struct SchedulePage {
    /// Stream position the schedule reflects; subscribe with `last_event_id = as_of`.
    pub as_of: i64,
    /// The UTC day shown.
    #[schema(value_type = String, example = "2026-03-14")]
    pub date: NaiveDate,
    /// Appointments starting that day, in start order: `appointment_id, patient, clinician,
    /// starts_at, ends_at, status, reason, checked_in_at, cancel_reason, updated_at`.
    #[schema(value_type = Vec<Object>)]
    pub appointments: Vec<AppointmentRow>,
}

/// Parses the `date` parameter (a UTC day), defaulting to today.
fn day(raw: Option<&str>) -> Result<NaiveDate, ApiError> {
    match raw {
        None => Ok(Utc::now().date_naive()),
        Some(raw) => NaiveDate::parse_from_str(raw, "%Y-%m-%d")
            .map_err(|_| ApiError::invalid_field("date", "must be a date as YYYY-MM-DD (UTC)")),
    }
}

/// One UTC day of the hospital's appointments, in start order.
#[utoipa::path(get, path = "/api/hospitals/{hospital}/appointments", tag = "appointments",
    params(("hospital" = String, Path, description = "Hospital id"), AppointmentsQuery),
    responses((status = 200, description = "The day's appointments", body = SchedulePage), ReadErrors),
    security(("bearer" = [])))]
#[tracing::instrument(name = "read_schedule", skip_all, fields(user = %auth.0.user))]
pub async fn list(
    state: web::Data<AppState>,
    auth: Authenticated,
    path: web::Path<String>,
    query: Query<AppointmentsQuery>,
) -> Result<HttpResponse, ApiError> {
    let hospital = hospital_from_path(&path)?;
    authorize(&auth.0, &hospital, Action::ReadEvents)?;
    // Appointments are all or nothing per role: no role is confined to its own.
    confine(&auth.0, Category::Appointments)?;
    let date = day(query.date.as_deref())?;
    let (from, until) = schedule::utc_day(date)
        .ok_or_else(|| ApiError::invalid_field("date", "is out of range"))?;
    let clinician = user_param("clinician", query.clinician.as_deref())?;
    one_of("status", query.status.as_deref(), &STATUSES)?;
    let (limit, offset) = page(query.limit.or(Some(MAX_PAGE)), query.offset)?;
    let filter = ScheduleFilter {
        from,
        until,
        clinician: clinician.map(String::from),
        status: query.status.clone(),
        limit,
        offset,
    };
    let (mut tx, as_of) = snapshot(&state, MODEL, hospital.as_str(), query.min_position).await?;
    let appointments = schedule::list(&mut tx, hospital.as_str(), &filter)
        .await
        .map_err(ApiError::database)?;
    tx.commit().await.map_err(ApiError::database)?;
    Ok(HttpResponse::Ok().json(SchedulePage {
        as_of,
        date,
        appointments,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_date_is_a_calendar_day_in_iso_format() {
        assert_eq!(
            day(Some("2026-03-14")).unwrap(),
            NaiveDate::from_ymd_opt(2026, 3, 14).unwrap()
        );
        for bad in ["14/03/2026", "2026-02-30", "2026-03-14T00:00:00Z", ""] {
            let error = day(Some(bad)).unwrap_err();
            assert_eq!(error.problem().field.as_deref(), Some("date"), "{bad}");
        }
    }
}
