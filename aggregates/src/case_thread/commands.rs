//! What a user can ask of a case thread.

use chrono::{DateTime, Utc};

use super::CaseStatus;
use crate::types::{CaseTitle, MessageBody, Note, PatientId, UserId};

/// A request to change a case thread. Each carries who acts (`by`) and when (`at`): the
/// aggregate never reads the clock, and the record must say who did what.
#[derive(Clone, Debug, PartialEq)]
pub enum CaseCommand {
    /// Start a case about a patient.
    Open {
        /// The patient the case is about; fixed for the case's life.
        patient: PatientId,
        /// A one-line summary for lists.
        title: CaseTitle,
        /// Who should work on it, if already known.
        assignee: Option<UserId>,
        /// Who opened it.
        by: UserId,
        /// When.
        at: DateTime<Utc>,
    },
    /// Hand the case to someone (else).
    Assign {
        /// The new assignee.
        assignee: UserId,
        /// Who assigned it.
        by: UserId,
        /// When.
        at: DateTime<Utc>,
    },
    /// Move the case along the review flow.
    ChangeStatus {
        /// The target status; must be allowed by [`CaseStatus::can_transition_to`].
        to: CaseStatus,
        /// Why, or what was decided (e.g. the prescription summary).
        note: Option<Note>,
        /// Who changed it.
        by: UserId,
        /// When.
        at: DateTime<Utc>,
    },
    /// Add a message to the thread.
    PostMessage {
        /// The message.
        body: MessageBody,
        /// Its author.
        by: UserId,
        /// When.
        at: DateTime<Utc>,
    },
    /// Record that `by` has read every message up to and including `up_to`.
    MarkRead {
        /// The last message read (message ids start at 1).
        up_to: u64,
        /// The reader.
        by: UserId,
        /// When.
        at: DateTime<Utc>,
    },
}
