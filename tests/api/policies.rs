//! Policies: assignment notifications, vitals alerts, auto-escalation — each effect exactly
//! once, across retries, restarts and several nodes, and never again during a rebuild.
//!
//! No test waits for a deadline to pass: deadlines are set an hour away and the test
//! backdates `due_at` in `alert_deadlines` when it wants one due (the deadline arithmetic is
//! unit-tested with fixed times in `src/policy/escalation.rs`, and the arming of a row with
//! the hospital's deadline is checked below). Every wait polls with a bounded deadline, and
//! "nothing more happened" is asserted only once [`settled`] has seen the policies and the
//! scheduler with nothing left to do.

use std::sync::atomic::AtomicBool;

use aggregates::alert::{Alert, AlertCommand, EscalationGuard};
use aggregates::types::{HospitalId, Reason, Role, UserId};
use chrono::Utc;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;
use vigil::command::{CommandBus, CommandContext};
use vigil::startup::{Application, Shutdown};

use crate::helpers::{eventually, paths, settings, spawn_app, TestApp, WAIT};

const H: &str = "h-policies";

/// The checkpoints of the policies driven by the stream.
const POLICIES: [&str; 3] = ["policy:assignment", "policy:vitals", "policy:escalation"];

/// A deadline no test waits for: rows armed with it are due only when a test backdates them.
const FAR: i32 = 3600;

/// One stored event, read from the database (all of them, whoever may see them).
#[derive(Debug, Clone)]
struct Stored {
    event_type: String,
    aggregate_id: String,
    data: Value,
    metadata: Value,
}

async fn stored(pool: &PgPool) -> Vec<Stored> {
    let rows: Vec<(String, String, Value, Value)> = sqlx::query_as(
        "SELECT event_type, aggregate_id, payload, metadata FROM events \
         WHERE hospital = $1 ORDER BY position",
    )
    .bind(H)
    .fetch_all(pool)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(event_type, aggregate_id, payload, metadata)| Stored {
            data: payload[&event_type].clone(),
            aggregate_id: aggregate_id
                .strip_prefix(&format!("{H}/"))
                .unwrap_or(&aggregate_id)
                .to_owned(),
            event_type,
            metadata,
        })
        .collect()
}

async fn of_type(pool: &PgPool, event_type: &str) -> Vec<Stored> {
    stored(pool)
        .await
        .into_iter()
        .filter(|e| e.event_type == event_type)
        .collect()
}

async fn head(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT coalesce((SELECT position FROM stream_heads WHERE hospital = $1), 0)",
    )
    .bind(H)
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn checkpoint(pool: &PgPool, projector: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT coalesce((SELECT position FROM projection_checkpoints \
         WHERE projector = $1 AND hospital = $2), 0)",
    )
    .bind(projector)
    .bind(H)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Deadline rows of the hospital that are due now (a row being fired keeps its `due_at`
/// until the outcome of its escalation commits).
async fn due_deadlines(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM alert_deadlines WHERE hospital = $1 AND due_at <= clock_timestamp()",
    )
    .bind(H)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Waits until the policies and the escalation scheduler have nothing left to do: every
/// policy's checkpoint has reached the stream head, the head has not moved meanwhile, and no
/// deadline is due. This is the positive signal an absence check waits for before asserting
/// that nothing (more) happened.
///
/// Why it is enough: a policy commits the commands of a batch before it advances its
/// checkpoint, and the scheduler commits an escalation before it clears the row's `due_at`;
/// so reading the head, then the checkpoints and the due rows, then the head again, sees
/// any effect of what was handled in the second read of the head.
async fn settled(pool: &PgPool) {
    eventually(WAIT, "the policies and the scheduler to settle", || async {
        let before = head(pool).await;
        for policy in POLICIES {
            if checkpoint(pool, policy).await < before {
                return None;
            }
        }
        let quiet = due_deadlines(pool).await == 0 && head(pool).await == before;
        quiet.then_some(())
    })
    .await;
}

/// The deadline row of `alert`: (level, seconds until due; `None` when not armed).
async fn deadline_of(pool: &PgPool, alert: &str) -> Option<(i16, Option<f64>)> {
    sqlx::query_as(
        "SELECT level, extract(epoch FROM due_at - clock_timestamp())::float8 \
         FROM alert_deadlines WHERE hospital = $1 AND alert_id = $2",
    )
    .bind(H)
    .bind(alert)
    .fetch_optional(pool)
    .await
    .unwrap()
}

/// Waits until each of `alerts` is armed (due in the future) for `level`.
async fn armed_for(pool: &PgPool, alerts: &[String], level: i16) {
    eventually(
        WAIT,
        &format!("deadlines armed for level {level}"),
        || async {
            let armed: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM alert_deadlines WHERE hospital = $1 AND alert_id = ANY($2) \
             AND level = $3 AND due_at > clock_timestamp()",
            )
            .bind(H)
            .bind(alerts)
            .bind(level)
            .fetch_one(pool)
            .await
            .unwrap();
            (armed == alerts.len() as i64).then_some(())
        },
    )
    .await;
}

