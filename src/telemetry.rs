//! Logging set-up: `tracing` with an env-filter (`RUST_LOG`), as text or JSON lines, and
//! the per-request span.
//!
//! Failed requests are logged here, and sparingly: a client controls how many it sends, and
//! a log must not be a way to fill the disk (one abusive client once caused 7,102 WARN
//! lines of ~500 bytes in 20 s). Every client error (4xx) is a `debug` line; at most one
//! `info` line per [`ERROR_SUMMARY_INTERVAL`] says how many there were since the previous
//! one. Server-side failures the client did not cause (503 while PostgreSQL is away) are
//! `warn`, under the same kind of summary; a 500 is logged with its detail where it is
//! built (`http::problem`).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::Error;
use tracing::Span;
use tracing_actix_web::{DefaultRootSpanBuilder, RootSpanBuilder};
use tracing_subscriber::{fmt, EnvFilter};

use crate::config::LogFormat;

/// Installs the global subscriber. Called once by `main`; tests do not call it, so their
/// output stays quiet unless they opt in.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,actix_server=warn"));
    let builder = fmt().with_env_filter(filter).with_target(true);
    // `try_init` fails only if a subscriber is already installed; keeping the first is right.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// The span of every HTTP request. It records the path but never the query string: SSE
/// tickets travel there, and credentials must not reach the logs.
pub struct RequestSpan;

impl RootSpanBuilder for RequestSpan {
    fn on_request_start(request: &ServiceRequest) -> Span {
        tracing::info_span!(
            "http_request",
            method = %request.method(),
            path = %request.path(),
            status = tracing::field::Empty,
            request_id = %uuid::Uuid::new_v4(),
        )
    }

    fn on_request_end<B: MessageBody>(span: Span, outcome: &Result<ServiceResponse<B>, Error>) {
        let failure = match outcome {
            Ok(response) => {
                span.record("status", response.status().as_u16());
                response
                    .response()
                    .error()
                    .map(|e| (response.status(), e.to_string()))
            }
            Err(error) => Some((error.as_response_error().status_code(), error.to_string())),
        };
        if let Some((status, error)) = failure {
            log_failure(status, &error, Instant::now());
        }
        DefaultRootSpanBuilder::on_request_end(span, outcome);
    }
}

/// At most one `info` summary of client errors (and one `warn` summary of server-side
/// failures) per this interval; the others are `debug` lines.
pub const ERROR_SUMMARY_INTERVAL: Duration = Duration::from_secs(10);

/// Client errors (4xx) since the last summary line.
static CLIENT_ERRORS: Mutex<Summary> = Mutex::new(Summary::new(ERROR_SUMMARY_INTERVAL));

/// Server-side failures other than 500s (503 and the like) since the last summary line.
static SERVER_ERRORS: Mutex<Summary> = Mutex::new(Summary::new(ERROR_SUMMARY_INTERVAL));

/// Logs a failed request (within the request's span, which names method, path and status).
fn log_failure(status: StatusCode, error: &str, now: Instant) {
    // A 500 was logged with its detail where it was built.
    if status == StatusCode::INTERNAL_SERVER_ERROR {
        return;
    }
    let summary = if status.is_client_error() {
        &CLIENT_ERRORS
    } else {
        &SERVER_ERRORS
    };
    // A panic while holding this lock cannot leave the counters inconsistent.
    let due = summary
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .record(now);
    let status = status.as_u16();
    match due {
        None => tracing::debug!(status, %error, "request failed"),
        Some(others) if status < 500 => tracing::info!(
            status,
            %error,
            others,
            "request failed (client errors are summarized: `others` is how many more since the last such line)"
        ),
        Some(others) => tracing::warn!(
            status,
            %error,
            others,
            "request failed (summarized: `others` is how many more since the last such line)"
        ),
    }
}

/// A rate-limited summary: the first occurrence is reported at once, then at most one per
/// interval, each carrying how many went unreported since the previous report. Pure, with
/// the clock passed in, so it is tested without waiting.
#[derive(Debug)]
pub struct Summary {
    interval: Duration,
    last_report: Option<Instant>,
    unreported: u64,
}

impl Summary {
    /// A summary reporting at most once per `interval`.
    pub const fn new(interval: Duration) -> Self {
        Self {
            interval,
            last_report: None,
            unreported: 0,
        }
    }

    /// Records one occurrence at `now`: `Some(n)` when it is to be reported, `n` being how
    /// many went unreported since the previous report; `None` when it is only counted.
    pub fn record(&mut self, now: Instant) -> Option<u64> {
        let due = self
            .last_report
            .is_none_or(|last| now.saturating_duration_since(last) >= self.interval);
        if !due {
            self.unreported += 1;
            return None;
        }
        self.last_report = Some(now);
        Some(std::mem::take(&mut self.unreported))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_of_errors_is_reported_once_per_interval_with_a_count() {
        let t0 = Instant::now();
        let mut summary = Summary::new(Duration::from_secs(10));
        assert_eq!(summary.record(t0), Some(0), "the first is reported at once");
        // 7,102 errors in 20 s, as one abusive client sent.
        let reported: Vec<u64> = (1..7_102u64)
            .filter_map(|i| summary.record(t0 + Duration::from_micros(i * 2_816)))
            .collect();
        assert_eq!(reported.len(), 1, "at 10 s only: {reported:?}");
        // Every error is either a reported line or counted by a later one (or the next).
        let lines = 1 + reported.len() as u64;
        assert_eq!(
            lines + reported.iter().sum::<u64>() + summary.unreported,
            7_102
        );
    }

    #[test]
    fn a_quiet_interval_reports_the_next_error_at_once() {
        let t0 = Instant::now();
        let mut summary = Summary::new(Duration::from_secs(10));
        assert_eq!(summary.record(t0), Some(0));
        assert_eq!(summary.record(t0 + Duration::from_secs(1)), None);
        assert_eq!(summary.record(t0 + Duration::from_secs(2)), None);
        assert_eq!(summary.record(t0 + Duration::from_secs(30)), Some(2));
        assert_eq!(summary.record(t0 + Duration::from_secs(41)), Some(0));
    }
}
