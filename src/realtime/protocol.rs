//! The WebSocket wire protocol: client frames, server frames, close codes.
//!
//! Every frame is a JSON text frame with a `type`. Client frames may carry an `id`, echoed in
//! the server's reply (and in an `error` about that frame). The full description, with
//! examples, is `docs/PROTOCOL.md`; this module is its executable form.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::stream::Position;

/// Largest `id` a client may attach to a frame (characters of its JSON form).
pub const MAX_FRAME_ID_LEN: usize = 64;

/// A client's frame id: a string or a number, echoed verbatim.
pub type FrameId = serde_json::Value;

/// A frame from the client.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientFrame {
    /// Authenticate (browsers cannot set headers on a WebSocket).
    Auth {
        #[serde(default)]
        id: Option<FrameId>,
        token: String,
    },
    /// Subscribe to topics, optionally resuming after `last_event_id`.
    Subscribe {
        #[serde(default)]
        id: Option<FrameId>,
        topics: Vec<String>,
        #[serde(default)]
        last_event_id: Option<LastEventId>,
        /// The stream epoch the client's `last_event_id` belongs to, if it knows it.
        #[serde(default)]
        epoch: Option<Uuid>,
    },
    /// Stop receiving topics.
    Unsubscribe {
        #[serde(default)]
        id: Option<FrameId>,
        topics: Vec<String>,
    },
    /// "I am typing" in a case thread; expires unless refreshed.
    Typing {
        #[serde(default)]
        id: Option<FrameId>,
        case: Uuid,
    },
    /// "I am viewing" a patient or case (`patient:<id>` or `case:<uuid>`): a soft lock.
    View {
        #[serde(default)]
        id: Option<FrameId>,
        target: String,
    },
    /// Stop viewing.
    Unview {
        #[serde(default)]
        id: Option<FrameId>,
        target: String,
    },
    /// Replace the connection's token before it expires (same user and hospital).
    Refresh {
        #[serde(default)]
        id: Option<FrameId>,
        token: String,
    },
    /// Application-level ping; answered with `pong`.
    Ping {
        #[serde(default)]
        id: Option<FrameId>,
    },
}

impl ClientFrame {
    /// The frame's `id`, if any.
    pub fn id(&self) -> Option<&FrameId> {
        match self {
            ClientFrame::Auth { id, .. }
            | ClientFrame::Subscribe { id, .. }
            | ClientFrame::Unsubscribe { id, .. }
            | ClientFrame::Typing { id, .. }
            | ClientFrame::View { id, .. }
            | ClientFrame::Unview { id, .. }
            | ClientFrame::Refresh { id, .. }
            | ClientFrame::Ping { id } => id.as_ref(),
        }
    }
}

/// A last-event-id: the position as a string (what `event.id` carries) or a number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LastEventId(pub Position);

impl<'de> Deserialize<'de> for LastEventId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(i64),
            Text(String),
        }
        let position = match Raw::deserialize(d)? {
            Raw::Number(n) => n,
            Raw::Text(s) => s
                .trim()
                .parse::<i64>()
                .map_err(|_| serde::de::Error::custom("last_event_id must be a stream position"))?,
        };
        if position < 0 {
            return Err(serde::de::Error::custom("last_event_id must be 0 or more"));
        }
        Ok(LastEventId(position))
    }
}

impl LastEventId {
    /// Parses a `Last-Event-ID` header or query value.
    pub fn parse(raw: &str) -> Option<Self> {
        raw.trim()
            .parse::<i64>()
            .ok()
            .filter(|p| *p >= 0)
            .map(LastEventId)
    }
}

/// One user in a presence, typing or viewing frame.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Participant {
    /// User id.
    pub user: String,
    /// Their role.
    pub role: String,
}

