//! Recording a patient's vital signs.

use actix_web::{web, HttpRequest, HttpResponse};
use aggregates::types::PatientId;
use aggregates::vitals::{PatientVitals, VitalSigns, VitalsCommand};
use chrono::Utc;
use serde::Deserialize;
use utoipa::ToSchema;

use super::commands::{dispatch, CommandCall, Target};
use super::extract::{Authenticated, JsonBody};
use super::problem::ApiError;
use super::responses::CommandErrors;
use super::AppState;
use crate::access::Action;
use crate::command::CommandOutcome;

/// Body of `POST /patients/{patient}/vitals`: at least one sign. Each is checked against
/// physically possible ranges, and the reading is flagged against clinical normal ranges.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordVitals {
    /// Beats per minute (20..300).
    #[schema(example = 118)]
    pub heart_rate: Option<u16>,
    /// Systolic pressure, mmHg (40..300).
    #[schema(example = 150)]
    pub systolic: Option<u16>,
    /// Diastolic pressure, mmHg (20..200, below systolic).
    #[schema(example = 95)]
    pub diastolic: Option<u16>,
    /// Oxygen saturation, % (50..100).
    #[schema(example = 91)]
    pub spo2: Option<u8>,
    /// Body temperature, °C (25..45).
    #[schema(example = 38.6)]
    pub temperature_c: Option<f64>,
    /// Breaths per minute (4..80).
    #[schema(example = 22)]
    pub respiratory_rate: Option<u16>,
}

/// Record a vital-signs reading for a patient.
#[utoipa::path(post, path = "/api/hospitals/{hospital}/patients/{patient}/vitals", tag = "vitals",
    params(("hospital" = String, Path, description = "Hospital id"), ("patient" = String, Path, description = "Patient id")),
    request_body = RecordVitals,
    responses((status = 201, description = "Reading recorded", body = CommandOutcome), CommandErrors),
    security(("bearer" = [])))]
pub async fn record(
    state: web::Data<AppState>,
    req: HttpRequest,
    auth: Authenticated,
    path: web::Path<(String, String)>,
    body: JsonBody<RecordVitals>,
) -> Result<HttpResponse, ApiError> {
    let (hospital, patient) = path.into_inner();
    let call = CommandCall::new(&req, &auth, &hospital, Action::RecordVitals, body.digest)?;
    let patient = PatientId::parse(&patient)
        .map_err(|e| ApiError::invalid_field("patient", e.to_string()))?;
    let b = body.value;
    let signs = VitalSigns {
        heart_rate: b.heart_rate,
        systolic: b.systolic,
        diastolic: b.diastolic,
        spo2: b.spo2,
        temperature_c: b.temperature_c,
        respiratory_rate: b.respiratory_rate,
    };
    let at = Utc::now();
    let id = patient.to_string();
    dispatch::<PatientVitals>(&state, call, Target::Record(id), |ctx| {
        VitalsCommand::Record {
            patient: patient.clone(),
            signs: signs.clone(),
            by: ctx.user.clone(),
            at,
        }
    })
    .await
}
