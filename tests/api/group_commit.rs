//! Group commit (`vigil::command::group_commit`): commands queued on a lane commit together
//! in one statement, each still answered with exactly its own events and positions; a command
//! the database refuses does not take its neighbours down with it; two commands of one
//! aggregate in one batch both apply, in order.
//!
//! A batch is made deterministic by holding a hospital's stream head in a transaction of the
//! test: the lane's statement waits on that row lock, every command sent meanwhile queues on
//! the (single) lane, and when the test commits, the queue leaves as the next batch.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use aggregates::alert::{Alert, AlertCommand, AlertError, EscalationGuard, Severity};
use aggregates::types::{AlertMessage, HospitalId, Reason, Role, UserId};
use futures_util::future::join_all;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;
use vigil::command::{CommandBus, CommandContext, CommandError, CommandOutcome, Resolution};
use vigil::stream::announce::Announcer;

use crate::helpers::{eventually, spawn_app, TestApp};

const WARD: &str = "st-marys";
const OTHER: &str = "general";

fn context(hospital: &str) -> CommandContext {
    let command_id = Uuid::new_v4();
    CommandContext {
        hospital: HospitalId::parse(hospital).unwrap(),
        user: UserId::parse("nurse-amy").unwrap(),
        role: Role::Nurse,
        command_id,
        correlation_id: command_id,
        causation_id: command_id,
    }
}

fn raise(message: &str) -> AlertCommand {
    AlertCommand::Raise {
        severity: Severity::High,
        message: AlertMessage::parse(message).unwrap(),
        department: None,
        patient: None,
        by: UserId::parse("nurse-amy").unwrap(),
        at: chrono::Utc::now(),
    }
}

fn escalate() -> AlertCommand {
    AlertCommand::Escalate {
        reason: Reason::parse("no response").unwrap(),
        guard: EscalationGuard::Always,
        by: UserId::parse("nurse-amy").unwrap(),
        at: chrono::Utc::now(),
    }
}

/// A bus with one lane, so every command of the test shares it.
fn one_lane_bus(pool: &PgPool) -> Arc<CommandBus> {
    Arc::new(CommandBus::with_lanes(
        pool.clone(),
        Announcer::disabled(),
        1,
    ))
}

/// Raises one alert in `hospital` so that its stream head row exists.
async fn first_event(bus: &CommandBus, hospital: &str) {
    bus.execute::<Alert>(&context(hospital), &Uuid::new_v4().to_string(), || {
        raise("first")
    })
    .await
    .expect("the first alert commits");
}

/// Holds `hospital`'s stream head in an open transaction of `connection`'s.
async fn hold_head(connection: &mut PgConnection, hospital: &str) {
    sqlx::query("BEGIN")
        .execute(&mut *connection)
        .await
        .unwrap();
    sqlx::query("SELECT 1 FROM stream_heads WHERE hospital = $1 FOR UPDATE")
        .bind(hospital)
        .execute(&mut *connection)
        .await
        .unwrap();
}

/// Waits until some backend waits for a row lock (the lane's statement, behind the head).
async fn lane_is_blocked(pool: &PgPool) {
    eventually(
        Duration::from_secs(10),
        "the lane's statement to wait for the held stream head",
        || async {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE wait_event_type = 'Lock' AND query LIKE 'INSERT INTO events%'",
            )
            .fetch_one(pool)
            .await
            .unwrap();
            (waiting > 0).then_some(())
        },
    )
    .await;
}

/// A command stuck in the lane's statement behind `WARD`'s stream head, which `holder` holds
/// (in an open transaction) until [`release_when_queued`]; answers the command's context and
/// outcome once released.
type Blocked = tokio::task::JoinHandle<(
    CommandContext,
    Result<CommandOutcome, CommandError<AlertError>>,
)>;

/// Holds `WARD`'s stream head on `holder` and sends one command that blocks the (single) lane
/// behind it; returns once the lane's statement waits for the lock.
async fn block_lane(app: &TestApp, bus: &Arc<CommandBus>, holder: &mut PgConnection) -> Blocked {
    hold_head(holder, WARD).await;
    let blocked = tokio::spawn({
        let bus = bus.clone();
        async move {
            let ctx = context(WARD);
            let outcome = bus
                .execute::<Alert>(&ctx, &Uuid::new_v4().to_string(), || raise("blocked"))
                .await;
            (ctx, outcome)
        }
    });
    lane_is_blocked(&app.pool).await;
    blocked
}

/// Waits until `commands` commands wait on the (blocked) lane, then lets the lane go on by
/// committing the transaction that holds the stream head.
async fn release_when_queued(bus: &CommandBus, commands: usize, holder: &mut PgConnection) {
    eventually(
        Duration::from_secs(10),
        "the commands to queue on the lane",
        || async { (bus.commits_waiting() >= commands).then_some(()) },
    )
    .await;
    sqlx::query("COMMIT").execute(&mut *holder).await.unwrap();
}

