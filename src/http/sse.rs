//! Server-Sent Events: the same stream as the WebSocket, for clients that only need to
//! receive. `GET /api/hospitals/{hospital}/events/stream?topics=alerts,cases` resumes from
//! the standard `Last-Event-ID` header (or `last_event_id` query parameter); every event
//! carries its position in an `id:` line and the same JSON as a WebSocket `event` frame in
//! its `data:` line. Other frames (`subscribed`, `token_expiring`, `closing`) are `data:`
//! lines with their `type`, exactly as on the WebSocket.
//!
//! Browsers' `EventSource` cannot send an `Authorization` header, so a client may instead
//! `POST .../events/stream/tickets` (authenticated) for a single-use ticket valid for
//! [`TICKET_TTL`], passed as `?ticket=`. Request logs never include query strings. A ticket
//! is spent last, once every other check has passed, so a refused request leaves it usable.
//!
//! The stream's per-user connection slot lives as long as its actor, which stops when the
//! response body is dropped: the HTTP server shuts a connection whose client closed its side
//! (`h1_allow_half_closed(false)` in `startup`), so a client that goes away frees its slot at
//! once rather than when a heartbeat write fails.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use aggregates::types::{HospitalId, Role, UserId};
use bytes::Bytes;
use bytestring::ByteString;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use utoipa::{IntoParams, ToSchema};

use super::extract::{bearer_token, hospital_from_path, Authenticated, Query};
use super::problem::ApiError;
use super::responses::ReadErrors;
use super::AppState;
use crate::access::authorize;
use crate::access::entitlement::{case_access, Viewer};
use crate::access::topics::may_subscribe;
use crate::access::Action;
use crate::auth::{AuthError, Identity};
use crate::metrics::Metrics;
use crate::realtime::hospital::{
    ConnectionSlot, HospitalActor, HospitalFeed, Join, Kick, Leave, Resume, ResumeDecision,
    SessionProgress,
};
use crate::realtime::protocol::{CloseReason, LastEventId, ServerFrame};
use crate::realtime::topics::{Subscriptions, Topic};
use crate::realtime::window::WindowEvent;
use crate::realtime::writer::{
    self, closing_frame, Closed, Filter, Sink, StreamStart, WriterCommand, WriterContext,
    COMMAND_QUEUE,
};
use crate::realtime::{next_session_id, Realtime, SessionId};

/// How long a ticket may wait before it is used.
pub const TICKET_TTL: Duration = Duration::from_secs(30);

/// Frames buffered between the writer and the HTTP response.
const SSE_BUFFER: usize = 16;

/// A stream ticket.
#[derive(Debug, Serialize, ToSchema)]
pub struct Ticket {
    /// Pass as `?ticket=` to the stream endpoint, once.
    pub ticket: String,
    /// Seconds until it expires unused.
    pub expires_in: u64,
}

/// Trade a bearer token for a single-use SSE ticket.
#[utoipa::path(post, path = "/api/hospitals/{hospital}/events/stream/tickets", tag = "events",
    params(("hospital" = String, Path, description = "Hospital id")),
    responses((status = 201, description = "Ticket issued", body = Ticket), ReadErrors),
    security(("bearer" = [])))]
pub async fn issue_ticket(
    state: web::Data<AppState>,
    auth: Authenticated,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let hospital = hospital_from_path(&path)?;
    let identity = auth.0;
    authorize(&identity, &hospital, Action::ReadEvents)?;
    let mut raw = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut raw);
    let ticket = hex::encode(raw);
    sqlx::query("DELETE FROM stream_tickets WHERE expires_at < clock_timestamp()")
        .execute(&state.pool)
        .await
        .map_err(ApiError::database)?;
    sqlx::query(
        "INSERT INTO stream_tickets (ticket_hash, hospital, user_id, role, token_expires_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, clock_timestamp() + make_interval(secs => $6))",
    )
    .bind(ticket_hash(&ticket))
    .bind(identity.hospital.as_str())
    .bind(identity.user.as_str())
    .bind(identity.role.as_str())
    .bind(identity.expires_at)
    .bind(TICKET_TTL.as_secs_f64())
    .execute(&state.pool)
    .await
    .map_err(ApiError::database)?;
    Ok(HttpResponse::Created().json(Ticket {
        ticket,
        expires_in: TICKET_TTL.as_secs(),
    }))
}

