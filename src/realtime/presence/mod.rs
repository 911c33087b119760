//! Presence, typing and viewing: who is online in a hospital (per user and role, counting
//! their connections), who is typing in a case thread, and who is viewing a case or a
//! patient (the "currently viewing" soft lock) — the same on every node of a cluster.
//!
//! A cluster is two or more `vigil serve` processes on one PostgreSQL, with no other broker.
//! Each node runs one [`PresenceHub`]; sessions tell it what their connection does
//! ([`Connect`], [`Watch`], [`Typing`], [`View`], [`Touch`], [`Disconnect`]) and receive
//! [`Push`]ed `presence`, `typing` and `viewing` frames for what they watch.
//!
//! # Design
//!
//! **Presence lives in PostgreSQL**, because it must survive the death of the node that
//! holds a connection only for a bounded time (`migrations/*_create_presence.sql`):
//!
//! - `presence_nodes(node_id, started_at, last_seen)`: each node's store writer
//!   (`store.rs`) refreshes `last_seen` every [`PresenceSettings::node_heartbeat`];
//! - `presence_sessions(node_id, session_id, hospital, user_id, role, connected_at)`: one
//!   row per open connection, inserted on [`Connect`] and deleted on [`Disconnect`];
//! - a hospital's presence is `SELECT … GROUP BY user_id, role` over the sessions of nodes
//!   whose `last_seen` is younger than [`PresenceSettings::node_timeout`], then folded per
//!   user (`state::aggregate_presence`): one user with two tabs is one entry with
//!   `connections: 2`;
//! - every heartbeat, each node also sweeps: it deletes the nodes silent for longer than the
//!   timeout and their sessions, and announces the change. A dead node's sessions therefore
//!   stop counting after `node_timeout` (the query ignores them) and are announced gone
//!   within `node_timeout + node_heartbeat`;
//! - liveness uses the database's clock on both sides, so skew between nodes is harmless;
//! - a node that was presumed dead while alive (cut off from PostgreSQL for too long) finds
//!   its row missing at its next heartbeat and rewrites its node row and all its sessions
//!   from its in-memory mirror; any failed write does the same (the writer is then "dirty").
//!
//! **Typing and viewing live in memory**, per node, in one [`CaseThreadActor`] per
//! (hospital, target) that has watchers or state on the node. Their expiry rules are the
//! pure `state::TargetState`, tested with injected instants:
//!
//! - typing lasts [`PresenceSettings::typing_ttl`] after the last `typing` (each node starts
//!   the clock when it hears of it);
//! - a view lasts until [`Unview`], [`Disconnect`], or [`PresenceSettings::view_ttl`] without
//!   a [`View`] or [`Touch`] from its session. The node holding the session re-announces its
//!   live views every `view_ttl / 3` (one batched notification per 16 views), so every copy
//!   stays fresh while the session lives; a dead node's views vanish when a sweeper
//!   announces its death, and at the latest `view_ttl` after its last re-announcement.
//!
//! **Changes travel as `NOTIFY vigil_presence, '<json>'`** (`note::Note`, always under
//! PostgreSQL's 8,000-byte limit), heard by every node on a dedicated LISTEN connection
//! (`listener.rs`, over the reconnecting `store::listen` that `stream::listener` uses too):
//!
//! | kind        | fields                                          | sent when                        |
//! |-------------|-------------------------------------------------|----------------------------------|
//! | `presence`  | `hospital`                                      | a session row of it changed      |
//! | `typing`    | `node, session, hospital, case, user, role`     | a session typed                  |
//! | `view`      | `node, session, hospital, target, user, role`   | a session viewed (or refreshed)  |
//! | `unview`    | `node, session, hospital, target`               | a view was released              |
//! | `views`     | `node, views: [{session, hospital, target, user, role}]` | periodic re-announcement |
//! | `left`      | `node, session, hospital`                       | a session disconnected           |
//! | `hello`     | `node`                                          | a node's listener (re)connected  |
//! | `node_down` | `node`                                          | a sweeper removed a dead node    |
//!
//! `presence` is only a hint: receivers re-read the snapshot from the tables (coalesced per
//! hospital, one query in flight) and push it if it differs from the last one pushed. The
//! other kinds carry the change itself. The originating node applies its own changes
//! directly and ignores their echo; all its writes and notifications go through one ordered
//! queue (the store writer), so every node sees a node's changes in the order it made them
//! (a `view` is never overtaken by its `unview`). After a LISTEN (re)connect, a node re-reads
//! the presence it shows, lets the remote typing and views it holds expire within
//! [`RESYNC_GRACE`] unless re-announced, and says `hello`, to which every other node answers
//! by re-announcing its views at once; it also re-announces its own views, since a `hello`
//! sent while it was not listening went unheard.
//!
//! # Invariants
//!
//! - Frames never cross hospitals: presence watchers, and per-target actors, are keyed by the
//!   session's hospital, which comes only from [`Connect`]; a case id alone never selects
//!   anything.
//! - Nothing here blocks an actor: database work runs in spawned futures (presence
//!   snapshots) or in the store writer task; the hub only enqueues.
//! - All state is bounded: entries per target, views and watches per session, targets per
//!   node, the writer's queue; malformed notifications are logged and ignored, never
//!   trusted.
//! - Typing frames list everyone typing, including the receiving user: clients filter
//!   themselves out (they know who they are), which keeps one frame for all watchers.
//!
//! A hub that stops without its sessions disconnecting (the process is killed, the arbiter
//! stops) simply stops heartbeating: the cluster treats it as a dead node.

