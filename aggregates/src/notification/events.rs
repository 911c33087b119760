//! What happened to a notification. Stored for ever: evolve with upcasters, never rename.

use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use super::NotificationContent;
use crate::types::UserId;

/// A fact recorded about a notification, serialized externally tagged
/// (`{"NotificationSent": {...}}`) under its [`event_type`](DomainEvent::event_type). Both
/// variants carry the recipient, so the realtime layer delivers them to that user alone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NotificationEvent {
    /// The notification was delivered.
    NotificationSent {
        /// Who it is for.
        recipient: UserId,
        /// What it says.
        content: NotificationContent,
        /// Who sent it.
        by: UserId,
        /// When.
        at: DateTime<Utc>,
    },
    /// The recipient read it (so their other devices can clear it).
    NotificationRead {
        /// Who it is for.
        recipient: UserId,
        /// Who marked it read (always the recipient).
        by: UserId,
        /// When.
        at: DateTime<Utc>,
    },
}

impl NotificationEvent {
    /// The user the notification is for, whatever the event.
    pub fn recipient(&self) -> &UserId {
        match self {
            NotificationEvent::NotificationSent { recipient, .. }
            | NotificationEvent::NotificationRead { recipient, .. } => recipient,
        }
    }
}

impl DomainEvent for NotificationEvent {
    fn event_type(&self) -> String {
        match self {
            NotificationEvent::NotificationSent { .. } => "NotificationSent",
            NotificationEvent::NotificationRead { .. } => "NotificationRead",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1.0".to_string()
    }
}
