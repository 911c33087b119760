//! The hospital reader's in-memory window of recent events, already serialized.
//!
//! Each event is turned into its wire frame **once**, when the reader takes it from the
//! store; every session that receives it shares the same bytes (`ByteString` clones are
//! reference counts). The window is bounded in count and age; a reader that needs older
//! events reads them from PostgreSQL.
//!
//! Positions are dense, so the window is a contiguous run `first..=last` and lookup by
//! position is an index computation.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use aggregates::routing::Scope;
use aggregates::types::UserId;
use bytes::Bytes;
use bytestring::ByteString;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::socket::text_frame;
use super::topics::{topics_of, Topic};
use crate::access::entitlement::{may_see_scope, Viewer};
use crate::stream::{Position, StreamEvent};

/// An event ready to send.
#[derive(Debug)]
pub struct WindowEvent {
    /// Stream position.
    pub position: Position,
    /// Routing facts for entitlement.
    pub scope: Scope,
    /// Who caused the event (entitlement: field workers see what they wrote).
    pub author: Option<UserId>,
    /// Topics the event belongs to (first = primary).
    pub topics: Vec<Topic>,
    /// The `event` frame, JSON, shared by every recipient (SSE sends it in a `data:` line).
    pub frame: ByteString,
    /// The same JSON as a whole WebSocket text frame (header included), shared by every
    /// WebSocket recipient; `frame` is a view into the same buffer, so the window holds the
    /// bytes once.
    pub wire: Bytes,
    /// Commit time, for latency metrics and age eviction.
    pub recorded_at: DateTime<Utc>,
}

impl WindowEvent {
    /// Whether a viewer may receive this event (the shared entitlement rule).
    pub fn visible_to(&self, viewer: Viewer<'_>) -> bool {
        may_see_scope(viewer, &self.scope, self.author.as_ref())
    }
}

/// The `event` frame's fields (docs/PROTOCOL.md, "Server frames").
///
/// Kept small because it is what every delivery carries: the position once (a number; the
/// string `id` that duplicated it is gone, SSE still has its `id:` line), `topics` only when
/// the event has more than its primary `topic`, and no `null` fields in `data`. The field
/// names stay the readable ones shared with SSE and the polling endpoint: see
/// [`EVENT_FRAME_VERSION`] for why they were not shortened.
#[derive(Serialize)]
struct EventFrame<'a> {
    #[serde(rename = "type")]
    frame_type: &'static str,
    position: Position,
    topic: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    topics: Option<Vec<String>>,
    event_type: &'a str,
    aggregate_type: &'a str,
    aggregate_id: &'a str,
    sequence: i64,
    data: WithoutNulls<'a>,
    ts: DateTime<Utc>,
}

/// The shape of the `event` frame, for the record: 2 since issue 17 (no `id`, `topics` only
/// when it differs from `topic`, no `null` fields in `data`).
///
/// Not negotiated: the JS client and the load tool read both shapes, and shortening the
/// field names, the one change that would need a negotiated dialect, saves about 60 bytes of
/// ~320 while each delivery's cost is the `send` per connection, not its bytes (see
/// BENCHMARKS.md, "issue 17: delivery"). A second dialect would also mean encoding each event
/// twice and a second decoder in every client.
pub const EVENT_FRAME_VERSION: u8 = 2;

/// An event's `data` without its top-level `null` fields: an absent field reads as `null`
/// (docs/PROTOCOL.md), and `"department":null,"patient":null` alone was 33 bytes of an alert.
struct WithoutNulls<'a>(&'a serde_json::Value);

impl Serialize for WithoutNulls<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self.0 {
            serde_json::Value::Object(fields) => {
                let present = fields.iter().filter(|(_, v)| !v.is_null());
                let mut map = serializer.serialize_map(Some(present.clone().count()))?;
                for (name, value) in present {
                    map.serialize_entry(name, value)?;
                }
                map.end()
            }
            other => other.serialize(serializer),
        }
    }
}

