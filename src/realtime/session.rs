//! The `SessionActor`: one per WebSocket connection.
//!
//! It owns the connection's identity, subscriptions, timers (authentication deadline, idle,
//! heartbeat, token expiry) and limits (frame size, frame rate, subscriptions, typing
//! throttle), and it talks to its hospital's actor and to the presence hub. It never writes
//! to the socket itself: everything goes through the connection's one ordered writer
//! ([`super::writer`]).

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_ws::Message as WsMessage;
use aggregates::types::HospitalId;
use bytestring::ByteString;
use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use super::assemble::Failure;
use super::hospital::{
    ConnectionSlot, HospitalActor, HospitalFeed, Join, Kick, Leave, Resume, SessionProgress,
    WatchMetrics,
};
use super::presence::{self, ViewTarget, WatchTopic};
use super::protocol::{parse_client_frame, ClientFrame, CloseReason, FrameId, ServerFrame};
use super::topics::{Subscriptions, Topic};
use super::writer::{Filter, StreamStart, WriterCommand};
use super::{Push, Realtime, SessionId};
use crate::access::entitlement::{case_access, depends_on_the_case, Viewer};
use crate::access::topics::may_subscribe;
use crate::auth::Identity;
use crate::metrics::Metrics;
use crate::rate_limit::TokenBucket;

/// Window over which limit violations are counted.
pub const VIOLATION_WINDOW: Duration = Duration::from_secs(60);

/// How long a session waits for the log to say whether a case is the user's (subscribing to
/// `case:<id>`, `typing`, `view`) before answering `unavailable`. The session handles
/// nothing else meanwhile (so a `view` and the `unview` after it stay in order); the
/// connection's events keep flowing, as its writer reads the stream itself.
pub const CASE_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// How often a field worker's connection re-checks the cases it follows (its `case:<id>`
/// topics and case views) against their current assignee: a case reassigned away from them
/// is dropped from the connection (unsubscribed, unviewed, with a `case_not_found` error
/// frame) within this time. Their stream events stop at once regardless (each is filtered by
/// `may_see`); this bounds how long they still see, and appear in, the case's typing and
/// viewing. One indexed query per followed case per interval, and only for field workers.
pub const CASE_RECHECK_INTERVAL: Duration = Duration::from_secs(5);