/// The identity a ticket was issued for, if it is valid, *without* spending it: the stream
/// request checks everything else that can fail first and spends the ticket last
/// ([`spend`]), so a request refused for another reason (an unknown topic, another
/// hospital, the connection limit) leaves the ticket usable for the corrected request.
async fn look_up(state: &AppState, ticket: &str) -> Result<Identity, ApiError> {
    let row: Option<(String, String, String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT hospital, user_id, role, token_expires_at FROM stream_tickets \
         WHERE ticket_hash = $1 AND expires_at >= clock_timestamp()",
    )
    .bind(ticket_hash(ticket))
    .fetch_optional(&state.pool)
    .await
    .map_err(ApiError::database)?;
    let (hospital, user, role, expires_at) = row.ok_or_else(invalid_ticket)?;
    if expires_at <= Utc::now() {
        return Err(ApiError::Unauthorized(AuthError::Expired));
    }
    Ok(Identity {
        hospital: HospitalId::parse(&hospital).map_err(|_| invalid_ticket())?,
        user: UserId::parse(&user).map_err(|_| invalid_ticket())?,
        role: role.parse::<Role>().map_err(|_| invalid_ticket())?,
        expires_at,
    })
}

/// Spends a ticket [`look_up`] accepted. Deleting it is what makes it single-use: of two
/// requests racing with one ticket, only the one whose delete finds the row is served.
async fn spend(state: &AppState, ticket: &str) -> Result<(), ApiError> {
    let spent = sqlx::query(
        "DELETE FROM stream_tickets WHERE ticket_hash = $1 AND expires_at >= clock_timestamp()",
    )
    .bind(ticket_hash(ticket))
    .execute(&state.pool)
    .await
    .map_err(ApiError::database)?;
    if spent.rows_affected() == 0 {
        return Err(invalid_ticket());
    }
    Ok(())
}

fn ticket_hash(ticket: &str) -> String {
    hex::encode(Sha256::digest(ticket.as_bytes()))
}

fn invalid_ticket() -> ApiError {
    ApiError::Unauthorized(AuthError::Invalid("unknown, used or expired ticket".into()))
}

/// Query of the stream endpoint.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    /// Comma-separated topics, e.g. `alerts,case:<uuid>`.
    pub topics: String,
    /// Resume after this position (the `Last-Event-ID` header wins when both are sent).
    pub last_event_id: Option<String>,
    /// The stream epoch the last-event-id belongs to.
    pub epoch: Option<uuid::Uuid>,
    /// A single-use ticket from `POST .../events/stream/tickets`, for clients that cannot
    /// send an `Authorization` header.
    pub ticket: Option<String>,
}

/// Writes SSE to the HTTP response.
struct SseSink {
    tx: mpsc::Sender<Bytes>,
}

impl Sink for SseSink {
    async fn send(&mut self, frame: ByteString) -> Result<(), Closed> {
        let chunk = format!("data: {frame}\n\n");
        self.tx.send(Bytes::from(chunk)).await.map_err(|_| Closed)
    }

    async fn send_event(&mut self, event: &WindowEvent) -> Result<(), Closed> {
        let chunk = format!("id: {}\ndata: {}\n\n", event.position, event.frame);
        self.tx.send(Bytes::from(chunk)).await.map_err(|_| Closed)
    }

    async fn ping(&mut self) -> Result<(), Closed> {
        self.tx
            .send(Bytes::from_static(b": ping\n\n"))
            .await
            .map_err(|_| Closed)
    }

    async fn pong(&mut self, _: Bytes) -> Result<(), Closed> {
        Ok(())
    }

    async fn close(self, reason: Option<CloseReason>) {
        if let Some(reason) = reason {
            let frame = closing_frame(reason);
            let _ = self
                .tx
                .send(Bytes::from(format!("data: {frame}\n\n")))
                .await;
        }
    }

    async fn gone(&self) {
        // The response body (the receiver) is dropped when the client disconnects.
        self.tx.closed().await
    }
}

/// The actor behind one SSE connection: joins the hospital, heartbeats, closes at token
/// expiry, and obeys kicks. (SSE clients send nothing, so there is no frame handling.)
struct SseSession {
    id: SessionId,
    rt: Arc<Realtime>,
    writer: mpsc::Sender<WriterCommand>,
    kill: watch::Sender<Option<CloseReason>>,
    hospital_actor: Option<Addr<HospitalActor>>,
    _slot: ConnectionSlot,
    expires_at: DateTime<Utc>,
}

