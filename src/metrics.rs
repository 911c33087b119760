//! Prometheus metrics, rendered as text at `/metrics`.
//!
//! Plain atomics: recording a metric on the delivery hot path is one relaxed add, no lock
//! and no allocation.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds (ms) of the command→delivery latency histogram buckets.
pub const LATENCY_BUCKETS_MS: [u64; 13] =
    [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000];

/// A fixed-bucket histogram.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS_MS.len()],
    count: AtomicU64,
    sum_ms: AtomicU64,
}

impl Histogram {
    /// Records `n` observations of the same value (one event's delivery to `n` connections).
    pub fn observe_ms_times(&self, ms: u64, n: u64) {
        if n == 0 {
            return;
        }
        if let Some(i) = LATENCY_BUCKETS_MS.iter().position(|b| ms <= *b) {
            self.buckets[i].fetch_add(n, Ordering::Relaxed);
        }
        self.count.fetch_add(n, Ordering::Relaxed);
        self.sum_ms.fetch_add(ms * n, Ordering::Relaxed);
    }

    /// Records one observation in milliseconds.
    pub fn observe_ms(&self, ms: u64) {
        if let Some(i) = LATENCY_BUCKETS_MS.iter().position(|b| ms <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_ms.fetch_add(ms, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, bound) in LATENCY_BUCKETS_MS.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{}\"}} {cumulative}",
                *bound as f64 / 1000.0
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.sum_ms.load(Ordering::Relaxed) as f64 / 1000.0
        );
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// Every metric of a node.
#[derive(Debug, Default)]
pub struct Metrics {
    pub ws_connections: AtomicU64,
    pub sse_connections: AtomicU64,
    pub subscriptions: AtomicU64,
    pub hospitals: AtomicU64,
    pub window_events: AtomicU64,
    pub backlog_events: AtomicU64,
    pub events_delivered: AtomicU64,
    /// Event frames the fan-out wrote straight to a caught-up connection's socket, no task
    /// woken (part of `events_delivered`).
    pub events_delivered_direct: AtomicU64,
    /// Times the fan-out handed a connection back to its writer task (a write would block,
    /// it fell behind, a command was waiting).
    pub direct_handed_back: AtomicU64,
    pub replayed_memory: AtomicU64,
    pub replayed_database: AtomicU64,
    pub resumes_recovered: AtomicU64,
    pub resumes_not_recovered: AtomicU64,
    pub slow_consumer_disconnects: AtomicU64,
    pub rate_limit_hits: AtomicU64,
    pub commands: AtomicU64,
    /// Events hospital actors appended from the same-node handoff (no read-back).
    pub stream_events_handed_off: AtomicU64,
    /// Events hospital actors appended from a read of the store (other nodes' commits,
    /// gaps, lost handoffs).
    pub stream_events_read: AtomicU64,
    /// An event's `ts` (its insert, just before its commit) → appended to its hospital's window
    /// on this node: commit, announcement or handoff, the actor's turn (issue 17 breakdown).
    pub window_latency: Histogram,
    /// The same, summed in microseconds: its mean at a resolution the buckets lack.
    pub window_latency_us_sum: AtomicU64,
    /// Commit of an event → its frame handed to the connection.
    pub delivery_latency: Histogram,
}

impl Metrics {
    /// Adds one to a counter.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Subtracts one from a gauge (never below zero).
    pub fn dec(gauge: &AtomicU64) {
        let _ = gauge.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
            Some(v.saturating_sub(1))
        });
    }

