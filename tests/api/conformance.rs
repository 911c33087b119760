//! HTTP semantics (RFC 9110) the API promises to software nobody here wrote: `Allow` on every
//! 405, 405 (not 404) on the probes and the document, `min_position` beyond the head refused
//! at once, `invalid_query` naming the parameter, and a 431 for an oversized request head.

use std::time::{Duration, Instant};

use aggregates::types::Role;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{assert_problem, spawn_app, TestApp};

const H: &str = "st-marys";

/// Raises an alert; returns its stream position.
async fn raise(app: &TestApp, token: &str) -> i64 {
    let outcome = app.raise_alert(H, token, "high").await;
    outcome["events"][0]["position"]
        .as_i64()
        .expect("a position")
}

/// Invariant: a 405 names, in `Allow`, exactly the methods its resource has (RFC 9110
/// §15.5.6), and every existing path, the probes and the document included, answers an
/// unsupported method with 405, never 404.
#[actix_web::test]
async fn every_405_carries_allow_with_the_resources_methods() {
    // Arrange
    let app = spawn_app().await;
    let admin = app.token(H, "admin-ada", Role::Admin);
    let id = uuid::Uuid::new_v4();
    let cases: Vec<(Method, String, &str)> = vec![
        (Method::POST, "/healthz".into(), "GET"),
        (Method::DELETE, "/readyz".into(), "GET"),
        (Method::PUT, "/metrics".into(), "GET"),
        (Method::POST, "/api/openapi.json".into(), "GET"),
        (Method::PATCH, "/api/admin/projections".into(), "GET"),
        (
            Method::GET,
            "/api/admin/projections/alert_board/rebuild".into(),
            "POST, DELETE",
        ),
        (
            Method::DELETE,
            format!("/api/hospitals/{H}/alerts"),
            "GET, POST",
        ),
        (
            Method::GET,
            format!("/api/hospitals/{H}/alerts/{id}/acknowledge"),
            "POST",
        ),
        (
            Method::PUT,
            format!("/api/hospitals/{H}/cases"),
            "GET, POST",
        ),
        (
            Method::POST,
            format!("/api/hospitals/{H}/cases/{id}"),
            "GET",
        ),
        (
            Method::DELETE,
            format!("/api/hospitals/{H}/policies/escalation"),
            "GET, PUT",
        ),
        (Method::POST, format!("/api/hospitals/{H}/events"), "GET"),
        (
            Method::GET,
            format!("/api/hospitals/{H}/notifications/{id}/read"),
            "POST",
        ),
        (
            Method::POST,
            format!("/api/hospitals/{H}/commands/{id}"),
            "GET",
        ),
    ];

    for (method, path, allow) in cases {
        // Act
        let response = app
            .client
            .request(method.clone(), app.url(&path))
            .bearer_auth(&admin)
            .send()
            .await
            .expect("request");

        // Assert
        let allowed = response
            .headers()
            .get("allow")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        assert_eq!(allowed.as_deref(), Some(allow), "{method} {path}: Allow");
        let problem = assert_problem(
            response,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        )
        .await;
        assert!(
            problem["detail"]
                .as_str()
                .unwrap_or_default()
                .contains(allow),
            "{method} {path}: {problem}"
        );
    }
}

/// A `min_position` beyond the stream's head cannot be reached by waiting: it is refused at
/// once, and the refusal names the head.
#[actix_web::test]
async fn a_min_position_beyond_the_head_is_refused_at_once_naming_the_head() {
    // Arrange
    let app = spawn_app().await;
    let nurse = app.token(H, "nurse-amy", Role::Nurse);
    raise(&app, &nurse).await;
    let head = raise(&app, &nurse).await;

    for (hospital, path) in [
        (H, "alerts"),
        (H, "cases"),
        (H, "appointments"),
        (H, "notifications"),
        (H, "metrics"),
        ("empty-ward", "alerts"),
    ] {
        let token = app.token(hospital, "nurse-amy", Role::Nurse);
        let head = if hospital == H { head } else { 0 };
        let started = Instant::now();

        // Act
        let response = app
            .get(
                &format!("/api/hospitals/{hospital}/{path}?min_position={}", head + 1),
                &token,
            )
            .await;

        // Assert: well under the 3 s wait.
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{hospital}/{path}: at once"
        );
        let problem =
            assert_problem(response, StatusCode::BAD_REQUEST, "position_beyond_head").await;
        assert_eq!(problem["field"], "min_position");
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains(&format!("position {head}")),
            "{hospital}/{path}: {detail}"
        );
    }
    // The head itself is served.
    let page = app
        .get(
            &format!("/api/hospitals/{H}/alerts?min_position={head}"),
            &nurse,
        )
        .await;
    assert_eq!(page.status(), StatusCode::OK);
}