impl Actor for SseSession {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        Metrics::inc(&self.rt.metrics.sse_connections);
        ctx.run_interval(self.rt.settings.sse_heartbeat, |act, ctx| {
            if act.writer.try_send(WriterCommand::Ping).is_err() && act.writer.is_closed() {
                ctx.stop();
            }
        });
        let left = (self.expires_at - Utc::now())
            .to_std()
            .unwrap_or(Duration::ZERO);
        ctx.run_later(left, |act, _| {
            let _ = act
                .writer
                .try_send(WriterCommand::Close(CloseReason::TokenExpired));
        });
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        Metrics::dec(&self.rt.metrics.sse_connections);
        if let Some(addr) = &self.hospital_actor {
            addr.do_send(Leave { session: self.id });
        }
    }
}

impl Handler<Kick> for SseSession {
    type Result = ();

    fn handle(&mut self, msg: Kick, _: &mut Self::Context) {
        let _ = self.kill.send(Some(msg.reason));
    }
}

/// Stops the actor when its writer ends (the client went away).
#[derive(Message)]
#[rtype(result = "()")]
struct WriterEnded;

impl Handler<WriterEnded> for SseSession {
    type Result = ();

    fn handle(&mut self, _: WriterEnded, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

/// Stream the hospital's events as Server-Sent Events.
#[utoipa::path(get, path = "/api/hospitals/{hospital}/events/stream", tag = "events",
    params(("hospital" = String, Path, description = "Hospital id"), StreamQuery,
           ("Last-Event-ID" = Option<String>, Header, description = "Resume after this position")),
    responses((status = 200, description = "text/event-stream of `data:` frames; events carry `id:`", content_type = "text/event-stream"),
        (status = 404, description = "`case_not_found`: a `case:<id>` topic for a case that does not exist or (for a field worker) is not assigned to the caller",
            body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 429, description = "`too_many_connections`: the user holds the most realtime connections allowed; see `Retry-After`",
            body = crate::http::problem::Problem, content_type = "application/problem+json"),
        ReadErrors),
    security(("bearer" = [])))]
pub async fn stream(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: Query<StreamQuery>,
) -> Result<HttpResponse, ApiError> {
    let hospital = hospital_from_path(&path)?;
    let identity = identify(&state, &req, &query).await?;
    authorize(&identity, &hospital, Action::ReadEvents)?;
    let rt = state.realtime.clone();
    let subscriptions = plan_topics(&identity, &query.topics, rt.settings.max_subscriptions)?;
    let last_event_id = last_event_id(&req, &query)?;
    require_cases(&state, &identity, &hospital, &subscriptions).await?;
    let slot = admit(&rt, &hospital, &identity).await?;
    // Last: everything that can refuse the request has been checked (a failure here drops
    // the slot with the request).
    if let (None, Some(ticket)) = (bearer_token(&req), &query.ticket) {
        spend(&state, ticket).await?;
    }
    let start = Start {
        hospital,
        identity,
        subscriptions,
        last_event_id,
        epoch: query.epoch,
    };
    let body = start_delivery(&rt, slot, start).await?;
    let retry = Bytes::from_static(b"retry: 2000\n\n");
    let body = futures_util::stream::once(async move { retry })
        .chain(ReceiverStream::new(body))
        .map(Ok::<_, Infallible>);
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/event-stream"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body))
}

/// Who the request is for: a bearer token, or else a ticket (looked up, not yet spent).
async fn identify(
    state: &AppState,
    req: &HttpRequest,
    query: &StreamQuery,
) -> Result<Identity, ApiError> {
    match (bearer_token(req), &query.ticket) {
        (Some(token), _) => Ok(state.keys.verify(token)?),
        (None, Some(ticket)) => look_up(state, ticket).await,
        (None, None) => Err(ApiError::Unauthorized(AuthError::Missing)),
    }
}

/// A connection slot for the user, within the per-user limit on this node and, when there
/// are other nodes, across the cluster.
async fn admit(
    rt: &Realtime,
    hospital: &HospitalId,
    identity: &Identity,
) -> Result<ConnectionSlot, ApiError> {
    let too_many = || ApiError::TooManyConnections {
        limit: rt.settings.max_connections_per_user,
        retry_after: 5,
    };
    let slot = rt
        .directory
        .open_connection(hospital, &identity.user)
        .ok_or_else(too_many)?;
    if let Some(check) = rt.cluster_admission(&slot) {
        if !check.await {
            return Err(too_many());
        }
    }
    Ok(slot)
}

/// What an admitted SSE request streams.
struct Start {
    hospital: HospitalId,
    identity: Identity,
    subscriptions: Subscriptions,
    last_event_id: Option<i64>,
    epoch: Option<uuid::Uuid>,
}

