//! `POST /api/hospitals/{hospital}/vitals:batch`: many readings, for many patients, in one
//! request and one transaction.
//!
//! Two bodies on one path, told apart by `Content-Type`:
//! - `application/json`: [`VitalsBatch`], Vigil's own reading fields per entry;
//! - `application/fhir+json`: a FHIR `Bundle` of vital-sign `Observation`s, mapped by the
//!   pure [`aggregates::vitals::fhir`] module (LOINC codes, UCUM units, patient references).
//!
//! Everything about the batch is checked before anything is written, and one bad entry
//! refuses the whole batch with a problem naming it (`field` is the JSON path with the entry's
//! index, e.g. `readings[3].heart_rate` or `entry[2].resource.valueQuantity.code`; a FHIR
//! entry's `fullUrl` is in `detail`). An accepted batch is one transaction, each reading its
//! own `VitalsRecorded` event at its own position ([`crate::command::vitals_batch`]); an
//! `Idempotency-Key` covers the whole batch exactly as it covers one command.

use std::time::Instant;

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use aggregates::types::{HospitalId, PatientId, UserId};
use aggregates::vitals::fhir::{self, FhirError};
use aggregates::vitals::{OutOfRange, VitalSign, VitalSigns, VitalsError};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use uuid::Uuid;

use super::commands::{api_error, correlation_id, rejection};
use super::extract::{hospital_from_path, json_error, Authenticated};
use super::idempotency::{self, Begin};
use super::problem::ApiError;
use super::AppState;
use crate::access::{authorize, Action};
use crate::command::vitals_batch::{BatchCommitted, BatchReading, ReadingRefused};
use crate::command::{CommandContext, CommandError, CommandOutcome};
use crate::stream::Position;

/// The FHIR JSON media type (FHIR R4 §3.1.0.1.2).
pub const FHIR_JSON: &str = "application/fhir+json";

/// How far in the future a reading's `at` may lie (bedside clocks drift; see
/// [`fhir::MAX_CLOCK_SKEW`], the same bound for FHIR's `effectiveDateTime`).
pub const MAX_CLOCK_SKEW: chrono::TimeDelta = fhir::MAX_CLOCK_SKEW;

/// Body of `POST vitals:batch` as `application/json`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VitalsBatch {
    /// The readings, recorded in this order (which is their stream order); at least one, at
    /// most the server's limit (`VIGIL_VITALS_BATCH_MAX`, 1,000 by default).
    pub readings: Vec<BatchEntry>,
}

/// One reading of a batch: a patient and at least one sign, with the same ranges as
/// `POST /patients/{patient}/vitals`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchEntry {
    /// The patient (1..=64 of letters, digits, '.', '_', '-').
    #[schema(value_type = String, example = "mrn-1042")]
    pub patient: PatientId,
    /// When the reading was taken (RFC 3339); the time of the request if absent. At most
    /// 60 s in the future.
    pub at: Option<DateTime<Utc>>,
    /// Beats per minute (20..300).
    #[schema(example = 118)]
    pub heart_rate: Option<u16>,
    /// Systolic pressure, mmHg (40..300).
    pub systolic: Option<u16>,
    /// Diastolic pressure, mmHg (20..200, below systolic).
    pub diastolic: Option<u16>,
    /// Oxygen saturation, % (50..100).
    pub spo2: Option<u8>,
    /// Body temperature, °C (25..45).
    pub temperature_c: Option<f64>,
    /// Breaths per minute (4..80).
    pub respiratory_rate: Option<u16>,
}

/// Where one reading of the batch landed.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct RecordedEntry {
    /// The entry's index in the request (`readings[i]` or `entry[i]`).
    pub index: usize,
    /// The FHIR entry's `fullUrl`, when the request was a Bundle and the entry had one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub full_url: Option<String>,
    /// The patient.
    #[schema(value_type = String)]
    pub patient: String,
    /// Position of the reading's `VitalsRecorded` event in the hospital's stream.
    pub position: Position,
    /// The reading's number for its patient (1, 2, 3...).
    pub reading: i64,
    /// The signs outside their reference ranges (each raises an alert through the vitals
    /// policy unless one is already open).
    #[schema(value_type = Vec<FlaggedSign>)]
    pub out_of_range: Vec<OutOfRange>,
}

