//! Errors at the HTTP edge, rendered as RFC 9457 `application/problem+json`.
//!
//! Every failure a client can cause has a status and a stable machine-readable `code`
//! (also the last segment of `type`). Server faults are logged with detail and answered
//! with a generic 500 that leaks nothing.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::AuthError;

/// Prefix of every problem `type` URI.
pub const PROBLEM_TYPE_PREFIX: &str = "urn:vigil:problem:";

/// Seconds an `outcome_unknown` answer asks a client to wait: about one PostgreSQL restart.
pub const OUTCOME_UNKNOWN_RETRY_AFTER: u64 = 1;

/// A problem details document (RFC 9457), as sent to clients.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// `urn:vigil:problem:<code>`.
    #[serde(rename = "type")]
    pub problem_type: String,
    /// Short summary of the problem class.
    pub title: &'static str,
    /// HTTP status.
    pub status: u16,
    /// Human explanation of this occurrence.
    pub detail: String,
    /// Stable machine-readable code.
    pub code: String,
    /// The offending request field (JSON path), for validation errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Seconds to wait before retrying (429, 409 `idempotency_key_in_flight`, 503
    /// `outcome_unknown`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
    /// The command whose outcome is unknown (`outcome_unknown`): ask
    /// `GET /api/hospitals/{hospital}/commands/{command_id}` later, or retry with the same
    /// `Idempotency-Key`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command_id: Option<String>,
}