mod elsewhere;
mod hub;
mod listener;
mod note;
mod state;
mod store;
mod thread;

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use actix::{Message, Recipient};
use aggregates::types::{HospitalId, InvalidValue, PatientId, Role, UserId};
use clap::Args;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::topics::Topic;
use super::{Push, SessionId};

pub use elsewhere::Elsewhere;
pub use hub::PresenceHub;
pub use thread::CaseThreadActor;

/// How many other live nodes this node knows of: counted by the store writer at every
/// heartbeat, and raised at once when another node says `hello`.
///
/// The per-user connection limit holds across the cluster: a connection is admitted only if
/// the user's connections on this node plus those other nodes registered stay within it.
/// Asking PostgreSQL costs a query per connection, so it is asked only when there are other
/// nodes: a single node (and the connection-rate benchmark) pays nothing.
#[derive(Debug, Default)]
pub struct Peers(AtomicUsize);

impl Peers {
    /// Other live nodes, as last seen.
    pub fn count(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    /// The count read at a heartbeat.
    fn set(&self, count: usize) {
        self.0.store(count, Ordering::Relaxed);
    }

    /// Another node said `hello`: there is at least one.
    fn saw_one(&self) {
        self.0.fetch_max(1, Ordering::Relaxed);
    }
}

/// The NOTIFY channel presence changes travel on.
pub const CHANNEL: &str = "vigil_presence";

/// Sessions typing in one case thread that are tracked; more are ignored until some expire.
/// Far above any real thread (a handful of clinicians), low enough that a typing frame stays
/// small.
pub const MAX_TYPING_PER_TARGET: usize = 256;

/// Sessions viewing one case or patient that are tracked, for the same reason.
pub const MAX_VIEWERS_PER_TARGET: usize = 256;

/// Targets one session may view at once here. The session's own limit (as many as its
/// subscriptions, 64 by default) is lower, so this only guards against a misbehaving caller;
/// further views are ignored (and logged) until one is released.
pub const MAX_VIEWS_PER_SESSION: usize = 256;

/// Topics one session may watch here; the session's own subscription limit (64 by default)
/// is lower, so this only guards against a misbehaving caller.
pub const MAX_WATCHES_PER_SESSION: usize = 256;

/// Per-target actors one node keeps. Each holds at most a few kilobytes; reaching this
/// means something is wrong, so new targets are refused (and logged) rather than grown.
pub const MAX_TARGETS: usize = 65_536;

/// Changes queued for the store writer. A full queue drops typing and viewing
/// notifications (they are refreshed anyway) and turns connects and disconnects into a full
/// rewrite of the node's sessions at the next heartbeat, so nothing is lost for good.
pub const OUTBOX_CAPACITY: usize = 8_192;

/// How long a presence change waits before the snapshot is read, so that a burst of
/// connections (a node restarting, a shift starting) costs one query per hospital, not one
/// per connection.
pub const PRESENCE_DEBOUNCE: Duration = Duration::from_millis(20);

/// After this node's LISTEN connection comes back (it may have missed `unview`s), remote
/// typing and views it holds expire within this time unless re-announced; the other nodes
/// answer the `hello` within milliseconds.
pub const RESYNC_GRACE: Duration = Duration::from_secs(2);

fn millis(raw: &str) -> Result<Duration, String> {
    let duration = super::millis(raw)?;
    if duration.is_zero() {
        return Err("must be at least 1 ms".to_owned());
    }
    Ok(duration)
}

/// Timers of presence, typing and viewing. Durations are in milliseconds so tests can
/// shorten them; each has a flag and a `VIGIL_*` variable.
#[derive(Clone, Debug, Args)]
pub struct PresenceSettings {
    /// How long "typing" lasts without a new `typing` frame. Clients repeat it about once a
    /// second while the user types, so 5 s survives a few lost frames without flickering.
    #[arg(long, env = "VIGIL_TYPING_TTL_MS", value_parser = millis, default_value = "5000")]
    pub typing_ttl: Duration,