/// What the log said about the cases a frame names.
enum CaseCheck {
    /// The user may touch every one of them.
    Granted,
    /// The user may not touch this one (or it does not exist: the same answer).
    Refused(Uuid),
    /// The log could not be read in time.
    Unavailable,
}

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

    fn send(&mut self, command: WriterCommand, ctx: &mut Context<Self>) {
        match self.writer.try_send(command) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                if !self.closing {
                    Metrics::inc(&self.rt.metrics.slow_consumer_disconnects);
                    self.kill(CloseReason::SlowConsumer, ctx);
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => ctx.stop(),
        }
    }

    fn frame(&mut self, frame: ServerFrame, ctx: &mut Context<Self>) {
        self.send(WriterCommand::Frame(ByteString::from(frame.to_text())), ctx);
    }

    fn error(
        &mut self,
        id: Option<FrameId>,
        code: &'static str,
        message: impl Into<String>,
        ctx: &mut Context<Self>,
    ) {
        self.frame(ServerFrame::error(id, code, message), ctx);
    }

    /// An error frame for a limit violation; closes the connection on repeated abuse.
    fn violation(&mut self, reason: CloseReason, frame: ServerFrame, ctx: &mut Context<Self>) {
        self.frame(frame, ctx);
        if self
            .violations
            .record(Instant::now(), self.rt.settings.max_violations)
        {
            self.close(reason, ctx);
        }
    }

    /// Closes after the frames already queued, with a `closing` frame stating why.
    fn close(&mut self, reason: CloseReason, ctx: &mut Context<Self>) {
        if self.closing {
            return;
        }
        self.closing = true;
        tracing::debug!(
            session = self.id,
            reason = reason.as_str(),
            "closing connection"
        );
        if self.writer.try_send(WriterCommand::Close(reason)).is_err() {
            let _ = self.kill.send(Some(reason));
        }
        // If the peer never completes the close, stop anyway.
        ctx.run_later(super::writer::CLOSE_TIMEOUT * 2, |_, ctx| ctx.stop());
    }

    /// Closes at once, interrupting a blocked write.
    fn kill(&mut self, reason: CloseReason, ctx: &mut Context<Self>) {
        self.closing = true;
        let _ = self.kill.send(Some(reason));
        ctx.run_later(super::writer::CLOSE_TIMEOUT * 2, |_, ctx| ctx.stop());
    }

    fn filter(&self) -> Option<Filter> {
        let identity = self.identity.as_ref()?;
        Some(Filter {
            topics: self.subscriptions.clone(),
            user: identity.user.clone(),
            role: identity.role,
        })
    }

    fn authenticated(&mut self, identity: Identity, id: Option<FrameId>, ctx: &mut Context<Self>) {
        if identity.hospital != self.hospital {
            self.error(
                id,
                "wrong_hospital",
                format!("the token is for hospital `{}`", identity.hospital),
                ctx,
            );
            self.close(CloseReason::AuthenticationFailed, ctx);
            return;
        }
        let Some(slot) = self
            .rt
            .directory
            .open_connection(&identity.hospital, &identity.user)
        else {
            self.too_many_connections(id, ctx);
            return;
        };
        match self.rt.cluster_admission(&slot) {
            None => self.admitted(identity, slot, id, ctx),
            // Nothing else is handled until the other nodes' count is known (a `subscribe`
            // pipelined behind `auth` waits for the admission).
            Some(check) => ctx.wait(check.into_actor(self).map(move |admitted, act, ctx| {
                if admitted {
                    act.admitted(identity, slot, id, ctx);
                } else {
                    drop(slot);
                    act.too_many_connections(id, ctx);
                }
            })),
        }
    }

    fn too_many_connections(&mut self, id: Option<FrameId>, ctx: &mut Context<Self>) {
        self.error(
            id,
            "too_many_connections",
            format!(
                "at most {} connections per user",
                self.rt.settings.max_connections_per_user
            ),
            ctx,
        );
        self.close(CloseReason::TooManyConnections, ctx);
    }

    /// The connection is authenticated and within the per-user limit.
    fn admitted(
        &mut self,
        identity: Identity,
        slot: ConnectionSlot,
        id: Option<FrameId>,
        ctx: &mut Context<Self>,
    ) {
        tracing::info!(session = self.id, hospital = %identity.hospital, user = %identity.user, role = identity.role.as_str(), "websocket admitted");
        self.slot = Some(slot);
        self.identity = Some(identity.clone());
        self.schedule_token_timers(ctx);
        self.join_hospital(ctx, 0);
        self.rt.presence.do_send(presence::Connect {
            session: self.id,
            hospital: identity.hospital.clone(),
            user: identity.user.clone(),
            role: identity.role,
            recipient: ctx.address().recipient(),
        });
        self.frame(
            ServerFrame::Authenticated {
                id,
                user: identity.user.to_string(),
                role: identity.role.as_str().to_owned(),
                hospital: identity.hospital.to_string(),
                expires_at: identity.expires_at,
            },
            ctx,
        );
    }

    /// Joins the hospital actor before handling any other message (so a `subscribe` right
    /// after `auth` finds the feed).
    fn join_hospital(&mut self, ctx: &mut Context<Self>, attempt: u8) {
        let Some(identity) = self.identity.clone() else {
            return;
        };
        let addr = self.rt.directory.hospital(&self.hospital);
        let join = addr.send(Join {
            session: self.id,
            user: identity.user,
            progress: self.progress.clone(),
            kick: ctx.address().recipient(),
        });
        ctx.wait(
            join.into_actor(self)
                .map(move |result, act, ctx| match result {
                    Ok(feed) => {
                        act.feed = Some(feed);
                        act.hospital_actor = Some(addr);
                    }
                    // The actor stopped between lookup and join (its last session just left).
                    Err(_) if attempt < 3 => act.join_hospital(ctx, attempt + 1),
                    Err(_) => {
                        tracing::error!(session = act.id, "could not join the hospital reader");
                        act.kill(CloseReason::ServerShutdown, ctx);
                    }
                }),
        );
    }

    /// Arms the token's timer: a warning shortly before it expires, then the close at
    /// expiry. One timer at a time (the warning arms the expiry), as each costs memory for as
    /// long as the connection lives.
    fn schedule_token_timers(&mut self, ctx: &mut Context<Self>) {
        if let Some(handle) = self.token_timer.take() {
            ctx.cancel_future(handle);
        }
        let Some(expires_at) = self.identity.as_ref().map(|i| i.expires_at) else {
            return;
        };
        let left = (expires_at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
        let warning = self.rt.settings.token_warning;
        if left > warning {
            self.token_timer = Some(ctx.run_later(left - warning, move |act, ctx| {
                let seconds_left = (expires_at - Utc::now()).num_seconds().max(0);
                act.frame(
                    ServerFrame::TokenExpiring {
                        expires_at,
                        seconds_left,
                    },
                    ctx,
                );
                act.arm_expiry(expires_at, ctx);
            }));
            return;
        }
        if !left.is_zero() {
            let seconds_left = left.as_secs() as i64;
            self.frame(
                ServerFrame::TokenExpiring {
                    expires_at,
                    seconds_left,
                },
                ctx,
            );
        }
        self.arm_expiry(expires_at, ctx);
    }

    /// Closes the connection when the token expires, unless it was refreshed by then.
    fn arm_expiry(&mut self, expires_at: DateTime<Utc>, ctx: &mut Context<Self>) {
        let left = (expires_at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
        self.token_timer = Some(ctx.run_later(left, |act, ctx| {
            let expired = act
                .identity
                .as_ref()
                .is_none_or(|i| i.expires_at <= Utc::now());
            if expired {
                act.close(CloseReason::TokenExpired, ctx);
            }
        }));
    }

    fn on_text(&mut self, text: &str, ctx: &mut Context<Self>) {
        if self.closing {
            return;
        }
        let now = Instant::now();
        if text.len() > self.rt.settings.max_frame_bytes {
            let frame = ServerFrame::error(
                None,
                "frame_too_large",
                format!(
                    "frames are limited to {} bytes",
                    self.rt.settings.max_frame_bytes
                ),
            );
            return self.violation(CloseReason::PolicyViolation, frame, ctx);
        }
        if let Err(wait) = self.limiter.try_take(now) {
            Metrics::inc(&self.rt.metrics.rate_limit_hits);
            let frame = ServerFrame::error(
                None,
                "rate_limited",
                format!("too many frames; retry in {} ms", wait.as_millis().max(1)),
            );
            return self.violation(CloseReason::RateLimited, frame, ctx);
        }
        match parse_client_frame(text) {
            Ok(frame) => self.dispatch(frame, ctx),
            Err(error) => self.violation(CloseReason::PolicyViolation, error, ctx),
        }
    }

    fn dispatch(&mut self, frame: ClientFrame, ctx: &mut Context<Self>) {
        if let ClientFrame::Auth { id, token } = frame {
            return self.auth(id, &token, ctx);
        }
        let Some(identity) = self.identity.clone() else {
            return self.error(
                frame.id().cloned(),
                "not_authenticated",
                "send an `auth` frame first",
                ctx,
            );
        };
        match frame {
            ClientFrame::Auth { .. } => {}
            ClientFrame::Ping { id } => self.frame(ServerFrame::Pong { id }, ctx),
            ClientFrame::Subscribe {
                id,
                topics,
                last_event_id,
                epoch,
            } => self.subscribe(id, topics, last_event_id.map(|l| l.0), epoch, ctx),
            ClientFrame::Unsubscribe { id, topics } => self.unsubscribe(id, topics, ctx),
            ClientFrame::Typing { id, case } => self.typing(&identity, id, case, ctx),
            ClientFrame::View { id, target } | ClientFrame::Unview { id, target }
                if target.parse::<ViewTarget>().is_err() =>
            {
                self.error(
                    id,
                    "invalid_target",
                    format!(
                        "`{}` is not `case:<uuid>` or `patient:<id>`",
                        target.chars().take(80).collect::<String>()
                    ),
                    ctx,
                )
            }
            ClientFrame::View { id, target } => {
                if let Ok(target) = target.parse::<ViewTarget>() {
                    self.view(&identity, id, target, ctx);
                }
            }
            ClientFrame::Unview { target, .. } => {
                if let Ok(target) = target.parse::<ViewTarget>() {
                    self.unview(target);
                }
            }
            ClientFrame::Refresh { id, token } => self.refresh(&identity, id, &token, ctx),
        }
    }

    /// `auth`: the first token of a connection that did not send one with the upgrade.
    fn auth(&mut self, id: Option<FrameId>, token: &str, ctx: &mut Context<Self>) {
        if self.identity.is_some() {
            return self.error(
                id,
                "already_authenticated",
                "use `refresh` to replace the token",
                ctx,
            );
        }
        match self.rt.keys.verify(token) {
            Ok(identity) => self.authenticated(identity, id, ctx),
            Err(error) => {
                self.error(id, error.code(), error.to_string(), ctx);
                self.close(CloseReason::AuthenticationFailed, ctx);
            }
        }
    }

    /// `typing`: throttled per case, then confined by the case rule before it is announced.
    fn typing(
        &mut self,
        identity: &Identity,
        id: Option<FrameId>,
        case: Uuid,
        ctx: &mut Context<Self>,
    ) {
        if !may_subscribe(identity.role, &Topic::Case(case)) {
            return self.error(
                id,
                "forbidden_topic",
                "your role may not follow case threads",
                ctx,
            );
        }
        let now = Instant::now();
        let throttle = self.rt.settings.typing_throttle;
        if self
            .typing_sent
            .get(&case)
            .is_some_and(|t| now.saturating_duration_since(*t) < throttle)
        {
            let frame = ServerFrame::error(
                id,
                "typing_throttled",
                format!(
                    "send `typing` at most once every {} ms per case",
                    throttle.as_millis()
                ),
            );
            return self.violation(CloseReason::RateLimited, frame, ctx);
        }
        if self.typing_sent.len() > self.rt.settings.max_subscriptions {
            self.typing_sent
                .retain(|_, t| now.saturating_duration_since(*t) < throttle);
        }
        // Throttled before the entitlement check, so typing cannot flood the log.
        self.typing_sent.insert(case, now);
        self.with_cases(identity, id, vec![case], ctx, move |act, _, _| {
            act.rt.presence.do_send(presence::Typing {
                session: act.id,
                case,
            });
        });
    }

    /// `view`: the "currently viewing" soft lock, confined like a subscription.
    fn view(
        &mut self,
        identity: &Identity,
        id: Option<FrameId>,
        target: ViewTarget,
        ctx: &mut Context<Self>,
    ) {
        if !may_subscribe(identity.role, &view_topic(&target)) {
            return self.error(
                id,
                "forbidden_topic",
                format!("your role may not view `{target}`"),
                ctx,
            );
        }
        if !self.views.contains(&target) && self.views.len() >= self.rt.settings.max_subscriptions {
            let frame = ServerFrame::error(id, "too_many_views", "release a view first");
            return self.violation(CloseReason::PolicyViolation, frame, ctx);
        }
        let cases = match &target {
            ViewTarget::Case(case) => vec![*case],
            ViewTarget::Patient(_) => vec![],
        };
        self.with_cases(identity, id, cases, ctx, move |act, _, _| {
            act.views.insert(target.clone());
            act.rt.presence.do_send(presence::View {
                session: act.id,
                target,
            });
        });
    }

    /// `unview`: releases a view this connection holds.
    fn unview(&mut self, target: ViewTarget) {
        if self.views.remove(&target) {
            self.rt.presence.do_send(presence::Unview {
                session: self.id,
                target,
            });
        }
    }

    /// `refresh`: a new token for the same user, hospital and role.
    fn refresh(
        &mut self,
        identity: &Identity,
        id: Option<FrameId>,
        token: &str,
        ctx: &mut Context<Self>,
    ) {
        match self.rt.keys.verify(token) {
            // A refresh extends the connection's life, never what it may receive: the
            // subscriptions were authorized for this user, hospital and role, so a token
            // for another role is refused (either way: a downgrade must reconnect too).
            Ok(fresh)
                if fresh.user == identity.user
                    && fresh.hospital == identity.hospital
                    && fresh.role == identity.role =>
            {
                self.identity = Some(fresh.clone());
                self.schedule_token_timers(ctx);
                if let Some(filter) = self.filter() {
                    self.send(WriterCommand::Filter(Box::new(filter)), ctx);
                }
                self.frame(
                    ServerFrame::Authenticated {
                        id,
                        user: fresh.user.to_string(),
                        role: fresh.role.as_str().to_owned(),
                        hospital: fresh.hospital.to_string(),
                        expires_at: fresh.expires_at,
                    },
                    ctx,
                );
            }
            Ok(_) => self.error(
                id,
                "refresh_mismatch",
                "a refresh token must be for the same user, hospital and role; reconnect to change role",
                ctx,
            ),
            Err(error) => self.error(id, error.code(), error.to_string(), ctx),
                }
    }

    fn parse_topics(
        &mut self,
        id: &Option<FrameId>,
        raw: &[String],
        ctx: &mut Context<Self>,
    ) -> Option<Vec<Topic>> {
        let mut topics = BTreeSet::new();
        for name in raw {
            match name.parse::<Topic>() {
                Ok(topic) => {
                    topics.insert(topic);
                }
                Err(error) => {
                    self.error(id.clone(), "unknown_topic", error.to_string(), ctx);
                    return None;
                }
            }
        }
        Some(topics.into_iter().collect())
    }

    fn subscribe(
        &mut self,
        id: Option<FrameId>,
        raw: Vec<String>,
        last_event_id: Option<i64>,
        epoch: Option<Uuid>,
        ctx: &mut Context<Self>,
    ) {
        let Some(identity) = self.identity.clone() else {
            return;
        };
        if raw.is_empty() {
            return self.error(
                id,
                "no_topics",
                "`topics` must name at least one topic",
                ctx,
            );
        }
        let Some(topics) = self.parse_topics(&id, &raw, ctx) else {
            return;
        };
        if let Some(refused) = topics.iter().find(|t| !may_subscribe(identity.role, t)) {
            return self.error(
                id,
                "forbidden_topic",
                format!(
                    "role `{}` may not subscribe to `{refused}`",
                    identity.role.as_str()
                ),
                ctx,
            );
        }
        let cases = topics
            .iter()
            .filter_map(|t| match t {
                Topic::Case(case) => Some(*case),
                _ => None,
            })
            .collect();
        self.with_cases(&identity, id, cases, ctx, move |act, id, ctx| {
            act.subscribe_entitled(id, topics, last_event_id, epoch, ctx)
        });
    }

    /// Runs `then` once the log confirms that the user may touch every case in `cases`
    /// (`access::entitlement::case_access`, the rule every path shares); otherwise answers
    /// `case_not_found` — the same for a case assigned to someone else as for one that does
    /// not exist — or `unavailable`. Without cases, `then` runs at once. Nothing else is
    /// handled while the log is asked, so frames keep their order.
    fn with_cases(
        &mut self,
        identity: &Identity,
        id: Option<FrameId>,
        cases: Vec<Uuid>,
        ctx: &mut Context<Self>,
        then: impl FnOnce(&mut Self, Option<FrameId>, &mut Context<Self>) + 'static,
    ) {
        if cases.is_empty() {
            return then(self, id, ctx);
        }
        let pool = self.rt.pool.clone();
        let (user, role, hospital) = (
            identity.user.clone(),
            identity.role,
            identity.hospital.clone(),
        );
        let check = async move {
            let viewer = Viewer { user: &user, role };
            for case in cases {
                let granted = tokio::time::timeout(
                    CASE_CHECK_TIMEOUT,
                    case_access(&pool, viewer, &hospital, &case),
                )
                .await;
                match granted {
                    Ok(Ok(true)) => {}
                    Ok(Ok(false)) => return CaseCheck::Refused(case),
                    Ok(Err(error)) => {
                        tracing::debug!(%error, "cannot check a case's assignee");
                        return CaseCheck::Unavailable;
                    }
                    Err(_) => return CaseCheck::Unavailable,
                }
            }
            CaseCheck::Granted
        };
        ctx.wait(check.into_actor(self).map(move |check, act, ctx| {
            if act.closing {
                return;
            }
            match check {
                CaseCheck::Granted => then(act, id, ctx),
                CaseCheck::Refused(case) => {
                    act.error(id, "case_not_found", format!("no case `{case}`"), ctx)
                }
                CaseCheck::Unavailable => {
                    act.error(id, "unavailable", "cannot check the case now; retry", ctx)
                }
            }
        }));
    }

    /// Re-checks the cases a field worker's connection follows ([`CASE_RECHECK_INTERVAL`]),
    /// dropping those no longer theirs. Runs beside other frames (nothing waits for it).
    fn recheck_cases(&mut self, ctx: &mut Context<Self>) {
        let Some(identity) = self.identity.clone() else {
            return;
        };
        if self.closing || !depends_on_the_case(identity.role) {
            return;
        }
        let mut cases: BTreeSet<Uuid> = self
            .subscriptions
            .topics()
            .filter_map(|t| match t {
                Topic::Case(case) => Some(*case),
                _ => None,
            })
            .collect();
        cases.extend(self.views.iter().filter_map(|v| match v {
            ViewTarget::Case(case) => Some(*case),
            ViewTarget::Patient(_) => None,
        }));
        if cases.is_empty() {
            return;
        }
        let pool = self.rt.pool.clone();
        let check = async move {
            let viewer = Viewer {
                user: &identity.user,
                role: identity.role,
            };
            let mut refused = Vec::new();
            for case in cases {
                let granted = tokio::time::timeout(
                    CASE_CHECK_TIMEOUT,
                    case_access(&pool, viewer, &identity.hospital, &case),
                )
                .await;
                // Only a definite refusal revokes: an unreachable database is not a reason
                // to drop a worker's own case (the next round checks again).
                if let Ok(Ok(false)) = granted {
                    refused.push(case);
                }
            }
            refused
        };
        ctx.spawn(check.into_actor(self).map(|refused, act, ctx| {
            for case in refused {
                act.revoke_case(case, ctx);
            }
        }));
    }

    /// Drops everything the connection follows of `case`: its topic, its view, its typing
    /// throttle; tells the client why.
    fn revoke_case(&mut self, case: Uuid, ctx: &mut Context<Self>) {
        if self.closing {
            return;
        }
        let topic = Topic::Case(case);
        let mut dropped = false;
        if self.subscriptions.contains(&topic) {
            dropped = true;
            Metrics::dec(&self.rt.metrics.subscriptions);
            self.subscriptions.remove([&topic]);
            if let Some(watch) = watch_topic(&topic) {
                self.rt.presence.do_send(presence::Watch {
                    session: self.id,
                    topic: watch,
                    on: false,
                });
            }
            if let Some(filter) = self.filter() {
                self.send(WriterCommand::Filter(Box::new(filter)), ctx);
            }
        }
        let target = ViewTarget::Case(case);
        if self.views.remove(&target) {
            dropped = true;
            self.rt.presence.do_send(presence::Unview {
                session: self.id,
                target,
            });
        }
        self.typing_sent.remove(&case);
        if dropped {
            self.error(
                None,
                "case_not_found",
                format!("case `{case}` is no longer assigned to you: no longer followed"),
                ctx,
            );
        }
    }

    /// [`Self::subscribe`] once the topics are known to be the user's.
    fn subscribe_entitled(
        &mut self,
        id: Option<FrameId>,
        topics: Vec<Topic>,
        last_event_id: Option<i64>,
        epoch: Option<Uuid>,
        ctx: &mut Context<Self>,
    ) {
        let Some(identity) = self.identity.clone() else {
            return;
        };
        let new: Vec<Topic> = topics
            .iter()
            .filter(|t| !self.subscriptions.contains(t))
            .cloned()
            .collect();
        if self.subscriptions.len() + new.len() > self.rt.settings.max_subscriptions {
            let frame = ServerFrame::error(
                id,
                "too_many_subscriptions",
                format!(
                    "at most {} topics per connection",
                    self.rt.settings.max_subscriptions
                ),
            );
            return self.violation(CloseReason::PolicyViolation, frame, ctx);
        }
        if self.streaming && last_event_id.is_some() {
            return self.error(
                id,
                "already_streaming",
                "`last_event_id` is accepted on the first subscription of a connection; reconnect to resume from another position",
                ctx,
            );
        }
        self.ever_subscribed = true;
        if let Some(idle) = self.idle_timer.take() {
            ctx.cancel_future(idle);
        }
        for _ in &new {
            Metrics::inc(&self.rt.metrics.subscriptions);
        }
        self.subscriptions.add(new.iter().cloned());
        if new.contains(&Topic::Metrics) {
            if let Some(addr) = &self.hospital_actor {
                addr.do_send(WatchMetrics {
                    session: self.id,
                    recipient: Some(ctx.address().recipient()),
                });
            }
        }
        for topic in &new {
            if let Some(watch) = watch_topic(topic) {
                self.rt.presence.do_send(presence::Watch {
                    session: self.id,
                    topic: watch,
                    on: true,
                });
            }
        }
        let Some(feed) = self.feed.clone() else {
            return self.error(
                id,
                "unavailable",
                "the hospital stream is not available; retry",
                ctx,
            );
        };
        let names = self.subscriptions.names();
        if self.streaming || !self.subscriptions.has_stream_topic() {
            if let Some(filter) = self.filter() {
                self.send(WriterCommand::Filter(Box::new(filter)), ctx);
            }
            let position = self.progress.cursor().unwrap_or_else(|| feed.head());
            return self.frame(
                ServerFrame::Subscribed {
                    id,
                    topics: names,
                    recovered: false,
                    position: position.to_string(),
                    epoch: feed.epoch().or(self.rt.empty_epoch(self.hospital.as_str())),
                    reason: None,
                },
                ctx,
            );
        }
        let Some(addr) = self.hospital_actor.clone() else {
            return;
        };
        self.streaming = true;
        // The epoch given for an empty stream names this database, not a history: no check.
        let empty_epoch = self.rt.empty_epoch(self.hospital.as_str());
        let resume = addr.send(Resume {
            last_event_id,
            epoch: epoch.filter(|e| Some(*e) != empty_epoch),
        });
        let span = tracing::info_span!("subscribe", session = self.id, hospital = %self.hospital, user = %identity.user, last_event_id);
        // Wait for the decision before handling further frames: the `subscribed` reply and
        // the start of the stream must precede anything else on the writer.
        ctx.wait(resume.into_actor(self).map(move |result, act, ctx| {
            let _enter = span.enter();
            let Ok(decision) = result else {
                act.streaming = false;
                return act.error(
                    id,
                    "unavailable",
                    "the hospital stream is not available; retry",
                    ctx,
                );
            };
            if last_event_id.is_some() {
                let counter = if decision.recovered {
                    &act.rt.metrics.resumes_recovered
                } else {
                    &act.rt.metrics.resumes_not_recovered
                };
                Metrics::inc(counter);
            }
            tracing::info!(
                recovered = decision.recovered,
                start = decision.start,
                reason = decision.reason,
                "subscribed"
            );
            act.frame(
                ServerFrame::Subscribed {
                    id,
                    topics: names,
                    recovered: decision.recovered,
                    position: decision.position.to_string(),
                    epoch: decision.epoch.or(empty_epoch),
                    reason: decision.reason,
                },
                ctx,
            );
            if let Some(filter) = act.filter() {
                act.send(
                    WriterCommand::Stream(Box::new(StreamStart {
                        feed,
                        start: decision.start,
                        filter,
                    })),
                    ctx,
                );
            }
        }));
    }

    fn unsubscribe(&mut self, id: Option<FrameId>, raw: Vec<String>, ctx: &mut Context<Self>) {
        let Some(topics) = self.parse_topics(&id, &raw, ctx) else {
            return;
        };
        for topic in &topics {
            if self.subscriptions.contains(topic) {
                Metrics::dec(&self.rt.metrics.subscriptions);
                if *topic == Topic::Metrics {
                    if let Some(addr) = &self.hospital_actor {
                        addr.do_send(WatchMetrics {
                            session: self.id,
                            recipient: None,
                        });
                    }
                }
                if let Some(watch) = watch_topic(topic) {
                    self.rt.presence.do_send(presence::Watch {
                        session: self.id,
                        topic: watch,
                        on: false,
                    });
                }
            }
        }
        self.subscriptions.remove(topics.iter());
        if let Some(filter) = self.filter() {
            self.send(WriterCommand::Filter(Box::new(filter)), ctx);
        }
        self.frame(
            ServerFrame::Unsubscribed {
                id,
                topics: topics.iter().map(Topic::to_string).collect(),
            },
            ctx,
        );
    }
}

fn view_topic(target: &ViewTarget) -> Topic {
    match target {
        ViewTarget::Case(id) => Topic::Case(*id),
        ViewTarget::Patient(p) => Topic::Patient(p.clone()),
    }
}

/// The presence-hub watch a topic implies, if any.
fn watch_topic(topic: &Topic) -> Option<WatchTopic> {
    match topic {
        Topic::Presence => Some(WatchTopic::Presence),
        Topic::Case(id) => Some(WatchTopic::Target(ViewTarget::Case(*id))),
        Topic::Patient(p) => Some(WatchTopic::Target(ViewTarget::Patient(p.clone()))),
        _ => None,
    }
}

impl Actor for SessionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        Metrics::inc(&self.rt.metrics.ws_connections);
        // `debug` until authenticated: anyone can open connections without credentials, and
        // the log must not be a way to fill the disk (`admitted` logs at `info`).
        tracing::debug!(session = self.id, hospital = %self.hospital, authenticated = self.identity.is_some(), "websocket connected");
        let settings = self.rt.settings.clone();
        match self.identity.take() {
            Some(identity) => self.authenticated(identity, None, ctx),
            None => {
                ctx.run_later(settings.auth_timeout, |act, ctx| {
                    if act.identity.is_none() {
                        act.error(
                            None,
                            "authentication_timeout",
                            "no `auth` frame in time",
                            ctx,
                        );
                        act.close(CloseReason::AuthenticationFailed, ctx);
                    }
                });
            }
        }
        self.idle_timer = Some(ctx.run_later(settings.idle_timeout, |act, ctx| {
            if !act.ever_subscribed {
                act.close(CloseReason::Idle, ctx);
            }
        }));
        ctx.run_interval(CASE_RECHECK_INTERVAL, |act, ctx| act.recheck_cases(ctx));
        ctx.run_interval(settings.heartbeat, move |act, ctx| {
            match heartbeat(act.last_seen, Instant::now(), settings.heartbeat) {
                Heartbeat::Ping => act.send(WriterCommand::Ping, ctx),
                Heartbeat::TimedOut => act.kill(CloseReason::HeartbeatTimeout, ctx),
            }
        });
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        Metrics::dec(&self.rt.metrics.ws_connections);
        if self.slot.is_some() {
            tracing::info!(session = self.id, hospital = %self.hospital, "websocket closed");
        } else {
            tracing::debug!(session = self.id, hospital = %self.hospital, "websocket closed before admission");
        }
        for _ in 0..self.subscriptions.len() {
            Metrics::dec(&self.rt.metrics.subscriptions);
        }
        if let Some(addr) = &self.hospital_actor {
            addr.do_send(Leave { session: self.id });
        }
        if self.identity.is_some() {
            self.rt
                .presence
                .do_send(presence::Disconnect { session: self.id });
        }
        self.slot = None;
    }
}

