//! The session's pure limit rules, tested with any clock: when a silent connection is dead,
//! and how many limit violations a connection may commit before it is closed.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Window over which limit violations are counted.
pub const VIOLATION_WINDOW: Duration = Duration::from_secs(60);

/// What the heartbeat timer should do.
#[derive(Debug, PartialEq, Eq)]
pub enum Heartbeat {
    /// Send a ping.
    Ping,
    /// Silent for two intervals: close.
    TimedOut,
}

/// The heartbeat rule, pure so it is tested with any clock: a connection that sent nothing
/// (no frame, no pong) for two intervals is dead.
pub fn heartbeat(last_seen: Instant, now: Instant, interval: Duration) -> Heartbeat {
    if now.saturating_duration_since(last_seen) > interval * 2 {
        Heartbeat::TimedOut
    } else {
        Heartbeat::Ping
    }
}

/// Counts limit violations in a sliding window; past the maximum the connection is closed.
#[derive(Debug, Default)]
pub struct Violations(VecDeque<Instant>);

impl Violations {
    /// Records one at `now`; true when the connection has now exceeded `max` in the window.
    pub fn record(&mut self, now: Instant, max: u32) -> bool {
        while self
            .0
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > VIOLATION_WINDOW)
        {
            self.0.pop_front();
        }
        self.0.push_back(now);
        self.0.len() > max as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_is_dead_after_two_silent_intervals() {
        let t0 = Instant::now();
        let interval = Duration::from_secs(30);
        assert_eq!(
            heartbeat(t0, t0 + Duration::from_secs(59), interval),
            Heartbeat::Ping
        );
        assert_eq!(
            heartbeat(t0, t0 + Duration::from_secs(61), interval),
            Heartbeat::TimedOut
        );
    }

    #[test]
    fn violations_close_only_past_the_maximum_within_a_minute() {
        let t0 = Instant::now();
        let mut v = Violations::default();
        for i in 0..3 {
            assert!(!v.record(t0 + Duration::from_secs(i), 3));
        }
        assert!(v.record(t0 + Duration::from_secs(4), 3));
        let mut later = Violations::default();
        for i in 0..3 {
            later.record(t0 + Duration::from_secs(i), 3);
        }
        assert!(
            !later.record(t0 + Duration::from_secs(120), 3),
            "old violations are forgotten"
        );
    }
}