/// Invariant: a position at or below the head is waited for (bounded), and only then is it a
/// 503: the projector is held back for real by locking its checkpoint row, as another node
/// would while it works (the projectors skip a locked checkpoint).
#[actix_web::test]
async fn a_min_position_at_the_head_that_the_model_has_not_reached_waits_then_is_a_503() {
    // Arrange: the board's checkpoint exists and is at position 1, then locked.
    let app = spawn_app().await;
    let nurse = app.token(H, "nurse-amy", Role::Nurse);
    let first = raise(&app, &nurse).await;
    let board = app
        .get(
            &format!("/api/hospitals/{H}/alerts?min_position={first}"),
            &nurse,
        )
        .await;
    assert_eq!(board.status(), StatusCode::OK);
    let mut holder = app.pool.begin().await.expect("a transaction");
    sqlx::query(
        "SELECT position FROM projection_checkpoints \
         WHERE projector = 'alert_board' AND hospital = $1 FOR UPDATE",
    )
    .bind(H)
    .fetch_one(&mut *holder)
    .await
    .expect("the board's checkpoint row");
    let second = raise(&app, &nurse).await;
    let started = Instant::now();

    // Act
    let held = app
        .get(
            &format!("/api/hospitals/{H}/alerts?min_position={second}"),
            &nurse,
        )
        .await;

    // Assert: the bounded wait, then 503; released, the same read is served.
    let waited = started.elapsed();
    assert_problem(held, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;
    assert!(waited >= Duration::from_secs(3), "waited {waited:?}");
    holder.rollback().await.expect("release the checkpoint");
    let served = app
        .get(
            &format!("/api/hospitals/{H}/alerts?min_position={second}"),
            &nurse,
        )
        .await;
    assert_eq!(served.status(), StatusCode::OK);
    let page: Value = served.json().await.unwrap();
    assert!(page["as_of"].as_i64().unwrap() >= second);
}

/// `400 invalid_query` names the offending parameter in `field` and in its message, for a
/// value of the wrong type and for an unknown parameter.
#[actix_web::test]
async fn an_invalid_query_names_the_parameter_in_field_and_detail() {
    // Arrange
    let app = spawn_app().await;
    let nurse = app.token(H, "nurse-amy", Role::Nurse);
    let cases = [
        ("alerts?limit=ten", "limit"),
        ("alerts?offset=-", "offset"),
        ("alerts?min_position=2070.5", "min_position"),
        ("alerts?colour=red", "colour"),
        ("events?after=soon", "after"),
        ("cases?limit=1e3", "limit"),
        ("appointments?limit=%FF", "limit"),
    ];

    for (query, parameter) in cases {
        // Act
        let response = app
            .get(&format!("/api/hospitals/{H}/{query}"), &nurse)
            .await;

        // Assert
        let problem = assert_problem(response, StatusCode::BAD_REQUEST, "invalid_query").await;
        assert_eq!(problem["field"], parameter, "{query}: {problem}");
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains(&format!("`{parameter}`")),
            "{query}: {detail}"
        );
    }
    let page = app
        .get(
            &format!("/api/hospitals/{H}/alerts?limit=10&offset=0"),
            &nurse,
        )
        .await;
    assert_eq!(page.status(), StatusCode::OK, "valid parameters still pass");
}

/// A request head larger than actix-http's 128 KiB parse buffer (a 1 MB `Authorization`)
/// gets a complete `431 Request Header Fields Too Large` status line before the server
/// closes the connection.
#[actix_web::test]
async fn an_oversized_request_head_gets_a_431_before_the_connection_closes() {
    // Arrange
    let app = spawn_app().await;
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
        .await
        .expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let mut head = format!(
        "GET /api/hospitals/{H}/events HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer "
    )
    .into_bytes();
    head.extend(std::iter::repeat_n(b'a', 1024 * 1024));
    head.extend_from_slice(b"\r\n\r\n");

    // Act: write the whole head (the server may stop reading) while reading the answer.
    let writing = tokio::spawn(async move {
        let _ = writer.write_all(&head).await;
        writer
    });
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), reader.read_to_end(&mut answer)).await;

    // Assert
    assert!(read.is_ok(), "the server answers and closes in time");
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 431"),
        "a 431 status line, got {:?}",
        answer.chars().take(200).collect::<String>()
    );
    assert!(answer.contains("\r\n\r\n"), "a complete head: {answer:?}");
    drop(writing.await);
}

/// JSON has one number type, and JSON Schema's `integer` includes `2070.0`: an integral
/// float is accepted where the document says integer; a fraction is still refused.
#[actix_web::test]
async fn an_integral_float_is_accepted_where_an_integer_is_documented() {
    // Arrange
    let app = spawn_app().await;
    let admin = app.token(H, "admin-ada", Role::Admin);
    let path = format!("/api/hospitals/{H}/policies/escalation");
    let put = |body: serde_json::Value| {
        app.client
            .put(app.url(&path))
            .bearer_auth(&admin)
            .json(&body)
            .send()
    };

    // Act
    let integral =
        put(serde_json::json!({"critical": 120.0, "high": 600, "medium": 1800.0, "low": 3600}))
            .await
            .expect("request");
    let fraction =
        put(serde_json::json!({"critical": 120.5, "high": 600, "medium": 1800, "low": 3600}))
            .await
            .expect("request");

    // Assert
    assert_eq!(integral.status(), StatusCode::OK);
    let policy: Value = integral.json().await.unwrap();
    assert_eq!(policy["critical"], 120);
    assert_eq!(policy["medium"], 1800);
    let problem = assert_problem(fraction, StatusCode::BAD_REQUEST, "invalid_field").await;
    assert_eq!(problem["field"], "critical");
}
