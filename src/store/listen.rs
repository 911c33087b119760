//! A reconnecting LISTEN connection: the one component through which Vigil hears
//! PostgreSQL's notifications (the stream's `vigil_events`, presence's `vigil_presence`).
//!
//! LISTEN holds a session, which a pooled connection cannot, so each channel gets a
//! dedicated `tokio-postgres` connection. What it hears goes, in order, into a bounded
//! channel of [`Heard`] items: [`Heard::Listening`] each time LISTEN has taken effect on a
//! new connection — everything notified while no connection listened is lost, so the
//! consumer must then re-read what it follows (the notifications are hints, the tables are
//! the truth) — then each notification's payload. A slow consumer slows the reading of the
//! connection (PostgreSQL buffers), never grows memory; dropping the receiver closes the
//! connection and ends the task.
//!
//! **Reconnecting.** Live delivery stops while no connection listens, so a lost connection
//! is retried at a short, bounded cadence ([`reconnect_delay`]): 50 ms after the loss, then
//! 100 ms, 200 ms, and every 250 ms at most after that, for as long as it takes. The count
//! starts again with every outage: a connection that reached LISTEN resets it, so an earlier
//! outage never makes the next one slower (it once did: the delay doubled to 5 s and was
//! reset only by a clean close, which a PostgreSQL restart is not, and listeners came back
//! 2.7–3.9 s after PostgreSQL). Four attempts a second cost PostgreSQL nothing next to what
//! a listener that lags the server's return costs every client. Each attempt, connect to
//! LISTEN, is bounded by [`ATTEMPT_TIMEOUT`], so a server that accepts and then hangs does
//! not stall the cadence either.
//!
//! **Logging.** An outage logs one warning (or one info line when PostgreSQL said it was
//! shutting down, as a restart does) and one info line when listening again, with how long
//! it took; the failed attempts in between are debug lines, not four warnings a second.

use std::future::Future;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_postgres::{AsyncMessage, NoTls};

/// Delay before the first reconnect attempt of an outage. Not zero: a connection lost to a
/// restart is usually lost while PostgreSQL is still shutting down, and the attempt would
/// only fail.
pub const RECONNECT_FIRST: Duration = Duration::from_millis(50);

/// Longest delay between two reconnect attempts: once PostgreSQL accepts connections again,
/// the listener is back within this (plus one attempt), well inside the one second Vigil
/// promises between PostgreSQL's return and live delivery.
pub const RECONNECT_CAP: Duration = Duration::from_millis(250);

/// Up to this fraction of a delay is taken off at random, so that the listeners of a
/// cluster's nodes do not knock in step. Taken off, never added: the cap stays a cap.
pub const RECONNECT_JITTER: f64 = 0.2;

/// Longest time one attempt may take from connecting to LISTEN in effect. Generous for a
/// distant server, short enough that a hung attempt does not hold up the retries for long.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// Notifications read from one connection ahead of the consumer, before it is handed them.
const READ_AHEAD: usize = 64;

/// What a LISTEN connection heard, in the order it happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Heard {
    /// LISTEN has taken effect on a new connection (the first, or one after an outage).
    /// Notifications sent while no connection listened were lost: re-read what you follow.
    Listening,
    /// A notification's payload.
    Notification(String),
}

/// Spawns the LISTEN connection on `channel` of the server at `config` (a tokio-postgres
/// connection string, URL or key-value form) on the current tokio runtime. It connects in
/// the background and reconnects forever; `name` labels its log lines. The returned
/// receiver holds up to `capacity` items; dropping it ends the connection.
pub fn spawn(
    config: String,
    channel: &'static str,
    name: &'static str,
    capacity: usize,
) -> mpsc::Receiver<Heard> {
    let (sender, receiver) = mpsc::channel(capacity);
    tokio::spawn(async move {
        let session_sender = sender.clone();
        let connect = move |outage_began| {
            connection(
                config.clone(),
                channel,
                name,
                session_sender.clone(),
                outage_began,
            )
        };
        reconnect_forever(connect, sender, name).await;
    });
    receiver
}

/// The delay before reconnect attempt `attempt` (1 for the first attempt of an outage) with
/// `random` in `[0, 1)` taking off up to [`RECONNECT_JITTER`] of it: [`RECONNECT_FIRST`],
/// doubling, capped at [`RECONNECT_CAP`].
pub fn reconnect_delay(attempt: u32, random: f64) -> Duration {
    let doublings = attempt.saturating_sub(1).min(16);
    let base = RECONNECT_FIRST
        .saturating_mul(1 << doublings)
        .min(RECONNECT_CAP);
    base.mul_f64(1.0 - RECONNECT_JITTER * random.clamp(0.0, 1.0))
}