/// Starts the connection's actor and its one writer: joins the hospital's reader, asks it
/// where the stream starts, and queues the `subscribed` frame and the stream's start.
/// Returns the receiving end of the response body.
async fn start_delivery(
    rt: &Arc<Realtime>,
    slot: ConnectionSlot,
    start: Start,
) -> Result<mpsc::Receiver<Bytes>, ApiError> {
    let Start {
        hospital,
        identity,
        subscriptions,
        last_event_id,
        epoch,
    } = start;
    let id = next_session_id();
    let progress = Arc::new(SessionProgress::default());
    let (commands, receiver) = mpsc::channel(COMMAND_QUEUE);
    let (kill, kill_receiver) = watch::channel(None);
    let session = SseSession {
        id,
        rt: rt.clone(),
        writer: commands.clone(),
        kill,
        hospital_actor: None,
        _slot: slot,
        expires_at: identity.expires_at,
    };
    let session = session.start();
    let (addr, feed) = join(rt, &hospital, &identity, id, &progress, &session).await?;
    // As over WebSocket: the epoch given for an empty stream names the database, no check.
    let empty_epoch = rt.empty_epoch(hospital.as_str());
    let decision = resume(
        rt,
        &addr,
        last_event_id,
        epoch.filter(|e| Some(*e) != empty_epoch),
    )
    .await?;
    tracing::info!(session = id, %hospital, user = %identity.user, recovered = decision.recovered, "sse subscribed");
    let subscribed = ServerFrame::Subscribed {
        id: None,
        topics: subscriptions.names(),
        recovered: decision.recovered,
        position: decision.position.to_string(),
        epoch: decision.epoch.or(empty_epoch),
        reason: decision.reason,
    };
    let filter = Filter {
        topics: subscriptions,
        user: identity.user.clone(),
        role: identity.role,
    };
    // The queue is empty and sized well above two commands: these cannot fail.
    let _ = commands.try_send(WriterCommand::Frame(ByteString::from(subscribed.to_text())));
    let _ = commands.try_send(WriterCommand::Stream(Box::new(StreamStart {
        feed,
        start: decision.start,
        filter,
    })));
    let (tx, rx) = mpsc::channel::<Bytes>(SSE_BUFFER);
    let context = WriterContext {
        pool: rt.pool.clone(),
        progress,
        metrics: rt.metrics.clone(),
        kill: kill_receiver,
        shutdown: rt.shutdown.clone(),
    };
    session.do_send(SetHospital(addr));
    let ender = session.clone();
    actix_web::rt::spawn(async move {
        writer::run(SseSink { tx }, receiver, context).await;
        ender.do_send(WriterEnded);
    });
    drop(commands);
    Ok(rx)
}

/// The hospital actor's decision on where the stream starts (after `last_event_id` when it
/// still can), counted in the resume metrics when the client asked to resume.
async fn resume(
    rt: &Realtime,
    addr: &Addr<HospitalActor>,
    last_event_id: Option<i64>,
    epoch: Option<uuid::Uuid>,
) -> Result<ResumeDecision, ApiError> {
    let decision = addr
        .send(Resume {
            last_event_id,
            epoch,
        })
        .await
        .map_err(|_| ApiError::Unavailable("hospital stream unavailable".into()))?;
    if last_event_id.is_some() {
        let counter = if decision.recovered {
            &rt.metrics.resumes_recovered
        } else {
            &rt.metrics.resumes_not_recovered
        };
        Metrics::inc(counter);
    }
    Ok(decision)
}

/// The topics of an SSE request, each one checked: a known name, a role that may follow it,
/// a topic SSE can carry, and at most `max` of them.
fn plan_topics(identity: &Identity, raw: &str, max: usize) -> Result<Subscriptions, ApiError> {
    let mut subscriptions = Subscriptions::default();
    for name in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let topic: Topic = name
            .parse()
            .map_err(|e: crate::stream::topics::UnknownTopic| {
                ApiError::invalid_field("topics", e.to_string())
            })?;
        if !may_subscribe(identity.role, &topic) {
            return Err(ApiError::Forbidden {
                code: "forbidden_topic",
                detail: format!(
                    "role `{}` may not subscribe to `{topic}`",
                    identity.role.as_str()
                ),
            });
        }
        if !topic_streams_over_sse(&topic) {
            return Err(ApiError::invalid_field(
                "topics",
                format!("`{topic}` is only available over WebSocket"),
            ));
        }
        subscriptions.add([topic]);
    }
    if subscriptions.is_empty() || subscriptions.len() > max {
        return Err(ApiError::invalid_field(
            "topics",
            format!("name 1..={max} topics"),
        ));
    }
    Ok(subscriptions)
}

