//! The polling endpoint: order, paging, entitlement and tenant isolation.

use aggregates::types::Role;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{assert_problem, paths, spawn_app};

const H: &str = "st-marys";

#[actix_web::test]
async fn pages_continue_exactly_after_the_last_position() {
    let app = spawn_app().await;
    let nurse = app.token(H, "nurse-amy", Role::Nurse);
    for _ in 0..5 {
        app.raise_alert(H, &nurse, "low").await;
    }
    let first: Value = app
        .get_events(H, &nurse, "after=0&limit=2")
        .await
        .json()
        .await
        .unwrap();
    let positions: Vec<i64> = first["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["position"].as_i64().unwrap())
        .collect();
    assert_eq!(positions, vec![1, 2]);
    assert_eq!(first["next_after"], 2);
    assert_eq!(first["head"], 5);
    assert!(first["epoch"].is_string());
    let rest: Value = app
        .get_events(H, &nurse, "after=2")
        .await
        .json()
        .await
        .unwrap();
    let positions: Vec<i64> = rest["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["position"].as_i64().unwrap())
        .collect();
    assert_eq!(positions, vec![3, 4, 5]);
    let empty: Value = app
        .get_events(H, &nurse, "after=5")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(empty["events"].as_array().unwrap().len(), 0);
    assert_eq!(empty["next_after"], 5);
}

#[actix_web::test]
async fn bad_paging_parameters_are_400s() {
    let app = spawn_app().await;
    let nurse = app.token(H, "nurse-amy", Role::Nurse);
    for query in [
        "after=-1",
        "limit=0",
        "limit=5000",
        "after=abc",
        "unknown=1",
    ] {
        let response = app.get_events(H, &nurse, query).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{query}");
    }
}

#[actix_web::test]
async fn a_field_worker_sees_only_their_own_cases_and_nobody_sees_others_notifications() {
    let app = spawn_app().await;
    let doctor = app.token(H, "dr-rao", Role::Physician);
    let asha1 = app.token(H, "asha-1", Role::Asha);
    let asha2 = app.token(H, "asha-2", Role::Asha);
    let admin = app.token(H, "admin-1", Role::Admin);
    for assignee in ["asha-1", "asha-2"] {
        let r = app
            .open_case(
                H,
                &doctor,
                json!({"patient": "p-1", "title": "visit", "assignee": assignee}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let r = app
        .post(
            &paths::notifications(H),
            &doctor,
            json!({"recipient": "asha-1", "content": {"kind": "task_assigned", "title": "visit p-1"}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);

    // Events written by people (the assignment policy also notifies assignees, as `system`,
    // on its own schedule; its notifications are checked by the policy tests).
    let of = |page: Value| -> Vec<(String, String)> {
        page["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["metadata"]["user"] != "system")
            .map(|e| {
                (
                    e["type"].as_str().unwrap().to_owned(),
                    e["data"]["assignee"]
                        .as_str()
                        .or(e["data"]["recipient"].as_str())
                        .unwrap_or("")
                        .to_owned(),
                )
            })
            .collect()
    };
    let seen1 = of(app.events(H, &asha1, 0).await);
    assert_eq!(
        seen1,
        vec![
            ("CaseOpened".into(), "asha-1".into()),
            ("NotificationSent".into(), "asha-1".into())
        ]
    );
    let seen2 = of(app.events(H, &asha2, 0).await);
    assert_eq!(seen2, vec![("CaseOpened".into(), "asha-2".into())]);
    let seen_admin = of(app.events(H, &admin, 0).await);
    assert_eq!(
        seen_admin.len(),
        2,
        "an admin sees both cases but not asha-1's notification"
    );
}

#[actix_web::test]
async fn a_hospital_never_sees_another_hospitals_events() {
    let app = spawn_app().await;
    let ours = app.token(H, "nurse-amy", Role::Nurse);
    let theirs = app.token("other", "nurse-bob", Role::Nurse);
    app.raise_alert("other", &theirs, "critical").await;
    app.raise_alert(H, &ours, "low").await;
    let page = app.events(H, &ours, 0).await;
    let events = page["events"].as_array().unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["position"], 1);
    assert_eq!(events[0]["data"]["severity"], "low");
    let response = app.get("/api/hospitals/other/events", &ours).await;
    assert_problem(response, StatusCode::FORBIDDEN, "wrong_hospital").await;
}
