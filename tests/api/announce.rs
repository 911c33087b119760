//! Post-commit announcements and the head poll that covers a lost one (issue 17).
//!
//! The event trigger no longer notifies: a writer announces its commit afterwards
//! (`vigil::stream::announce`), and every node's head poll wakes readers for a commit whose
//! announcement never went out. Invariant checked: an event reaches subscribers and the
//! projector whether or not its writer announced it, and an announced one does not wait for
//! the poll.

use std::time::Duration;

use aggregates::alert::{Alert, AlertCommand, Severity};
use aggregates::types::{AlertMessage, HospitalId, Role, UserId};
use uuid::Uuid;
use vigil::command::{CommandBus, CommandContext, CommandOutcome};
use vigil::stream::announce::Announcer;

use crate::helpers::ws::{self, events, frame_of, subscribe};
use crate::helpers::{eventually, paths, spawn_app_with, TestApp, WAIT};

const H: &str = "st-marys";

/// Raises an alert in `H` through `bus`, as the HTTP path would.
async fn raise_through(bus: &CommandBus, message: &str) -> CommandOutcome {
    let command_id = Uuid::new_v4();
    let ctx = CommandContext {
        hospital: HospitalId::parse(H).unwrap(),
        user: UserId::parse("monitor-7").unwrap(),
        role: Role::Nurse,
        command_id,
        correlation_id: command_id,
        causation_id: command_id,
    };
    let message = AlertMessage::parse(message).unwrap();
    bus.execute::<Alert>(&ctx, &command_id.to_string(), || AlertCommand::Raise {
        severity: Severity::High,
        message: message.clone(),
        department: None,
        patient: None,
        by: ctx.user.clone(),
        at: chrono::Utc::now(),
    })
    .await
    .expect("the command commits")
}

async fn subscribed_socket(app: &TestApp) -> ws::Socket {
    let nurse = app.token(H, "nurse-amy", Role::Nurse);
    let mut socket = ws::connect(app.port, H, Some(&nurse)).await;
    frame_of(&mut socket, "authenticated").await;
    subscribe(&mut socket, &["alerts"], None).await;
    socket
}

/// A writer that died between its commit and its announcement (here: one that never
/// announces) delays its event by one head poll, and loses nothing.
#[actix_web::test]
async fn an_event_committed_without_any_announcement_reaches_subscribers_and_the_projector() {
    // Arrange
    let app = spawn_app_with(|s| s.realtime.stream_head_poll = Duration::from_millis(200)).await;
    let mut socket = subscribed_socket(&app).await;
    let silent = CommandBus::with_announcer(app.pool.clone(), Announcer::disabled());

    // Act
    let outcome = raise_through(&silent, "Bed 3: unannounced").await;

    // Assert: the subscriber gets it (the hospital actor was woken by the head poll) ...
    let event = &events(&mut socket, 1).await[0];
    assert_eq!(event["aggregate_id"], outcome.aggregate_id.as_str());
    assert_eq!(event["position"], outcome.events[0].position);
    // ... and so does the alerts read model.
    let nurse = app.token(H, "nurse-amy", Role::Nurse);
    eventually(
        WAIT,
        "the projector to apply the unannounced event",
        || async {
            let body = app.get(&paths::alerts(H), &nurse).await.text().await.ok()?;
            body.contains(&outcome.aggregate_id).then_some(())
        },
    )
    .await;
}

/// With the head poll an hour apart (its first look is at start), a command's event reaches
/// a subscriber through the writer's post-commit announcement alone: the trigger no longer
/// notifies, so without the announcement this would wait an hour.
#[actix_web::test]
async fn an_announced_event_arrives_without_waiting_for_the_head_poll() {
    // Arrange
    let app = spawn_app_with(|s| s.realtime.stream_head_poll = Duration::from_secs(3600)).await;
    let mut socket = subscribed_socket(&app).await;
    // A bus of another node: its announcement reaches this server only through NOTIFY, so
    // the same-node handoff plays no part here.
    let elsewhere = CommandBus::new(app.pool.clone());

    // Act
    let outcome = raise_through(&elsewhere, "Bed 4: announced").await;

    // Assert (the frame helper gives up after 10 s, far below the poll's hour).
    let event = &events(&mut socket, 1).await[0];
    assert_eq!(event["aggregate_id"], outcome.aggregate_id.as_str());
}

/// The trigger no longer notifies inside the transaction: a bare insert through it, in a
/// session that LISTENs, queues no notification (the announcement is the writer's, after
/// commit).
#[actix_web::test]
async fn the_event_trigger_queues_no_notification() {
    let app = spawn_app_with(|_| {}).await;
    let mut listener = sqlx::postgres::PgListener::connect_with(&app.pool)
        .await
        .unwrap();
    listener
        .listen(vigil::stream::listener::CHANNEL)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
                             payload, metadata) \
         VALUES ('alert', 'st-marys/x', 1, 'AlertRaised', '1.0', '{}', \
                 json_build_object('hospital', 'st-marys'))",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    // A notification of this session's own commit would be delivered before the answer to
    // its next statement; a marker sent now arrives first if nothing was queued.
    sqlx::query("SELECT pg_notify($1, 'marker')")
        .bind(vigil::stream::listener::CHANNEL)
        .execute(&app.pool)
        .await
        .unwrap();
    let first = tokio::time::timeout(WAIT, listener.recv())
        .await
        .expect("a notification in time")
        .unwrap();
    assert_eq!(first.payload(), "marker");
}
