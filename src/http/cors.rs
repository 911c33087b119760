//! CORS for the REST API and SSE: a page of an allowed other origin (`--cors-allowed-origins`)
//! gets its preflight answered and `Access-Control-Allow-Origin` on every answer, including
//! problem responses, so its error handling sees the status and `code`. Origins not allowed
//! get no CORS headers (the browser then refuses the answer to the page). Tokens travel in
//! `Authorization`, never in cookies, so credentials are not allowed and a page of an allowed
//! origin still needs a token. The WebSocket endpoint checks `Origin` itself
//! (`http::ws::check`), since upgrades do not pass through this middleware.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse};

use super::AppState;

/// Methods the API serves.
const ALLOW_METHODS: &str = "GET, POST, PUT, DELETE";
/// Request headers a page may send: the token, JSON bodies, the command key, SSE's resume id.
const ALLOW_HEADERS: &str = "authorization, content-type, idempotency-key, last-event-id";
/// Response headers a page may read: replays, rate-limit waits, 405's methods, created ids.
const EXPOSE_HEADERS: &str = "idempotent-replayed, retry-after, allow, location";
/// How long a browser may cache a preflight answer, seconds: one preflight per endpoint per
/// 10 minutes rather than one per command.
const MAX_AGE_SECONDS: &str = "600";

/// The middleware (`middleware::from_fn(http::cors::cors)`).
pub async fn cors(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .filter(|origin| allowed(&req, origin))
        .cloned();
    let Some(origin) = origin else {
        return Ok(next.call(req).await?.map_into_left_body());
    };
    if req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    {
        let preflight = HttpResponse::NoContent()
            .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, origin))
            .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, ALLOW_METHODS))
            .insert_header((header::ACCESS_CONTROL_ALLOW_HEADERS, ALLOW_HEADERS))
            .insert_header((header::ACCESS_CONTROL_MAX_AGE, MAX_AGE_SECONDS))
            .insert_header((header::VARY, "Origin"))
            .finish();
        return Ok(req.into_response(preflight).map_into_right_body());
    }
    let mut response = next.call(req).await?;
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSE_HEADERS),
    );
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
    Ok(response.map_into_left_body())
}

/// Whether `origin` is another origin on the allowed list (same-origin requests need no
/// CORS headers).
fn allowed(req: &ServiceRequest, origin: &HeaderValue) -> bool {
    let Some(state) = req.app_data::<web::Data<AppState>>() else {
        return false;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let origins = &state.realtime.settings.allowed_origins;
    !origins.is_empty() && origins.allows(origin)
}