    /// A view not refreshed (by `view` or by the connection's heartbeat) for this long is
    /// released. Two server heartbeats (30 s each) fit in it.
    #[arg(long, env = "VIGIL_VIEW_TTL_MS", value_parser = millis, default_value = "60000")]
    pub view_ttl: Duration,

    /// How often this node proves it is alive (and sweeps dead nodes).
    #[arg(long, env = "VIGIL_NODE_HEARTBEAT_MS", value_parser = millis, default_value = "5000")]
    pub node_heartbeat: Duration,

    /// A node silent for this long is dead and its presence removed: three heartbeats, so a
    /// slow query or a short pause is not mistaken for a death.
    #[arg(long, env = "VIGIL_NODE_TIMEOUT_MS", value_parser = millis, default_value = "15000")]
    pub node_timeout: Duration,
}

impl Default for PresenceSettings {
    fn default() -> Self {
        Self {
            typing_ttl: Duration::from_secs(5),
            view_ttl: Duration::from_secs(60),
            node_heartbeat: Duration::from_secs(5),
            node_timeout: Duration::from_secs(15),
        }
    }
}

impl PresenceSettings {
    /// How recently another node must have been heard from for its connections to count
    /// against the per-user connection limit: two heartbeats (at least 2 s, at most the node
    /// timeout). Shorter than the node timeout on purpose: after a node crashes, its users
    /// reconnect to the others at once, and its stale rows must not hold them out until the
    /// sweep. A live node whose heartbeat is late is briefly not counted, which only makes
    /// the limit more lenient.
    pub fn admission_liveness(&self) -> Duration {
        self.node_heartbeat
            .saturating_mul(2)
            .max(Duration::from_secs(2))
            .min(self.node_timeout)
    }

    /// How often a node re-announces its live views: three times per `view_ttl`, so two
    /// lost announcements do not release a view.
    pub fn view_refresh_interval(&self) -> Duration {
        (self.view_ttl / 3).max(Duration::from_millis(1))
    }
}

/// What a session views: the soft lock's subject.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ViewTarget {
    /// A case thread (`case:<uuid>`); also the target of typing.
    Case(Uuid),
    /// A patient's chart (`patient:<id>`).
    Patient(PatientId),
}

/// Why a view target was refused. The message never echoes the input (it may be patient
/// data).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidViewTarget {
    /// Neither `case:` nor `patient:`.
    #[error("a view target is `case:<uuid>` or `patient:<id>`")]
    UnknownKind,
    /// `case:` not followed by a UUID.
    #[error("`case:` must be followed by a case id (a UUID)")]
    InvalidCaseId,
    /// `patient:` not followed by a valid patient id.
    #[error("invalid view target: {0}")]
    InvalidPatientId(InvalidValue),
}