/// A frame from the server (all but `event`, whose bytes are built once per event by the
/// hospital reader: see `realtime::window`).
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// The connection is authenticated (reply to the `Authorization` header, `auth` or
    /// `refresh`).
    Authenticated {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<FrameId>,
        user: String,
        role: String,
        hospital: String,
        /// When the token expires; the connection closes then unless refreshed.
        expires_at: chrono::DateTime<chrono::Utc>,
    },
    /// Reply to `subscribe`.
    Subscribed {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<FrameId>,
        /// Every topic the connection now receives.
        topics: Vec<String>,
        /// True when every entitled event after `last_event_id` follows this frame. False
        /// when nothing was to be recovered or it could not be (too old, other epoch): then
        /// reload state through REST and treat `position` as your last-event-id.
        recovered: bool,
        /// Events after this position follow (live, or replayed then live).
        position: String,
        /// The stream's epoch (null if the hospital has no events yet).
        epoch: Option<Uuid>,
        /// Why `recovered` is false, when a `last_event_id` was given.
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<&'static str>,
    },
    /// Reply to `unsubscribe`.
    Unsubscribed {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<FrameId>,
        topics: Vec<String>,
    },
    /// Who is online in the hospital (all nodes), on the `presence` topic.
    Presence { online: Vec<PresenceEntry> },
    /// Who is typing in a case thread.
    Typing { case: Uuid, users: Vec<Participant> },
    /// Who is viewing a patient or case (the soft lock).
    Viewing {
        target: String,
        viewers: Vec<Participant>,
    },
    /// Live metrics on the `metrics` topic.
    Metrics { data: serde_json::Value },
    /// The token expires soon: send `refresh`.
    TokenExpiring {
        expires_at: chrono::DateTime<chrono::Utc>,
        seconds_left: i64,
    },
    /// Something the client sent was refused; the connection stays usable.
    Error {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<FrameId>,
        code: &'static str,
        message: String,
    },
    /// Reply to `ping`.
    Pong {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<FrameId>,
    },
    /// The last frame before the server closes the connection, saying why.
    Closing { code: u16, reason: &'static str },
}

/// A user online in a hospital.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct PresenceEntry {
    pub user: String,
    pub role: String,
    /// Open connections of this user, over all nodes.
    pub connections: u32,
}

impl ServerFrame {
    /// The frame as JSON text.
    pub fn to_text(&self) -> String {
        // Serializing these plain structs cannot fail; an empty object is a safe fallback.
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned())
    }

    /// An error frame.
    pub fn error(id: Option<FrameId>, code: &'static str, message: impl Into<String>) -> Self {
        ServerFrame::Error {
            id,
            code,
            message: message.into(),
        }
    }
}

/// Why the server closes a connection: each has its own close code (RFC 6455 private-use
/// range 4000–4999, plus the standard ones where they fit) and a `closing` frame first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The token expired and was not refreshed.
    TokenExpired,
    /// No valid `auth` frame in time, or an invalid token.
    AuthenticationFailed,
    /// Connected but never subscribed within the idle timeout.
    Idle,
    /// No frame (not even a pong) for two heartbeat intervals.
    HeartbeatTimeout,
    /// The client could not keep up with its events; reconnect and resume.
    SlowConsumer,
    /// Repeatedly over the frame rate limit.
    RateLimited,
    /// Too many open connections for this user.
    TooManyConnections,
    /// Repeated protocol abuse (oversized or invalid frames after warnings).
    PolicyViolation,
    /// A frame larger than the hard limit.
    FrameTooLarge,
    /// The server is shutting down; reconnect (to another node) and resume.
    ServerShutdown,
    /// Frames that break RFC 6455 (a continuation out of sequence, a bad close payload,
    /// reserved bits or opcodes).
    ProtocolError,
    /// A text message that is not valid UTF-8.
    InvalidPayload,
}

impl CloseReason {
    /// The WebSocket close code.
    pub fn code(self) -> u16 {
        match self {
            CloseReason::ServerShutdown => 1001,
            CloseReason::ProtocolError => 1002,
            CloseReason::InvalidPayload => 1007,
            CloseReason::PolicyViolation => 1008,
            CloseReason::FrameTooLarge => 1009,
            CloseReason::TokenExpired => 4001,
            CloseReason::AuthenticationFailed => 4003,
            CloseReason::Idle => 4004,
            CloseReason::HeartbeatTimeout => 4005,
            CloseReason::SlowConsumer => 4008,
            CloseReason::TooManyConnections => 4013,
            CloseReason::RateLimited => 4029,
        }
    }

    /// Machine-readable reason, also the `closing` frame's `reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::TokenExpired => "token_expired",
            CloseReason::AuthenticationFailed => "authentication_failed",
            CloseReason::Idle => "idle_timeout",
            CloseReason::HeartbeatTimeout => "heartbeat_timeout",
            CloseReason::SlowConsumer => "slow_consumer",
            CloseReason::RateLimited => "rate_limited",
            CloseReason::TooManyConnections => "too_many_connections",
            CloseReason::PolicyViolation => "policy_violation",
            CloseReason::FrameTooLarge => "frame_too_large",
            CloseReason::ServerShutdown => "server_shutdown",
            CloseReason::ProtocolError => "protocol_error",
            CloseReason::InvalidPayload => "invalid_payload",
        }
    }
}