/// Every way a request can fail.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: malformed JSON, a missing or invalid field, a bad query or path parameter.
    #[error("{detail}")]
    BadRequest {
        code: &'static str,
        detail: String,
        field: Option<String>,
    },
    /// 401: missing, invalid or expired token.
    #[error(transparent)]
    Unauthorized(#[from] AuthError),
    /// 403: another hospital, or a role that may not do this.
    #[error("{detail}")]
    Forbidden { code: &'static str, detail: String },
    /// 404: unknown aggregate or route.
    #[error("{detail}")]
    NotFound { code: &'static str, detail: String },
    /// 405: the route exists but not with this method. `allow` lists the methods it has, sent
    /// as the `Allow` header RFC 9110 §15.5.6 requires.
    #[error("method not allowed: this resource accepts {allow}")]
    MethodNotAllowed { allow: &'static str },
    /// 409: a rejected state transition or a concurrency conflict.
    #[error("{detail}")]
    Conflict { code: &'static str, detail: String },
    /// 409: an earlier request with the same `Idempotency-Key` is still running.
    #[error(
        "a request with this Idempotency-Key is still being processed; retry in {retry_after} s"
    )]
    KeyInFlight { retry_after: u64 },
    /// 413: body larger than the limit.
    #[error("request body exceeds {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// 413: a batch with more entries than the configured limit (`VIGIL_VITALS_BATCH_MAX`).
    #[error("a batch may carry at most {limit} readings")]
    BatchTooLarge { limit: usize },
    /// 415: not `application/json`.
    #[error("content type must be application/json")]
    UnsupportedMediaType,
    /// 422: an `Idempotency-Key` reused with a different request.
    #[error("{detail}")]
    Unprocessable { code: &'static str, detail: String },
    /// 429: rate limited.
    #[error("rate limit exceeded; retry in {retry_after} s")]
    RateLimited { retry_after: u64 },
    /// 429: the user already holds the most realtime connections allowed (WebSocket and SSE
    /// together); distinct from `rate_limited` so a client closes a connection rather than
    /// waiting and retrying a command.
    #[error("at most {limit} realtime connections per user; close one first")]
    TooManyConnections { limit: u32, retry_after: u64 },
    /// 503: the database is unreachable.
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// 503: the database failed around the commit and the command may or may not have
    /// committed. Unlike [`ApiError::Unavailable`], this does not say "nothing persisted".
    #[error("the database failed while the command was committing; whether command {command_id} committed is not known yet")]
    OutcomeUnknown { command_id: uuid::Uuid },
    /// 500: a server fault (logged, never detailed to the client).
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// A 400 naming the offending field.
    pub fn invalid_field(field: impl Into<String>, detail: impl Into<String>) -> Self {
        ApiError::BadRequest {
            code: "invalid_field",
            detail: detail.into(),
            field: Some(field.into()),
        }
    }

    /// A 403 for a role that may not perform an action.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        ApiError::Forbidden {
            code: "forbidden",
            detail: detail.into(),
        }
    }

    /// Wraps a database error: unreachable → 503, anything else → 500.
    pub fn database(error: sqlx::Error) -> Self {
        match error {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                ApiError::Unavailable("database unreachable".into())
            }
            // admin_shutdown, cannot_connect_now: PostgreSQL is restarting.
            sqlx::Error::Database(db)
                if matches!(db.code().as_deref(), Some("57P01" | "57P03")) =>
            {
                ApiError::Unavailable("database restarting".into())
            }
            other => ApiError::Internal(other.to_string()),
        }
    }

    fn code(&self) -> &str {
        match self {
            ApiError::BadRequest { code, .. }
            | ApiError::Forbidden { code, .. }
            | ApiError::NotFound { code, .. }
            | ApiError::Conflict { code, .. }
            | ApiError::Unprocessable { code, .. } => code,
            ApiError::Unauthorized(auth) => auth.code(),
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::BatchTooLarge { .. } => "batch_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::TooManyConnections { .. } => "too_many_connections",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::KeyInFlight { .. } => "idempotency_key_in_flight",
            ApiError::OutcomeUnknown { .. } => "outcome_unknown",
            ApiError::Internal(_) => "internal_error",
        }
    }

    fn title(&self) -> &'static str {
        match self {
            ApiError::BadRequest { .. } => "Bad request",
            ApiError::Unauthorized(_) => "Unauthorized",
            ApiError::Forbidden { .. } => "Forbidden",
            ApiError::NotFound { .. } => "Not found",
            ApiError::MethodNotAllowed { .. } => "Method not allowed",
            ApiError::Conflict { .. } => "Conflict",
            ApiError::PayloadTooLarge { .. } | ApiError::BatchTooLarge { .. } => {
                "Payload too large"
            }
            ApiError::UnsupportedMediaType => "Unsupported media type",
            ApiError::Unprocessable { .. } => "Unprocessable request",
            ApiError::RateLimited { .. } | ApiError::TooManyConnections { .. } => {
                "Too many requests"
            }
            ApiError::Unavailable(_) => "Service unavailable",
            ApiError::KeyInFlight { .. } => "Conflict",
            ApiError::OutcomeUnknown { .. } => "Outcome unknown",
            ApiError::Internal(_) => "Internal server error",
        }
    }

    /// Seconds a client should wait before retrying, where the error says so.
    fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::RateLimited { retry_after }
            | ApiError::KeyInFlight { retry_after }
            | ApiError::TooManyConnections { retry_after, .. } => Some(*retry_after),
            ApiError::OutcomeUnknown { .. } => Some(OUTCOME_UNKNOWN_RETRY_AFTER),
            _ => None,
        }
    }

    /// The problem document for this error.
    pub fn problem(&self) -> Problem {
        let detail = match self {
            ApiError::Internal(_) => "an internal error occurred; it has been logged".to_owned(),
            other => other.to_string(),
        };
        Problem {
            problem_type: format!("{PROBLEM_TYPE_PREFIX}{}", self.code()),
            title: self.title(),
            status: self.status_code().as_u16(),
            detail,
            code: self.code().to_owned(),
            field: match self {
                ApiError::BadRequest { field, .. } => field.clone(),
                _ => None,
            },
            retry_after: self.retry_after(),
            command_id: match self {
                ApiError::OutcomeUnknown { command_id } => Some(command_id.to_string()),
                _ => None,
            },
        }
    }
}

impl From<crate::access::Denied> for ApiError {
    fn from(denied: crate::access::Denied) -> Self {
        let code = match denied {
            crate::access::Denied::WrongHospital { .. } => "wrong_hospital",
            crate::access::Denied::RoleForbidden { .. } => "role_forbidden",
        };
        ApiError::Forbidden {
            code,
            detail: denied.to_string(),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge { .. } | ApiError::BatchTooLarge { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::RateLimited { .. } | ApiError::TooManyConnections { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::Unavailable(_) | ApiError::OutcomeUnknown { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::KeyInFlight { .. } => StatusCode::CONFLICT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let ApiError::Internal(detail) = self {
            tracing::error!(%detail, "internal error");
        }
        let mut response = HttpResponse::build(self.status_code());
        response.insert_header((header::CONTENT_TYPE, "application/problem+json"));
        match self {
            ApiError::Unauthorized(_) => {
                response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            ApiError::MethodNotAllowed { allow } => {
                response.insert_header((header::ALLOW, *allow));
            }
            _ => {}
        }
        if let Some(retry_after) = self.retry_after() {
            response.insert_header((header::RETRY_AFTER, retry_after.to_string()));
        }
        // Serializing this struct cannot fail (strings and integers only).
        let body = serde_json::to_vec(&self.problem()).unwrap_or_default();
        response.body(body)
    }
}
