//! The heart of resume: positions in a hospital's stream are dense and commit-ordered, so a
//! reader that repeatedly reads "after my last position" never skips an event.
//!
//! Invariant checked: several independent connection pools (as several server nodes would
//! have) append concurrently to one hospital while a reader, woken by LISTEN/NOTIFY, reads
//! after its last position. Every read continues exactly at `last + 1` (no gap, no
//! duplicate), and the reader ends with exactly the committed set, in order.

use std::collections::BTreeMap;
use std::time::Duration;

use aggregates::alert::{Alert, AlertCommand, Severity};
use aggregates::types::{AlertMessage, HospitalId, Role, UserId};
use sqlx::postgres::PgPoolOptions;
use tokio::sync::broadcast::error::RecvError;
use uuid::Uuid;
use vigil::command::{CommandBus, CommandContext};
use vigil::stream::listener::{StreamListener, Wakeup};
use vigil::stream::read::read_after;

use crate::helpers::TestDatabase;

const NODES: usize = 3;
const WRITERS_PER_NODE: usize = 4;
const COMMANDS_PER_WRITER: usize = 40;

#[actix_web::test]
async fn concurrent_writers_on_several_pools_never_make_a_reader_skip_or_repeat() {
    let db = TestDatabase::create().await;
    let hospital = HospitalId::parse("st-marys").unwrap();
    let other = HospitalId::parse("other").unwrap();

    // The reader subscribes to wake-ups before anything is written.
    let listener = StreamListener::spawn(vigil::store::listen_config_for(&db.url).unwrap());
    let mut wakeups = listener.subscribe();
    let reader_pool = PgPoolOptions::new()
        .max_connections(2)
        .connect(&db.url)
        .await
        .unwrap();

    let mut writers = Vec::new();
    for node in 0..NODES {
        let pool = PgPoolOptions::new()
            .max_connections(WRITERS_PER_NODE as u32)
            .connect(&db.url)
            .await
            .unwrap();
        let bus = std::sync::Arc::new(CommandBus::new(pool));
        for writer in 0..WRITERS_PER_NODE {
            let bus = bus.clone();
            let hospital = if writer == 0 {
                other.clone()
            } else {
                hospital.clone()
            };
            writers.push(tokio::spawn(async move {
                let mut committed = Vec::new();
                for i in 0..COMMANDS_PER_WRITER {
                    let command_id = Uuid::new_v4();
                    let ctx = CommandContext {
                        hospital: hospital.clone(),
                        user: UserId::parse(&format!("writer-{node}-{writer}")).unwrap(),
                        role: Role::Nurse,
                        command_id,
                        correlation_id: command_id,
                        causation_id: command_id,
                    };
                    let message =
                        AlertMessage::parse(&format!("node {node} writer {writer} #{i}")).unwrap();
                    let outcome = bus
                        .execute::<Alert>(&ctx, &command_id.to_string(), || AlertCommand::Raise {
                            severity: Severity::High,
                            message: message.clone(),
                            department: None,
                            patient: None,
                            by: ctx.user.clone(),
                            at: chrono::Utc::now(),
                        })
                        .await
                        .expect("command commits");
                    committed.push((
                        hospital.clone(),
                        outcome.events[0].position,
                        outcome.aggregate_id,
                    ));
                }
                committed
            }));
        }
    }
    let expected_total = NODES * (WRITERS_PER_NODE - 1) * COMMANDS_PER_WRITER;

    // The reader: woken by notifications, reads after its last position.
    let mut last = 0i64;
    let mut seen: Vec<(i64, String)> = Vec::new();
    let mut reads = 0usize;
    let mut notified = 0usize;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while seen.len() < expected_total {
        assert!(
            tokio::time::Instant::now() < deadline,
            "reader timed out at {last}"
        );
        match tokio::time::timeout(Duration::from_secs(5), wakeups.recv()).await {
            Ok(Ok(Wakeup::Committed { hospital: h, .. })) if h == hospital => notified += 1,
            Ok(Ok(_)) | Ok(Err(RecvError::Lagged(_))) | Err(_) => {}
            Ok(Err(RecvError::Closed)) => panic!("listener closed"),
        }
        let page = read_after(&reader_pool, &hospital, last, 37).await.unwrap();
        reads += 1;
        for event in page {
            assert_eq!(
                event.position,
                last + 1,
                "gap or duplicate after position {last}"
            );
            last = event.position;
            seen.push((event.position, event.aggregate_id));
        }
    }

    let mut committed: BTreeMap<i64, String> = BTreeMap::new();
    for writer in writers {
        for (h, position, id) in writer.await.unwrap() {
            if h == hospital {
                assert!(
                    committed.insert(position, id).is_none(),
                    "position {position} assigned twice"
                );
            }
        }
    }
    assert_eq!(committed.len(), expected_total);
    let committed: Vec<(i64, String)> = committed.into_iter().collect();
    assert_eq!(
        seen, committed,
        "the reader saw exactly the committed set, in order"
    );
    assert!(notified > 0, "the reader was woken by LISTEN/NOTIFY");
    assert!(reads > 1);
    // Nothing more arrives after the last committed position.
    assert!(read_after(&reader_pool, &hospital, last, 10)
        .await
        .unwrap()
        .is_empty());
    // The other hospital's stream is independent and dense too.
    let others = read_after(&reader_pool, &other, 0, 1000).await.unwrap();
    assert_eq!(others.len(), NODES * COMMANDS_PER_WRITER);
    assert!(others
        .iter()
        .enumerate()
        .all(|(i, e)| e.position == i as i64 + 1));
}
