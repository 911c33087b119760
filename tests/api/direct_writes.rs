//! Direct writes for caught-up connections (`realtime::fanout`): a live event reaches a
//! connection that keeps up without its writer task being woken, and a connection that
//! falls behind is handed back to its writer without losing, repeating or reordering a
//! frame — while the others stay live.

use std::time::Duration;

use aggregates::types::{AlertMessage, HospitalId, Role};
use futures_util::future::join_all;
use serde_json::Value;
use tokio_tungstenite::MaybeTlsStream;
use vigil::command::CommandBus;

use crate::helpers::ws::{self, frame, subscribe, Socket};
use crate::helpers::{spawn_app, until, TestApp};
use crate::resume::{metric, metrics_text, positions, take_events};
use crate::robustness::{connect_with_small_buffers, raise_high_alert, server_side_tcp};

const H: &str = "st-marys";

/// A counter of the server's `/metrics`.
async fn counter(app: &TestApp, series: &str) -> f64 {
    metric(&metrics_text(&app.client, &app.address).await, series).unwrap_or(0.0)
}

/// Waits until `series` has grown by at least `by` over `from`; returns its value.
async fn grown(app: &TestApp, series: &str, from: f64, by: f64) -> f64 {
    until(
        Duration::from_secs(10),
        &format!("{series} to grow by {by}"),
        || async { counter(app, series).await >= from + by },
    )
    .await;
    counter(app, series).await
}

/// A subscriber to `alerts` with ordinary buffers.
async fn subscriber(app: &TestApp, token: &str) -> Socket {
    let mut socket = ws::connect(app.port, H, Some(token)).await;
    subscribe(&mut socket, &["alerts"], None).await;
    socket
}

/// Invariant: an event committed while connections are caught up is written to each of
/// them by the hospital's fan-out itself — every delivery counted as direct, none handed
/// back to a writer task — and each connection gets each event once, in order.
#[actix_web::test]
async fn live_events_reach_caught_up_connections_by_direct_writes() {
    const EVENTS: usize = 10;
    const CONNECTIONS: usize = 3;

    // Arrange
    let app = spawn_app().await;
    let nurse = app.token(H, "nurse-amy", Role::Nurse);
    let mut sockets = Vec::new();
    for _ in 0..CONNECTIONS {
        sockets.push(subscriber(&app, &nurse).await);
    }
    let bus = CommandBus::new(app.pool.clone());
    let hospital = HospitalId::parse(H).unwrap();
    let message = AlertMessage::parse("Bed 4: SpO2 88 %").unwrap();
    let direct_before = counter(&app, "vigil_events_delivered_direct_total").await;
    let delivered_before = counter(&app, "vigil_events_delivered_total").await;

    // Act: one event at a time, each read by every connection before the next commits.
    let mut received: Vec<Vec<Value>> = vec![Vec::new(); CONNECTIONS];
    for _ in 0..EVENTS {
        raise_high_alert(&bus, &hospital, "monitor-1", &message).await;
        for (socket, got) in sockets.iter_mut().zip(&mut received) {
            got.extend(take_events(socket, 1).await);
        }
    }

    // Assert
    let expected: Vec<i64> = (1..=EVENTS as i64).collect();
    for got in &received {
        assert_eq!(positions(got), expected);
    }
    let total = (EVENTS * CONNECTIONS) as f64;
    let direct = grown(
        &app,
        "vigil_events_delivered_direct_total",
        direct_before,
        total,
    )
    .await;
    let delivered = counter(&app, "vigil_events_delivered_total").await;
    assert_eq!(
        direct - direct_before,
        total,
        "every delivery was a direct write"
    );
    assert_eq!(
        delivered - delivered_before,
        total,
        "each delivery counted once"
    );
}