/// Where to resume: the `Last-Event-ID` header (what `EventSource` sends on its own
/// reconnects) or else the `last_event_id` parameter.
fn last_event_id(req: &HttpRequest, query: &StreamQuery) -> Result<Option<i64>, ApiError> {
    let header = req
        .headers()
        .get("Last-Event-ID")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.trim().is_empty());
    match header.or(query.last_event_id.as_deref()) {
        None => Ok(None),
        Some(raw) => Ok(Some(
            LastEventId::parse(raw)
                .ok_or_else(|| {
                    ApiError::invalid_field("last_event_id", "must be a stream position")
                })?
                .0,
        )),
    }
}

/// Refuses a `case:<id>` topic the caller may not follow exactly as an unknown case.
async fn require_cases(
    state: &AppState,
    identity: &Identity,
    hospital: &HospitalId,
    subscriptions: &Subscriptions,
) -> Result<(), ApiError> {
    let viewer = Viewer {
        user: &identity.user,
        role: identity.role,
    };
    for topic in subscriptions.topics() {
        if let Topic::Case(case) = topic {
            let granted = case_access(&state.pool, viewer, hospital, case)
                .await
                .map_err(ApiError::database)?;
            if !granted {
                // As `GET cases/{id}` answers for a case the caller may not read.
                return Err(ApiError::NotFound {
                    code: "case_not_found",
                    detail: format!("no case `{case}`"),
                });
            }
        }
    }
    Ok(())
}

/// Joins the hospital's reader (retried: a reader that is stopping refuses the join, and the
/// directory then starts a new one).
async fn join(
    rt: &Realtime,
    hospital: &HospitalId,
    identity: &Identity,
    id: SessionId,
    progress: &Arc<SessionProgress>,
    session: &Addr<SseSession>,
) -> Result<(Addr<HospitalActor>, Arc<HospitalFeed>), ApiError> {
    for _ in 0..3 {
        let addr = rt.directory.hospital(hospital);
        let join = addr.send(Join {
            session: id,
            user: identity.user.clone(),
            progress: progress.clone(),
            kick: session.clone().recipient(),
        });
        if let Ok(feed) = join.await {
            return Ok((addr, feed));
        }
    }
    Err(ApiError::Unavailable("hospital stream unavailable".into()))
}

/// Presence and metrics need a two-way connection (they are pushed state, not stream
/// events); over SSE only stream topics are served.
fn topic_streams_over_sse(topic: &Topic) -> bool {
    !matches!(topic, Topic::Presence | Topic::Metrics)
}

/// Tells the SSE actor which hospital actor to leave when it stops.
#[derive(Message)]
#[rtype(result = "()")]
struct SetHospital(Addr<HospitalActor>);

impl Handler<SetHospital> for SseSession {
    type Result = ();

    fn handle(&mut self, msg: SetHospital, _: &mut Self::Context) {
        self.hospital_actor = Some(msg.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(role: Role) -> Identity {
        Identity {
            user: UserId::parse("u-1").unwrap(),
            hospital: HospitalId::parse("h-1").unwrap(),
            role,
            expires_at: Utc::now(),
        }
    }

    fn code(result: Result<Subscriptions, ApiError>) -> String {
        result.map(|_| ()).unwrap_err().problem().code
    }

    #[test]
    fn stream_topics_a_role_may_follow_are_planned() {
        let planned = plan_topics(&identity(Role::Nurse), "alerts, cases,,", 4).unwrap();
        assert_eq!(planned.names(), vec!["alerts", "cases"]);
    }

    #[test]
    fn a_topic_sse_cannot_carry_or_a_role_may_not_follow_is_refused_before_anything_opens() {
        assert_eq!(
            code(plan_topics(&identity(Role::Operator), "cases", 4)),
            "forbidden_topic"
        );
        assert_eq!(
            code(plan_topics(&identity(Role::Nurse), "presence", 4)),
            "invalid_field"
        );
        assert_eq!(
            code(plan_topics(&identity(Role::Nurse), "nosuch", 4)),
            "invalid_field"
        );
        assert_eq!(
            code(plan_topics(&identity(Role::Nurse), " , ", 4)),
            "invalid_field"
        );
        assert_eq!(
            code(plan_topics(
                &identity(Role::Nurse),
                "alerts,cases,appointments",
                2
            )),
            "invalid_field"
        );
    }
}
