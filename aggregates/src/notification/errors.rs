//! Why a notification command was refused.

use crate::rejection::{Rejection, RejectionKind};

/// A refused notification command; compared exactly in tests, with messages for humans.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotificationError {
    /// `Send` on a notification id that already exists.
    #[error("this notification has already been sent")]
    AlreadySent,
    /// `MarkRead` on a notification that was never sent.
    #[error("no such notification")]
    NotFound,
    /// Someone other than the recipient tried to mark it read.
    #[error("only the recipient may mark this notification read")]
    NotRecipient,
    /// The recipient already marked it read.
    #[error("the notification has already been read")]
    AlreadyRead,
}

impl Rejection for NotificationError {
    fn code(&self) -> &'static str {
        match self {
            NotificationError::AlreadySent => "notification_already_sent",
            NotificationError::NotFound => "notification_not_found",
            NotificationError::NotRecipient => "notification_not_recipient",
            NotificationError::AlreadyRead => "notification_already_read",
        }
    }

    fn kind(&self) -> RejectionKind {
        match self {
            NotificationError::NotFound => RejectionKind::NotFound,
            NotificationError::NotRecipient => RejectionKind::Forbidden,
            NotificationError::AlreadySent | NotificationError::AlreadyRead => {
                RejectionKind::Conflict
            }
        }
    }
}
