//! Every command endpoint's success, and a rejected transition for each aggregate.

use aggregates::types::Role;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{assert_problem, paths, spawn_app};

const H: &str = "st-marys";

#[actix_web::test]
async fn an_alert_raised_and_acknowledged_is_at_positions_1_and_2() {
    let app = spawn_app().await;
    let nurse = app.token(H, "nurse-amy", Role::Nurse);

    let raised = app.raise_alert(H, &nurse, "critical").await;
    let id = raised["aggregate_id"].as_str().unwrap();
    assert_eq!(raised["version"], 1);
    assert_eq!(raised["events"][0]["position"], 1);
    assert_eq!(raised["events"][0]["type"], "AlertRaised");

    let ack = app.acknowledge(H, &nurse, id).await;
    assert_eq!(ack.status(), StatusCode::OK);
    let ack: Value = ack.json().await.unwrap();
    assert_eq!(ack["aggregate_id"], id);
    assert_eq!(ack["version"], 2);
    assert_eq!(ack["events"][0]["position"], 2);

    let page = app.events(H, &nurse, 0).await;
    let events = page["events"].as_array().unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["id"], "1");
    assert_eq!(events[0]["type"], "AlertRaised");
    assert_eq!(events[0]["aggregate_id"], id);
    assert_eq!(events[0]["data"]["severity"], "critical");
    assert_eq!(events[0]["metadata"]["user"], "nurse-amy");
    assert_eq!(events[1]["type"], "AlertAcknowledged");
    assert_eq!(events[1]["position"], 2);
    assert_eq!(page["head"], 2);
}