/// One sign outside its reference range, as the event's `out_of_range` holds it (for the
/// OpenAPI document; the value is the domain's [`OutOfRange`]).
#[allow(dead_code)] // Only read by the OpenAPI generator.
#[derive(ToSchema)]
pub struct FlaggedSign {
    /// `heart_rate`, `systolic`, `diastolic`, `spo2`, `temperature` or `respiratory_rate`.
    #[schema(example = "spo2")]
    pub sign: String,
    /// `low` or `high`.
    #[schema(example = "low")]
    pub deviation: String,
}

/// The answer to an accepted batch: every reading, in request order (= stream order).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct BatchOutcome {
    /// How many readings were recorded.
    pub count: usize,
    /// The first and last positions the batch occupies; positions between them all belong
    /// to it (one transaction held the hospital's stream for all of them).
    pub first_position: Position,
    /// See `first_position`.
    pub last_position: Position,
    /// One entry per reading, in request order.
    pub readings: Vec<RecordedEntry>,
}

/// One parsed, validated reading with what names it in answers and problems.
struct Parsed {
    reading: BatchReading,
    full_url: Option<String>,
    /// JSON path of the element that gave each sign (for problems).
    source: Source,
}

/// Where an entry's signs came from in the request.
enum Source {
    /// `readings[i]`: fields named like the signs.
    Native(usize),
    /// A FHIR entry: each sign's own element.
    Fhir(fhir::MappedReading),
}

impl Source {
    fn path_of(&self, sign: Option<VitalSign>) -> String {
        match (self, sign) {
            (Source::Native(i), Some(sign)) => format!("readings[{i}].{}", sign.field()),
            (Source::Native(i), None) => format!("readings[{i}]"),
            (Source::Fhir(mapped), Some(sign)) => mapped.path_of(sign),
            (Source::Fhir(mapped), None) => format!("entry[{}].resource", mapped.index),
        }
    }
}

/// Record many vital-sign readings, for many patients, in one transaction.
///
/// Body `application/json` ([`VitalsBatch`]) or `application/fhir+json` (a FHIR R4 `Bundle`
/// of type batch, transaction or collection whose entries are vital-sign `Observation`s:
/// LOINC 8867-4 heart rate, 8480-6/8462-4 blood pressure, also as components of panel
/// 85354-9, 59408-5/2708-6 SpO2, 8310-5 body temperature, 9279-1 respiratory rate; UCUM
/// units converted (`[degF]`, `K` → °C, `kPa` → mmHg, fraction `1` → %, `/s` → /min);
/// `subject.reference` `Patient/{id}` where `{id}` is the Vigil patient id). All or nothing:
/// one invalid or unmappable entry refuses the batch with a 400 whose `field` names the
/// entry's index and element (and `detail` a FHIR entry's `fullUrl`), and nothing is
/// recorded. An `Idempotency-Key` covers the whole batch.
#[utoipa::path(post, path = "/api/hospitals/{hospital}/vitals:batch", tag = "vitals",
    operation_id = "record_vitals_batch",
    params(("hospital" = String, Path, description = "Hospital id")),
    request_body(content(
        (VitalsBatch = "application/json"),
        (serde_json::Value = "application/fhir+json"),
    )),
    responses((status = 201, description = "Every reading recorded, in request order", body = BatchOutcome),
        super::responses::CommandErrors),
    security(("bearer" = [])))]