/// How one connection's life ended.
#[derive(Debug)]
enum End {
    /// It never reached LISTEN: PostgreSQL is (still) away, or refused us.
    Failed(Failure),
    /// It listened, then was lost (the server closed it, restarted, or the network failed).
    Lost(Failure),
    /// The consumer dropped its receiver: stop.
    ConsumerGone,
}

/// Why a connection failed or was lost.
#[derive(Debug, thiserror::Error)]
enum Failure {
    /// The server ended the session (`57P01 admin_shutdown`): PostgreSQL stopping or
    /// restarting (expected, so worth an info line rather than a warning), or an
    /// administrator terminating the backend.
    #[error("PostgreSQL ended the session (shutting down, or the backend was terminated)")]
    Shutdown,
    /// The server closed the connection without an error.
    #[error("the server closed the connection")]
    Closed,
    /// Connecting and LISTEN took longer than [`ATTEMPT_TIMEOUT`].
    #[error("no answer within {} s", ATTEMPT_TIMEOUT.as_secs())]
    TimedOut,
    /// Any other error.
    #[error(transparent)]
    Error(tokio_postgres::Error),
}

impl From<tokio_postgres::Error> for Failure {
    fn from(error: tokio_postgres::Error) -> Self {
        if error.code() == Some(&tokio_postgres::error::SqlState::ADMIN_SHUTDOWN) {
            Failure::Shutdown
        } else {
            Failure::Error(error)
        }
    }
}

/// Runs connections one after the other until the consumer goes away, waiting
/// [`reconnect_delay`] between them. `connect` runs one connection's whole life, given when
/// the current outage began (`None` for the first connection), for its log line; it is a
/// parameter so that the cadence is tested with a paused clock.
async fn reconnect_forever<C, F>(mut connect: C, consumer: mpsc::Sender<Heard>, name: &'static str)
where
    C: FnMut(Option<Instant>) -> F,
    F: Future<Output = End>,
{
    // Attempts that failed since the last connection that listened: the cadence's position.
    let mut attempts: u32 = 0;
    let mut outage_began: Option<Instant> = None;
    loop {
        let end = tokio::select! {
            end = connect(outage_began) => end,
            () = consumer.closed() => End::ConsumerGone,
        };
        match end {
            End::ConsumerGone => return,
            // A new outage: the cadence starts again, whatever the previous one reached.
            End::Lost(failure) => {
                attempts = 0;
                outage_began = Some(Instant::now());
                match failure {
                    Failure::Shutdown => tracing::info!(
                        listener = name,
                        "PostgreSQL ended the listener's session (shutting down or restarting, or the backend was terminated); reconnecting"
                    ),
                    other => tracing::warn!(
                        listener = name,
                        failure = %other,
                        "listener connection lost; reconnecting"
                    ),
                }
            }
            End::Failed(failure) if outage_began.is_none() => {
                outage_began = Some(Instant::now());
                tracing::warn!(listener = name, %failure, "listener cannot connect; retrying");
            }
            End::Failed(failure) => {
                tracing::debug!(
                    listener = name,
                    attempt = attempts + 1,
                    %failure,
                    "listener reconnect attempt failed"
                );
            }
        }
        attempts = attempts.saturating_add(1);
        let delay = reconnect_delay(attempts, rand::random::<f64>());
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = consumer.closed() => return,
        }
    }
}

