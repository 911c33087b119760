//! Request extractors: the bearer identity and a strict JSON body.
//!
//! Both fail with [`ApiError`], so every malformed request is answered with problem+json
//! that names what is wrong (for JSON, the offending field's path).

use std::future::{ready, Ready};

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest};
use aggregates::types::HospitalId;
use futures_util::future::LocalBoxFuture;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use super::problem::ApiError;
use super::AppState;
use crate::auth::{AuthError, Identity};
use crate::config::MAX_BODY_BYTES;

/// The caller, from a verified `Authorization: Bearer` token.
#[derive(Debug, Clone)]
pub struct Authenticated(pub Identity);

/// The bearer token of a request, if it carries one.
pub fn bearer_token(req: &HttpRequest) -> Option<&str> {
    bearer_token_in(req.headers())
}

/// The bearer token in `headers`' `Authorization` (for requests that are not an
/// [`HttpRequest`]: the WebSocket upgrade, handled before actix-web's router).
pub fn bearer_token_in(headers: &header::HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

impl FromRequest for Authenticated {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let result = match (req.app_data::<web::Data<AppState>>(), bearer_token(req)) {
            (None, _) => Err(ApiError::Internal("application state missing".into())),
            (Some(_), None) => Err(ApiError::Unauthorized(AuthError::Missing)),
            (Some(state), Some(token)) => state
                .keys
                .verify(token)
                .map(Authenticated)
                .map_err(ApiError::Unauthorized),
        };
        ready(result)
    }
}

/// Parses the `{hospital}` path segment.
pub fn hospital_from_path(raw: &str) -> Result<HospitalId, ApiError> {
    HospitalId::parse(raw).map_err(|e| ApiError::invalid_field("hospital", e.to_string()))
}

/// A JSON request body, deserialized strictly, with the SHA-256 of its raw bytes (used to
/// recognise an idempotent retry).
#[derive(Debug)]
pub struct JsonBody<T> {
    /// The parsed body.
    pub value: T,
    /// SHA-256 of the raw body.
    pub digest: [u8; 32],
}

fn is_json(req: &HttpRequest) -> bool {
    let Some(value) = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Turns a serde error (with its path) into a 400 naming the field. `body` tells a real
/// syntax error from serde_json's "expected value" for a well-formed value of the wrong
/// shape (e.g. a number where an enum's string belongs).
pub(crate) fn json_error(
    error: serde_path_to_error::Error<serde_json::Error>,
    body: &[u8],
) -> ApiError {
    let path = error.path().to_string();
    let inner = error.into_inner();
    let well_formed = || serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok();
    match inner.classify() {
        serde_json::error::Category::Syntax if path != "." && well_formed() => {
            ApiError::BadRequest {
                code: "invalid_field",
                detail: format!("{path}: value has the wrong type"),
                field: Some(path),
            }
        }
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
            ApiError::BadRequest {
                code: "malformed_json",
                detail: format!("malformed JSON: {inner}"),
                field: None,
            }
        }
        _ => {
            let message = inner.to_string();
            // A missing field is reported by serde at the parent's path; name the field.
            let field = message
                .strip_prefix("missing field `")
                .and_then(|rest| rest.split('`').next())
                .map(|name| {
                    if path == "." {
                        name.to_owned()
                    } else {
                        format!("{path}.{name}")
                    }
                })
                .unwrap_or(path);
            let detail = match message.rsplit_once(" at line ") {
                Some((head, _)) => head.to_owned(),
                None => message,
            };
            ApiError::BadRequest {
                code: "invalid_field",
                detail: format!("{field}: {detail}"),
                field: Some(field),
            }
        }
    }
}

/// Largest magnitude below which every integer is exactly an `f64` (2^53).
const EXACT_F64_INTEGER: f64 = 9_007_199_254_740_992.0;