/// Invariant: a connection that stops reading mid-stream — while writers commit
/// concurrently and other connections keep reading live — is handed back to its writer
/// task once its socket stops taking frames; when it reads again it gets every event it
/// is owed exactly once and in order, then live events, by direct writes again.
#[actix_web::test]
async fn a_reader_that_stops_mid_stream_then_resumes_gets_every_frame_once_in_order_while_others_stay_live(
) {
    const BEFORE: usize = 5;
    const WRITERS: usize = 3;
    const PER_WRITER: usize = 40;
    const BURST: usize = WRITERS * PER_WRITER;
    const GOOD: usize = 3;

    // Arrange
    let app = spawn_app().await;
    let nurse = app.token(H, "nurse-amy", Role::Nurse);
    let mut slow = connect_with_small_buffers(app.port, &nurse).await;
    assert_eq!(frame(&mut slow).await["type"], "authenticated");
    subscribe(&mut slow, &["alerts"], None).await;
    let client_port = match slow.get_ref() {
        MaybeTlsStream::Plain(tcp) => tcp.local_addr().expect("local address").port(),
        _ => unreachable!("a plain TCP stream"),
    };
    let mut good = Vec::new();
    for _ in 0..GOOD {
        good.push(subscriber(&app, &nurse).await);
    }
    let bus = CommandBus::new(app.pool.clone());
    let hospital = HospitalId::parse(H).unwrap();
    let small = AlertMessage::parse("Bed 4: SpO2 88 %").unwrap();
    // ~7.6 KiB events: the burst (~0.9 MiB) is far more than the slow client's buffers and
    // the server's send buffer hold, and far less than the lag limit (4 MiB).
    let large =
        AlertMessage::parse(&format!("Ward 3 telemetry: {}", "\u{1FA7A}".repeat(1900))).unwrap();

    // Act 1: everyone reads the first events live.
    for _ in 0..BEFORE {
        raise_high_alert(&bus, &hospital, "monitor-1", &small).await;
    }
    let slow_first = take_events(&mut slow, BEFORE).await;
    for socket in &mut good {
        take_events(socket, BEFORE).await;
    }
    let handed_back_before = counter(&app, "vigil_direct_handed_back_total").await;

    // Act 2: the slow client stops reading; concurrent writers commit the burst while the
    // other connections read every event of it.
    let writers = join_all((0..WRITERS).map(|w| {
        let (bus, hospital, large) = (&bus, &hospital, &large);
        async move {
            for _ in 0..PER_WRITER {
                raise_high_alert(bus, hospital, &format!("monitor-{w}"), large).await;
            }
        }
    }));
    let readers = join_all(
        good.iter_mut()
            .map(|socket| async move { take_events(socket, BURST).await }),
    );
    let (_, good_burst) = tokio::join!(writers, readers);
    until(
        Duration::from_secs(10),
        "the server's writes to block on the slow client",
        || async { server_side_tcp(app.port, client_port).is_some_and(|(_, queued)| queued > 0) },
    )
    .await;
    let handed_back = grown(
        &app,
        "vigil_direct_handed_back_total",
        handed_back_before,
        1.0,
    )
    .await;

    // Act 3: the slow client reads again, then one more event is committed.
    let slow_burst = take_events(&mut slow, BURST).await;
    let direct_before_live = counter(&app, "vigil_events_delivered_direct_total").await;
    raise_high_alert(&bus, &hospital, "monitor-1", &small).await;
    let slow_live = take_events(&mut slow, 1).await;
    let mut good_live = Vec::new();
    for socket in &mut good {
        good_live.push(take_events(socket, 1).await);
    }

    // Assert
    assert_eq!(
        positions(&slow_first),
        (1..=BEFORE as i64).collect::<Vec<_>>()
    );
    let burst: Vec<i64> = (BEFORE as i64 + 1..=(BEFORE + BURST) as i64).collect();
    assert_eq!(positions(&slow_burst), burst, "the slow reader's backlog");
    for events in &good_burst {
        assert_eq!(positions(events), burst, "a live reader during the burst");
    }
    let last = vec![(BEFORE + BURST + 1) as i64];
    assert_eq!(positions(&slow_live), last);
    for events in &good_live {
        assert_eq!(positions(events), last);
    }
    assert!(handed_back > handed_back_before);
    // Caught up again, the slow reader is back on the direct path with the others.
    let direct = grown(
        &app,
        "vigil_events_delivered_direct_total",
        direct_before_live,
        (GOOD + 1) as f64,
    )
    .await;
    assert_eq!(direct - direct_before_live, (GOOD + 1) as f64);
}
