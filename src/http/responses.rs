//! OpenAPI descriptions of the error responses every endpoint can give. Bodies are
//! [`Problem`] documents.

use super::problem::Problem;

/// Errors of a command endpoint.
#[allow(dead_code)] // Only read by the OpenAPI generator.
#[derive(utoipa::IntoResponses)]
pub enum CommandErrors {
    /// Malformed JSON, or a missing or invalid field (named in `field`).
    #[response(status = 400, content_type = "application/problem+json")]
    BadRequest(#[to_schema] Problem),
    /// Missing, invalid or expired token.
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(#[to_schema] Problem),
    /// Another hospital, or a role that may not do this.
    #[response(status = 403, content_type = "application/problem+json")]
    Forbidden(#[to_schema] Problem),
    /// Unknown aggregate.
    #[response(status = 404, content_type = "application/problem+json")]
    NotFound(#[to_schema] Problem),
    /// Rejected transition, concurrency conflict, or `idempotency_key_in_flight`: an earlier
    /// request with the same Idempotency-Key is still running (see `Retry-After`).
    #[response(status = 409, content_type = "application/problem+json")]
    Conflict(#[to_schema] Problem),
    /// Body larger than 64 KiB.
    #[response(status = 413, content_type = "application/problem+json")]
    PayloadTooLarge(#[to_schema] Problem),
    /// Body is not application/json.
    #[response(status = 415, content_type = "application/problem+json")]
    UnsupportedMediaType(#[to_schema] Problem),
    /// Idempotency-Key reused with a different request.
    #[response(status = 422, content_type = "application/problem+json")]
    Unprocessable(#[to_schema] Problem),
    /// Rate limited; see `Retry-After`.
    #[response(status = 429, content_type = "application/problem+json")]
    RateLimited(#[to_schema] Problem),
    /// `unavailable`: the database is unreachable and nothing was persisted; or
    /// `outcome_unknown`: the database failed around the commit, and whether the command
    /// (`command_id` in the body) committed is not known yet — retry with the same
    /// Idempotency-Key, or ask `GET commands/{command_id}`. See `Retry-After`.
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(#[to_schema] Problem),
}

/// Errors of a read endpoint.
#[allow(dead_code)] // Only read by the OpenAPI generator.
#[derive(utoipa::IntoResponses)]
pub enum ReadErrors {
    /// Invalid query parameter.
    #[response(status = 400, content_type = "application/problem+json")]
    BadRequest(#[to_schema] Problem),
    /// Missing, invalid or expired token.
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(#[to_schema] Problem),
    /// Another hospital, or a role that may not read this.
    #[response(status = 403, content_type = "application/problem+json")]
    Forbidden(#[to_schema] Problem),
    /// Database unreachable.
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(#[to_schema] Problem),
}