/// Builds the window entry (and its frame) for a stored event.
pub fn prepare(event: StreamEvent) -> Arc<WindowEvent> {
    let topics = topics_of(&event.aggregate_id, &event.scope);
    let frame = EventFrame {
        frame_type: "event",
        position: event.position,
        topic: topics
            .first()
            .map(Topic::to_string)
            .unwrap_or_else(|| "events".to_owned()),
        topics: (topics.len() > 1).then(|| topics.iter().map(Topic::to_string).collect()),
        event_type: &event.event_type,
        aggregate_type: &event.aggregate_type,
        aggregate_id: &event.aggregate_id,
        sequence: event.sequence,
        data: WithoutNulls(&event.data),
        ts: event.recorded_at,
    };
    // Serializing plain data with string keys cannot fail.
    let json = serde_json::to_string(&frame).unwrap_or_else(|_| "{}".to_owned());
    let (wire, frame) = framed(&json);
    Arc::new(WindowEvent {
        position: event.position,
        scope: event.scope,
        author: event.metadata.user,
        topics,
        frame,
        wire,
        recorded_at: event.recorded_at,
    })
}

/// `json` as a WebSocket text frame, and the JSON itself as a view into that frame.
fn framed(json: &str) -> (Bytes, ByteString) {
    let wire = text_frame(json);
    let header = wire.len() - json.len();
    // The payload is `json`, a `str`: the slice is valid UTF-8, and the fallback (a copy)
    // cannot be taken.
    let frame = ByteString::try_from(wire.slice(header..))
        .unwrap_or_else(|_| ByteString::from(json.to_owned()));
    (wire, frame)
}

/// Events taken from the window or the store, in position order.
///
/// A live connection takes one event at a time (every commit wakes it), for every event and
/// every connection: that case is [`Batch::One`], without the allocation of a `Vec`.
#[derive(Debug)]
pub enum Batch {
    /// A single event (taken once iterated).
    One(Option<Arc<WindowEvent>>),
    /// Any number of events.
    Many(std::vec::IntoIter<Arc<WindowEvent>>),
}

impl From<Vec<Arc<WindowEvent>>> for Batch {
    fn from(events: Vec<Arc<WindowEvent>>) -> Self {
        Batch::Many(events.into_iter())
    }
}

impl Iterator for Batch {
    type Item = Arc<WindowEvent>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Batch::One(event) => event.take(),
            Batch::Many(events) => events.next(),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match self {
            Batch::One(event) => {
                let n = usize::from(event.is_some());
                (n, Some(n))
            }
            Batch::Many(events) => events.size_hint(),
        }
    }
}

impl ExactSizeIterator for Batch {}

/// Recent events of one hospital, contiguous by position.
#[derive(Debug)]
pub struct Window {
    events: VecDeque<Arc<WindowEvent>>,
    /// Running total of frame bytes ever pushed, after each held event (aligned with
    /// `events`), so a session's backlog in bytes is one subtraction — the lag check runs for
    /// every session after every append, and must not walk the window.
    ends: VecDeque<u64>,
    pushed: u64,
    bytes: usize,
    max_events: usize,
    max_age: Duration,
}

impl Window {
    /// An empty window holding at most `max_events` events no older than `max_age`.
    pub fn new(max_events: usize, max_age: Duration) -> Self {
        Self {
            events: VecDeque::new(),
            ends: VecDeque::new(),
            pushed: 0,
            bytes: 0,
            max_events: max_events.max(1),
            max_age,
        }
    }

    /// Appends the next event. Events must arrive in position order without gaps; an event
    /// that does not continue the window resets it (it can only happen if the window was
    /// seeded from a different point, and a reset keeps the contiguity invariant).
    pub fn push(&mut self, event: Arc<WindowEvent>) {
        if let Some(last) = self.last_position() {
            if event.position != last + 1 {
                self.events.clear();
                self.ends.clear();
                self.bytes = 0;
            }
        }
        self.bytes += event.frame.len();
        self.pushed += event.frame.len() as u64;
        self.ends.push_back(self.pushed);
        self.events.push_back(event);
        while self.events.len() > self.max_events {
            self.pop_front();
        }
    }

    fn pop_front(&mut self) {
        if let Some(old) = self.events.pop_front() {
            self.ends.pop_front();
            self.bytes -= old.frame.len();
        }
    }

