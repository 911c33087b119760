//! Health, readiness and the OpenAPI document.

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::spawn_app;

#[actix_web::test]
async fn healthz_and_readyz_answer_ok_on_a_migrated_database() {
    let app = spawn_app().await;
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
}

#[actix_web::test]
async fn the_openapi_document_covers_every_endpoint_and_error() {
    let app = spawn_app().await;
    let doc: Value = app
        .client
        .get(app.url("/api/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paths = doc["paths"].as_object().expect("paths");
    for path in [
        "/api/hospitals/{hospital}/alerts",
        "/api/hospitals/{hospital}/alerts/{id}/acknowledge",
        "/api/hospitals/{hospital}/alerts/{id}/escalate",
        "/api/hospitals/{hospital}/alerts/{id}/resolve",
        "/api/hospitals/{hospital}/cases",
        "/api/hospitals/{hospital}/cases/{id}/assign",
        "/api/hospitals/{hospital}/cases/{id}/status",
        "/api/hospitals/{hospital}/cases/{id}/messages",
        "/api/hospitals/{hospital}/cases/{id}/read",
        "/api/hospitals/{hospital}/patients/{patient}/vitals",
        "/api/hospitals/{hospital}/appointments",
        "/api/hospitals/{hospital}/appointments/{id}/reschedule",
        "/api/hospitals/{hospital}/appointments/{id}/check-in",
        "/api/hospitals/{hospital}/appointments/{id}/cancel",
        "/api/hospitals/{hospital}/notifications",
        "/api/hospitals/{hospital}/notifications/{id}/read",
        "/api/hospitals/{hospital}/events",
        "/healthz",
        "/readyz",
    ] {
        assert!(paths.contains_key(path), "missing {path}");
    }
    let raise = &paths["/api/hospitals/{hospital}/alerts"]["post"]["responses"];
    for status in [
        "201", "400", "401", "403", "404", "409", "413", "415", "422", "429", "503",
    ] {
        assert!(raise.get(status).is_some(), "raise lacks {status}");
    }
}