    /// The Prometheus text exposition.
    ///
    /// Long by design: one line per exported series, so the list of metrics reads in one place.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        metric(
            "vigil_subscriptions",
            "gauge",
            "Topics subscribed over all connections.",
            get(&self.subscriptions),
        );
        metric(
            "vigil_hospital_readers",
            "gauge",
            "Hospitals with live sessions on this node.",
            get(&self.hospitals),
        );
        metric(
            "vigil_window_events",
            "gauge",
            "Events held in the in-memory windows.",
            get(&self.window_events),
        );
        metric(
            "vigil_queue_backlog_events",
            "gauge",
            "Events owed to connections but not yet written (sum of lags).",
            get(&self.backlog_events),
        );
        metric(
            "vigil_stream_events_handed_off_total",
            "counter",
            "Events appended to hospital windows from this node's commits, without a read.",
            get(&self.stream_events_handed_off),
        );
        metric(
            "vigil_stream_events_read_total",
            "counter",
            "Events appended to hospital windows from a read of the store.",
            get(&self.stream_events_read),
        );
        metric(
            "vigil_events_delivered_total",
            "counter",
            "Event frames handed to connections.",
            get(&self.events_delivered),
        );
        metric(
            "vigil_events_delivered_direct_total",
            "counter",
            "Event frames written by the fan-out straight to caught-up connections.",
            get(&self.events_delivered_direct),
        );
        metric(
            "vigil_direct_handed_back_total",
            "counter",
            "Connections the fan-out handed back to their writer task.",
            get(&self.direct_handed_back),
        );
        metric(
            "vigil_slow_consumer_disconnects_total",
            "counter",
            "Connections closed because they could not keep up.",
            get(&self.slow_consumer_disconnects),
        );
        metric(
            "vigil_rate_limit_hits_total",
            "counter",
            "Requests or frames refused by a rate limit.",
            get(&self.rate_limit_hits),
        );
        metric(
            "vigil_commands_total",
            "counter",
            "Commands accepted.",
            get(&self.commands),
        );
        let _ = writeln!(
            out,
            "# HELP vigil_connections Open realtime connections by transport.\n# TYPE vigil_connections gauge\n\
             vigil_connections{{transport=\"websocket\"}} {}\nvigil_connections{{transport=\"sse\"}} {}",
            get(&self.ws_connections),
            get(&self.sse_connections)
        );
        let _ = writeln!(
            out,
            "# HELP vigil_events_replayed_total Events replayed to resuming connections, by source.\n# TYPE vigil_events_replayed_total counter\n\
             vigil_events_replayed_total{{source=\"memory\"}} {}\nvigil_events_replayed_total{{source=\"database\"}} {}",
            get(&self.replayed_memory),
            get(&self.replayed_database)
        );
        let _ = writeln!(
            out,
            "# HELP vigil_resumes_total Resume attempts by outcome.\n# TYPE vigil_resumes_total counter\n\
             vigil_resumes_total{{outcome=\"recovered\"}} {}\nvigil_resumes_total{{outcome=\"not_recovered\"}} {}",
            get(&self.resumes_recovered),
            get(&self.resumes_not_recovered)
        );
        self.window_latency.render(
            &mut out,
            "vigil_window_latency_seconds",
            "Event ts (insert, before commit) to appended to this node's hospital window.",
        );
        let _ = writeln!(
            out,
            "# HELP vigil_window_latency_microseconds_sum Sum of the event ts to window latencies, in microseconds.\n\
             # TYPE vigil_window_latency_microseconds_sum counter\nvigil_window_latency_microseconds_sum {}",
            get(&self.window_latency_us_sum)
        );
        self.delivery_latency.render(
            &mut out,
            "vigil_delivery_latency_seconds",
            "Time from an event's commit to its frame being handed to a connection.",
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_histogram_is_cumulative() {
        let m = Metrics::default();
        m.delivery_latency.observe_ms(3);
        m.delivery_latency.observe_ms(40);
        m.delivery_latency.observe_ms(99_999);
        let text = m.render();
        assert!(text.contains("vigil_delivery_latency_seconds_bucket{le=\"0.005\"} 1"));
        assert!(text.contains("vigil_delivery_latency_seconds_bucket{le=\"0.05\"} 2"));
        assert!(text.contains("vigil_delivery_latency_seconds_bucket{le=\"+Inf\"} 3"));
        assert!(text.contains("vigil_delivery_latency_seconds_count 3"));
    }
}