/// Makes the armed deadlines of `alerts` due now, as if their time had passed.
async fn backdate(pool: &PgPool, alerts: &[String]) {
    let moved = sqlx::query(
        "UPDATE alert_deadlines SET due_at = clock_timestamp() \
         WHERE hospital = $1 AND alert_id = ANY($2) AND due_at IS NOT NULL",
    )
    .bind(H)
    .bind(alerts)
    .execute(pool)
    .await
    .unwrap();
    assert_eq!(
        moved.rows_affected(),
        alerts.len() as u64,
        "every deadline backdated"
    );
}

/// Sets the hospital's deadline for `severity` (as an administrator would, in SQL).
async fn set_deadline(pool: &PgPool, severity: &str, seconds: i32) {
    sqlx::query(
        "INSERT INTO escalation_deadlines (hospital, severity, seconds) VALUES ($1, $2, $3) \
         ON CONFLICT (hospital, severity) DO UPDATE SET seconds = EXCLUDED.seconds",
    )
    .bind(H)
    .bind(severity)
    .bind(seconds)
    .execute(pool)
    .await
    .unwrap();
}

/// Another server on the same database: a second node, or a restarted one.
async fn start_node(url: &str) -> Shutdown {
    let app = Application::build(&settings(url))
        .await
        .expect("build node");
    let shutdown = app.shutdown_handle();
    actix_web::rt::spawn(app.run_until_stopped());
    shutdown
}

fn created_id(outcome: &Value) -> String {
    outcome["aggregate_id"].as_str().unwrap().to_owned()
}

async fn raise(app: &TestApp, token: &str, severity: &str) -> String {
    created_id(&app.raise_alert(H, token, severity).await)
}

