//! Token-bucket rate limiting, shared by the command endpoints (per user) and, later, by
//! realtime sessions (per connection).
//!
//! Time is passed in, never read here, so the arithmetic is unit-tested without sleeping.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Above this many tracked keys, full (idle) buckets are dropped. Keys come from verified
/// tokens, so their number is bounded by real users; pruning keeps memory flat anyway.
pub const PRUNE_THRESHOLD: usize = 10_000;

/// A token bucket: `capacity` tokens, refilled at `rate` per second.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    capacity: f64,
    rate: f64,
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: f64, capacity: f64, now: Instant) -> Self {
        let capacity = capacity.max(1.0);
        Self {
            capacity,
            rate: rate.max(f64::MIN_POSITIVE),
            tokens: capacity,
            updated: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        self.updated = now;
    }

    /// Takes one token, or says how long until one is available.
    pub fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }

    fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.capacity
    }
}

/// One token bucket per key (e.g. per hospital and user).
#[derive(Debug)]
pub struct KeyedLimiter<K> {
    rate: f64,
    capacity: f64,
    buckets: Mutex<HashMap<K, TokenBucket>>,
}

impl<K: Eq + Hash + Clone> KeyedLimiter<K> {
    /// A limiter allowing `rate` per second with bursts of `capacity`.
    pub fn new(rate: f64, capacity: f64) -> Self {
        Self {
            rate,
            capacity,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `key`, or says how long to wait.
    pub fn check(&self, key: &K, now: Instant) -> Result<(), Duration> {
        // A poisoned lock only means another thread panicked mid-update of a counter; the
        // map is still usable.
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= PRUNE_THRESHOLD {
            buckets.retain(|_, bucket| !bucket.is_full(now));
        }
        buckets
            .entry(key.clone())
            .or_insert_with(|| TokenBucket::new(self.rate, self.capacity, now))
            .try_take(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_up_to_capacity_is_allowed_then_refused() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(1.0, 3.0, t0);
        assert!(bucket.try_take(t0).is_ok());
        assert!(bucket.try_take(t0).is_ok());
        assert!(bucket.try_take(t0).is_ok());
        let wait = bucket.try_take(t0).unwrap_err();
        assert!(wait > Duration::from_millis(900) && wait <= Duration::from_secs(1));
    }

    #[test]
    fn tokens_come_back_at_the_configured_rate() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(2.0, 1.0, t0);
        assert!(bucket.try_take(t0).is_ok());
        assert!(bucket.try_take(t0 + Duration::from_millis(100)).is_err());
        assert!(bucket.try_take(t0 + Duration::from_millis(600)).is_ok());
    }

    #[test]
    fn keys_have_independent_buckets() {
        let t0 = Instant::now();
        let limiter = KeyedLimiter::new(1.0, 1.0);
        assert!(limiter.check(&"a", t0).is_ok());
        assert!(limiter.check(&"a", t0).is_err());
        assert!(limiter.check(&"b", t0).is_ok());
    }
}