/// Every committed event of `hospital` by position: (position, command id).
async fn stream_of(pool: &PgPool, hospital: &str) -> Vec<(i64, Option<Uuid>)> {
    sqlx::query_as("SELECT position, command_id FROM events WHERE hospital = $1 ORDER BY position")
        .bind(hospital)
        .fetch_all(pool)
        .await
        .unwrap()
}

/// Checks each outcome against the log: its positions are exactly its command's rows.
async fn assert_outcomes_match_the_log(
    pool: &PgPool,
    outcomes: &[(CommandContext, CommandOutcome)],
) {
    for (ctx, outcome) in outcomes {
        let logged: Vec<i64> = sqlx::query_scalar(
            "SELECT position FROM events WHERE command_id = $1 ORDER BY position",
        )
        .bind(ctx.command_id)
        .fetch_all(pool)
        .await
        .unwrap();
        let answered: Vec<i64> = outcome.events.iter().map(|e| e.position).collect();
        assert_eq!(answered, logged, "command {}", ctx.command_id);
    }
}

/// Invariant: commands that queue while a batch commits leave together in one statement, and
/// each is answered with its own events' positions; every hospital's positions stay dense.
#[actix_web::test]
async fn commands_queued_behind_a_batch_commit_together_each_with_its_own_positions() {
    // Arrange
    let app = spawn_app().await;
    let bus = one_lane_bus(&app.pool);
    first_event(&bus, WARD).await;
    first_event(&bus, OTHER).await;
    let mut holder = app.pool.acquire().await.unwrap();
    let blocked = block_lane(&app, &bus, &mut holder).await;
    let before = bus.commit_stats().batches.load(Ordering::Relaxed);

    // Act: twenty commands over two hospitals queue behind the blocked batch.
    let queued = join_all((0..20).map(|i| {
        let bus = bus.clone();
        async move {
            let ctx = context(if i % 2 == 0 { WARD } else { OTHER });
            let outcome = bus
                .execute::<Alert>(&ctx, &Uuid::new_v4().to_string(), || {
                    raise(&format!("queued {i}"))
                })
                .await;
            (ctx, outcome)
        }
    }));
    let release = release_when_queued(&bus, 20, &mut holder);
    let (queued, ()) = tokio::join!(queued, release);
    let blocked = blocked.await.unwrap();

    // Assert
    let mut outcomes = vec![(blocked.0, blocked.1.expect("the blocked command commits"))];
    for (ctx, outcome) in queued {
        outcomes.push((ctx, outcome.expect("every queued command commits")));
    }
    let batches = bus.commit_stats().batches.load(Ordering::Relaxed) - before;
    assert_eq!(
        batches, 1,
        "the twenty queued commands left in one statement"
    );
    assert_outcomes_match_the_log(&app.pool, &outcomes).await;
    for hospital in [WARD, OTHER] {
        let positions: Vec<i64> = stream_of(&app.pool, hospital)
            .await
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        let dense: Vec<i64> = (1..=positions.len() as i64).collect();
        assert_eq!(positions, dense, "{hospital}'s positions are dense");
    }
    assert_eq!(app.event_count().await, 23);
}

/// Invariant: a command the database refuses inside a batch (here a command id fenced as
/// never committed) gets its own refusal, and every other command of the batch commits.
#[actix_web::test]
async fn a_refused_command_does_not_refuse_the_rest_of_its_batch() {
    // Arrange
    let app = spawn_app().await;
    let bus = one_lane_bus(&app.pool);
    first_event(&bus, WARD).await;
    let fenced = context(WARD);
    assert_eq!(
        bus.resolve(fenced.command_id, &fenced.hospital)
            .await
            .unwrap(),
        Resolution::NeverCommitted
    );
    let mut holder = app.pool.acquire().await.unwrap();
    let blocked = block_lane(&app, &bus, &mut holder).await;

    // Act: ten good commands and the fenced one queue behind it.
    let mut contexts: Vec<CommandContext> = (0..10).map(|_| context(WARD)).collect();
    contexts.insert(5, fenced.clone());
    let runs = join_all(contexts.iter().map(|ctx| {
        let bus = bus.clone();
        async move {
            bus.execute::<Alert>(ctx, &Uuid::new_v4().to_string(), || raise("queued"))
                .await
        }
    }));
    let release = release_when_queued(&bus, 11, &mut holder);
    let (runs, ()) = tokio::join!(runs, release);
    blocked
        .await
        .unwrap()
        .1
        .expect("the blocked command commits");

    // Assert
    let mut committed = Vec::new();
    for (ctx, run) in contexts.into_iter().zip(runs) {
        if ctx.command_id == fenced.command_id {
            assert!(
                matches!(run, Err(CommandError::Unavailable(_))),
                "the fenced command is refused as never persisted: {run:?}"
            );
        } else {
            committed.push((ctx, run.expect("its neighbours commit")));
        }
    }
    assert_eq!(committed.len(), 10);
    assert!(bus.commit_stats().retried_alone.load(Ordering::Relaxed) >= 11);
    assert_outcomes_match_the_log(&app.pool, &committed).await;
    let stream = stream_of(&app.pool, WARD).await;
    assert!(stream.iter().all(|(_, id)| *id != Some(fenced.command_id)));
    let positions: Vec<i64> = stream.iter().map(|(p, _)| *p).collect();
    assert_eq!(positions, (1..=12).collect::<Vec<i64>>());
}

