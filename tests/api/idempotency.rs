//! `Idempotency-Key`: a retried command returns the first result and writes nothing new.

use aggregates::types::Role;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{assert_problem, spawn_app};

const H: &str = "st-marys";

#[actix_web::test]
async fn a_retried_command_returns_the_first_result_and_writes_nothing() {
    let app = spawn_app().await;
    let nurse = app.token(H, "nurse-amy", Role::Nurse);
    let send = || {
        app.client
            .post(app.url(&format!("/api/hospitals/{H}/alerts")))
            .bearer_auth(&nurse)
            .header("Idempotency-Key", "raise-bed-12-001")
            .json(&json!({"severity": "critical", "message": "Bed 12"}))
            .send()
    };
    let first = send().await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.unwrap();
    let retry = send().await.unwrap();
    assert_eq!(retry.status(), StatusCode::CREATED);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    let retry: Value = retry.json().await.unwrap();
    assert_eq!(first, retry);
    assert_eq!(app.event_count().await, 1);
}

#[actix_web::test]
async fn the_same_key_with_a_different_request_is_refused() {
    let app = spawn_app().await;
    let nurse = app.token(H, "nurse-amy", Role::Nurse);
    let post = |message: &'static str| {
        app.client
            .post(app.url(&format!("/api/hospitals/{H}/alerts")))
            .bearer_auth(&nurse)
            .header("Idempotency-Key", "k-1")
            .json(&json!({"severity": "low", "message": message}))
            .send()
    };
    assert_eq!(post("first").await.unwrap().status(), StatusCode::CREATED);
    assert_problem(
        post("second").await.unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
    )
    .await;
    assert_eq!(app.event_count().await, 1);
}

#[actix_web::test]
async fn keys_are_scoped_to_the_user() {
    let app = spawn_app().await;
    for user in ["nurse-amy", "nurse-bob"] {
        let token = app.token(H, user, Role::Nurse);
        let response = app
            .client
            .post(app.url(&format!("/api/hospitals/{H}/alerts")))
            .bearer_auth(&token)
            .header("Idempotency-Key", "same-key")
            .json(&json!({"severity": "low", "message": "x"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        assert!(response.headers().get("idempotent-replayed").is_none());
    }
    assert_eq!(app.event_count().await, 2);
}

#[actix_web::test]
async fn a_rejected_keyed_command_can_be_retried_after_the_state_allows_it() {
    let app = spawn_app().await;
    let nurse = app.token(H, "nurse-amy", Role::Nurse);
    let unknown = uuid::Uuid::new_v4();
    let response = app
        .client
        .post(app.url(&format!("/api/hospitals/{H}/alerts/{unknown}/acknowledge")))
        .bearer_auth(&nurse)
        .header("Idempotency-Key", "ack-1")
        .send()
        .await
        .unwrap();
    assert_problem(response, StatusCode::NOT_FOUND, "alert_not_found").await;
    let keys: i64 = sqlx::query_scalar("SELECT count(*) FROM idempotency_keys")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(keys, 0, "a rejected command leaves no key behind");
}

#[actix_web::test]
async fn a_committed_command_whose_response_was_lost_is_recovered_from_its_events() {
    let app = spawn_app().await;
    let nurse = app.token(H, "nurse-amy", Role::Nurse);
    let send = || {
        app.client
            .post(app.url(&format!("/api/hospitals/{H}/alerts")))
            .bearer_auth(&nurse)
            .header("Idempotency-Key", "crash-1")
            .json(&json!({"severity": "high", "message": "x"}))
            .send()
    };
    let first: Value = send().await.unwrap().json().await.unwrap();
    // Simulate a crash between commit and storing the response.
    sqlx::query("UPDATE idempotency_keys SET response_status = NULL, response_body = NULL")
        .execute(&app.pool)
        .await
        .unwrap();
    let retry = send().await.unwrap();
    assert_eq!(retry.status(), StatusCode::CREATED);
    assert_eq!(retry.json::<Value>().await.unwrap(), first);
    assert_eq!(app.event_count().await, 1);
}