impl FromStr for ViewTarget {
    type Err = InvalidViewTarget;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        match raw.split_once(':') {
            Some(("case", id)) => Uuid::parse_str(id)
                .map(ViewTarget::Case)
                .map_err(|_| InvalidViewTarget::InvalidCaseId),
            Some(("patient", id)) => PatientId::parse(id)
                .map(ViewTarget::Patient)
                .map_err(InvalidViewTarget::InvalidPatientId),
            _ => Err(InvalidViewTarget::UnknownKind),
        }
    }
}

impl fmt::Display for ViewTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ViewTarget::Case(id) => write!(f, "case:{id}"),
            ViewTarget::Patient(id) => write!(f, "patient:{id}"),
        }
    }
}

impl Serialize for ViewTarget {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ViewTarget {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        raw.parse().map_err(serde::de::Error::custom)
    }
}

impl ViewTarget {
    /// The topic with the same name (`case:<uuid>` or `patient:<id>`).
    pub fn topic(&self) -> Topic {
        match self {
            ViewTarget::Case(id) => Topic::Case(*id),
            ViewTarget::Patient(id) => Topic::Patient(id.clone()),
        }
    }

    /// The target a topic names, if it names one.
    pub fn of_topic(topic: &Topic) -> Option<Self> {
        match topic {
            Topic::Case(id) => Some(ViewTarget::Case(*id)),
            Topic::Patient(id) => Some(ViewTarget::Patient(id.clone())),
            _ => None,
        }
    }
}

/// What a session can watch here.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WatchTopic {
    /// Who is online in the session's hospital (`presence` frames).
    Presence,
    /// Who is typing in and viewing a case, or viewing a patient (`typing` and `viewing`
    /// frames; typing only for cases).
    Target(ViewTarget),
}

impl WatchTopic {
    /// The presence-related part of a subscription topic: `presence`, `case:…`, `patient:…`.
    pub fn of_topic(topic: &Topic) -> Option<Self> {
        match topic {
            Topic::Presence => Some(WatchTopic::Presence),
            other => ViewTarget::of_topic(other).map(WatchTopic::Target),
        }
    }
}

/// A connection opened on this node: it now counts as online in its hospital, on every
/// node. Sent again for the same session and user (after a token refresh), it updates the
/// role and recipient and keeps the session's watches and views.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Connect {
    /// The connection.
    pub session: SessionId,
    /// Its hospital: everything the session does here is scoped to it.
    pub hospital: HospitalId,
    /// Who is connected.
    pub user: UserId,
    /// Their role, shown in presence, typing and viewing frames.
    pub role: Role,
    /// Where the session's frames go.
    pub recipient: Recipient<Push>,
}

/// The connection closed (or was closed): removes all its state — presence, typing, views,
/// watches — on every node.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Disconnect {
    /// The connection.
    pub session: SessionId,
}

/// The node is shutting down gracefully: delete its node row and every session it still
/// holds from the tables and tell the other nodes at once (they drop its typing and views and
/// stop counting it as a peer), instead of leaving them to sweep it after the node timeout.
/// Answered once that is committed (or failed: then the sweep does it); the hub shares
/// nothing afterwards, so a heartbeat can never register the node again.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Leave;

/// The session (un)subscribed to `presence`, `case:{id}` or `patient:{id}`. Turning a watch
/// on pushes the current state at once (a `presence` frame, or `typing` and `viewing`
/// frames), then every change.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Watch {
    /// The connection.
    pub session: SessionId,
    /// What it watches.
    pub topic: WatchTopic,
    /// Subscribe (true) or unsubscribe (false).
    pub on: bool,
}

/// The session's user is typing in a case thread. Throttling is the session's job; each
/// one extends the typing state by `typing_ttl`.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Typing {
    /// The connection.
    pub session: SessionId,
    /// The case thread.
    pub case: Uuid,
}

/// The session views a case or patient (takes the soft lock). Repeating it refreshes the
/// view's TTL.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct View {
    /// The connection.
    pub session: SessionId,
    /// What it views.
    pub target: ViewTarget,
}

/// The session stopped viewing a target (releases the soft lock).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Unview {
    /// The connection.
    pub session: SessionId,
    /// What it no longer views.
    pub target: ViewTarget,
}

