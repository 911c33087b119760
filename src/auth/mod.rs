//! Authentication: bearer JWTs verified with `jsonwebtoken`. What an authenticated user may
//! do is `access`'s question.
//!
//! A verified token becomes an [`Identity`]: the user, their hospital (the tenant) and their
//! role. Nothing past the HTTP edge ever sees a raw token.

pub mod keys;

use aggregates::types::{HospitalId, Role, UserId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use keys::{JwtKeys, KeyError};

/// The claims Vigil reads from a token. `hospital` and `role` are Vigil's own claims; they are
/// parsed into domain types, so a token naming an unknown role is invalid rather than a
/// user with no permissions.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Claims {
    /// The user id.
    pub sub: UserId,
    /// The tenant: every request is confined to this hospital.
    pub hospital: HospitalId,
    /// What the user may do (see `access::roles`).
    pub role: Role,
    /// Expiry, seconds since the epoch. Required.
    pub exp: i64,
    /// Issued-at, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    /// Issuer, checked when the server is configured with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Audience, checked when the server is configured with one. RFC 7519 §4.1.3 allows a
    /// single string or an array (many identity providers send `["vigil"]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
}

/// The `aud` claim in either of the shapes RFC 7519 §4.1.3 allows. The match against the
/// configured audience is jsonwebtoken's (any element equal); this type only has to accept
/// both shapes so that a valid token is not refused as malformed.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Audience {
    /// `"aud": "vigil"`.
    One(String),
    /// `"aud": ["vigil", "another-app"]`.
    Many(Vec<String>),
}

/// Who is making a request, established from a verified token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The acting user; recorded in every event's metadata.
    pub user: UserId,
    /// The user's hospital; requests for any other hospital are refused.
    pub hospital: HospitalId,
    /// The user's role.
    pub role: Role,
    /// When the token stops being valid; long-lived connections close at this instant.
    pub expires_at: DateTime<Utc>,
}

/// Why a request could not be authenticated. Each maps to a 401 with its own code.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization` header (or not a bearer one).
    #[error("missing bearer token: send `Authorization: Bearer <token>`")]
    Missing,
    /// The token's `exp` is in the past.
    #[error("the token has expired")]
    Expired,
    /// Bad signature, wrong algorithm, wrong issuer/audience, malformed claims.
    #[error("invalid token: {0}")]
    Invalid(String),
}

impl AuthError {
    /// Stable machine-readable code for problem+json and error frames.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing_token",
            AuthError::Expired => "token_expired",
            AuthError::Invalid(_) => "invalid_token",
        }
    }
}