/// Rewrites every number with no fractional part (`2070.0`) as an integer (`2070`), in place.
/// Fractions and floats too large to be exact integers are left alone (and still refused
/// where an integer is wanted).
fn integral_floats_as_integers(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Number(n) => {
            if let Some(f) = n.as_f64().filter(|_| n.is_f64()) {
                if f.fract() == 0.0 && f.abs() < EXACT_F64_INTEGER {
                    // In range by the check above: the cast is exact.
                    *value = Value::from(f as i64);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_floats_as_integers),
        Value::Object(map) => map.values_mut().for_each(integral_floats_as_integers),
        _ => {}
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for JsonBody<T> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let json = is_json(req);
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let mut payload = payload.take();
        Box::pin(async move {
            if declared.is_some_and(|len| len > MAX_BODY_BYTES) {
                return Err(ApiError::PayloadTooLarge {
                    limit: MAX_BODY_BYTES,
                });
            }
            if !json {
                return Err(ApiError::UnsupportedMediaType);
            }
            let mut body = web::BytesMut::new();
            while let Some(chunk) = payload.next().await {
                let chunk = chunk.map_err(|e| ApiError::BadRequest {
                    code: "unreadable_body",
                    detail: format!("cannot read the request body: {e}"),
                    field: None,
                })?;
                if body.len() + chunk.len() > MAX_BODY_BYTES {
                    return Err(ApiError::PayloadTooLarge {
                        limit: MAX_BODY_BYTES,
                    });
                }
                body.extend_from_slice(&chunk);
            }
            let mut deserializer = serde_json::Deserializer::from_slice(&body);
            let value: T = match serde_path_to_error::deserialize(&mut deserializer) {
                Ok(value) => {
                    deserializer.end().map_err(|e| ApiError::BadRequest {
                        code: "malformed_json",
                        detail: format!("malformed JSON: {e}"),
                        field: None,
                    })?;
                    value
                }
                // JSON has one number type: `2070.0` is the integer 2070 to JSON Schema (and
                // so to the OpenAPI document and its generators), but serde refuses it for an
                // integer field. Retry once with integral floats written as integers.
                Err(e)
                    if e.inner()
                        .to_string()
                        .starts_with("invalid type: floating point") =>
                {
                    let mut tree: serde_json::Value =
                        serde_json::from_slice(&body).map_err(|_| json_error(e, &body))?;
                    integral_floats_as_integers(&mut tree);
                    serde_path_to_error::deserialize(tree).map_err(|e| json_error(e, &body))?
                }
                Err(e) => return Err(json_error(e, &body)),
            };
            Ok(JsonBody {
                value,
                digest: Sha256::digest(&body).into(),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse<T: DeserializeOwned>(body: &str) -> Result<T, ApiError> {
        let mut de = serde_json::Deserializer::from_str(body);
        serde_path_to_error::deserialize(&mut de).map_err(|e| json_error(e, body.as_bytes()))
    }

    fn field_of(error: ApiError) -> Option<String> {
        match error {
            ApiError::BadRequest { field, .. } => field,
            other => panic!("not a 400: {other:?}"),
        }
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        severity: aggregates::alert::Severity,
        message: aggregates::types::AlertMessage,
    }

    #[test]
    fn an_unknown_enum_variant_names_its_field() {
        let e = parse::<Body>(r#"{"message":"x","severity":"apocalyptic"}"#).unwrap_err();
        assert_eq!(field_of(e).as_deref(), Some("severity"));
    }

    #[test]
    fn a_number_where_an_enum_belongs_names_its_field() {
        let e = parse::<Body>(r#"{"message":"x","severity":3}"#).unwrap_err();
        assert_eq!(field_of(e).as_deref(), Some("severity"));
    }

    #[test]
    fn truncated_json_is_malformed() {
        match parse::<Body>(r#"{"message":"x","severity":"#).unwrap_err() {
            ApiError::BadRequest { code, .. } => assert_eq!(code, "malformed_json"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_missing_field_is_named() {
        let e = parse::<Body>(r#"{"message":"x"}"#).unwrap_err();
        assert_eq!(field_of(e).as_deref(), Some("severity"));
    }

    #[test]
    fn an_invalid_value_type_names_its_field() {
        let e = parse::<Body>(r#"{"message":"", "severity":"low"}"#).unwrap_err();
        assert_eq!(field_of(e).as_deref(), Some("message"));
    }
}

/// A query string deserialized into `T`, failing with `400 invalid_query` whose `field` and
/// message name the offending parameter. actix-web's own `web::Query` reports only the
/// serde message ("invalid digit found in string"), which does not say which parameter.
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<T> std::ops::Deref for Query<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: DeserializeOwned> Query<T> {
    /// Parses `query` (the raw query string, without `?`).
    pub fn parse(query: &str) -> Result<Self, ApiError> {
        let deserializer =
            serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(deserializer)
            .map(Query)
            .map_err(|error| {
                let path = error.path().to_string();
                let inner = error.into_inner().to_string();
                // An unknown parameter fails at the struct, not at a field: its name is in
                // serde's message ("unknown field `foo`, expected ...").
                let field = if path.is_empty() || path == "." {
                    inner
                        .split('`')
                        .nth(1)
                        .map(str::to_owned)
                        .unwrap_or_default()
                } else {
                    path
                };
                let detail = if field.is_empty() {
                    format!("invalid query string: {inner}")
                } else {
                    format!("invalid query parameter `{field}`: {inner}")
                };
                ApiError::BadRequest {
                    code: "invalid_query",
                    detail,
                    field: (!field.is_empty()).then_some(field),
                }
            })
    }
}

impl<T: DeserializeOwned> FromRequest for Query<T> {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(Self::parse(req.query_string()))
    }
}