    /// Drops events older than the age limit (always keeps the newest, so the window keeps
    /// knowing its last position).
    pub fn evict_older_than(&mut self, now: DateTime<Utc>) {
        let max_age = chrono::Duration::from_std(self.max_age).unwrap_or(chrono::Duration::MAX);
        while self.events.len() > 1
            && self
                .events
                .front()
                .is_some_and(|e| now.signed_duration_since(e.recorded_at) > max_age)
        {
            self.pop_front();
        }
    }

    /// First position held.
    pub fn first_position(&self) -> Option<Position> {
        self.events.front().map(|e| e.position)
    }

    /// Last position held.
    pub fn last_position(&self) -> Option<Position> {
        self.events.back().map(|e| e.position)
    }

    /// Whether every event after `after` (up to the window's end) is held.
    pub fn covers_after(&self, after: Position) -> bool {
        self.first_position()
            .is_some_and(|first| after + 1 >= first)
    }

    /// Up to `max` events with a position greater than `after`, if the window covers them.
    pub fn after(&self, after: Position, max: usize) -> Option<Batch> {
        let first = self.first_position()?;
        if after + 1 < first {
            return None;
        }
        let start = usize::try_from(after + 1 - first)
            .ok()?
            .min(self.events.len());
        let mut events = self.events.range(start..).take(max);
        Some(match (events.next(), events.len()) {
            (None, _) => Batch::from(Vec::new()),
            (Some(only), 0) => Batch::One(Some(only.clone())),
            (Some(first), _) => Batch::from(
                std::iter::once(first)
                    .chain(events)
                    .cloned()
                    .collect::<Vec<_>>(),
            ),
        })
    }

    /// Bytes of frames between `after` and the end (a lagging session's backlog).
    pub fn bytes_after(&self, after: Position) -> usize {
        match self.first_position() {
            Some(first) if after + 1 > first => {
                // `ends[i]` is the running total after the event at `first + i`.
                let index = usize::try_from(after - first).unwrap_or(usize::MAX);
                match self.ends.get(index) {
                    Some(end) => (self.pushed - end) as usize,
                    None => 0,
                }
            }
            Some(_) => self.bytes,
            None => 0,
        }
    }

    /// Events held.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether the window is empty.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Total frame bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aggregates::routing::Category;

    fn event(position: Position, age_secs: i64) -> Arc<WindowEvent> {
        Arc::new(WindowEvent {
            position,
            scope: Scope {
                category: Category::Alerts,
                patient: None,
                assignees: vec![],
                recipient: None,
            },
            author: None,
            topics: vec![Topic::Alerts],
            frame: framed(&format!("{{\"position\":{position}}}")).1,
            wire: framed(&format!("{{\"position\":{position}}}")).0,
            recorded_at: Utc::now() - chrono::Duration::seconds(age_secs),
        })
    }

    /// An alert as the load tool raises it, stored as the command path stores it.
    fn stored_alert(patient: Option<&str>) -> StreamEvent {
        let patient = patient.map(|p| aggregates::types::PatientId::parse(p).unwrap());
        StreamEvent {
            position: 123_456,
            aggregate_type: "alert".into(),
            aggregate_id: "0f5e7c1a-8a7e-4d0b-9a55-3f5f7e2b8c11".into(),
            sequence: 1,
            event_type: "AlertRaised".into(),
            event_version: "1".into(),
            data: serde_json::json!({
                "severity": "low", "message": "load test alert 12345", "department": null,
                "patient": patient.as_ref().map(|p| p.to_string()), "by": "writer-12",
                "at": "2026-12-06T23:52:04.123456789Z",
            }),
            metadata: Default::default(),
            recorded_at: "2026-12-06T23:52:04.123456Z".parse().unwrap(),
            scope: Scope {
                category: Category::Alerts,
                patient,
                assignees: vec![],
                recipient: None,
            },
        }
    }

