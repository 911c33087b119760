//! Why a case thread command was refused.

use super::CaseStatus;
use crate::rejection::{Rejection, RejectionKind};

/// A refused case thread command; compared exactly in tests, with messages for humans.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CaseError {
    /// `Open` on a case id that already exists.
    #[error("this case has already been opened")]
    AlreadyOpened,
    /// Any command other than `Open` on a case that was never opened.
    #[error("no such case")]
    NotFound,
    /// The review flow does not allow this move.
    #[error("a case cannot move from {from} to {to}")]
    InvalidTransition {
        /// The case's current status.
        from: CaseStatus,
        /// The requested status.
        to: CaseStatus,
    },
    /// Assigning the case to the person who already has it.
    #[error("the case is already assigned to this user")]
    AlreadyAssigned,
    /// `MarkRead` naming a message that does not exist (0, or beyond the last message).
    #[error("there is no such message in this case")]
    UnknownMessage,
    /// `MarkRead` at or before the reader's current position.
    #[error("these messages have already been read")]
    AlreadyRead,
}

impl Rejection for CaseError {
    fn code(&self) -> &'static str {
        match self {
            CaseError::AlreadyOpened => "case_already_opened",
            CaseError::NotFound => "case_not_found",
            CaseError::InvalidTransition { .. } => "case_invalid_transition",
            CaseError::AlreadyAssigned => "case_already_assigned",
            CaseError::UnknownMessage => "case_unknown_message",
            CaseError::AlreadyRead => "case_already_read",
        }
    }

    fn kind(&self) -> RejectionKind {
        match self {
            CaseError::NotFound => RejectionKind::NotFound,
            CaseError::UnknownMessage => RejectionKind::Invalid { field: "up_to" },
            CaseError::AlreadyOpened
            | CaseError::InvalidTransition { .. }
            | CaseError::AlreadyAssigned
            | CaseError::AlreadyRead => RejectionKind::Conflict,
        }
    }
}
