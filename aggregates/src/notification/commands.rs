//! What a user can ask of a notification.

use chrono::{DateTime, Utc};

use super::NotificationContent;
use crate::types::UserId;

/// A request to change a notification. Each carries who acts (`by`) and when (`at`), since
/// the aggregate never reads the clock.
#[derive(Clone, Debug, PartialEq)]
pub enum NotificationCommand {
    /// Deliver a notification to one user.
    Send {
        /// Who it is for.
        recipient: UserId,
        /// What it says.
        content: NotificationContent,
        /// Who (or which service account) sent it.
        by: UserId,
        /// When.
        at: DateTime<Utc>,
    },
    /// The recipient has read it.
    MarkRead {
        /// Who is marking it; must be the recipient.
        by: UserId,
        /// When.
        at: DateTime<Utc>,
    },
}