    #[test]
    fn an_event_frame_carries_its_position_once_no_nulls_and_topics_only_when_more_than_one() {
        let frame = prepare(stored_alert(None)).frame.to_string();
        assert_eq!(
            frame,
            r#"{"type":"event","position":123456,"topic":"alerts","event_type":"AlertRaised","aggregate_type":"alert","aggregate_id":"0f5e7c1a-8a7e-4d0b-9a55-3f5f7e2b8c11","sequence":1,"data":{"at":"2026-12-06T23:52:04.123456789Z","by":"writer-12","message":"load test alert 12345","severity":"low"},"ts":"2026-12-06T23:52:04.123456Z"}"#
        );
        // The frame before issue 17 was 387 bytes for the same event.
        assert_eq!(frame.len(), 320);

        let with_patient: serde_json::Value =
            serde_json::from_str(&prepare(stored_alert(Some("p-1001"))).frame).unwrap();
        assert_eq!(with_patient["topic"], "alerts");
        assert_eq!(
            with_patient["topics"],
            serde_json::json!(["alerts", "patient:p-1001"])
        );
        assert_eq!(with_patient["data"]["patient"], "p-1001");
        assert!(with_patient["data"].get("department").is_none());
    }

    #[test]
    fn a_window_keeps_the_newest_events_up_to_its_count() {
        let mut w = Window::new(3, Duration::from_secs(600));
        for p in 1..=5 {
            w.push(event(p, 0));
        }
        assert_eq!((w.first_position(), w.last_position()), (Some(3), Some(5)));
        assert!(w.covers_after(2));
        assert!(!w.covers_after(1));
        let after_3: Vec<_> = w.after(3, 10).unwrap().map(|e| e.position).collect();
        assert_eq!(after_3, vec![4, 5]);
        assert!(
            w.after(1, 10).is_none(),
            "position 2 was evicted: the caller must use the store"
        );
        assert_eq!(w.after(5, 10).unwrap().len(), 0);
        assert!(
            matches!(w.after(4, 10), Some(Batch::One(_))),
            "one event: the allocation-free batch"
        );
        let last: Vec<_> = w.after(4, 10).unwrap().map(|e| e.position).collect();
        assert_eq!(last, vec![5]);
        let capped: Vec<_> = w.after(2, 2).unwrap().map(|e| e.position).collect();
        assert_eq!(capped, vec![3, 4]);
    }

    #[test]
    fn old_events_are_evicted_but_the_newest_stays() {
        let mut w = Window::new(100, Duration::from_secs(60));
        w.push(event(1, 120));
        w.push(event(2, 90));
        w.push(event(3, 10));
        w.evict_older_than(Utc::now());
        assert_eq!(w.first_position(), Some(3));
        let mut only_old = Window::new(100, Duration::from_secs(60));
        only_old.push(event(7, 999));
        only_old.evict_older_than(Utc::now());
        assert_eq!(only_old.last_position(), Some(7));
    }

    #[test]
    fn a_non_contiguous_push_resets_the_window() {
        let mut w = Window::new(10, Duration::from_secs(60));
        w.push(event(1, 0));
        w.push(event(5, 0));
        assert_eq!(w.first_position(), Some(5));
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn backlog_bytes_stay_exact_after_eviction_and_reset() {
        let mut w = Window::new(3, Duration::from_secs(60));
        for p in 1..=9 {
            w.push(event(p, 0));
        }
        let one = w.after(6, 1).unwrap().next().unwrap().frame.len();
        assert_eq!(w.bytes_after(7), 2 * one);
        assert_eq!(w.bytes_after(8), one);
        assert_eq!(w.bytes_after(9), 0);
        assert_eq!(w.bytes_after(2), w.bytes());
        w.push(event(20, 0));
        assert_eq!(w.bytes_after(20), 0);
        assert_eq!(w.bytes_after(19), w.bytes());
    }

    #[test]
    fn backlog_bytes_count_only_events_after_the_cursor() {
        let mut w = Window::new(10, Duration::from_secs(60));
        for p in 1..=3 {
            w.push(event(p, 0));
        }
        let one = w.after(0, 1).unwrap().next().unwrap().frame.len();
        assert_eq!(w.bytes_after(2), w.bytes() - 2 * one);
        assert_eq!(w.bytes_after(3), 0);
        assert_eq!(w.bytes_after(0), w.bytes());
    }
}