/// Parses a client's text frame; the error is ready to send as an `error` frame.
pub fn parse_client_frame(text: &str) -> Result<ClientFrame, ServerFrame> {
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| ServerFrame::error(None, "malformed_json", format!("malformed JSON: {e}")))?;
    let id = value.get("id").cloned();
    if let Some(id) = &id {
        let valid = matches!(
            id,
            serde_json::Value::String(_) | serde_json::Value::Number(_)
        ) && id.to_string().len() <= MAX_FRAME_ID_LEN;
        if !valid {
            return Err(ServerFrame::error(
                None,
                "invalid_frame",
                format!("`id` must be a string or number of at most {MAX_FRAME_ID_LEN} characters"),
            ));
        }
    }
    match value.get("type").and_then(|t| t.as_str()) {
        None => {
            return Err(ServerFrame::error(
                id,
                "invalid_frame",
                "a frame needs a string `type`",
            ))
        }
        Some(
            "auth" | "subscribe" | "unsubscribe" | "typing" | "view" | "unview" | "refresh"
            | "ping",
        ) => {}
        Some(other) => {
            return Err(ServerFrame::error(
                id,
                "unknown_frame_type",
                format!("unknown frame type `{other}`"),
            ))
        }
    }
    serde_json::from_value(value)
        .map_err(|e| ServerFrame::error(id, "invalid_frame", format!("invalid frame: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code_of(frame: ServerFrame) -> &'static str {
        match frame {
            ServerFrame::Error { code, .. } => code,
            other => panic!("not an error: {other:?}"),
        }
    }

    #[test]
    fn a_subscribe_frame_accepts_a_string_or_numeric_last_event_id() {
        let a =
            parse_client_frame(r#"{"type":"subscribe","topics":["alerts"],"last_event_id":"17"}"#);
        let b =
            parse_client_frame(r#"{"type":"subscribe","topics":["alerts"],"last_event_id":17}"#);
        assert_eq!(a, b);
        match a.unwrap() {
            ClientFrame::Subscribe { last_event_id, .. } => {
                assert_eq!(last_event_id, Some(LastEventId(17)))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn malformed_unknown_and_mistyped_frames_are_distinct_errors() {
        assert_eq!(
            code_of(parse_client_frame("{not json").unwrap_err()),
            "malformed_json"
        );
        assert_eq!(
            code_of(parse_client_frame(r#"{"type":"dance"}"#).unwrap_err()),
            "unknown_frame_type"
        );
        assert_eq!(
            code_of(parse_client_frame(r#"{"type":"subscribe","topics":"alerts"}"#).unwrap_err()),
            "invalid_frame"
        );
        assert_eq!(
            code_of(parse_client_frame(r#"{"topics":[]}"#).unwrap_err()),
            "invalid_frame"
        );
        assert_eq!(
            code_of(parse_client_frame(r#"{"type":"ping","id":{"a":1}}"#).unwrap_err()),
            "invalid_frame"
        );
        assert_eq!(
            code_of(
                parse_client_frame(r#"{"type":"subscribe","topics":[],"last_event_id":-3}"#)
                    .unwrap_err()
            ),
            "invalid_frame"
        );
    }

    #[test]
    fn an_error_about_a_frame_echoes_its_id() {
        match parse_client_frame(r#"{"type":"typing","id":"t-1","case":"nope"}"#).unwrap_err() {
            ServerFrame::Error { id, code, .. } => {
                assert_eq!(id, Some(serde_json::json!("t-1")));
                assert_eq!(code, "invalid_frame");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn close_codes_are_distinct() {
        let all = [
            CloseReason::TokenExpired,
            CloseReason::AuthenticationFailed,
            CloseReason::Idle,
            CloseReason::HeartbeatTimeout,
            CloseReason::SlowConsumer,
            CloseReason::RateLimited,
            CloseReason::TooManyConnections,
            CloseReason::PolicyViolation,
            CloseReason::FrameTooLarge,
            CloseReason::ServerShutdown,
        ];
        let codes: std::collections::HashSet<u16> = all.iter().map(|r| r.code()).collect();
        assert_eq!(codes.len(), all.len());
    }
}