/// Whole messages from the socket: fragments arrive reassembled (a `Continuation` never
/// does), and a frame sequence that breaks RFC 6455 arrives as the [`Failure`] whose close
/// code ends the connection.
impl StreamHandler<Result<WsMessage, Failure>> for SessionActor {
    fn handle(&mut self, item: Result<WsMessage, Failure>, ctx: &mut Self::Context) {
        self.last_seen = Instant::now();
        match item {
            Ok(WsMessage::Text(text)) => self.on_text(&text, ctx),
            Ok(WsMessage::Ping(payload)) => self.send(WriterCommand::Pong(payload), ctx),
            Ok(WsMessage::Pong(_)) => {
                if self.identity.is_some() {
                    self.rt
                        .presence
                        .do_send(presence::Touch { session: self.id });
                }
            }
            Ok(WsMessage::Binary(_)) | Ok(WsMessage::Continuation(_)) => {
                let frame = ServerFrame::error(
                    None,
                    "unsupported_frame",
                    "only JSON text frames are accepted",
                );
                self.violation(CloseReason::PolicyViolation, frame, ctx);
            }
            Ok(WsMessage::Close(_)) => ctx.stop(),
            Ok(WsMessage::Nop) => {}
            Err(failure) => {
                tracing::debug!(session = self.id, %failure, "websocket protocol error");
                self.kill(failure.reason(), ctx);
            }
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl Handler<Push> for SessionActor {
    type Result = ();

    fn handle(&mut self, msg: Push, ctx: &mut Self::Context) {
        if !self.closing {
            self.frame(msg.frame, ctx);
        }
    }
}

impl Handler<Kick> for SessionActor {
    type Result = ();

    fn handle(&mut self, msg: Kick, ctx: &mut Self::Context) {
        self.kill(msg.reason, ctx);
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
