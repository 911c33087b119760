//! The notifications nodes exchange on [`CHANNEL`](super::CHANNEL): one JSON object per
//! `NOTIFY`, tagged by `kind`.
//!
//! Every field is a validated domain type, so a payload that does not parse (an unknown
//! kind, a hand-written `NOTIFY`) is refused whole — logged and ignored — rather than partly
//! trusted. Unknown *fields* are ignored, so a later version may add optional ones while
//! older nodes still run. Identifiers are bounded (hospital 64, user 128, patient 64 characters), so
//! a single note stays far below PostgreSQL's 8,000-byte payload limit; batched
//! re-announcements are cut at [`VIEWS_PER_NOTE`] entries to stay below it too.

use aggregates::types::{HospitalId, Role, UserId};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::state::SessionKey;
use super::ViewTarget;
use crate::realtime::protocol::Participant;
use crate::realtime::SessionId;

/// PostgreSQL refuses payloads of 8,000 bytes or more.
pub const MAX_PAYLOAD_BYTES: usize = 7_999;

/// Views per `views` note. An entry is at most ~330 bytes (64-character hospital and
/// patient ids, a 128-character user id, a 20-digit session, keys), so 16 of them plus the
/// envelope stay under 5,500 bytes.
pub const VIEWS_PER_NOTE: usize = 16;

/// A change announced to every node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Note {
    /// A session row of `hospital` was written or removed: re-read its presence.
    Presence {
        /// The hospital whose presence may have changed.
        hospital: HospitalId,
    },
    /// A session typed in a case thread.
    Typing {
        node: Uuid,
        session: SessionId,
        hospital: HospitalId,
        case: Uuid,
        user: UserId,
        role: Role,
    },
    /// A session views (or still views) a target.
    View {
        node: Uuid,
        session: SessionId,
        hospital: HospitalId,
        target: ViewTarget,
        user: UserId,
        role: Role,
    },
    /// A session released a view.
    Unview {
        node: Uuid,
        session: SessionId,
        hospital: HospitalId,
        target: ViewTarget,
    },
    /// A node's live views, re-announced so that remote copies do not expire.
    Views { node: Uuid, views: Vec<ViewEntry> },
    /// A session disconnected: drop everything it typed or viewed.
    Left {
        node: Uuid,
        session: SessionId,
        hospital: HospitalId,
    },
    /// A node's LISTEN connection is (again) up: others re-announce their views to it.
    Hello { node: Uuid },
    /// A sweeper found `node` dead and deleted its sessions: drop its typing and views.
    NodeDown { node: Uuid },
}

/// One view in a `views` note.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ViewEntry {
    pub session: SessionId,
    pub hospital: HospitalId,
    pub target: ViewTarget,
    pub user: UserId,
    pub role: Role,
}

impl ViewEntry {
    /// Who views, as frames show them.
    pub fn participant(&self) -> Participant {
        participant(&self.user, self.role)
    }

    /// The viewing session.
    pub fn key(&self, node: Uuid) -> SessionKey {
        SessionKey {
            node,
            session: self.session,
        }
    }
}

/// How frames show a user.
pub fn participant(user: &UserId, role: Role) -> Participant {
    Participant {
        user: user.as_str().to_owned(),
        role: role.as_str().to_owned(),
    }
}

impl Note {
    /// Parses a payload; anything else is logged and ignored.
    pub fn parse(payload: &str) -> Option<Note> {
        match serde_json::from_str(payload) {
            Ok(note) => Some(note),
            Err(error) => {
                // The payload is not echoed: it may be long, and it is not ours.
                tracing::warn!(%error, bytes = payload.len(), "ignoring a malformed presence notification");
                None
            }
        }
    }

    /// The payload, or `None` if it would exceed PostgreSQL's limit (cannot happen with
    /// bounded identifiers; checked rather than assumed).
    pub fn to_payload(&self) -> Option<String> {
        let payload = serde_json::to_string(self).ok()?;
        if payload.len() > MAX_PAYLOAD_BYTES {
            tracing::error!(
                bytes = payload.len(),
                "presence notification too large; dropped"
            );
            return None;
        }
        Some(payload)
    }

    /// The node whose session caused the change, for changes a node applies to itself
    /// directly (and so ignores when its own notification comes back).
    pub fn origin(&self) -> Option<Uuid> {
        match self {
            Note::Typing { node, .. }
            | Note::View { node, .. }
            | Note::Unview { node, .. }
            | Note::Views { node, .. }
            | Note::Left { node, .. }
            | Note::Hello { node } => Some(*node),
            Note::Presence { .. } | Note::NodeDown { .. } => None,
        }
    }

    /// `views` notes announcing `views`, [`VIEWS_PER_NOTE`] at a time.
    pub fn views(node: Uuid, views: Vec<ViewEntry>) -> Vec<Note> {
        views
            .chunks(VIEWS_PER_NOTE)
            .map(|chunk| Note::Views {
                node,
                views: chunk.to_vec(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aggregates::types::PatientId;

    #[test]
    fn notes_round_trip_through_their_payload() {
        let note = Note::View {
            node: Uuid::new_v4(),
            session: 7,
            hospital: HospitalId::parse("st-marys").unwrap(),
            target: ViewTarget::Patient(PatientId::parse("p-1").unwrap()),
            user: UserId::parse("dr.ana@example.org").unwrap(),
            role: Role::Physician,
        };
        let payload = note.to_payload().unwrap();
        assert!(payload.contains(r#""kind":"view""#), "{payload}");
        assert!(payload.contains(r#""target":"patient:p-1""#), "{payload}");
        assert_eq!(Note::parse(&payload), Some(note));

        let down = Note::NodeDown { node: Uuid::nil() };
        assert_eq!(
            down.to_payload().unwrap(),
            r#"{"kind":"node_down","node":"00000000-0000-0000-0000-000000000000"}"#
        );
    }

    #[test]
    fn malformed_or_invalid_notes_are_ignored() {
        for payload in [
            "",
            "not json",
            r#"{"kind":"dance"}"#,
            r#"{"kind":"presence"}"#,
            r#"{"kind":"presence","hospital":"Not A Hospital"}"#,
            r#"{"kind":"hello","node":"not-a-uuid"}"#,
        ] {
            assert_eq!(Note::parse(payload), None, "{payload}");
        }
    }

    #[test]
    fn a_full_batch_of_the_longest_views_fits_in_one_notification() {
        let entry = ViewEntry {
            session: u64::MAX,
            hospital: HospitalId::parse(&"h".repeat(HospitalId::MAX_LEN)).unwrap(),
            target: ViewTarget::Patient(PatientId::parse(&"p".repeat(PatientId::MAX_LEN)).unwrap()),
            user: UserId::parse(&"u".repeat(UserId::MAX_LEN)).unwrap(),
            role: Role::Physician,
        };
        let notes = Note::views(Uuid::new_v4(), vec![entry; VIEWS_PER_NOTE + 1]);
        assert_eq!(notes.len(), 2);
        for note in &notes {
            let payload = note.to_payload().expect("fits");
            assert!(payload.len() < 6_000, "{} bytes", payload.len());
        }
    }
}