/// Invariant: two commands of one alert queued in one batch were both decided on the same
/// version; the second leaves the batch, conflicts alone, and is re-decided on the new state
/// by cqrs-es — both apply, in order, nothing twice.
#[actix_web::test]
async fn two_commands_of_one_alert_in_one_batch_both_apply_in_order() {
    // Arrange
    let app = spawn_app().await;
    let bus = one_lane_bus(&app.pool);
    let alert = Uuid::new_v4().to_string();
    bus.execute::<Alert>(&context(WARD), &alert, || raise("Bed 3: NEWS 7"))
        .await
        .expect("the alert is raised");
    let mut holder = app.pool.acquire().await.unwrap();
    let blocked = block_lane(&app, &bus, &mut holder).await;

    // Act
    let runs = join_all((0..2).map(|_| {
        let (bus, alert) = (bus.clone(), alert.clone());
        async move { bus.execute::<Alert>(&context(WARD), &alert, escalate).await }
    }));
    let release = release_when_queued(&bus, 2, &mut holder);
    let (runs, ()) = tokio::join!(runs, release);
    blocked
        .await
        .unwrap()
        .1
        .expect("the blocked command commits");

    // Assert
    let versions: BTreeMap<i64, usize> = runs
        .into_iter()
        .map(|run| (run.expect("both escalations apply").version, 1))
        .collect();
    assert_eq!(versions.keys().copied().collect::<Vec<_>>(), [2, 3]);
    let escalations: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE event_type = 'AlertEscalated' AND aggregate_id LIKE $1",
    )
    .bind(format!("%{alert}"))
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(escalations, 2);
}

/// The node's `/metrics` counts what its lanes did: every command a REST request committed
/// was carried by a batch statement, and no batch was refused.
#[actix_web::test]
async fn metrics_count_the_commands_each_batch_carried() {
    // Arrange
    let app = spawn_app().await;
    let nurse = app.token(WARD, "nurse-amy", Role::Nurse);
    let counter = |name: &'static str| {
        let app = &app;
        async move {
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
                .find_map(|line| {
                    line.strip_prefix(name)?
                        .strip_prefix(' ')?
                        .parse::<u64>()
                        .ok()
                })
                .unwrap_or_else(|| panic!("no {name} in {text}"))
        }
    };
    let before = counter("vigil_commit_batched_commands_total").await;

    // Act: twelve nurses' alerts at once.
    join_all((0..12).map(|_| app.raise_alert(WARD, &nurse, "high"))).await;

    // Assert
    let carried = counter("vigil_commit_batched_commands_total").await - before;
    assert_eq!(carried, 12);
    assert!(counter("vigil_commit_batches_total").await >= 1);
    assert_eq!(counter("vigil_commit_retried_alone_total").await, 0);
    assert_eq!(counter("vigil_commit_waiting").await, 0);
}

/// Invariant: two runs of one command id queued in one batch (a retry racing its first
/// attempt, each against a new alert) apply once: the guard admits an id once per
/// transaction, so the second run must not share the first one's statement. Both are answered
/// the one outcome.
#[actix_web::test]
async fn two_runs_of_one_command_id_in_one_batch_apply_once() {
    // Arrange
    let app = spawn_app().await;
    let bus = one_lane_bus(&app.pool);
    first_event(&bus, WARD).await;
    let mut holder = app.pool.acquire().await.unwrap();
    let blocked = block_lane(&app, &bus, &mut holder).await;
    let ctx = context(WARD);

    // Act
    let runs = join_all((0..2).map(|_| {
        let (bus, ctx) = (bus.clone(), ctx.clone());
        async move {
            bus.execute::<Alert>(&ctx, &Uuid::new_v4().to_string(), || raise("Bed 9: fall"))
                .await
        }
    }));
    let release = release_when_queued(&bus, 2, &mut holder);
    let (runs, ()) = tokio::join!(runs, release);
    blocked
        .await
        .unwrap()
        .1
        .expect("the blocked command commits");

    // Assert
    let outcomes: Vec<CommandOutcome> = runs
        .into_iter()
        .map(|run| run.expect("both runs answer"))
        .collect();
    assert_eq!(outcomes[0], outcomes[1]);
    assert_eq!(outcomes[0].events.len(), 1);
    let committed: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE command_id = $1")
        .bind(ctx.command_id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(committed, 1, "the command applied once");
}