pub async fn record_batch(
    state: web::Data<AppState>,
    req: HttpRequest,
    auth: Authenticated,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let hospital = hospital_from_path(&path.into_inner())?;
    let identity = &auth.0;
    authorize(identity, &hospital, Action::RecordVitals)?;
    let kind = BodyKind::of(media_type(&req).as_deref())?;
    let body = read_body(&req, payload, state.ingest.batch_body_bytes()).await?;
    let parsed = kind.parse(&body, state.ingest.vitals_batch_max, Utc::now())?;
    validate(&parsed)?;

    state
        .command_limiter
        .check(&(hospital.clone(), identity.user.clone()), Instant::now())
        .map_err(|wait| ApiError::RateLimited {
            retry_after: wait.as_secs().max(1),
        })?;
    let digest: [u8; 32] = Sha256::digest(&body).into();
    let keyed = idempotency::from_request(&req, &digest)?;
    let command_id = match claim(&state, &hospital, &identity.user, keyed.as_ref()).await? {
        Begin::Run { command_id } => command_id,
        Begin::Replay { status, body } => return replay(status, body, &parsed),
    };
    let ctx = CommandContext {
        hospital: hospital.clone(),
        user: identity.user.clone(),
        role: identity.role,
        command_id,
        correlation_id: correlation_id(&req, command_id),
        causation_id: command_id,
    };
    let readings: Vec<BatchReading> = parsed.iter().map(|p| p.reading.clone()).collect();
    let result = state.bus.record_vitals_batch(&ctx, &readings).await;
    answer(&state, &ctx, keyed.as_ref(), result, &parsed).await
}

/// Which of the two bodies a request carries, from its `Content-Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BodyKind {
    /// `application/json`: a [`VitalsBatch`].
    Native,
    /// `application/fhir+json`: a FHIR `Bundle`.
    Fhir,
}

impl BodyKind {
    /// The kind for a media type's essence (see [`media_type`]); any other type, or none,
    /// is refused with 415 before the body is read.
    fn of(media_type: Option<&str>) -> Result<Self, ApiError> {
        match media_type {
            Some(FHIR_JSON) => Ok(Self::Fhir),
            Some("application/json") => Ok(Self::Native),
            _ => Err(ApiError::UnsupportedMediaType),
        }
    }

    /// The body's readings, parsed (not yet checked against the domain's ranges).
    fn parse(self, body: &[u8], limit: usize, now: DateTime<Utc>) -> Result<Vec<Parsed>, ApiError> {
        match self {
            Self::Fhir => parse_fhir(body, limit, now),
            Self::Native => parse_native(body, limit, now),
        }
    }
}

/// The command id to run with: a fresh one without a key, else what the key's state says
/// (run, or replay an earlier answer).
async fn claim(
    state: &AppState,
    hospital: &HospitalId,
    user: &UserId,
    keyed: Option<&idempotency::Keyed>,
) -> Result<Begin, ApiError> {
    match keyed {
        None => Ok(Begin::Run {
            command_id: Uuid::new_v4(),
        }),
        Some(keyed) => {
            idempotency::begin(
                &state.pool,
                &state.bus,
                hospital,
                user,
                keyed,
                StatusCode::CREATED.as_u16(),
            )
            .await
        }
    }
}

/// Answers the batch's run and settles its key: the answer stored on success, the key kept
/// (for the retry to resolve) when the outcome is unknown, released when nothing persisted.
async fn answer(
    state: &AppState,
    ctx: &CommandContext,
    keyed: Option<&idempotency::Keyed>,
    result: Result<BatchCommitted, CommandError<ReadingRefused>>,
    parsed: &[Parsed],
) -> Result<HttpResponse, ApiError> {
    let (pool, hospital, user, command_id) =
        (&state.pool, &ctx.hospital, &ctx.user, ctx.command_id);
    match result {
        Ok(committed) => {
            let outcome = outcome(&committed, parsed)?;
            let Some(keyed) = keyed else {
                // Serialized once, straight from the outcome (no `Value` tree of the batch).
                return Ok(HttpResponse::Created().json(&outcome));
            };
            let body =
                serde_json::to_value(&outcome).map_err(|e| ApiError::Internal(e.to_string()))?;
            idempotency::store_response(
                pool,
                hospital,
                user,
                &keyed.key,
                command_id,
                StatusCode::CREATED.as_u16(),
                &body,
            )
            .await;
            Ok(HttpResponse::Created().json(body))
        }
        Err(error) => {
            if let Some(keyed) = keyed {
                if matches!(error, CommandError::OutcomeUnknown { .. }) {
                    // Kept: the retry resolves this command id from the log.
                    idempotency::end_attempt(pool, hospital, user, &keyed.key, command_id).await;
                } else {
                    idempotency::release(pool, hospital, user, &keyed.key, command_id).await;
                }
            }
            Err(batch_error(error, parsed))
        }
    }
}

