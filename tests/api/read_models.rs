//! The read models behind the portals' screens — case list, patient view, schedule,
//! notification inbox — and the hospital metrics: events made through the REST commands,
//! rows read back through the read endpoints, and who may read what.
//!
//! Every read passes `min_position` = the position the last command returned, so no test
//! races the projector: the server waits (bounded) until the model has applied it. Policies
//! run in the test server too (assigning a case notifies the assignee, an abnormal reading
//! raises an alert), so `as_of` is compared for equality only where no policy reacts.

use std::time::Duration;

use aggregates::types::Role;
use projections::case_list::CaseList;
use projections::engine::{rebuild, rebuild_scoped, ReadModel, Scope};
use projections::notification_inbox::NotificationInbox;
use projections::patient_view::PatientView;
use projections::schedule::Schedule;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{assert_problem, eventually, paths, spawn_app, ws, TestApp};

/// Longest wait for something that needs only a few database round trips.
const DEADLINE: Duration = Duration::from_secs(10);

/// Runs a command that must succeed; returns its outcome.
async fn command(app: &TestApp, path: &str, token: &str, body: Value) -> Value {
    let response = app.post(path, token, body).await;
    let status = response.status();
    let outcome: Value = response.json().await.unwrap();
    assert!(status.is_success(), "{path}: {status} {outcome}");
    outcome
}

/// Runs a body-less command that must succeed; returns its outcome.
async fn command_empty(app: &TestApp, path: &str, token: &str) -> Value {
    let response = app.post_empty(path, token).await;
    let status = response.status();
    let outcome: Value = response.json().await.unwrap();
    assert!(status.is_success(), "{path}: {status} {outcome}");
    outcome
}

/// The stream position of a command's last event.
fn position(outcome: &Value) -> i64 {
    outcome["events"]
        .as_array()
        .and_then(|events| events.last())
        .and_then(|event| event["position"].as_i64())
        .unwrap_or_else(|| panic!("no position in {outcome}"))
}

fn id(outcome: &Value) -> String {
    outcome["aggregate_id"].as_str().unwrap().to_owned()
}

/// A read that must answer 200; returns its body.
async fn read(app: &TestApp, path: &str, token: &str) -> Value {
    let response = app.get(path, token).await;
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{path}: {body}");
    body
}

async fn open_case(
    app: &TestApp,
    h: &str,
    token: &str,
    title: &str,
    assignee: Option<&str>,
) -> Value {
    let mut body = json!({"patient": "p-1", "title": title});
    if let Some(assignee) = assignee {
        body["assignee"] = json!(assignee);
    }
    command(app, &paths::cases(h), token, body).await
}

async fn post_message(app: &TestApp, h: &str, case: &str, token: &str, text: &str) -> Value {
    command(
        app,
        &paths::case_command(h, case, "messages"),
        token,
        json!({"body": text}),
    )
    .await
}

async fn mark_read(app: &TestApp, h: &str, case: &str, token: &str, up_to: u64) -> Value {
    command(
        app,
        &paths::case_command(h, case, "read"),
        token,
        json!({"up_to": up_to}),
    )
    .await
}

fn ids(rows: &Value, field: &str) -> Vec<String> {
    rows.as_array()
        .unwrap()
        .iter()
        .map(|row| row[field].as_str().unwrap().to_owned())
        .collect()
}