/// The escalations of `alert`, as (level, by, command id, causation id).
async fn escalations(pool: &PgPool, alert: &str) -> Vec<(u64, String, String, String)> {
    of_type(pool, "AlertEscalated")
        .await
        .into_iter()
        .filter(|e| e.aggregate_id == alert)
        .map(|e| {
            (
                e.data["level"].as_u64().unwrap(),
                e.data["by"].as_str().unwrap().to_owned(),
                e.metadata["command_id"].as_str().unwrap().to_owned(),
                e.metadata["causation_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The command id of the event of `alert` of `event_type` at `level` (None for raise).
async fn command_of(pool: &PgPool, alert: &str, event_type: &str) -> String {
    stored(pool)
        .await
        .into_iter()
        .find(|e| e.aggregate_id == alert && e.event_type == event_type)
        .map(|e| e.metadata["command_id"].as_str().unwrap().to_owned())
        .unwrap()
}

#[actix_web::test]
async fn assigning_a_case_notifies_the_assignee_exactly_once_even_when_the_policy_is_retried() {
    // Arrange
    let app = spawn_app().await;
    let doctor = app.token(H, "dr-rao", Role::Physician);
    let asha = app.token(H, "asha-1", Role::Asha);
    let chw = app.token(H, "chw-ravi", Role::Chw);
    let asha2 = app.token(H, "asha-2", Role::Asha);

    // Act: open a case for asha-1, then hand it to chw-ravi; asha-2 takes a case herself.
    let opened = app
        .open_case(
            H,
            &doctor,
            json!({"patient": "p-7", "title": "Fever 3 days", "assignee": "asha-1"}),
        )
        .await;
    assert_eq!(opened.status(), StatusCode::CREATED);
    let case_id = created_id(&opened.json().await.unwrap());
    let assigned = app.assign_case(H, &doctor, &case_id, "chw-ravi").await;
    assert_eq!(assigned.status(), StatusCode::OK);
    let own = app
        .open_case(
            H,
            &asha2,
            json!({"patient": "p-8", "title": "Follow-up", "assignee": "asha-2"}),
        )
        .await;
    assert_eq!(own.status(), StatusCode::CREATED);

    // Assert: each assignee sees exactly one notification, caused by their assignment.
    let notifications_of = |token: String| {
        let app = &app;
        async move {
            let page = app.events(H, &token, 0).await;
            let events = page["events"].as_array().unwrap().clone();
            let cause = |t: &str| {
                events
                    .iter()
                    .find(|e| e["type"] == t)
                    .map(|e| e["metadata"]["command_id"].clone())
            };
            let (opened, assigned) = (cause("CaseOpened"), cause("CaseAssigned"));
            let sent: Vec<Value> = events
                .into_iter()
                .filter(|e| e["type"] == "NotificationSent")
                .collect();
            (sent, opened, assigned)
        }
    };
    let check = |sent: &[Value], recipient: &str, causation: &Value| {
        assert_eq!(sent.len(), 1, "one notification for {recipient}: {sent:?}");
        let n = &sent[0];
        assert_eq!(n["data"]["recipient"], recipient);
        assert_eq!(n["data"]["by"], "system");
        assert_eq!(n["data"]["content"]["kind"], "task_assigned");
        assert_eq!(n["data"]["content"]["title"], "Case assigned: Fever 3 days");
        assert_eq!(n["data"]["content"]["case_id"], case_id.as_str());
        assert_eq!(n["metadata"]["user"], "system");
        assert_eq!(&n["metadata"]["causation_id"], causation);
    };
    let (sent, opened_cmd, _) = eventually(WAIT, "asha-1's notification", || async {
        let found = notifications_of(asha.clone()).await;
        (!found.0.is_empty()).then_some(found)
    })
    .await;
    check(&sent, "asha-1", &opened_cmd.unwrap());
    let (sent, _, assigned_cmd) = eventually(WAIT, "chw-ravi's notification", || async {
        let found = notifications_of(chw.clone()).await;
        (!found.0.is_empty()).then_some(found)
    })
    .await;
    check(&sent, "chw-ravi", &assigned_cmd.unwrap());
    settled(&app.pool).await;
    assert!(
        notifications_of(asha2.clone()).await.0.is_empty(),
        "assigning oneself notifies nobody"
    );
    let first_ids: Vec<String> = of_type(&app.pool, "NotificationSent")
        .await
        .into_iter()
        .map(|e| e.aggregate_id)
        .collect();
    assert_eq!(first_ids.len(), 2);

    // Act: the policy's batch is "retried" from the start of the stream.
    sqlx::query(
        "UPDATE projection_checkpoints SET position = 0 WHERE projector = 'policy:assignment'",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    settled(&app.pool).await;

    // Assert: still the same two notifications, no more.
    let ids: Vec<String> = of_type(&app.pool, "NotificationSent")
        .await
        .into_iter()
        .map(|e| e.aggregate_id)
        .collect();
    assert_eq!(ids, first_ids);
    assert_eq!(notifications_of(asha.clone()).await.0.len(), 1);
}

#[actix_web::test]
async fn an_out_of_range_reading_raises_one_alert_per_patient_and_sign_while_it_is_open() {
    // Arrange
    let app = spawn_app().await;
    let nurse = app.token(H, "nurse-amy", Role::Nurse);
    let record = |body: Value| {
        let (app, nurse) = (&app, nurse.clone());
        async move {
            let r = app.record_vitals(H, &nurse, "p-1", body).await;
            assert_eq!(r.status(), StatusCode::CREATED);
        }
    };
    let raised = || async { of_type(&app.pool, "AlertRaised").await };

    // Act: a hypoxaemic reading.
    record(json!({"spo2": 82, "heart_rate": 80})).await;

    // Assert: one critical alert for that patient and sign, raised by the system, caused by
    // the reading.
    let first = eventually(WAIT, "the SpO2 alert", || async {
        raised().await.into_iter().next()
    })
    .await;
    assert_eq!(first.data["by"], "system");
    assert_eq!(first.data["severity"], "critical");
    assert_eq!(first.data["patient"], "p-1");
    assert_eq!(first.data["message"], "SpO2 82% (low) for patient p-1");
    let reading = of_type(&app.pool, "VitalsRecorded").await.remove(0);
    assert_eq!(
        first.metadata["causation_id"],
        reading.metadata["command_id"]
    );

    // Act: SpO2 still low while the alert is open; the heart rate is now high too.
    record(json!({"spo2": 85, "heart_rate": 150})).await;
    settled(&app.pool).await;

    // Assert: no second SpO2 alert; one heart-rate alert.
    let alerts = raised().await;
    let messages: Vec<&str> = alerts
        .iter()
        .map(|e| e.data["message"].as_str().unwrap())
        .collect();
    assert_eq!(
        messages,
        vec![
            "SpO2 82% (low) for patient p-1",
            "Heart rate 150 bpm (high) for patient p-1"
        ]
    );

    // Act: the SpO2 alert is resolved, then SpO2 is low again.
    let resolved = app
        .resolve(H, &nurse, &first.aggregate_id, "oxygen increased")
        .await;
    assert_eq!(resolved.status(), StatusCode::OK);
    record(json!({"spo2": 80})).await;

    // Assert: a new SpO2 alert.
    let third = eventually(WAIT, "a new SpO2 alert", || async {
        raised().await.into_iter().nth(2)
    })
    .await;
    assert_eq!(third.data["message"], "SpO2 80% (low) for patient p-1");
    assert_ne!(third.aggregate_id, first.aggregate_id);
    settled(&app.pool).await;
    assert_eq!(raised().await.len(), 3);

    // Act: with every SpO2 alert resolved (so only positions can tell that the second
    // reading came while one was open), the policy reads the whole stream again.
    let resolved = app
        .resolve(H, &nurse, &third.aggregate_id, "recovered")
        .await;
    assert_eq!(resolved.status(), StatusCode::OK);
    settled(&app.pool).await;
    sqlx::query("UPDATE projection_checkpoints SET position = 0 WHERE projector = 'policy:vitals'")
        .execute(&app.pool)
        .await
        .unwrap();
    settled(&app.pool).await;

    // Assert: it decides as the first time: no new alert, and no re-raised one.
    assert_eq!(raised().await.len(), 3);
}

/// Alerts left unacknowledged in the multi-node test: enough that the nodes' schedulers
/// keep finding the same due rows at the same time.
const IGNORED_ALERTS: usize = 12;

#[actix_web::test]
async fn unacknowledged_alerts_are_escalated_once_per_level_by_competing_nodes() {
    // Invariant: however many nodes run the scheduler, each (alert, level) is escalated by
    // exactly one command, and an acknowledged alert never.
    // Arrange: three nodes on one database; critical deadlines an hour away, so that each
    // level is due exactly when the test backdates it.
    let app = spawn_app().await;
    let others = [start_node(&app.db.url).await, start_node(&app.db.url).await];
    set_deadline(&app.pool, "critical", FAR).await;
    let nurse = app.token(H, "nurse-amy", Role::Nurse);

    // Act: most alerts are left alone; one is acknowledged at once.
    let mut ignored = Vec::new();
    for _ in 0..IGNORED_ALERTS {
        ignored.push(raise(&app, &nurse, "critical").await);
    }
    let owned = raise(&app, &nurse, "critical").await;
    let ack = app.acknowledge(H, &nurse, &owned).await;
    assert_eq!(ack.status(), StatusCode::OK);
    // The stream-driven policies compete too.
    let doctor = app.token(H, "dr-rao", Role::Physician);
    let opened = app
        .open_case(
            H,
            &doctor,
            json!({"patient": "p-7", "title": "Fever", "assignee": "asha-1"}),
        )
        .await;
    assert_eq!(opened.status(), StatusCode::CREATED);
    let recorded = app
        .record_vitals(H, &nurse, "p-1", json!({"heart_rate": 150}))
        .await;
    assert_eq!(recorded.status(), StatusCode::CREATED);

    // Act: level by level, every ignored alert's deadline passes at the same instant, so the
    // three nodes' schedulers find the same twelve due rows at once.
    for level in 1..=5 {
        armed_for(&app.pool, &ignored, level).await;
        backdate(&app.pool, &ignored).await;
    }

    // Assert: every ignored alert climbs every level up to the last, once each, by
    // `system`, each escalation caused by the event that armed it (the raise, then the
    // previous escalation); past the last level nothing is armed any more.
    eventually(WAIT, "every deadline to be used up", || async {
        let left: i64 =
            sqlx::query_scalar("SELECT count(*) FROM alert_deadlines WHERE alert_id = ANY($1)")
                .bind(&ignored)
                .fetch_one(&app.pool)
                .await
                .unwrap();
        (left == 0).then_some(())
    })
    .await;
    settled(&app.pool).await;
    for alert in &ignored {
        let climbed = escalations(&app.pool, alert).await;
        let levels: Vec<u64> = climbed.iter().map(|e| e.0).collect();
        assert_eq!(levels, vec![1, 2, 3, 4, 5], "each level exactly once");
        assert!(climbed.iter().all(|e| e.1 == "system"));
        let mut cause = command_of(&app.pool, alert, "AlertRaised").await;
        for (_, _, command, causation) in &climbed {
            assert_eq!(causation, &cause);
            cause = command.clone();
        }
    }
    assert!(
        escalations(&app.pool, &owned).await.is_empty(),
        "an acknowledged alert is not escalated"
    );
    assert_eq!(of_type(&app.pool, "NotificationSent").await.len(), 1);
    let by_system = of_type(&app.pool, "AlertRaised")
        .await
        .into_iter()
        .filter(|e| e.data["by"] == "system")
        .count();
    assert_eq!(by_system, 1, "one heart-rate alert");
    for node in others {
        node.trigger().await;
    }
}

#[actix_web::test]
async fn a_pending_deadline_fires_once_after_the_server_restarts() {
    // Arrange
    let app = spawn_app().await;
    set_deadline(&app.pool, "critical", FAR).await;
    let nurse = app.token(H, "nurse-amy", Role::Nurse);
    let alert = raise(&app, &nurse, "critical").await;
    armed_for(&app.pool, std::slice::from_ref(&alert), 1).await;

    // Act: the only server stops before the deadline, which passes while no server runs; a
    // new one starts on the database.
    app.shutdown.trigger().await;
    assert!(escalations(&app.pool, &alert).await.is_empty());
    backdate(&app.pool, std::slice::from_ref(&alert)).await;
    let restarted = start_node(&app.db.url).await;

    // Assert: level 1 fires once, and the deadline moves on to level 2.
    eventually(WAIT, "the escalation after the restart", || async {
        (!escalations(&app.pool, &alert).await.is_empty()).then_some(())
    })
    .await;
    eventually(WAIT, "the level-2 deadline", || async {
        let level: Option<i16> =
            sqlx::query_scalar("SELECT level FROM alert_deadlines WHERE alert_id = $1")
                .bind(&alert)
                .fetch_optional(&app.pool)
                .await
                .unwrap();
        (level == Some(2)).then_some(())
    })
    .await;
    settled(&app.pool).await;
    let levels: Vec<u64> = escalations(&app.pool, &alert)
        .await
        .iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(levels, vec![1], "level 1 once, level 2 not due yet");
    restarted.trigger().await;
}

#[actix_web::test]
async fn a_deadline_claimed_by_a_node_that_died_is_finished_under_the_same_command_id() {
    // Arrange: deadlines far away, so only what the test stages is due.
    let app = spawn_app().await;
    set_deadline(&app.pool, "critical", FAR).await;
    let nurse = app.token(H, "nurse-amy", Role::Nurse);
    let first = raise(&app, &nurse, "critical").await;
    let second = raise(&app, &nurse, "critical").await;
    settled(&app.pool).await;
    let bus = CommandBus::new(app.pool.clone());

    // Act 1: a node stamped `first`'s level-1 command and died before executing it.
    let stamped = Uuid::new_v4();
    sqlx::query(
        "UPDATE alert_deadlines SET due_at = clock_timestamp(), command_id = $2, \
         fired_at = clock_timestamp() - interval '1 minute' WHERE alert_id = $1",
    )
    .bind(&first)
    .bind(stamped)
    .execute(&app.pool)
    .await
    .unwrap();

    // Assert 1: another scheduler runs it under the stamped id, once.
    let done = eventually(WAIT, "the re-run escalation", || async {
        escalations(&app.pool, &first).await.into_iter().next()
    })
    .await;
    assert_eq!(done.2, stamped.to_string());

    // Act 2: a node executed `second`'s level-1 command and died before recording it. The
    // escalation policy is held back (its checkpoint locked, as by a slow node) so the row
    // is still the fired level-1 deadline when the next scheduler finds it.
    let mut held = app.pool.begin().await.unwrap();
    sqlx::query(
        "SELECT position FROM projection_checkpoints \
         WHERE projector = 'policy:escalation' AND hospital = $1 FOR UPDATE",
    )
    .bind(H)
    .execute(&mut *held)
    .await
    .unwrap();
    let executed = Uuid::new_v4();
    let ctx = CommandContext {
        hospital: HospitalId::parse(H).unwrap(),
        user: UserId::parse("system").unwrap(),
        role: Role::Admin,
        command_id: executed,
        correlation_id: executed,
        causation_id: executed,
    };
    bus.execute::<Alert>(&ctx, &second, || AlertCommand::Escalate {
        reason: Reason::parse("deadline").unwrap(),
        guard: EscalationGuard::Unacknowledged { from_level: 0 },
        by: UserId::parse("system").unwrap(),
        at: Utc::now(),
    })
    .await
    .unwrap();
    sqlx::query(
        "UPDATE alert_deadlines SET due_at = clock_timestamp(), command_id = $2, \
         fired_at = clock_timestamp() - interval '1 minute' WHERE alert_id = $1",
    )
    .bind(&second)
    .bind(executed)
    .execute(&app.pool)
    .await
    .unwrap();

    // Assert 2: the scheduler finds the committed escalation by its id and does not escalate
    // again; once the policy runs, the deadline moves on to level 2.
    eventually(WAIT, "the stale row to be reconciled", || async {
        let due: Option<Option<chrono::DateTime<Utc>>> =
            sqlx::query_scalar("SELECT due_at FROM alert_deadlines WHERE alert_id = $1")
                .bind(&second)
                .fetch_optional(&app.pool)
                .await
                .unwrap();
        (due == Some(None)).then_some(())
    })
    .await;
    held.rollback().await.unwrap();
    eventually(WAIT, "the level-2 deadline", || async {
        let level: Option<i16> =
            sqlx::query_scalar("SELECT level FROM alert_deadlines WHERE alert_id = $1")
                .bind(&second)
                .fetch_optional(&app.pool)
                .await
                .unwrap();
        (level == Some(2)).then_some(())
    })
    .await;
    settled(&app.pool).await;
    let (level, due_in) = deadline_of(&app.pool, &second).await.expect("the row");
    assert_eq!(level, 2);
    assert!(
        due_in.is_some_and(|s| s > f64::from(FAR) - 60.0),
        "level 2 is armed an hour away: {due_in:?}"
    );
    let levels: Vec<u64> = escalations(&app.pool, &second)
        .await
        .iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(levels, vec![1]);
    assert_eq!(escalations(&app.pool, &first).await.len(), 1);
}

#[actix_web::test]
async fn a_rebuild_of_the_alert_board_does_not_run_policies_again() {
    // Arrange: one effect of each policy has happened.
    let app = spawn_app().await;
    set_deadline(&app.pool, "critical", FAR).await;
    let doctor = app.token(H, "dr-rao", Role::Physician);
    let nurse = app.token(H, "nurse-amy", Role::Nurse);
    let opened = app
        .open_case(
            H,
            &doctor,
            json!({"patient": "p-7", "title": "Fever", "assignee": "asha-1"}),
        )
        .await;
    assert_eq!(opened.status(), StatusCode::CREATED);
    let vitals = app
        .record_vitals(H, &nurse, "p-1", json!({"spo2": 82}))
        .await;
    assert_eq!(vitals.status(), StatusCode::CREATED);
    let raised = eventually(WAIT, "the vitals alert", || async {
        of_type(&app.pool, "AlertRaised").await.into_iter().next()
    })
    .await;
    let alert = vec![raised.aggregate_id];
    armed_for(&app.pool, &alert, 1).await;
    backdate(&app.pool, &alert).await;
    eventually(
        WAIT,
        "a notification, an alert and an escalation",
        || async {
            let ok = !of_type(&app.pool, "NotificationSent").await.is_empty()
                && !of_type(&app.pool, "AlertEscalated").await.is_empty();
            ok.then_some(())
        },
    )
    .await;
    // Nothing may be due during the rebuild: acknowledge the alert, stopping escalations.
    let ack = app.acknowledge(H, &nurse, &alert[0]).await;
    assert_eq!(ack.status(), StatusCode::OK);
    settled(&app.pool).await;
    let count = |t: &'static str| {
        let pool = app.pool.clone();
        async move { of_type(&pool, t).await.len() }
    };
    let before = (
        count("NotificationSent").await,
        count("AlertRaised").await,
        count("AlertEscalated").await,
        head(&app.pool).await,
    );

    // Act
    let model = vigil::projection::model("alert_board").expect("the alert board");
    projections::engine::rebuild(
        &app.pool,
        model.as_ref(),
        true,
        &AtomicBool::new(false),
        |_, _| {},
    )
    .await
    .expect("rebuild");
    settled(&app.pool).await;

    // Assert: no policy effect ran again; the stream did not grow at all.
    let after = (
        count("NotificationSent").await,
        count("AlertRaised").await,
        count("AlertEscalated").await,
        head(&app.pool).await,
    );
    assert_eq!(after, before);
}

/// `PUT` of the escalation policy with `token`.
async fn put_policy(app: &TestApp, hospital: &str, token: &str, body: Value) -> reqwest::Response {
    app.put(&paths::escalation_policy(hospital), token, body)
        .await
}

/// Invariants of the escalation policy endpoint: defaults until set; only the hospital's
/// admins read or change it; every severity is required and each deadline is in range
/// (a bad body changes nothing); an alert raised afterwards is armed with the new deadline.
#[actix_web::test]
async fn an_admin_sets_the_escalation_deadlines_and_new_alerts_are_armed_with_them() {
    let app = spawn_app().await;
    let admin = app.token(H, "admin-ada", Role::Admin);
    let path = paths::escalation_policy(H);
    let defaults: Value = app.get(&path, &admin).await.json().await.unwrap();
    assert_eq!(
        defaults,
        json!({"critical": 120, "high": 600, "medium": 1800, "low": 3600})
    );

    let nurse = app.token(H, "nurse-amy", Role::Nurse);
    let elsewhere = app.token("city-general", "admin-bob", Role::Admin);
    let wanted = json!({"critical": 90, "high": 300, "medium": 1200, "low": 7200});
    for token in [&nurse, &elsewhere] {
        let refused = put_policy(&app, H, token, wanted.clone()).await;
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        assert_eq!(app.get(&path, token).await.status(), StatusCode::FORBIDDEN);
    }
    for (bad, field) in [
        (
            json!({"critical": 5, "high": 300, "medium": 1200, "low": 7200}),
            "critical",
        ),
        (
            json!({"critical": 90, "high": 700000, "medium": 1200, "low": 7200}),
            "high",
        ),
        (
            json!({"critical": 90, "high": -1, "medium": 1200, "low": 7200}),
            "high",
        ),
        (json!({"critical": 90, "high": 300, "medium": 1200}), ""),
        (
            json!({"critical": 90, "high": 300, "medium": 1200, "low": 7200, "x": 1}),
            "",
        ),
    ] {
        let response = put_policy(&app, H, &admin, bad.clone()).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad}");
        let problem: Value = response.json().await.unwrap();
        if !field.is_empty() {
            assert_eq!(problem["field"], field, "{bad}: {problem}");
        }
    }
    assert_eq!(
        app.get(&path, &admin).await.json::<Value>().await.unwrap(),
        defaults,
        "a refused body changed nothing"
    );

    let set = put_policy(&app, H, &admin, wanted.clone()).await;
    assert_eq!(set.status(), StatusCode::OK);
    assert_eq!(set.json::<Value>().await.unwrap(), wanted);
    assert_eq!(
        app.get(&path, &admin).await.json::<Value>().await.unwrap(),
        wanted
    );
    // Another hospital keeps its defaults.
    let theirs: Value = app
        .get(&paths::escalation_policy("city-general"), &elsewhere)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(theirs, defaults);

    let alert = raise(&app, &nurse, "critical").await;
    let armed: f64 = eventually(WAIT, "the deadline row", || async {
        sqlx::query_scalar::<_, f64>(
            "SELECT extract(epoch FROM d.due_at - e.recorded_at)::float8 \
             FROM alert_deadlines d JOIN events e \
               ON e.aggregate_id = d.hospital || '/' || d.alert_id AND e.sequence = 1 \
             WHERE d.alert_id = $1",
        )
        .bind(&alert)
        .fetch_optional(&app.pool)
        .await
        .unwrap()
    })
    .await;
    // Due 90 s after the raise (the event's `at` and `recorded_at` differ by the commit).
    assert!(
        (89.0..=91.0).contains(&armed),
        "armed {armed} s after raising"
    );

    let doc: Value = app
        .client
        .get(app.url("/api/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let documented = &doc["paths"]["/api/hospitals/{hospital}/policies/escalation"];
    assert!(documented["get"].is_object() && documented["put"]["responses"]["400"].is_object());
    let delete = app
        .client
        .delete(app.url(&path))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), StatusCode::METHOD_NOT_ALLOWED);
}

/// The board row of `alert` as `token` reads it once the board has reached `position`.
async fn board_row(app: &TestApp, token: &str, alert: &str, position: i64) -> Value {
    let path = paths::with_query(
        paths::alerts(H),
        format!("limit=500&min_position={position}"),
    );
    let response = app.get(&path, token).await;
    assert_eq!(response.status(), StatusCode::OK);
    let page: Value = response.json().await.unwrap();
    page["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["alert_id"] == alert)
        .cloned()
        .unwrap_or_else(|| panic!("{alert} on the board: {page}"))
}

/// A timestamp of a row or an event.
fn instant(value: &Value) -> chrono::DateTime<Utc> {
    value
        .as_str()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .unwrap_or_else(|| panic!("a timestamp, not {value}"))
        .with_timezone(&Utc)
}

/// The position of the (only) event a command answer reports.
fn position_of(outcome: &Value) -> i64 {
    outcome["events"][0]["position"].as_i64().unwrap()
}

/// The scheduler's due time of `alert`, once armed for `level`.
async fn armed_due(pool: &PgPool, alert: &str, level: i16) -> chrono::DateTime<Utc> {
    armed_for(pool, &[alert.to_owned()], level).await;
    sqlx::query_scalar("SELECT due_at FROM alert_deadlines WHERE hospital = $1 AND alert_id = $2")
        .bind(H)
        .bind(alert)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Invariant: every role that reads the board sees, on each raised alert's row, the time the
/// scheduler will escalate it (`escalation_due_at`) — at the raise's own position, before
/// the policy has necessarily armed it; unchanged by a later deadline change (deadlines
/// apply from the next arming) and by a rebuild of the board; re-timed from an escalation;
/// gone once acknowledged. Nurses and physicians cannot read the deadlines endpoint, so
/// without this field their console had no countdown.
#[actix_web::test]
async fn every_role_reads_each_raised_alerts_escalation_due_time_on_its_board_row() {
    // Arrange: critical alerts escalate after 100 s.
    let app = spawn_app().await;
    let admin = app.token(H, "admin-ada", Role::Admin);
    let nurse = app.token(H, "nurse-amy", Role::Nurse);
    let doctor = app.token(H, "dr-rao", Role::Physician);
    let policy =
        |critical: u32| json!({"critical": critical, "high": 600, "medium": 1800, "low": 3600});
    let set = put_policy(&app, H, &admin, policy(100)).await;
    assert_eq!(set.status(), StatusCode::OK);
    assert_eq!(
        app.get(&paths::escalation_policy(H), &nurse).await.status(),
        StatusCode::FORBIDDEN,
        "the deadlines themselves stay an admin setting"
    );

    // Act 1: a nurse raises a critical alert.
    let raised = app.raise_alert(H, &nurse, "critical").await;
    let first = created_id(&raised);
    let at_raise = position_of(&raised);

    // Assert 1: at the raise's position, both roles read raised_at + 100 s; the scheduler's
    // row, once armed, says the same.
    for token in [&nurse, &doctor] {
        let row = board_row(&app, token, &first, at_raise).await;
        let due = instant(&row["escalation_due_at"]);
        assert_eq!(
            due - instant(&row["raised_at"]),
            chrono::TimeDelta::seconds(100),
            "{row}"
        );
    }
    let armed = armed_due(&app.pool, &first, 1).await;
    let row = board_row(&app, &nurse, &first, at_raise).await;
    assert_eq!(instant(&row["escalation_due_at"]), armed);

    // Act 2: the critical deadline becomes 300 s, and a second alert is raised.
    let set = put_policy(&app, H, &admin, policy(300)).await;
    assert_eq!(set.status(), StatusCode::OK);
    let raised = app.raise_alert(H, &nurse, "critical").await;
    let second = created_id(&raised);
    let at_second = position_of(&raised);

    // Assert 2: the waiting alert keeps the due time the scheduler holds; the new one is
    // due 300 s after its raise.
    let row = board_row(&app, &doctor, &first, at_second).await;
    assert_eq!(instant(&row["escalation_due_at"]), armed);
    let row = board_row(&app, &doctor, &second, at_second).await;
    assert_eq!(
        instant(&row["escalation_due_at"]) - instant(&row["raised_at"]),
        chrono::TimeDelta::seconds(300)
    );

    // Act 3: the physician escalates the first alert by hand; the nurse acknowledges the second.
    let escalated = app
        .escalate(
            H,
            &doctor,
            &first,
            json!({"reason": "no response", "expected_level": 0}),
        )
        .await;
    assert_eq!(escalated.status(), StatusCode::OK);
    let escalated: Value = escalated.json().await.unwrap();
    let acknowledged = app.acknowledge(H, &nurse, &second).await;
    assert_eq!(acknowledged.status(), StatusCode::OK);
    let acknowledged: Value = acknowledged.json().await.unwrap();
    let at_ack = position_of(&acknowledged);

    // Assert 3: the next deadline runs 300 s from the escalation, as the scheduler re-arms
    // it; the acknowledged alert has none.
    let escalated_at = eventually(WAIT, "the escalation event", || async {
        of_type(&app.pool, "AlertEscalated")
            .await
            .into_iter()
            .find(|e| e.aggregate_id == first)
            .map(|e| instant(&e.data["at"]))
    })
    .await;
    let next = escalated_at + chrono::TimeDelta::seconds(300);
    // The policy re-arms through its own checkpoint, which may trail the board's (see
    // `alert_board::list`): wait for it, so the board's row shows the scheduler's due time.
    assert_close(armed_due(&app.pool, &first, 2).await, next);
    let row = board_row(&app, &nurse, &first, position_of(&escalated).max(at_ack)).await;
    assert_eq!(row["level"], 1);
    assert_close(instant(&row["escalation_due_at"]), next);
    let row = board_row(&app, &nurse, &second, at_ack).await;
    assert_eq!(row["status"], "acknowledged");
    assert_eq!(row["escalation_due_at"], Value::Null, "{row}");

    // Act 4: the board is rebuilt after another deadline change.
    let set = put_policy(&app, H, &admin, policy(60)).await;
    assert_eq!(set.status(), StatusCode::OK);
    settled(&app.pool).await;
    let before = board_row(&app, &nurse, &first, at_ack).await;
    let model = vigil::projection::model("alert_board").expect("the alert board");
    projections::engine::rebuild(
        &app.pool,
        model.as_ref(),
        true,
        &AtomicBool::new(false),
        |_, _| {},
    )
    .await
    .expect("rebuild");

    // Assert 4: the rebuilt row carries the same due time (the scheduler's, not one
    // recomputed from today's deadline).
    let after = board_row(&app, &nurse, &first, at_ack).await;
    assert_eq!(after["escalation_due_at"], before["escalation_due_at"]);
    assert_close(instant(&after["escalation_due_at"]), next);
}

/// `a` and `b` within a millisecond: an event's `at` carries nanoseconds, PostgreSQL keeps
/// microseconds.
fn assert_close(a: chrono::DateTime<Utc>, b: chrono::DateTime<Utc>) {
    assert!(
        (a - b).abs() < chrono::TimeDelta::milliseconds(1),
        "{a} is not {b}"
    );
}
