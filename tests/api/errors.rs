//! Every error class answers with problem+json, and changes nothing.

use aggregates::types::{HospitalId, Role, UserId};
use reqwest::StatusCode;
use serde_json::json;
use vigil::auth::Claims;

use crate::helpers::{assert_problem, paths, spawn_app, spawn_app_with};

const H: &str = "st-marys";

#[actix_web::test]
async fn malformed_json_is_a_400() {
    let app = spawn_app().await;
    let nurse = app.token(H, "nurse-amy", Role::Nurse);
    let response = app
        .client
        .post(app.url(&paths::alerts(H)))
        .bearer_auth(&nurse)
        .header("content-type", "application/json")
        .body("{\"severity\": ")
        .send()
        .await
        .unwrap();
    assert_problem(response, StatusCode::BAD_REQUEST, "malformed_json").await;
    assert_eq!(app.event_count().await, 0);
}

#[actix_web::test]
async fn an_invalid_or_missing_field_is_a_400_naming_the_field() {
    let app = spawn_app().await;
    let nurse = app.token(H, "nurse-amy", Role::Nurse);
    let path = paths::alerts(H);
    for (body, field) in [
        (
            json!({"severity": "apocalyptic", "message": "x"}),
            "severity",
        ),
        (json!({"message": "x"}), "severity"),
        (json!({"severity": "low", "message": ""}), "message"),
        (
            json!({"severity": "low", "message": "a\u{0000}b"}),
            "message",
        ),
        (
            json!({"severity": "low", "message": "x".repeat(2001)}),
            "message",
        ),
        (
            json!({"severity": "low", "message": "x", "patient": "bad id!"}),
            "patient",
        ),
        (
            json!({"severity": "low", "message": "x", "colour": "red"}),
            "colour",
        ),
        (json!({"severity": 3, "message": "x"}), "severity"),
    ] {
        let response = app.post(&path, &nurse, body.clone()).await;
        let problem = assert_problem(response, StatusCode::BAD_REQUEST, "invalid_field").await;
        let named = problem["field"].as_str().unwrap_or_default();
        assert!(
            named.contains(field) || problem["detail"].as_str().unwrap().contains(field),
            "{body} → {problem}"
        );
    }
    assert_eq!(app.event_count().await, 0);
}

#[actix_web::test]
async fn missing_invalid_and_expired_tokens_are_401s() {
    let app = spawn_app().await;
    let path = app.url(&paths::events(H));
    let missing = app.client.get(&path).send().await.unwrap();
    assert_problem(missing, StatusCode::UNAUTHORIZED, "missing_token").await;

    let garbage = app
        .client
        .get(&path)
        .bearer_auth("not.a.token")
        .send()
        .await
        .unwrap();
    assert_problem(garbage, StatusCode::UNAUTHORIZED, "invalid_token").await;

    let other_key =
        vigil::auth::JwtKeys::from_secret("another-secret-another-secret-0123456789").unwrap();
    let forged = other_key
        .mint(
            &UserId::parse("u").unwrap(),
            &HospitalId::parse(H).unwrap(),
            Role::Admin,
            std::time::Duration::from_secs(60),
        )
        .unwrap();
    let forged = app
        .client
        .get(&path)
        .bearer_auth(forged)
        .send()
        .await
        .unwrap();
    assert_problem(forged, StatusCode::UNAUTHORIZED, "invalid_token").await;

    let expired = app.token_with(&Claims {
        sub: UserId::parse("nurse-amy").unwrap(),
        hospital: HospitalId::parse(H).unwrap(),
        role: Role::Nurse,
        exp: chrono::Utc::now().timestamp() - 600,
        iat: None,
        iss: None,
        aud: None,
    });
    let expired = app
        .client
        .get(&path)
        .bearer_auth(expired)
        .send()
        .await
        .unwrap();
    assert_problem(expired, StatusCode::UNAUTHORIZED, "token_expired").await;
}