#[actix_web::test]
async fn the_case_list_shows_each_case_with_its_last_message_and_the_callers_unread_count() {
    // Arrange: an unassigned case (no policy reacts to it), two messages, two receipts.
    let app = spawn_app().await;
    let dr = app.token("h1", "dr-a", Role::Physician);
    let nurse = app.token("h1", "nurse-b", Role::Nurse);
    let case = id(&open_case(&app, "h1", &dr, "Fever for 3 days", None).await);
    post_message(
        &app,
        "h1",
        &case,
        &nurse,
        "Temperature 38.9, started paracetamol",
    )
    .await;
    let long = "x".repeat(250);
    post_message(&app, "h1", &case, &dr, &long).await;
    mark_read(&app, "h1", &case, &nurse, 2).await;
    command(
        &app,
        &paths::case_command("h1", &case, "status"),
        &dr,
        json!({"status": "in_review"}),
    )
    .await;
    let last = position(&mark_read(&app, "h1", &case, &dr, 1).await);

    // Act
    let as_dr = read(
        &app,
        &paths::with_query(paths::cases("h1"), format!("min_position={last}")),
        &dr,
    )
    .await;
    let as_nurse = read(
        &app,
        &paths::with_query(paths::cases("h1"), format!("min_position={last}")),
        &nurse,
    )
    .await;

    // Assert: one row per case, the preview cut to 200 characters, unread per caller.
    assert_eq!(as_dr["as_of"], last, "as_of is the last applied event");
    let cases = as_dr["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 1);
    let row = &cases[0];
    assert_eq!(row["case_id"], case.as_str());
    assert_eq!(row["patient"], "p-1");
    assert_eq!(row["title"], "Fever for 3 days");
    assert_eq!(row["status"], "in_review");
    assert_eq!(row["assignee"], Value::Null);
    assert_eq!(row["opened_by"], "dr-a");
    assert_eq!(row["message_count"], 2);
    assert_eq!(row["last_message_id"], 2);
    assert_eq!(row["last_message_by"], "dr-a");
    let preview = row["last_message_body"].as_str().unwrap();
    assert_eq!(preview.chars().count(), 200);
    assert_eq!(row["unread"], 1, "dr-a read up to 1 of 2");
    assert_eq!(
        as_nurse["cases"][0]["unread"], 0,
        "nurse-b read up to 2 of 2"
    );

    // The thread: messages paginated by id, and every receipt.
    let thread = read(
        &app,
        &paths::with_query(paths::case("h1", &case), format!("min_position={last}")),
        &dr,
    )
    .await;
    assert_eq!(thread["as_of"], last);
    assert_eq!(thread["case"]["unread"], 1);
    let messages = thread["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0]["message_id"], 1);
    assert_eq!(messages[0]["author"], "nurse-b");
    assert_eq!(
        messages[1]["body"],
        long.as_str(),
        "the thread holds the whole message"
    );
    assert_eq!(
        thread["read_receipts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["user"].as_str().unwrap(), r["up_to"].as_i64().unwrap()))
            .collect::<Vec<_>>(),
        [("dr-a", 1), ("nurse-b", 2)]
    );
    let first_page = read(
        &app,
        &paths::with_query(paths::case("h1", &case), "limit=1"),
        &dr,
    )
    .await;
    assert_eq!(first_page["messages"].as_array().unwrap().len(), 1);
    assert_eq!(first_page["messages"][0]["message_id"], 1);
    let next_page = read(
        &app,
        &paths::with_query(paths::case("h1", &case), "messages_after=1&limit=1"),
        &dr,
    )
    .await;
    assert_eq!(next_page["messages"][0]["message_id"], 2);

    // Filters.
    let in_review = app.cases("h1", &dr, "status=in_review").await;
    assert_eq!(in_review["cases"].as_array().unwrap().len(), 1);
    let open = app.cases("h1", &dr, "status=open").await;
    assert!(open["cases"].as_array().unwrap().is_empty());
}

#[actix_web::test]
async fn field_workers_see_only_the_cases_currently_assigned_to_them() {
    // Arrange
    let app = spawn_app().await;
    let dr = app.token("h1", "dr-a", Role::Physician);
    let asha1 = app.token("h1", "asha-1", Role::Asha);
    let chw2 = app.token("h1", "chw-2", Role::Chw);
    let mine = id(&open_case(&app, "h1", &dr, "Mine", Some("asha-1")).await);
    let theirs = id(&open_case(&app, "h1", &dr, "Theirs", Some("chw-2")).await);
    let last = position(&open_case(&app, "h1", &dr, "Nobody's", None).await);

    // Act / Assert: each worker sees their own case; a physician sees all three.
    let url = paths::with_query(paths::cases("h1"), format!("min_position={last}"));
    assert_eq!(
        ids(&read(&app, &url, &asha1).await["cases"], "case_id"),
        [mine.as_str()]
    );
    assert_eq!(
        ids(&read(&app, &url, &chw2).await["cases"], "case_id"),
        [theirs.as_str()]
    );
    assert_eq!(
        read(&app, &url, &dr).await["cases"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    // A filter narrows a worker's view but never widens it.
    let widened = app.cases("h1", &asha1, "assignee=chw-2").await;
    assert!(widened["cases"].as_array().unwrap().is_empty());
    let narrowed = app.cases("h1", &dr, "assignee=chw-2").await;
    assert_eq!(ids(&narrowed["cases"], "case_id"), [theirs.as_str()]);
    // Another worker's case answers exactly like an unknown one.
    let hidden = app.get(&paths::case("h1", &theirs), &asha1).await;
    assert_problem(hidden, StatusCode::NOT_FOUND, "case_not_found").await;
    let unknown = app.get(&paths::case("h1", uuid::Uuid::new_v4()), &dr).await;
    assert_problem(unknown, StatusCode::NOT_FOUND, "case_not_found").await;
    read(&app, &paths::case("h1", &mine), &asha1).await;

    // A reassignment moves the case from one worker's list to the other's.
    let moved = command(
        &app,
        &paths::case_command("h1", &theirs, "assign"),
        &dr,
        json!({"assignee": "asha-1"}),
    )
    .await;
    let url = paths::with_query(
        paths::cases("h1"),
        format!("min_position={}", position(&moved)),
    );
    let mut now_mine = ids(&read(&app, &url, &asha1).await["cases"], "case_id");
    now_mine.sort();
    let mut expected = vec![mine, theirs.clone()];
    expected.sort();
    assert_eq!(now_mine, expected);
    assert!(read(&app, &url, &chw2).await["cases"]
        .as_array()
        .unwrap()
        .is_empty());
    read(&app, &paths::case("h1", &theirs), &asha1).await;
}

#[actix_web::test]
async fn the_patient_view_shows_the_latest_reading_flagged_and_the_recent_history() {
    // Arrange: normal readings by a nurse and by a CHW, then one with a high heart rate and a
    // low SpO2 (the vitals policy raises an alert for it; that touches no vitals row).
    let app = spawn_app().await;
    let nurse = app.token("h1", "nurse-b", Role::Nurse);
    let chw = app.token("h1", "chw-1", Role::Chw);
    let dr = app.token("h1", "dr-a", Role::Physician);
    let vitals = &paths::vitals("h1", "p-7");
    command(&app, vitals, &nurse, json!({"heart_rate": 72, "spo2": 98})).await;
    let by_chw = position(&command(&app, vitals, &chw, json!({"temperature_c": 37.0})).await);
    let last = position(
        &command(
            &app,
            vitals,
            &nurse,
            json!({"heart_rate": 130, "systolic": 120, "diastolic": 80, "spo2": 88}),
        )
        .await,
    );

    // Act
    let view = read(
        &app,
        &paths::with_query(paths::patient("h1", "p-7"), format!("min_position={last}")),
        &dr,
    )
    .await;

    // Assert
    assert!(view["as_of"].as_i64().unwrap() >= last);
    assert_eq!(view["patient"], "p-7");
    let latest = &view["latest"];
    assert_eq!(latest["reading"], 3);
    assert_eq!(latest["heart_rate"], 130);
    assert_eq!(latest["temperature_c"], Value::Null);
    assert_eq!(latest["any_out_of_range"], true);
    assert_eq!(latest["recorded_by"], "nurse-b");
    assert_eq!(
        latest["flags"],
        json!({"heart_rate": "high", "systolic": "normal", "diastolic": "normal", "spo2": "low"})
    );
    let readings: Vec<i64> = view["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["reading"].as_i64().unwrap())
        .collect();
    assert_eq!(readings, [3, 2, 1], "newest first");
    assert_eq!(view["history"][2]["any_out_of_range"], false);
    let two = read(
        &app,
        &paths::with_query(paths::patient("h1", "p-7"), "history=2"),
        &dr,
    )
    .await;
    assert_eq!(two["history"].as_array().unwrap().len(), 2);

    // A field worker sees only the readings they took.
    let own = read(
        &app,
        &paths::with_query(
            paths::patient("h1", "p-7"),
            format!("min_position={by_chw}"),
        ),
        &chw,
    )
    .await;
    assert_eq!(own["latest"]["reading"], 2);
    assert_eq!(own["latest"]["flags"], json!({"temperature_c": "normal"}));
    assert_eq!(own["history"].as_array().unwrap().len(), 1);

    // A patient without readings.
    let nobody = read(&app, &paths::patient("h1", "p-404"), &dr).await;
    assert_eq!(nobody["latest"], Value::Null);
    assert!(nobody["history"].as_array().unwrap().is_empty());
}

#[actix_web::test]
async fn the_schedule_lists_one_utc_day_in_start_order_with_each_status() {
    // Arrange: four appointments on 2031-05-06 (UTC) and one the next day; one checked in,
    // one cancelled, one moved to the next day.
    let app = spawn_app().await;
    let op = app.token("h1", "op-1", Role::Operator);
    let schedule = |patient: &str, clinician: &str, start: &str, end: &str| json!({"patient": patient, "clinician": clinician, "start": start, "end": end, "reason": "follow-up"});
    let url = &paths::appointments("h1");
    let late = id(&command(
        &app,
        url,
        &op,
        schedule(
            "p-1",
            "dr-a",
            "2031-05-06T23:30:00Z",
            "2031-05-07T00:00:00Z",
        ),
    )
    .await);
    let early = id(&command(
        &app,
        url,
        &op,
        schedule(
            "p-2",
            "dr-b",
            "2031-05-06T08:00:00Z",
            "2031-05-06T08:30:00Z",
        ),
    )
    .await);
    let noon = id(&command(
        &app,
        url,
        &op,
        schedule(
            "p-3",
            "dr-a",
            "2031-05-06T12:00:00Z",
            "2031-05-06T12:30:00Z",
        ),
    )
    .await);
    let moved = id(&command(
        &app,
        url,
        &op,
        schedule(
            "p-4",
            "dr-a",
            "2031-05-06T10:00:00Z",
            "2031-05-06T10:30:00Z",
        ),
    )
    .await);
    command(
        &app,
        url,
        &op,
        schedule(
            "p-5",
            "dr-a",
            "2031-05-07T09:00:00Z",
            "2031-05-07T09:30:00Z",
        ),
    )
    .await;
    command_empty(&app, &format!("{url}/{early}/check-in"), &op).await;
    command(
        &app,
        &format!("{url}/{noon}/cancel"),
        &op,
        json!({"reason": "patient unwell"}),
    )
    .await;
    let last = position(
        &command(
            &app,
            &format!("{url}/{moved}/reschedule"),
            &op,
            json!({"start": "2031-05-07T10:00:00Z", "end": "2031-05-07T10:30:00Z"}),
        )
        .await,
    );

    // Act
    let day = read(
        &app,
        &format!("{url}?date=2031-05-06&min_position={last}"),
        &op,
    )
    .await;

    // Assert
    assert_eq!(day["as_of"], last, "as_of is the last applied event");
    assert_eq!(day["date"], "2031-05-06");
    assert_eq!(
        ids(&day["appointments"], "appointment_id"),
        [early.as_str(), noon.as_str(), late.as_str()]
    );
    let rows = day["appointments"].as_array().unwrap();
    assert_eq!(rows[0]["status"], "checked_in");
    assert!(rows[0]["checked_in_at"].is_string());
    assert_eq!(rows[1]["status"], "cancelled");
    assert_eq!(rows[1]["cancel_reason"], "patient unwell");
    assert_eq!(rows[2]["status"], "scheduled");
    assert_eq!(rows[2]["clinician"], "dr-a");
    assert_eq!(rows[2]["reason"], "follow-up");
    assert_eq!(rows[2]["starts_at"], "2031-05-06T23:30:00Z");
    let next_day = read(&app, &format!("{url}?date=2031-05-07"), &op).await;
    assert_eq!(next_day["appointments"].as_array().unwrap().len(), 2);
    assert_eq!(
        next_day["appointments"][1]["appointment_id"],
        moved.as_str()
    );
    let dr_a = read(&app, &format!("{url}?date=2031-05-06&clinician=dr-a"), &op).await;
    assert_eq!(
        ids(&dr_a["appointments"], "appointment_id"),
        [noon.as_str(), late.as_str()]
    );
    let scheduled = read(
        &app,
        &format!("{url}?date=2031-05-06&status=scheduled"),
        &op,
    )
    .await;
    assert_eq!(ids(&scheduled["appointments"], "appointment_id"), [late]);
}

#[actix_web::test]
async fn a_notification_is_listed_only_for_its_recipient_unread_first_and_newest_first() {
    // Arrange: three notifications to dr-a (one an urgent lab result), one to dr-b; dr-a
    // reads the oldest.
    let app = spawn_app().await;
    let nurse = app.token("h1", "nurse-b", Role::Nurse);
    let dr_a = app.token("h1", "dr-a", Role::Physician);
    let dr_b = app.token("h1", "dr-b", Role::Physician);
    let admin = app.token("h1", "admin", Role::Admin);
    let url = &paths::notifications("h1");
    let task = |title: &str| json!({"kind": "task_assigned", "title": title});
    let oldest = id(&command(
        &app,
        url,
        &nurse,
        json!({"recipient": "dr-a", "content": task("Review p-1")}),
    )
    .await);
    let lab = id(&command(
        &app,
        url,
        &nurse,
        json!({"recipient": "dr-a", "content": {"kind": "lab_result", "patient": "p-1", "test": "CBC", "summary": "Hb 7.1 g/dL", "urgent": true}}),
    )
    .await);
    let newest = id(&command(
        &app,
        url,
        &nurse,
        json!({"recipient": "dr-a", "content": task("Sign discharge")}),
    )
    .await);
    let for_b = id(&command(
        &app,
        url,
        &nurse,
        json!({"recipient": "dr-b", "content": task("Call lab")}),
    )
    .await);
    let last = position(&command_empty(&app, &format!("{url}/{oldest}/read"), &dr_a).await);

    // Act
    let inbox = read(&app, &format!("{url}?min_position={last}"), &dr_a).await;

    // Assert
    assert_eq!(inbox["as_of"], last, "as_of is the last applied event");
    assert_eq!(inbox["unread_count"], 2);
    assert_eq!(
        ids(&inbox["notifications"], "notification_id"),
        [newest.as_str(), lab.as_str(), oldest.as_str()]
    );
    let rows = inbox["notifications"].as_array().unwrap();
    assert_eq!(rows[1]["kind"], "lab_result");
    assert_eq!(rows[1]["urgent"], true);
    assert_eq!(rows[1]["patient"], "p-1");
    assert_eq!(rows[1]["content"]["summary"], "Hb 7.1 g/dL");
    assert_eq!(rows[1]["sent_by"], "nurse-b");
    assert_eq!(rows[0]["urgent"], false);
    assert_eq!(rows[0]["read_at"], Value::Null);
    assert!(rows[2]["read_at"].is_string());
    let unread = read(&app, &format!("{url}?unread_only=true"), &dr_a).await;
    assert_eq!(
        ids(&unread["notifications"], "notification_id"),
        [newest, lab]
    );
    let first = read(&app, &format!("{url}?limit=1"), &dr_a).await;
    assert_eq!(first["notifications"].as_array().unwrap().len(), 1);
    assert_eq!(
        first["unread_count"], 2,
        "the count covers more than the page"
    );

    // Nobody else sees them, administrators included.
    let b = read(&app, &format!("{url}?min_position={last}"), &dr_b).await;
    assert_eq!(ids(&b["notifications"], "notification_id"), [for_b]);
    assert_eq!(b["unread_count"], 1);
    let admins = read(&app, &format!("{url}?min_position={last}"), &admin).await;
    assert!(admins["notifications"].as_array().unwrap().is_empty());
    assert_eq!(admins["unread_count"], 0);
}

#[actix_web::test]
async fn roles_that_may_not_read_a_model_are_refused() {
    let app = spawn_app().await;
    let op = app.token("h1", "op-1", Role::Operator);
    let chw = app.token("h1", "chw-1", Role::Chw);
    let asha = app.token("h1", "asha-1", Role::Asha);
    let case = uuid::Uuid::new_v4();
    for path in [
        paths::cases("h1"),
        paths::case("h1", case),
        paths::patient("h1", "p-1"),
    ] {
        let refused = app.get(&path, &op).await;
        assert_problem(refused, StatusCode::FORBIDDEN, "role_forbidden").await;
    }
    for token in [&chw, &asha] {
        for path in [paths::appointments("h1"), paths::metrics("h1")] {
            let refused = app.get(&path, token).await;
            assert_problem(refused, StatusCode::FORBIDDEN, "role_forbidden").await;
        }
    }
    // What they may read answers.
    read(&app, &paths::appointments("h1"), &op).await;
    read(&app, &paths::metrics("h1"), &op).await;
    read(&app, &paths::notifications("h1"), &op).await;
    app.cases("h1", &chw, "").await;
    read(&app, &paths::patient("h1", "p-1"), &asha).await;
}

#[actix_web::test]
async fn another_hospitals_token_is_refused_and_its_data_never_appears() {
    // Arrange: the same kinds of records, for the same user ids, in two hospitals.
    let app = spawn_app().await;
    let mut last = 0;
    for h in ["h1", "h2"] {
        let dr = app.token(h, "dr-a", Role::Physician);
        let title = format!("case of {h}");
        let case = id(&open_case(&app, h, &dr, &title, None).await);
        post_message(&app, h, &case, &dr, &format!("message in {h}")).await;
        command(
            &app,
            &paths::vitals(h, "p-1"),
            &dr,
            json!({"heart_rate": 70}),
        )
        .await;
        command(
            &app,
            &paths::appointments(h),
            &dr,
            json!({"patient": "p-1", "clinician": "dr-a", "start": "2031-05-06T08:00:00Z", "end": "2031-05-06T08:30:00Z"}),
        )
        .await;
        let sent = command(
            &app,
            &paths::notifications(h),
            &dr,
            json!({"recipient": "dr-a", "content": {"kind": "task_assigned", "title": format!("task in {h}")}}),
        )
        .await;
        if h == "h1" {
            last = position(&sent);
        }
    }
    let h1 = app.token("h1", "dr-a", Role::Physician);
    let h2 = app.token("h2", "dr-a", Role::Physician);

    // Act / Assert: h2's token is refused on every h1 read.
    for path in [
        paths::cases("h1"),
        paths::case("h1", uuid::Uuid::new_v4()),
        paths::patient("h1", "p-1"),
        paths::with_query(paths::appointments("h1"), "date=2031-05-06"),
        paths::notifications("h1"),
        paths::metrics("h1"),
    ] {
        let refused = app.get(&path, &h2).await;
        assert_problem(refused, StatusCode::FORBIDDEN, "wrong_hospital").await;
    }
    // h1's reads hold h1's records only.
    let q = format!("min_position={last}");
    let cases = read(
        &app,
        &paths::with_query(paths::cases("h1"), q.to_string()),
        &h1,
    )
    .await;
    assert_eq!(cases["cases"].as_array().unwrap().len(), 1);
    assert_eq!(cases["cases"][0]["title"], "case of h1");
    let case = cases["cases"][0]["case_id"].as_str().unwrap();
    let thread = read(&app, &paths::case("h1", case), &h1).await;
    assert_eq!(thread["messages"][0]["body"], "message in h1");
    let patient = read(
        &app,
        &paths::with_query(paths::patient("h1", "p-1"), q.to_string()),
        &h1,
    )
    .await;
    assert_eq!(patient["history"].as_array().unwrap().len(), 1);
    let day = read(
        &app,
        &paths::with_query(paths::appointments("h1"), format!("date=2031-05-06&{q}")),
        &h1,
    )
    .await;
    assert_eq!(day["appointments"].as_array().unwrap().len(), 1);
    let inbox = read(
        &app,
        &paths::with_query(paths::notifications("h1"), q.to_string()),
        &h1,
    )
    .await;
    assert_eq!(inbox["unread_count"], 1);
    assert_eq!(inbox["notifications"][0]["content"]["title"], "task in h1");
    let metrics = read(
        &app,
        &paths::with_query(paths::metrics("h1"), q.to_string()),
        &h1,
    )
    .await;
    assert_eq!(metrics["cases_by_status"]["open"], 1);
    // And a case id of h2 is unknown in h1.
    let h2_cases = app.cases("h2", &h2, "").await;
    let h2_case = h2_cases["cases"][0]["case_id"].as_str().unwrap();
    let missing = app.get(&paths::case("h1", h2_case), &h1).await;
    assert_problem(missing, StatusCode::NOT_FOUND, "case_not_found").await;
}

#[actix_web::test]
async fn metrics_count_open_alerts_response_times_cases_and_users_online() {
    // Arrange: four alerts (one acknowledged, one resolved), three unassigned cases (one in
    // review), and a nurse connected over WebSocket.
    let app = spawn_app().await;
    let nurse = app.token("h1", "nurse-b", Role::Nurse);
    let dr = app.token("h1", "dr-a", Role::Physician);
    let op = app.token("h1", "op-1", Role::Operator);
    let critical = id(&app.raise_alert("h1", &nurse, "critical").await);
    let high = id(&app.raise_alert("h1", &nurse, "high").await);
    app.raise_alert("h1", &nurse, "high").await;
    app.raise_alert("h1", &nurse, "low").await;
    command_empty(&app, &paths::alert("h1", &critical, "acknowledge"), &nurse).await;
    command(
        &app,
        &paths::alert("h1", &high, "resolve"),
        &nurse,
        json!({"note": "false alarm"}),
    )
    .await;
    let case = id(&open_case(&app, "h1", &dr, "one", None).await);
    open_case(&app, "h1", &dr, "two", None).await;
    open_case(&app, "h1", &dr, "three", None).await;
    let last = position(
        &command(
            &app,
            &paths::case_command("h1", &case, "status"),
            &dr,
            json!({"status": "in_review"}),
        )
        .await,
    );
    let _socket = ws::connect(app.port, "h1", Some(&nurse)).await;

    // Act: poll until the connection counts (presence is written asynchronously).
    let (app_ref, op_ref) = (&app, &op);
    let metrics = eventually(DEADLINE, "the nurse to show online", || async move {
        let metrics = read(
            app_ref,
            &paths::with_query(paths::metrics("h1"), format!("min_position={last}")),
            op_ref,
        )
        .await;
        (metrics["connected_users_by_role"]["nurse"] == 1).then_some(metrics)
    })
    .await;

    // Assert
    assert_eq!(metrics["as_of"], last, "as_of is the last applied event");
    assert_eq!(
        metrics["open_alerts"],
        json!({"critical": 1, "high": 1, "medium": 0, "low": 1})
    );
    assert!(metrics["mean_seconds_to_acknowledge"].as_f64().unwrap() >= 0.0);
    assert!(metrics["mean_seconds_to_resolve"].as_f64().unwrap() >= 0.0);
    assert_eq!(
        metrics["cases_by_status"],
        json!({"open": 2, "in_review": 1, "accepted": 0, "referred": 0, "prescribed": 0, "completed": 0})
    );
    assert_eq!(
        metrics["connected_users_by_role"],
        json!({"admin": 0, "physician": 0, "nurse": 1, "operator": 0, "chw": 0, "asha": 0})
    );
    // With nothing resolved or acknowledged, the means are null.
    let empty = read(
        &app,
        &paths::metrics("h9"),
        &app.token("h9", "admin", Role::Admin),
    )
    .await;
    assert_eq!(empty["mean_seconds_to_acknowledge"], Value::Null);
    assert_eq!(empty["as_of"], 0);
}

#[actix_web::test]
async fn bad_query_parameters_are_refused_naming_the_field() {
    let app = spawn_app().await;
    let dr = app.token("h1", "dr-a", Role::Physician);
    let cases = [
        ("/api/hospitals/h1/cases?status=closed", "status"),
        (
            "/api/hospitals/h1/cases?assignee=not%20a%20user",
            "assignee",
        ),
        ("/api/hospitals/h1/cases?limit=0", "limit"),
        ("/api/hospitals/h1/cases?offset=-1", "offset"),
        ("/api/hospitals/h1/cases?min_position=-1", "min_position"),
        ("/api/hospitals/h1/cases/not-a-uuid", "id"),
        (
            "/api/hospitals/h1/cases/6a0f7a43-5a2c-4b36-9d5e-8a3f2c1d0e9b?messages_after=-1",
            "messages_after",
        ),
        ("/api/hospitals/h1/patients/p-1?history=0", "history"),
        ("/api/hospitals/h1/patients/not%20a%20patient", "patient"),
        ("/api/hospitals/h1/appointments?date=06-05-2031", "date"),
        ("/api/hospitals/h1/appointments?status=late", "status"),
        (
            "/api/hospitals/h1/appointments?clinician=a%20b",
            "clinician",
        ),
        ("/api/hospitals/h1/notifications?limit=501", "limit"),
        ("/api/hospitals/h1/metrics?min_position=-5", "min_position"),
    ];
    for (path, field) in cases {
        let response = app.get(path, &dr).await;
        let problem = assert_problem(response, StatusCode::BAD_REQUEST, "invalid_field").await;
        assert_eq!(problem["field"], field, "{path}");
    }
    for path in [
        "/api/hospitals/h1/cases?sort=title",
        "/api/hospitals/h1/notifications?unread_only=maybe",
        "/api/hospitals/h1/metrics?window=1h",
    ] {
        let response = app.get(path, &dr).await;
        assert_problem(response, StatusCode::BAD_REQUEST, "invalid_query").await;
    }
}

#[actix_web::test]
async fn a_rebuild_reproduces_every_read_model_exactly() {
    // Arrange: records in every model, read once from the live tables.
    let app = spawn_app().await;
    let dr = app.token("h1", "dr-a", Role::Physician);
    let case = id(&open_case(&app, "h1", &dr, "Cough", Some("asha-1")).await);
    post_message(&app, "h1", &case, &dr, "Please visit today").await;
    mark_read(&app, "h1", &case, &dr, 1).await;
    command(
        &app,
        &paths::vitals("h1", "p-1"),
        &dr,
        json!({"heart_rate": 70}),
    )
    .await;
    command(
        &app,
        &paths::appointments("h1"),
        &dr,
        json!({"patient": "p-1", "clinician": "dr-a", "start": "2031-05-06T08:00:00Z", "end": "2031-05-06T08:30:00Z"}),
    )
    .await;
    let last = position(
        &command(
            &app,
            &paths::notifications("h1"),
            &dr,
            json!({"recipient": "dr-a", "content": {"kind": "task_assigned", "title": "Sign"}}),
        )
        .await,
    );
    let paths = [
        paths::with_query(paths::cases("h1"), format!("min_position={last}")),
        paths::with_query(paths::case("h1", &case), format!("min_position={last}")),
        paths::with_query(paths::patient("h1", "p-1"), format!("min_position={last}")),
        paths::with_query(
            paths::appointments("h1"),
            format!("date=2031-05-06&min_position={last}"),
        ),
        paths::with_query(paths::notifications("h1"), format!("min_position={last}")),
    ];
    let mut before = Vec::new();
    for path in &paths {
        before.push(read(&app, path, &dr).await);
    }

    // Act: rebuild each model into shadow tables and swap them in.
    let models: [&dyn ReadModel; 4] = [&CaseList, &PatientView, &Schedule, &NotificationInbox];
    let cancel = std::sync::atomic::AtomicBool::new(false);
    for model in models {
        rebuild(&app.pool, model, true, &cancel, |_, _| {})
            .await
            .unwrap_or_else(|e| panic!("rebuilding {}: {e}", model.name()));
    }

    // Assert: the same answers (positions may have moved on if a policy acted meanwhile).
    for (path, before) in paths.iter().zip(before) {
        let mut after = read(&app, path, &dr).await;
        let mut before = before;
        for body in [&mut before, &mut after] {
            body["as_of"] = Value::Null;
        }
        assert_eq!(after, before, "{path}");
    }
}

/// Records in every read model of hospital `h`: a case with a message, a read receipt and
/// an assignment (which notifies), a reading, an appointment and a notification. Returns the
/// last command's position.
async fn populate_every_model(app: &TestApp, h: &str) -> i64 {
    let dr = app.token(h, "dr-a", Role::Physician);
    let case = id(&open_case(app, h, &dr, "Cough", Some("asha-1")).await);
    post_message(app, h, &case, &dr, "Please visit today").await;
    mark_read(app, h, &case, &dr, 1).await;
    command(
        app,
        &paths::vitals(h, "p-1"),
        &dr,
        json!({"heart_rate": 70}),
    )
    .await;
    command(
        app,
        &paths::appointments(h),
        &dr,
        json!({"patient": "p-1", "clinician": "dr-a", "start": "2031-05-06T08:00:00Z", "end": "2031-05-06T08:30:00Z"}),
    )
    .await;
    position(
        &command(
            app,
            &paths::notifications(h),
            &dr,
            json!({"recipient": "dr-a", "content": {"kind": "task_assigned", "title": "Sign"}}),
        )
        .await,
    )
}

/// Every row of `model`'s live tables that belongs to `hospital`, every column, in a stable
/// order.
async fn rows_of(app: &TestApp, model: &dyn ReadModel, hospital: &str) -> Vec<Value> {
    let mut rows = Vec::new();
    for table in model.tables() {
        let mut these: Vec<Value> = sqlx::query_scalar(&format!(
            "SELECT to_jsonb(t) FROM {table} t WHERE hospital = $1 ORDER BY to_jsonb(t)::text"
        ))
        .bind(hospital)
        .fetch_all(&app.pool)
        .await
        .unwrap();
        rows.append(&mut these);
    }
    rows
}

/// Waits until every model has applied every hospital's whole stream and no policy is still
/// adding events (see the comment inside for why one pass proves it).
async fn settled(app: &TestApp) {
    let heads = || async {
        sqlx::query_scalar::<_, i64>("SELECT coalesce(sum(position), 0)::bigint FROM stream_heads")
            .fetch_one(&app.pool)
            .await
            .unwrap()
    };
    // Positive signal, no quiet window: every projector and policy has reached every head,
    // and the heads did not move meanwhile (a policy commits its commands before it advances
    // its checkpoint, so an effect of what it handled shows in the second read).
    eventually(
        DEADLINE,
        "the projectors and policies to settle",
        || async {
            let before = heads().await;
            let behind: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM stream_heads h CROSS JOIN \
             unnest(ARRAY['case_list','patient_view','schedule','notification_inbox', \
                          'policy:assignment','policy:vitals','policy:escalation']) m \
             LEFT JOIN projection_checkpoints c ON c.projector = m AND c.hospital = h.hospital \
             WHERE coalesce(c.position, 0) < h.position",
            )
            .fetch_one(&app.pool)
            .await
            .unwrap();
            (behind == 0 && heads().await == before).then_some(())
        },
    )
    .await;
}

/// Invariants of `rebuild --hospital`: the hospital's rows come back exactly as its events
/// make them (here after they were lost), another hospital's rows and checkpoints are not
/// touched (its damage stays: the rebuild did not cover it), and no shadow table, shadow
/// checkpoint or scope row is left behind. Covers every model, including the generated
/// `unread` column of the notification inbox.
#[actix_web::test]
async fn a_rebuild_of_one_hospital_restores_its_rows_and_touches_no_other() {
    let app = spawn_app().await;
    populate_every_model(&app, "h1").await;
    populate_every_model(&app, "h2").await;
    settled(&app).await;
    let models: [&dyn ReadModel; 4] = [&CaseList, &PatientView, &Schedule, &NotificationInbox];
    let mut h1_before = Vec::new();
    for model in models {
        let rows = rows_of(&app, model, "h1").await;
        assert!(!rows.is_empty(), "{} has rows for h1", model.name());
        h1_before.push(rows);
    }
    let h2_checkpoints: Vec<(String, i64)> = sqlx::query_as(
        "SELECT projector, position FROM projection_checkpoints WHERE hospital = 'h2' ORDER BY 1",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    // Damage both hospitals' rows, as a projection bug would.
    for model in models {
        for table in model.tables() {
            sqlx::query(&format!("DELETE FROM {table}"))
                .execute(&app.pool)
                .await
                .unwrap();
        }
    }

    let cancel = std::sync::atomic::AtomicBool::new(false);
    for model in models {
        rebuild_scoped(
            &app.pool,
            model,
            &Scope::Hospital("h1".into()),
            false,
            &cancel,
            |_, _| {},
        )
        .await
        .unwrap_or_else(|e| panic!("rebuilding {} for h1: {e}", model.name()));
    }

    for (model, before) in models.iter().zip(h1_before) {
        assert_eq!(
            rows_of(&app, *model, "h1").await,
            before,
            "{}",
            model.name()
        );
        assert!(
            rows_of(&app, *model, "h2").await.is_empty(),
            "{} rebuilt h2 too",
            model.name()
        );
    }
    let h2_after: Vec<(String, i64)> = sqlx::query_as(
        "SELECT projector, position FROM projection_checkpoints WHERE hospital = 'h2' ORDER BY 1",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(h2_after, h2_checkpoints);
    let leftovers: (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM projection_checkpoints WHERE projector LIKE '%#rebuild'), \
                (SELECT count(*) FROM projection_rebuilds), \
                (SELECT count(*) FROM pg_tables WHERE tablename LIKE '%\\_rebuild')",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(leftovers, (0, 0, 0));
}

/// Invariants: an interrupted rebuild resumes only with its own scope — a rebuild of another
/// scope is refused (it would otherwise finish the wrong one) until `restart` drops it — and
/// the status names the scope.
#[actix_web::test]
async fn an_interrupted_rebuild_resumes_only_with_its_own_scope() {
    let app = spawn_app().await;
    populate_every_model(&app, "h1").await;
    populate_every_model(&app, "h2").await;
    settled(&app).await;
    let cancelled = std::sync::atomic::AtomicBool::new(true);
    let h1 = Scope::Hospital("h1".into());
    let interrupted = rebuild_scoped(&app.pool, &Schedule, &h1, false, &cancelled, |_, _| {}).await;
    assert!(matches!(
        interrupted,
        Err(projections::engine::ProjectionError::Cancelled)
    ));
    let status = projections::engine::status(&app.pool, &[&Schedule])
        .await
        .unwrap();
    let progress = status[0].rebuild.clone().expect("a rebuild in progress");
    assert_eq!(progress.hospital.as_deref(), Some("h1"));
    assert_eq!(
        progress.done, progress.total,
        "h1's one event is in the shadow"
    );

    let go = std::sync::atomic::AtomicBool::new(false);
    let other = rebuild(&app.pool, &Schedule, false, &go, |_, _| {}).await;
    assert!(
        matches!(
            other,
            Err(projections::engine::ProjectionError::OtherScope { .. })
        ),
        "{other:?}"
    );
    rebuild_scoped(&app.pool, &Schedule, &h1, false, &go, |_, _| {})
        .await
        .expect("resumed with its own scope");
    // And a full rebuild after a restart of a scoped one.
    rebuild_scoped(&app.pool, &Schedule, &h1, false, &cancelled, |_, _| {})
        .await
        .expect_err("cancelled again");
    rebuild(&app.pool, &Schedule, true, &go, |_, _| {})
        .await
        .expect("restart drops the scoped rebuild");
    assert!(projections::engine::pending_rebuild(&app.pool, &Schedule)
        .await
        .unwrap()
        .is_none());
}

#[actix_web::test]
async fn the_openapi_document_describes_every_read_endpoint() {
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
    for path in [
        "/api/hospitals/{hospital}/cases",
        "/api/hospitals/{hospital}/cases/{id}",
        "/api/hospitals/{hospital}/patients/{patient}",
        "/api/hospitals/{hospital}/appointments",
        "/api/hospitals/{hospital}/notifications",
        "/api/hospitals/{hospital}/metrics",
    ] {
        let get = &doc["paths"][path]["get"];
        assert!(get.is_object(), "no GET {path}");
        for status in ["200", "400", "401", "403", "503"] {
            assert!(
                get["responses"].get(status).is_some(),
                "GET {path} lacks {status}"
            );
        }
    }
    assert!(doc["paths"]["/api/hospitals/{hospital}/cases"]["post"].is_object());
    assert!(doc["components"]["schemas"]["MetricsSnapshot"].is_object());
}
