//! The `Notification` aggregate: one message to one user, and whether they have read it.
//!
//! Notifications tell a user something needs them (a task, a lab result, a prior
//! authorization decision). The content is fixed when sent; afterwards the only change is the
//! recipient marking it read, which only the recipient may do.
//!
//! | command \ state | never sent | sent, unread | read |
//! |---|---|---|---|
//! | `Send` | `NotificationSent` | `AlreadySent` | `AlreadySent` |
//! | `MarkRead` by the recipient | `NotFound` | `NotificationRead` | `AlreadyRead` |
//! | `MarkRead` by anyone else | `NotFound` | `NotRecipient` | `NotRecipient` |
//!
//! `NotRecipient` is checked before `AlreadyRead`, so other users learn nothing about whether
//! the recipient has read it.

mod aggregate;
mod commands;
mod content;
mod errors;
mod events;
#[cfg(test)]
mod tests;

pub use aggregate::Notification;
pub use commands::NotificationCommand;
pub use content::{NotificationContent, PriorAuthStatus};
pub use errors::NotificationError;
pub use events::NotificationEvent;
