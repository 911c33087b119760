//! Ordered hospital streams: every committed event has a position in its hospital's stream,
//! assigned by the database (see `migrations/*_create_event_store.sql`), and any reader that
//! has seen position N can read everything after N, in order, without a gap.
//!
//! - [`read`]: reading a stream after a position, and its head;
//! - [`announce`]: the writer's post-commit announcement (NOTIFY) and same-node handoff;
//! - [`listener`]: the LISTEN/NOTIFY connection that wakes readers on commit, and the head
//!   poll that wakes them when an announcement was lost;
//! - [`entitlement`]: which events a user may receive — one function for every transport.
//!
//! Invariant: only the database assigns positions. Nothing in Rust computes or guesses one.

pub mod announce;
pub mod listener;
pub mod read;
pub mod topics;

use aggregates::routing::Scope;
use aggregates::types::{HospitalId, UserId};
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

/// A position in a hospital's stream. Positions start at 1 and are dense: the stream of a
/// hospital with 7 events holds positions 1..=7. Position 0 means "before the first event".
pub type Position = i64;

/// How a command's aggregate is keyed in the event store: `<hospital>/<id>`. Prefixing the
/// tenant makes isolation structural: a command for hospital A can only ever load an
/// aggregate of hospital A, whatever id the client sends.
pub fn store_key(hospital: &HospitalId, id: &str) -> String {
    format!("{hospital}/{id}")
}

/// One committed event as readers see it.
#[derive(Clone, Debug, Serialize)]
pub struct StreamEvent {
    /// Position in the hospital's stream.
    pub position: Position,
    /// The aggregate kind (`alert`, `case_thread`, `patient_vitals`, ...).
    pub aggregate_type: String,
    /// The aggregate's id as the API shows it (without the tenant prefix).
    pub aggregate_id: String,
    /// The aggregate's version after this event.
    pub sequence: i64,
    /// Past-tense event name, e.g. `AlertRaised`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Schema version of the payload.
    pub event_version: String,
    /// The event's fields.
    pub data: serde_json::Value,
    /// Who did it and why (user, correlation and causation ids).
    pub metadata: EventMetadata,
    /// When the event was written.
    #[serde(rename = "ts")]
    pub recorded_at: DateTime<Utc>,
    /// Routing facts (category, patient, assignees, recipient) used by entitlement.
    #[serde(skip)]
    pub scope: Scope,
}

/// The metadata Vigil writes on every event.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct EventMetadata {
    /// The acting user (`system` for policies).
    pub user: Option<UserId>,
    /// The acting user's role.
    pub role: Option<String>,
    /// Ties together everything caused by one user intent.
    pub correlation_id: Option<Uuid>,
    /// The command or event that directly caused this event.
    pub causation_id: Option<Uuid>,
    /// The command that produced this event.
    pub command_id: Option<Uuid>,
}

/// The head of a hospital's stream: its last position and its epoch.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
pub struct StreamHead {
    /// Last assigned position; 0 for a hospital with no events yet.
    pub position: Position,
    /// Identity of this stream's history. `None` until the first event. A client whose
    /// saved epoch differs holds positions of another history (e.g. a reset database).
    pub epoch: Option<Uuid>,
}
