//! The `SessionActor`: one per WebSocket connection.
//!
//! It owns the connection's identity, subscriptions, timers (authentication deadline, idle,
//! heartbeat, token expiry) and limits (frame size, frame rate, subscriptions, typing
//! throttle), and it talks to its hospital's actor and to the presence hub. It never writes
//! to the socket itself: everything goes through the connection's one ordered writer
//! ([`super::writer`]).
//!
//! One file per idea, each an `impl SessionActor` block over the state declared here:
//! - [`lifecycle`] — start (authentication deadline, idle, heartbeat and case re-check timers)
//!   and stop (leaving the hospital and presence), and being kicked;
//! - [`identity`] — `auth`, admission under the per-user connection limit, joining the
//!   hospital's reader, the token's warning and expiry timers, `refresh`;
//! - [`inbound`] — frames from the socket: size and rate limits, parsing, dispatch by kind;
//! - [`subscribe`] — `subscribe` and `unsubscribe`, and where the stream starts;
//! - [`cases`] — the case-entitlement check a frame waits for, and the periodic re-check that
//!   drops cases reassigned away from a field worker;
//! - [`awareness`] — `typing`, `view` and `unview`, the session's side of presence;
//! - [`outbound`] — everything written goes through the writer's bounded queue; a full queue
//!   is a slow consumer and closes the connection;
//! - [`limits`] — the pure heartbeat and violation-window rules.

mod awareness;
mod cases;
mod identity;
mod inbound;
mod lifecycle;
mod limits;
mod outbound;
mod subscribe;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use aggregates::types::HospitalId;
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use super::hospital::{ConnectionSlot, HospitalActor, HospitalFeed, SessionProgress};
use super::presence::ViewTarget;
use super::protocol::CloseReason;
use super::topics::Subscriptions;
use super::writer::WriterCommand;
use super::{Realtime, SessionId};
use crate::auth::Identity;
use crate::rate_limit::TokenBucket;

pub use cases::{CASE_CHECK_TIMEOUT, CASE_RECHECK_INTERVAL};
pub use limits::{heartbeat, Heartbeat, Violations, VIOLATION_WINDOW};

/// A connection's actor.
pub struct SessionActor {
    id: SessionId,
    /// The hospital in the URL; the token must be for it.
    hospital: HospitalId,
    rt: Arc<Realtime>,
    identity: Option<Identity>,
    /// The one writer's command queue (bounded).
    writer: mpsc::Sender<WriterCommand>,
    /// Closes the writer at once (slow consumer).
    kill: watch::Sender<Option<CloseReason>>,
    progress: Arc<SessionProgress>,
    hospital_actor: Option<Addr<HospitalActor>>,
    feed: Option<Arc<HospitalFeed>>,
    subscriptions: Subscriptions,
    streaming: bool,
    ever_subscribed: bool,
    last_seen: Instant,
    limiter: TokenBucket,
    violations: Violations,
    typing_sent: HashMap<Uuid, Instant>,
    views: HashSet<ViewTarget>,
    slot: Option<ConnectionSlot>,
    /// The token's warning or expiry timer.
    token_timer: Option<SpawnHandle>,
    /// Closes a connection that never subscribes; cancelled by the first subscription.
    idle_timer: Option<SpawnHandle>,
    closing: bool,
}

impl SessionActor {
    /// A session for a new connection; `identity` is set when the upgrade carried a valid
    /// bearer token.
    pub fn new(
        hospital: HospitalId,
        rt: Arc<Realtime>,
        identity: Option<Identity>,
        writer: mpsc::Sender<WriterCommand>,
        kill: watch::Sender<Option<CloseReason>>,
        progress: Arc<SessionProgress>,
    ) -> Self {
        let now = Instant::now();
        let limiter = TokenBucket::new(rt.settings.frame_rate, rt.settings.frame_burst, now);
        Self {
            id: super::next_session_id(),
            hospital,
            rt,
            identity,
            writer,
            kill,
            progress,
            hospital_actor: None,
            feed: None,
            subscriptions: Subscriptions::default(),
            streaming: false,
            ever_subscribed: false,
            last_seen: now,
            limiter,
            violations: Violations::default(),
            typing_sent: HashMap::new(),
            views: HashSet::new(),
            slot: None,
            token_timer: None,
            idle_timer: None,
            closing: false,
        }
    }
}