/// One connection's life: connect, LISTEN, report [`Heard::Listening`], then hand over
/// every notification until the connection ends or the consumer goes away.
async fn connection(
    config: String,
    channel: &'static str,
    name: &'static str,
    consumer: mpsc::Sender<Heard>,
    outage_began: Option<Instant>,
) -> End {
    let attempt = async {
        let (client, mut connection) = tokio_postgres::connect(&config, NoTls).await?;
        // The connection must be polled for the client's statements to complete; it reads
        // notifications ahead into a small buffer until LISTEN is confirmed.
        let (notes, received) = mpsc::channel::<String>(READ_AHEAD);
        let pump = tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(note)) => {
                        if notes.send(note.payload().to_owned()).await.is_err() {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(error) => return Err(error),
                }
            }
            Ok(())
        });
        // Aborts the pump, and with it the connection, whatever way this attempt or the
        // connection's life ends (an error, the timeout, the consumer gone).
        let guard = AbortOnDrop(pump.abort_handle());
        client.batch_execute(&format!("LISTEN {channel}")).await?;
        Ok::<_, tokio_postgres::Error>((client, pump, guard, received))
    };
    let (client, pump, _guard, mut received) =
        match tokio::time::timeout(ATTEMPT_TIMEOUT, attempt).await {
            Ok(Ok(connected)) => connected,
            Ok(Err(error)) => return End::Failed(error.into()),
            Err(_) => return End::Failed(Failure::TimedOut),
        };
    match outage_began {
        Some(began) => tracing::info!(
            listener = name,
            channel,
            after_ms = began.elapsed().as_millis() as u64,
            "listener listening again"
        ),
        None => tracing::info!(listener = name, channel, "listener listening"),
    }
    if consumer.send(Heard::Listening).await.is_err() {
        return End::ConsumerGone;
    }
    while let Some(payload) = received.recv().await {
        if consumer.send(Heard::Notification(payload)).await.is_err() {
            return End::ConsumerGone;
        }
    }
    // The pump ended, so the connection did: say why.
    drop(client);
    match pump.await {
        Ok(Ok(())) => End::Lost(Failure::Closed),
        Ok(Err(error)) => End::Lost(error.into()),
        Err(join) => {
            tracing::error!(listener = name, %join, "listener pump panicked");
            End::Lost(Failure::Closed)
        }
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[test]
    fn the_delay_starts_short_doubles_and_is_capped_at_a_quarter_second() {
        let delays: Vec<u64> = (1..=6)
            .map(|attempt| reconnect_delay(attempt, 0.0).as_millis() as u64)
            .collect();
        assert_eq!(delays, vec![50, 100, 200, 250, 250, 250]);
        assert_eq!(reconnect_delay(u32::MAX, 0.0), RECONNECT_CAP);
    }

    #[test]
    fn jitter_only_shortens_a_delay_and_by_a_fifth_at_most() {
        for attempt in [1, 3, 10] {
            let full = reconnect_delay(attempt, 0.0);
            for random in [0.0, 0.25, 0.5, 0.999_999, 7.0, -1.0] {
                let jittered = reconnect_delay(attempt, random);
                assert!(jittered <= full, "{jittered:?} > {full:?}");
                assert!(
                    jittered >= full.mul_f64(0.8),
                    "{jittered:?} < 80% of {full:?}"
                );
            }
        }
    }

    /// A scripted run of `reconnect_forever`: each connection ends as `script` says (then
    /// fails forever); returns when each attempt began, relative to the first.
    async fn attempts_of(script: Vec<End>, attempts: usize) -> Vec<Duration> {
        let started = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(script.into_iter()));
        let (sender, mut receiver) = mpsc::channel(8);
        let log = started.clone();
        let connect = move |_| {
            log.lock().unwrap().push(Instant::now());
            let end = script
                .lock()
                .unwrap()
                .next()
                .unwrap_or(End::Failed(Failure::Closed));
            async move { end }
        };
        let task = tokio::spawn(reconnect_forever(connect, sender, "test"));
        while started.lock().unwrap().len() < attempts {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        receiver.close();
        task.await.unwrap();
        let started = started.lock().unwrap();
        started[..attempts]
            .iter()
            .map(|at| *at - started[0])
            .collect()
    }

    fn gaps(at: &[Duration]) -> Vec<Duration> {
        at.windows(2).map(|w| w[1] - w[0]).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn an_outage_of_any_length_is_retried_at_least_four_times_a_second() {
        // Arrange: PostgreSQL away for good.
        let at = attempts_of(Vec::new(), 60).await;

        // Assert: never more than the cap between two attempts, so the listener is back
        // within a quarter second (and one attempt) of PostgreSQL's return.
        for gap in gaps(&at) {
            assert!(gap <= RECONNECT_CAP, "a gap of {gap:?}");
        }
        assert!(
            at[59] <= Duration::from_secs(15),
            "60 attempts in {:?}",
            at[59]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_outage_starts_again_at_the_shortest_delay() {
        // Arrange: a long outage (the delay reaches its cap), a connection that listens and is
        // then lost, a second outage.
        let mut script: Vec<End> = (0..20).map(|_| End::Failed(Failure::Closed)).collect();
        script.push(End::Lost(Failure::Shutdown));
        script.extend((0..3).map(|_| End::Failed(Failure::Closed)));

        // Act
        let at = attempts_of(script, 25).await;

        // Assert: the first attempt after the loss waits the first delay, not the cap the
        // previous outage reached; then the cadence doubles again.
        let gaps = gaps(&at);
        let after_loss = &gaps[20..24];
        let expected = [50, 100, 200, 250].map(Duration::from_millis);
        for (gap, full) in after_loss.iter().zip(expected) {
            assert!(
                *gap <= full && *gap >= full.mul_f64(0.8),
                "after the loss: {after_loss:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_listener_stops_when_its_consumer_goes_away() {
        // Arrange: a connection that would listen forever.
        let (sender, receiver) = mpsc::channel(8);
        let connect = |_| std::future::pending::<End>();
        let task = tokio::spawn(reconnect_forever(connect, sender, "test"));

        // Act
        drop(receiver);

        // Assert
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .expect("the listener stops")
            .unwrap();
    }
}