/// The media type's essence, lower-cased (`application/fhir+json; fhirVersion=4.0` →
/// `application/fhir+json`).
fn media_type(req: &HttpRequest) -> Option<String> {
    let value = req.headers().get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(value.split(';').next()?.trim().to_ascii_lowercase())
}

/// The raw body, refused past `limit` bytes before it is all read.
async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<web::Bytes, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::BadRequest {
            code: "unreadable_body",
            detail: format!("cannot read the request body: {e}"),
            field: None,
        })?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

fn check_count(count: usize, limit: usize, field: &str) -> Result<(), ApiError> {
    if count > limit {
        return Err(ApiError::BatchTooLarge { limit });
    }
    if count == 0 {
        return Err(ApiError::BadRequest {
            code: "batch_empty",
            detail: format!("{field} must hold at least one reading"),
            field: Some(field.to_owned()),
        });
    }
    Ok(())
}

/// The time of a reading: given (not too far ahead) or the request's.
fn reading_time(
    at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    field: impl FnOnce() -> String,
) -> Result<DateTime<Utc>, ApiError> {
    match at {
        Some(at) if at > now + MAX_CLOCK_SKEW => Err(ApiError::BadRequest {
            code: "reading_in_future",
            detail: format!(
                "the reading lies more than {} s in the future",
                MAX_CLOCK_SKEW.num_seconds()
            ),
            field: Some(field()),
        }),
        Some(at) => Ok(at),
        None => Ok(now),
    }
}

fn parse_native(body: &[u8], limit: usize, now: DateTime<Utc>) -> Result<Vec<Parsed>, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let batch: VitalsBatch =
        serde_path_to_error::deserialize(&mut deserializer).map_err(|e| json_error(e, body))?;
    deserializer.end().map_err(|e| ApiError::BadRequest {
        code: "malformed_json",
        detail: format!("malformed JSON: {e}"),
        field: None,
    })?;
    check_count(batch.readings.len(), limit, "readings")?;
    batch
        .readings
        .into_iter()
        .enumerate()
        .map(|(index, entry)| {
            let at = reading_time(entry.at, now, || format!("readings[{index}].at"))?;
            Ok(Parsed {
                reading: BatchReading {
                    patient: entry.patient,
                    signs: VitalSigns {
                        heart_rate: entry.heart_rate,
                        systolic: entry.systolic,
                        diastolic: entry.diastolic,
                        spo2: entry.spo2,
                        temperature_c: entry.temperature_c,
                        respiratory_rate: entry.respiratory_rate,
                    },
                    at,
                },
                full_url: None,
                source: Source::Native(index),
            })
        })
        .collect()
}

fn parse_fhir(body: &[u8], limit: usize, now: DateTime<Utc>) -> Result<Vec<Parsed>, ApiError> {
    let bundle: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| ApiError::BadRequest {
            code: "malformed_json",
            detail: format!("malformed JSON: {e}"),
            field: None,
        })?;
    let entries = bundle
        .get("entry")
        .and_then(|e| e.as_array())
        .map_or(0, Vec::len);
    check_count(entries, limit, "entry")?;
    let mapped = fhir::map_bundle(&bundle, now).map_err(fhir_problem)?;
    Ok(mapped
        .into_iter()
        .map(|m| Parsed {
            reading: BatchReading {
                patient: m.patient.clone(),
                signs: m.signs.clone(),
                at: m.at.unwrap_or(now),
            },
            full_url: m.full_url.clone(),
            source: Source::Fhir(m),
        })
        .collect())
}

/// A FHIR mapping failure as a problem naming the entry.
fn fhir_problem(error: FhirError) -> ApiError {
    let entry = match (error.index, &error.full_url) {
        (Some(i), Some(url)) => format!("entry {i} (fullUrl {url}): "),
        (Some(i), None) => format!("entry {i}: "),
        (None, _) => String::new(),
    };
    ApiError::BadRequest {
        code: error.code,
        detail: format!("{entry}{}: {}", error.path, error.reason),
        field: Some(error.path),
    }
}