#[actix_web::test]
async fn another_hospital_or_a_forbidden_role_is_a_403_and_writes_nothing() {
    let app = spawn_app().await;
    let foreign = app.token("other-hospital", "nurse-amy", Role::Nurse);
    let response = app
        .post_alert(H, &foreign, json!({"severity": "low", "message": "x"}))
        .await;
    assert_problem(response, StatusCode::FORBIDDEN, "wrong_hospital").await;
    let events = app.get(&paths::events(H), &foreign).await;
    assert_problem(events, StatusCode::FORBIDDEN, "wrong_hospital").await;

    let chw = app.token(H, "chw-ravi", Role::Chw);
    let nurse = app.token(H, "nurse-amy", Role::Nurse);
    let id = app.raise_alert(H, &nurse, "high").await["aggregate_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = app.event_count().await;
    let ack = app.acknowledge(H, &chw, &id).await;
    assert_problem(ack, StatusCode::FORBIDDEN, "role_forbidden").await;
    assert_eq!(app.event_count().await, before);
}

#[actix_web::test]
async fn an_alert_of_another_hospital_is_not_found_even_with_its_id() {
    let app = spawn_app().await;
    let theirs = app.token("other-hospital", "nurse-bob", Role::Nurse);
    let id = app.raise_alert("other-hospital", &theirs, "high").await["aggregate_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let ours = app.token(H, "nurse-amy", Role::Nurse);
    let response = app.acknowledge(H, &ours, &id).await;
    assert_problem(response, StatusCode::NOT_FOUND, "alert_not_found").await;
}

#[actix_web::test]
async fn unknown_aggregates_routes_and_methods_are_problems() {
    let app = spawn_app().await;
    let nurse = app.token(H, "nurse-amy", Role::Nurse);
    let unknown = uuid::Uuid::new_v4();
    let response = app.acknowledge(H, &nurse, &unknown.to_string()).await;
    assert_problem(response, StatusCode::NOT_FOUND, "alert_not_found").await;
    let bad_id = app
        .post_empty(&paths::alert(H, "not-a-uuid", "acknowledge"), &nurse)
        .await;
    assert_problem(bad_id, StatusCode::BAD_REQUEST, "invalid_field").await;
    let route = app.get("/api/nothing-here", &nurse).await;
    assert_problem(route, StatusCode::NOT_FOUND, "route_not_found").await;
    let method = app
        .client
        .delete(app.url(&paths::alerts(H)))
        .bearer_auth(&nurse)
        .send()
        .await
        .unwrap();
    assert_problem(method, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
    let bad_hospital = app.get("/api/hospitals/NOT_VALID/events", &nurse).await;
    assert_problem(bad_hospital, StatusCode::BAD_REQUEST, "invalid_field").await;
}

#[actix_web::test]
async fn an_oversized_body_is_a_413_and_a_wrong_content_type_a_415() {
    let app = spawn_app().await;
    let nurse = app.token(H, "nurse-amy", Role::Nurse);
    let path = app.url(&paths::alerts(H));
    let huge = format!(
        "{{\"severity\":\"low\",\"message\":\"{}\"}}",
        "x".repeat(70 * 1024)
    );
    let response = app
        .client
        .post(&path)
        .bearer_auth(&nurse)
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_problem(response, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;

    let response = app
        .client
        .post(&path)
        .bearer_auth(&nurse)
        .header("content-type", "text/plain")
        .body("severity=low")
        .send()
        .await
        .unwrap();
    assert_problem(
        response,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    assert_eq!(app.event_count().await, 0);
}

#[actix_web::test]
async fn a_user_over_the_command_rate_gets_a_429_with_retry_after() {
    let app = spawn_app_with(|s| {
        s.command_rate = 0.5;
        s.command_burst = 2.0;
    })
    .await;
    let nurse = app.token(H, "nurse-amy", Role::Nurse);
    let path = paths::alerts(H);
    let body = json!({"severity": "low", "message": "x"});
    assert_eq!(
        app.post(&path, &nurse, body.clone()).await.status(),
        StatusCode::CREATED
    );
    assert_eq!(
        app.post(&path, &nurse, body.clone()).await.status(),
        StatusCode::CREATED
    );
    let limited = app.post(&path, &nurse, body.clone()).await;
    assert!(limited.headers().contains_key("retry-after"));
    assert_problem(limited, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    // Another user has their own bucket.
    let doctor = app.token(H, "dr-rao", Role::Physician);
    assert_eq!(
        app.post(&path, &doctor, body).await.status(),
        StatusCode::CREATED
    );
    assert_eq!(app.event_count().await, 3);
}