/// The connection is alive (sent on each heartbeat pong): refreshes its views' TTLs.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Touch {
    /// The connection.
    pub session: SessionId,
}

/// For metrics: how many distinct users are online in a hospital per role, over all nodes.
/// A user is counted once, under the role of their latest connection. Answered from
/// PostgreSQL, hence the error.
#[derive(Debug, Message)]
#[rtype(result = "Result<HashMap<Role, u32>, sqlx::Error>")]
pub struct OnlineByRole {
    /// The hospital.
    pub hospital: HospitalId,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_nodes_connections_count_for_two_heartbeats_within_the_node_timeout() {
        let with = |heartbeat_ms, timeout_ms| PresenceSettings {
            node_heartbeat: Duration::from_millis(heartbeat_ms),
            node_timeout: Duration::from_millis(timeout_ms),
            ..PresenceSettings::default()
        };
        assert_eq!(
            PresenceSettings::default().admission_liveness(),
            Duration::from_secs(10)
        );
        assert_eq!(
            with(100, 5_000).admission_liveness(),
            Duration::from_secs(2)
        );
        assert_eq!(
            with(100, 1_000).admission_liveness(),
            Duration::from_secs(1)
        );
        assert_eq!(
            with(5_000, 8_000).admission_liveness(),
            Duration::from_secs(8)
        );
    }

    #[test]
    fn view_targets_round_trip_through_their_names() {
        let id = Uuid::new_v4();
        let case: ViewTarget = format!("case:{id}").parse().unwrap();
        assert_eq!(case, ViewTarget::Case(id));
        assert_eq!(case.to_string(), format!("case:{id}"));
        let patient: ViewTarget = "patient:MRN-0042".parse().unwrap();
        assert_eq!(
            patient,
            ViewTarget::Patient(PatientId::parse("MRN-0042").unwrap())
        );
        assert_eq!(patient.to_string(), "patient:MRN-0042");
    }

    #[test]
    fn malformed_view_targets_are_refused_with_a_reason() {
        assert_eq!(
            "case:nope".parse::<ViewTarget>(),
            Err(InvalidViewTarget::InvalidCaseId)
        );
        assert_eq!(
            "alerts".parse::<ViewTarget>(),
            Err(InvalidViewTarget::UnknownKind)
        );
        assert_eq!(
            "cases:1".parse::<ViewTarget>(),
            Err(InvalidViewTarget::UnknownKind)
        );
        assert!(matches!(
            "patient:Jane Doe".parse::<ViewTarget>(),
            Err(InvalidViewTarget::InvalidPatientId(_))
        ));
        assert!(matches!(
            "patient:".parse::<ViewTarget>(),
            Err(InvalidViewTarget::InvalidPatientId(_))
        ));
    }

    #[test]
    fn a_refused_patient_target_does_not_echo_the_input() {
        let error = "patient:Jane Doe".parse::<ViewTarget>().unwrap_err();
        assert!(!error.to_string().contains("Jane"));
    }

    #[test]
    fn view_targets_serialize_as_their_names() {
        let target = ViewTarget::Patient(PatientId::parse("p-1").unwrap());
        let json = serde_json::to_string(&target).unwrap();
        assert_eq!(json, r#""patient:p-1""#);
        assert_eq!(serde_json::from_str::<ViewTarget>(&json).unwrap(), target);
        assert!(serde_json::from_str::<ViewTarget>(r#""case:x""#).is_err());
    }

    #[test]
    fn watch_topics_come_from_presence_case_and_patient_topics_only() {
        let id = Uuid::new_v4();
        assert_eq!(
            WatchTopic::of_topic(&Topic::Presence),
            Some(WatchTopic::Presence)
        );
        assert_eq!(
            WatchTopic::of_topic(&Topic::Case(id)),
            Some(WatchTopic::Target(ViewTarget::Case(id)))
        );
        assert_eq!(WatchTopic::of_topic(&Topic::Alerts), None);
        assert_eq!(ViewTarget::Case(id).topic(), Topic::Case(id));
    }

    #[test]
    fn every_duration_setting_refuses_zero() {
        assert!(millis("0").is_err());
        assert_eq!(millis("250"), Ok(Duration::from_millis(250)));
    }
}