/// The domain's checks on every reading, before anything is written.
fn validate(parsed: &[Parsed]) -> Result<(), ApiError> {
    for (index, entry) in parsed.iter().enumerate() {
        if let Err(error) = entry.reading.signs.validate() {
            return Err(entry_problem(ReadingRefused { index, error }, entry));
        }
    }
    Ok(())
}

/// A refused reading as a 400 naming its entry and field.
fn entry_problem(refused: ReadingRefused, entry: &Parsed) -> ApiError {
    let sign = match refused.error {
        VitalsError::OutOfPhysicalRange { sign } => Some(sign),
        VitalsError::DiastolicNotBelowSystolic => Some(VitalSign::Diastolic),
        VitalsError::NoValues | VitalsError::PatientMismatch => None,
    };
    let field = entry.source.path_of(sign);
    let name = match &entry.full_url {
        Some(url) => format!("entry {} (fullUrl {url})", refused.index),
        None => format!("reading {}", refused.index),
    };
    match rejection(refused.error) {
        ApiError::BadRequest { code, detail, .. } => ApiError::BadRequest {
            code,
            detail: format!("{name}: {detail}"),
            field: Some(field),
        },
        other => other,
    }
}

fn batch_error(error: CommandError<ReadingRefused>, parsed: &[Parsed]) -> ApiError {
    let refused = |refused: ReadingRefused| match parsed.get(refused.index) {
        Some(entry) => entry_problem(refused, entry),
        None => rejection(refused.error),
    };
    api_error(
        error,
        refused,
        "readings of these patients were recorded concurrently; retry",
    )
}

/// The answer for a committed batch, entry for entry with the request.
fn outcome(committed: &BatchCommitted, parsed: &[Parsed]) -> Result<BatchOutcome, ApiError> {
    if committed.readings.len() != parsed.len() {
        return Err(ApiError::Internal(format!(
            "a batch of {} readings committed {} events",
            parsed.len(),
            committed.readings.len()
        )));
    }
    let readings: Vec<RecordedEntry> = committed
        .readings
        .iter()
        .zip(parsed)
        .enumerate()
        .map(|(index, (recorded, entry))| RecordedEntry {
            index,
            full_url: entry.full_url.clone(),
            patient: entry.reading.patient.to_string(),
            position: recorded.position,
            reading: recorded.reading,
            out_of_range: entry.reading.signs.out_of_range(),
        })
        .collect();
    Ok(BatchOutcome {
        count: readings.len(),
        first_position: readings.first().map_or(0, |r| r.position),
        last_position: readings.last().map_or(0, |r| r.position),
        readings,
    })
}

/// Answers a keyed retry. The stored body is this endpoint's [`BatchOutcome`], except when
/// the first attempt's response was lost and the key was resolved from the log by the
/// generic idempotency path, which stores a [`CommandOutcome`]: its events are the batch's
/// readings in position order, which is request order, and the retry's request is the same
/// (its hash matched), so the batch answer is rebuilt exactly.
fn replay(
    status: u16,
    body: serde_json::Value,
    parsed: &[Parsed],
) -> Result<HttpResponse, ApiError> {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::CREATED);
    let body = match serde_json::from_value::<BatchOutcome>(body.clone()) {
        Ok(batch) => serde_json::to_value(batch),
        Err(_) => {
            let generic: CommandOutcome = serde_json::from_value(body)
                .map_err(|e| ApiError::Internal(format!("unreadable stored answer: {e}")))?;
            let committed = crate::command::vitals_batch::from_outcome(&generic);
            serde_json::to_value(outcome(&committed, parsed)?)
        }
    }
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(HttpResponse::build(status)
        .insert_header(("Idempotent-Replayed", "true"))
        .json(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_fhir_json_choose_the_body_and_anything_else_is_unsupported() {
        assert_eq!(
            BodyKind::of(Some("application/json")).ok(),
            Some(BodyKind::Native)
        );
        assert_eq!(BodyKind::of(Some(FHIR_JSON)).ok(), Some(BodyKind::Fhir));
        for other in [None, Some("text/plain"), Some("application/xml")] {
            assert!(matches!(
                BodyKind::of(other),
                Err(ApiError::UnsupportedMediaType)
            ));
        }
    }
}
