//! Post-commit announcements and the head poll that covers a lost one (issue 17).
//!
//! The event trigger no longer notifies: a writer announces its commit afterwards
//! (`vigil::stream::announce`), and every node's head poll wakes readers for a commit whose
//! announcement never went out. Invariant checked: an event reaches subscribers and the
//! projector whether or not its writer announced it, and an announced one does not wait for
//! the poll. On the writer's own node the hospital actor takes the committed events from
//! the command path (the same-node handoff) instead of reading them back, with frames
//! byte-identical to read-back ones, and reads from the table when a handoff leaves a gap.

use std::time::Duration;

use aggregates::alert::{Alert, AlertCommand, Severity};
use aggregates::types::{AlertMessage, HospitalId, PatientId, Role, UserId};
use uuid::Uuid;
use vigil::command::{CommandBus, CommandContext, CommandOutcome};
use vigil::realtime::window::prepare;
use vigil::stream::announce::Announcer;
use vigil::stream::read::read_after;

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
        patient: Some(PatientId::parse("p-1").unwrap()),
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

/// The value of the un-labelled series `name` in the server's `/metrics`.
async fn counter(app: &TestApp, name: &str) -> u64 {
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

/// A handed-off event becomes exactly the window entry a read-back of it becomes: same
/// frame bytes, topics, author and routing scope, so entitlement and topics cannot differ.
#[actix_web::test]
async fn a_handed_off_event_has_the_same_frame_topics_and_scope_as_its_read_back() {
    // Arrange
    let app = spawn_app_with(|_| {}).await;
    let bus = CommandBus::new(app.pool.clone());
    let mut handoffs = bus
        .announcer()
        .subscribe_handoffs()
        .expect("an enabled announcer");

    // Act: an alert with a patient (scope and topics beyond `alerts`), and its acknowledgement.
    let raised = raise_through(&bus, "Bed 5: SpO2 84%").await;
    let first = handoffs.recv().await.unwrap();
    let command_id = Uuid::new_v4();
    let ctx = CommandContext {
        hospital: HospitalId::parse(H).unwrap(),
        user: UserId::parse("dr-rao").unwrap(),
        role: Role::Physician,
        command_id,
        correlation_id: command_id,
        causation_id: command_id,
    };
    bus.execute::<Alert>(&ctx, &raised.aggregate_id, || AlertCommand::Acknowledge {
        by: ctx.user.clone(),
        at: chrono::Utc::now(),
    })
    .await
    .expect("the acknowledgement commits");
    let second = handoffs.recv().await.unwrap();

    // Assert
    for handoff in [first, second] {
        assert_eq!(handoff.hospital.as_str(), H);
        let from = handoff.events[0].position - 1;
        let read = read_after(&app.pool, &handoff.hospital, from, 100)
            .await
            .unwrap();
        assert!(!handoff.events.is_empty());
        for (handed, read) in handoff.events.iter().zip(read) {
            let (handed, read) = (prepare(handed.clone()), prepare(read));
            assert_eq!(handed.position, read.position);
            assert_eq!(handed.frame.as_bytes(), read.frame.as_bytes());
            assert_eq!(handed.topics, read.topics);
            assert_eq!(handed.scope, read.scope);
            assert_eq!(handed.author, read.author);
            assert_eq!(handed.recorded_at, read.recorded_at);
        }
    }
}

/// This node's commands reach its subscribers through the handoff: the hospital actor reads
/// nothing back. (The head poll is an hour apart, so only the handoff and the writer's own
/// NOTIFY, which arrives after it, could deliver.)
#[actix_web::test]
async fn a_commit_on_this_node_reaches_the_window_without_a_read_back() {
    // Arrange
    let app = spawn_app_with(|s| s.realtime.stream_head_poll = Duration::from_secs(3600)).await;
    let nurse = app.token(H, "nurse-amy", Role::Nurse);
    let mut socket = subscribed_socket(&app).await;
    // The first event of a stream is read (its epoch is not known before); then handoffs.
    app.raise_alert(H, &nurse, "high").await;
    events(&mut socket, 1).await;
    let read_before = counter(&app, "vigil_stream_events_read_total").await;

    // Act
    for _ in 0..3 {
        app.raise_alert(H, &nurse, "low").await;
    }
    let received = events(&mut socket, 3).await;

    // Assert
    let positions: Vec<i64> = received
        .iter()
        .map(|e| e["position"].as_i64().unwrap())
        .collect();
    assert_eq!(positions, [2, 3, 4]);
    assert_eq!(
        counter(&app, "vigil_stream_events_handed_off_total").await,
        3
    );
    assert_eq!(
        counter(&app, "vigil_stream_events_read_total").await,
        read_before,
        "nothing was read back"
    );
}

/// A handoff that does not continue the window (another writer's commit before it was
/// never announced) makes the actor read from the table, which holds the missing event:
/// the subscriber gets both, in order, without waiting for the head poll.
#[actix_web::test]
async fn a_handoff_after_a_gap_reads_the_missing_events_from_the_table() {
    // Arrange: the stream has its first event, delivered.
    let app = spawn_app_with(|s| s.realtime.stream_head_poll = Duration::from_secs(3600)).await;
    let nurse = app.token(H, "nurse-amy", Role::Nurse);
    let mut socket = subscribed_socket(&app).await;
    app.raise_alert(H, &nurse, "high").await;
    events(&mut socket, 1).await;
    let read_before = counter(&app, "vigil_stream_events_read_total").await;
    let handed_before = counter(&app, "vigil_stream_events_handed_off_total").await;

    // Act: position 2 by a writer that never announces (another node that died after its
    // commit), then position 3 through this server.
    let silent = CommandBus::with_announcer(app.pool.clone(), Announcer::disabled());
    let unannounced = raise_through(&silent, "Bed 6: unannounced").await;
    let announced = app.raise_alert(H, &nurse, "low").await;

    // Assert
    let received = events(&mut socket, 2).await;
    assert_eq!(received[0]["position"], 2);
    assert_eq!(
        received[0]["aggregate_id"],
        unannounced.aggregate_id.as_str()
    );
    assert_eq!(received[1]["position"], 3);
    assert_eq!(received[1]["aggregate_id"], announced["aggregate_id"]);
    // The hospital actor read both (the window never held 3 without 2).
    assert_eq!(
        counter(&app, "vigil_stream_events_read_total").await - read_before,
        2
    );
    assert_eq!(
        counter(&app, "vigil_stream_events_handed_off_total").await,
        handed_before
    );
}
