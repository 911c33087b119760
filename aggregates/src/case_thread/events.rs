//! What happened to a case thread. Stored for ever: evolve with upcasters, never by renaming.

use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use super::CaseStatus;
use crate::types::{CaseTitle, MessageBody, Note, PatientId, UserId};

/// A fact recorded about a case thread.
///
/// Serialized externally tagged (`{"CaseOpened": {...}}`) with the variant name equal to
/// [`event_type`](DomainEvent::event_type). Every variant carries the case's `patient` and
/// its `assignee` at that moment, so the realtime layer can route and filter it alone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CaseEvent {
    /// The case was opened.
    CaseOpened {
        /// The patient the case is about.
        patient: PatientId,
        /// Its summary.
        title: CaseTitle,
        /// Its first assignee, if any.
        assignee: Option<UserId>,
        /// Who opened it.
        by: UserId,
        /// When.
        at: DateTime<Utc>,
    },
    /// The case changed hands.
    CaseAssigned {
        /// The case's patient, for routing.
        patient: PatientId,
        /// The new assignee.
        assignee: UserId,
        /// The assignee before, if any, so they can be told the case left them.
        previous: Option<UserId>,
        /// Who assigned it.
        by: UserId,
        /// When.
        at: DateTime<Utc>,
    },
    /// The case moved along the review flow.
    CaseStatusChanged {
        /// The case's patient, for routing.
        patient: PatientId,
        /// The status before.
        from: CaseStatus,
        /// The status after.
        to: CaseStatus,
        /// Why, or what was decided.
        note: Option<Note>,
        /// The current assignee, for filtering.
        assignee: Option<UserId>,
        /// Who changed it.
        by: UserId,
        /// When.
        at: DateTime<Utc>,
    },
    /// A message was added to the thread.
    MessagePosted {
        /// The case's patient, for routing.
        patient: PatientId,
        /// The message's number within the thread: 1, 2, 3...
        message_id: u64,
        /// The message.
        body: MessageBody,
        /// The current assignee, for filtering.
        assignee: Option<UserId>,
        /// Its author.
        by: UserId,
        /// When.
        at: DateTime<Utc>,
    },
    /// A reader caught up to a message.
    MessagesRead {
        /// The case's patient, for routing.
        patient: PatientId,
        /// The last message read.
        up_to: u64,
        /// The current assignee, for filtering.
        assignee: Option<UserId>,
        /// The reader.
        by: UserId,
        /// When.
        at: DateTime<Utc>,
    },
}

impl CaseEvent {
    /// The patient the case is about, whatever the event.
    pub fn patient(&self) -> &PatientId {
        match self {
            CaseEvent::CaseOpened { patient, .. }
            | CaseEvent::CaseAssigned { patient, .. }
            | CaseEvent::CaseStatusChanged { patient, .. }
            | CaseEvent::MessagePosted { patient, .. }
            | CaseEvent::MessagesRead { patient, .. } => patient,
        }
    }

    /// The case's assignee right after the event.
    pub fn assignee(&self) -> Option<&UserId> {
        match self {
            CaseEvent::CaseAssigned { assignee, .. } => Some(assignee),
            CaseEvent::CaseOpened { assignee, .. }
            | CaseEvent::CaseStatusChanged { assignee, .. }
            | CaseEvent::MessagePosted { assignee, .. }
            | CaseEvent::MessagesRead { assignee, .. } => assignee.as_ref(),
        }
    }
}

impl DomainEvent for CaseEvent {
    fn event_type(&self) -> String {
        match self {
            CaseEvent::CaseOpened { .. } => "CaseOpened",
            CaseEvent::CaseAssigned { .. } => "CaseAssigned",
            CaseEvent::CaseStatusChanged { .. } => "CaseStatusChanged",
            CaseEvent::MessagePosted { .. } => "MessagePosted",
            CaseEvent::MessagesRead { .. } => "MessagesRead",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1.0".to_string()
    }
}