#[actix_web::test]
async fn an_alert_is_escalated_then_resolved_and_then_refuses_everything() {
    let app = spawn_app().await;
    let nurse = app.token(H, "nurse-amy", Role::Nurse);
    let id = app.raise_alert(H, &nurse, "high").await["aggregate_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let esc = app
        .escalate(H, &nurse, &id, json!({"reason": "no response"}))
        .await;
    assert_eq!(esc.status(), StatusCode::OK);
    let resolved = app.resolve(H, &nurse, &id, "patient stable").await;
    assert_eq!(resolved.status(), StatusCode::OK);

    let before = app.event_count().await;
    let again = app
        .escalate(H, &nurse, &id, json!({"reason": "again"}))
        .await;
    assert_problem(again, StatusCode::CONFLICT, "alert_already_resolved").await;
    let ack = app.acknowledge(H, &nurse, &id).await;
    assert_problem(ack, StatusCode::CONFLICT, "alert_already_resolved").await;
    assert_eq!(
        app.event_count().await,
        before,
        "a rejected command persists nothing"
    );
}

/// Two nurses looking at level 0 both press "escalate" with `expected_level: 0`: the
/// next tier is paged once; the second gets a conflict and nothing is stored for it.
#[actix_web::test]
async fn an_escalation_from_a_level_the_alert_has_left_is_a_conflict() {
    let app = spawn_app().await;
    let nurse = app.token(H, "nurse-amy", Role::Nurse);
    let id = app.raise_alert(H, &nurse, "high").await["aggregate_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = paths::alert(H, &id, "escalate");
    let first = app
        .post(
            &path,
            &nurse,
            json!({"reason": "no response", "expected_level": 0}),
        )
        .await;
    assert_eq!(first.status(), StatusCode::OK);
    let outcome: Value = first.json().await.unwrap();
    assert_eq!(outcome["events"][0]["type"], "AlertEscalated", "{outcome}");
    assert_eq!(outcome["version"], 2, "{outcome}");

    let before = app.event_count().await;
    let second = app
        .post(
            &path,
            &nurse,
            json!({"reason": "no response", "expected_level": 0}),
        )
        .await;
    assert_problem(
        second,
        StatusCode::CONFLICT,
        "alert_escalation_level_changed",
    )
    .await;
    assert_eq!(app.event_count().await, before);
    let bad = app
        .post(&path, &nurse, json!({"reason": "x", "expected_level": -1}))
        .await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let from_one = app
        .post(
            &path,
            &nurse,
            json!({"reason": "still nothing", "expected_level": 1}),
        )
        .await;
    assert_eq!(from_one.status(), StatusCode::OK);
}

#[actix_web::test]
async fn a_second_acknowledge_is_a_conflict() {
    let app = spawn_app().await;
    let nurse = app.token(H, "nurse-amy", Role::Nurse);
    let id = app.raise_alert(H, &nurse, "low").await["aggregate_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = paths::alert(H, &id, "acknowledge");
    assert_eq!(app.post_empty(&path, &nurse).await.status(), StatusCode::OK);
    assert_problem(
        app.post_empty(&path, &nurse).await,
        StatusCode::CONFLICT,
        "alert_already_acknowledged",
    )
    .await;
}

#[actix_web::test]
async fn a_case_thread_goes_through_its_portal_workflow() {
    let app = spawn_app().await;
    let asha = app.token(H, "asha-lata", Role::Asha);
    let doctor = app.token(H, "dr-rao", Role::Physician);

    let opened = app
        .open_case(
            H,
            &asha,
            json!({"patient": "p-7", "title": "Fever 3 days", "assignee": "asha-lata"}),
        )
        .await;
    assert_eq!(opened.status(), StatusCode::CREATED);
    let id = opened.json::<Value>().await.unwrap()["aggregate_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let base = paths::case(H, &id);

    let msg = app
        .post(
            &format!("{base}/messages"),
            &asha,
            json!({"body": "Temperature 38.9"}),
        )
        .await;
    assert_eq!(msg.status(), StatusCode::OK);
    let read = app
        .post(&format!("{base}/read"), &doctor, json!({"up_to": 1}))
        .await;
    assert_eq!(read.status(), StatusCode::OK);
    for status in ["in_review", "accepted", "prescribed", "completed"] {
        let r = app
            .post(
                &format!("{base}/status"),
                &doctor,
                json!({"status": status}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK, "to {status}");
    }
    let assign = app
        .post(
            &format!("{base}/assign"),
            &doctor,
            json!({"assignee": "chw-ravi"}),
        )
        .await;
    assert_eq!(assign.status(), StatusCode::OK);

    let bad = app
        .post(
            &format!("{base}/status"),
            &doctor,
            json!({"status": "prescribed"}),
        )
        .await;
    let problem = assert_problem(bad, StatusCode::CONFLICT, "case_invalid_transition").await;
    assert!(problem["detail"].as_str().unwrap().contains("completed"));

    let unread = app
        .post(&format!("{base}/read"), &doctor, json!({"up_to": 9}))
        .await;
    let problem = assert_problem(unread, StatusCode::BAD_REQUEST, "case_unknown_message").await;
    assert_eq!(problem["field"], "up_to");
}

#[actix_web::test]
async fn vitals_are_recorded_with_out_of_range_flags_and_impossible_values_refused() {
    let app = spawn_app().await;
    let nurse = app.token(H, "nurse-amy", Role::Nurse);
    let path = paths::vitals(H, "p-42");

    let ok = app
        .post(&path, &nurse, json!({"heart_rate": 130, "spo2": 97}))
        .await;
    assert_eq!(ok.status(), StatusCode::CREATED);
    let ok: Value = ok.json().await.unwrap();
    assert_eq!(ok["aggregate_id"], "p-42");

    let page = app.events(H, &nurse, 0).await;
    let data = &page["events"][0]["data"];
    assert_eq!(data["patient"], "p-42");
    let flags = data["out_of_range"].as_array().unwrap();
    assert_eq!(flags.len(), 1);
    assert_eq!(flags[0]["sign"], "heart_rate");
    assert_eq!(flags[0]["deviation"], "high");

    let impossible = app.post(&path, &nurse, json!({"heart_rate": 900})).await;
    let problem = assert_problem(
        impossible,
        StatusCode::BAD_REQUEST,
        "vitals_out_of_physical_range",
    )
    .await;
    assert_eq!(problem["field"], "heart_rate");
    let empty = app.post(&path, &nurse, json!({})).await;
    assert_problem(empty, StatusCode::BAD_REQUEST, "vitals_no_values").await;
}

#[actix_web::test]
async fn an_appointment_is_scheduled_rescheduled_checked_in_and_cannot_be_cancelled_after() {
    let app = spawn_app().await;
    let op = app.token(H, "op-sam", Role::Operator);
    let created = app
        .post(
            &paths::appointments(H),
            &op,
            json!({"patient": "p-1", "clinician": "dr-rao", "start": "2026-12-01T09:00:00Z", "end": "2026-12-01T09:30:00Z"}),
        )
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let id = created.json::<Value>().await.unwrap()["aggregate_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let base = paths::appointment(H, &id);
    let moved = app
        .post(
            &format!("{base}/reschedule"),
            &op,
            json!({"start": "2026-12-01T10:00:00Z", "end": "2026-12-01T10:30:00Z"}),
        )
        .await;
    assert_eq!(moved.status(), StatusCode::OK);
    assert_eq!(
        app.post_empty(&format!("{base}/check-in"), &op)
            .await
            .status(),
        StatusCode::OK
    );
    let cancel = app
        .post(
            &format!("{base}/cancel"),
            &op,
            json!({"reason": "too late"}),
        )
        .await;
    assert_problem(
        cancel,
        StatusCode::CONFLICT,
        "appointment_already_checked_in",
    )
    .await;

    let backwards = app
        .post(
            &paths::appointments(H),
            &op,
            json!({"patient": "p-1", "clinician": "dr-rao", "start": "2026-12-01T09:00:00Z", "end": "2026-12-01T08:00:00Z"}),
        )
        .await;
    let problem = assert_problem(
        backwards,
        StatusCode::BAD_REQUEST,
        "appointment_end_not_after_start",
    )
    .await;
    assert_eq!(problem["field"], "end");
}

#[actix_web::test]
async fn a_cancelled_appointment_cannot_be_checked_in() {
    let app = spawn_app().await;
    let op = app.token(H, "op-sam", Role::Operator);
    let created = app
        .post(
            &paths::appointments(H),
            &op,
            json!({"patient": "p-1", "clinician": "dr-rao", "start": "2026-12-01T09:00:00Z", "end": "2026-12-01T09:30:00Z"}),
        )
        .await;
    let id = created.json::<Value>().await.unwrap()["aggregate_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let base = paths::appointment(H, &id);
    assert_eq!(
        app.post(&format!("{base}/cancel"), &op, json!({"reason": "sick"}))
            .await
            .status(),
        StatusCode::OK
    );
    assert_problem(
        app.post_empty(&format!("{base}/check-in"), &op).await,
        StatusCode::CONFLICT,
        "appointment_cancelled",
    )
    .await;
}

#[actix_web::test]
async fn a_notification_is_read_only_by_its_recipient() {
    let app = spawn_app().await;
    let nurse = app.token(H, "nurse-amy", Role::Nurse);
    let doctor = app.token(H, "dr-rao", Role::Physician);
    let sent = app
        .post(
            &paths::notifications(H),
            &nurse,
            json!({"recipient": "dr-rao", "content": {"kind": "lab_result", "patient": "p-1", "test": "CBC", "summary": "Hb 7.1", "urgent": true}}),
        )
        .await;
    assert_eq!(sent.status(), StatusCode::CREATED);
    let id = sent.json::<Value>().await.unwrap()["aggregate_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = paths::notification_read(H, &id);
    assert_problem(
        app.post_empty(&path, &nurse).await,
        StatusCode::FORBIDDEN,
        "notification_not_recipient",
    )
    .await;
    assert_eq!(
        app.post_empty(&path, &doctor).await.status(),
        StatusCode::OK
    );
    assert_problem(
        app.post_empty(&path, &doctor).await,
        StatusCode::CONFLICT,
        "notification_already_read",
    )
    .await;

    for content in [
        json!({"kind": "task_assigned", "title": "Review case"}),
        json!({"kind": "prior_authorization", "patient": "p-1", "request": "MRI", "status": "approved"}),
    ] {
        let r = app
            .post(
                &paths::notifications(H),
                &nurse,
                json!({"recipient": "dr-rao", "content": content}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
}

/// Invariant: a command's events are found with one probe of the command index, never by
/// reading the hospital's history — even before the table has statistics (a fresh or
/// bulk-loaded store, where PostgreSQL once AND-ed in a scan of the whole hospital) — and
/// only within the asking hospital.
#[actix_web::test]
async fn a_commands_outcome_is_found_without_reading_its_hospitals_history() {
    // Arrange: 5,000 events of one hospital, each of its own command, never analyzed.
    let db = crate::helpers::TestDatabase::create().await;
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
                             payload, metadata) \
         SELECT 'alert', 'st-marys/' || g, 1, 'AlertRaised', '1.0', '{}', \
                json_build_object('hospital', 'st-marys', 'command_id', gen_random_uuid()) \
         FROM generate_series(1, 5000) AS g",
    )
    .execute(&pool)
    .await
    .unwrap();
    let command: uuid::Uuid = sqlx::query_scalar(
        "SELECT command_id FROM events WHERE hospital = 'st-marys' AND position = 4000",
    )
    .fetch_one(&pool)
    .await
    .unwrap();

    // Act
    let explain = format!(
        "EXPLAIN (FORMAT JSON) {}",
        vigil::command::OUTCOME_QUERY.replace("$1", &format!("'{command}'::uuid"))
    );
    let plan: Value = sqlx::query_scalar(&explain).fetch_one(&pool).await.unwrap();
    let bus = vigil::command::CommandBus::new(pool.clone());
    let found = bus
        .outcome_of(command, &aggregates::types::HospitalId::parse(H).unwrap())
        .await
        .unwrap()
        .expect("the command's outcome");
    let elsewhere = bus
        .outcome_of(
            command,
            &aggregates::types::HospitalId::parse("city").unwrap(),
        )
        .await
        .unwrap();

    // Assert
    let plan = plan.to_string();
    assert!(plan.contains("events_command_id"), "{plan}");
    assert!(!plan.contains("events_hospital_position"), "{plan}");
    assert_eq!(found.aggregate_id, "4000");
    assert_eq!(found.events.len(), 1);
    assert_eq!(found.events[0].position, 4000);
    assert!(
        elsewhere.is_none(),
        "another hospital's command is not an outcome here"
    );
}
