//! The patient view over the `patient_view` read model: a patient's latest vitals reading
//! with each sign flagged against its reference range, and their recent readings.
//!
//! Operators may not read vitals; field workers see only the readings they recorded (see
//! `reads_access`).

use std::collections::BTreeMap;

use actix_web::{web, HttpResponse};
use aggregates::routing::Category;
use aggregates::types::PatientId;
use projections::patient_view::{self, SignFlag, VitalsRow};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{hospital_from_path, Authenticated, Query};
use super::problem::ApiError;
use super::reads::{snapshot, MAX_PAGE};
use super::reads_access::confine;
use super::responses::ReadErrors;
use super::AppState;
use crate::access::authorize;
use crate::access::Action;

/// The read model this endpoint reads.
const MODEL: &str = "patient_view";

/// Readings returned when `history` is not given: a shift's worth at hourly observations.
pub const DEFAULT_HISTORY: i64 = 20;

/// Query of `GET /patients/{patient}`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PatientQuery {
    /// How many of the latest readings `history` holds (1..500, default 20).
    pub history: Option<i64>,
    /// Wait until the view reflects this stream position (read-your-writes).
    pub min_position: Option<i64>,
}

/// The latest reading, with a flag per measured sign.
#[derive(Debug, Serialize)]
pub struct LatestReading {
    /// The reading.
    #[serde(flatten)]
    pub reading: VitalsRow,
    /// Per measured sign (`heart_rate`, `systolic`, `diastolic`, `spo2`, `temperature_c`,
    /// `respiratory_rate`): `low`, `normal` or `high`, as recorded with the reading.
    pub flags: BTreeMap<&'static str, SignFlag>,
}

/// A patient's vitals.
#[derive(Debug, Serialize, ToSchema)]
pub struct PatientPage {
    /// Stream position the view reflects; subscribe with `last_event_id = as_of`.
    pub as_of: i64,
    /// The patient id.
    pub patient: String,
    /// The latest reading (`reading, heart_rate, systolic, diastolic, spo2, temperature_c,
    /// respiratory_rate, out_of_range, any_out_of_range, recorded_by, recorded_at` and
    /// `flags`), or `null` if there is none the caller may see.
    #[schema(value_type = Option<Object>)]
    pub latest: Option<LatestReading>,
    /// The latest `history` readings, newest first (the first is `latest`).
    #[schema(value_type = Vec<Object>)]
    pub history: Vec<VitalsRow>,
}

/// A patient's latest vitals, flagged, and their recent readings.
#[utoipa::path(get, path = "/api/hospitals/{hospital}/patients/{patient}", tag = "vitals",
    params(("hospital" = String, Path, description = "Hospital id"),
        ("patient" = String, Path, description = "Patient id"), PatientQuery),
    responses((status = 200, description = "The patient's vitals", body = PatientPage), ReadErrors),
    security(("bearer" = [])))]
#[tracing::instrument(name = "read_patient", skip_all, fields(user = %auth.0.user))]
pub async fn view(
    state: web::Data<AppState>,
    auth: Authenticated,
    path: web::Path<(String, String)>,
    query: Query<PatientQuery>,
) -> Result<HttpResponse, ApiError> {
    let (hospital, patient) = path.into_inner();
    let hospital = hospital_from_path(&hospital)?;
    authorize(&auth.0, &hospital, Action::ReadEvents)?;
    let recorded_by = confine(&auth.0, Category::Vitals)?;
    let patient = PatientId::parse(&patient)
        .map_err(|e| ApiError::invalid_field("patient", e.to_string()))?;
    let history = query.history.unwrap_or(DEFAULT_HISTORY);
    if !(1..=MAX_PAGE).contains(&history) {
        return Err(ApiError::invalid_field(
            "history",
            format!("must be between 1 and {MAX_PAGE}"),
        ));
    }
    let (mut tx, as_of) = snapshot(&state, MODEL, hospital.as_str(), query.min_position).await?;
    let readings = patient_view::history(
        &mut tx,
        hospital.as_str(),
        patient.as_str(),
        recorded_by.map(|u| u.as_str()),
        history,
    )
    .await
    .map_err(ApiError::database)?;
    tx.commit().await.map_err(ApiError::database)?;
    let latest = readings.first().map(|reading| LatestReading {
        flags: reading.flags(),
        reading: reading.clone(),
    });
    Ok(HttpResponse::Ok().json(PatientPage {
        as_of,
        patient: patient.to_string(),
        latest,
        history: readings,
    }))
}
