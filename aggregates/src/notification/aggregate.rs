//! The notification's state and rules: [`Notification::decide`] holds the rules.

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use super::{NotificationCommand, NotificationError, NotificationEvent};
use crate::types::UserId;

/// One notification; `None` until sent. Keeps only who it is for and whether it was read:
/// the content lives in the event.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    delivery: Option<Delivery>,
}

/// What the rules need to know about a sent notification.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Delivery {
    recipient: UserId,
    read: bool,
}

impl Notification {
    /// Who the notification is for, once sent.
    pub fn recipient(&self) -> Option<&UserId> {
        self.delivery.as_ref().map(|delivery| &delivery.recipient)
    }

    /// Whether the recipient has read it (`false` if never sent).
    pub fn is_read(&self) -> bool {
        self.delivery.as_ref().is_some_and(|delivery| delivery.read)
    }

    /// The business rules: the single event a command records, or why it is refused.
    pub fn decide(
        &self,
        command: NotificationCommand,
    ) -> Result<NotificationEvent, NotificationError> {
        match command {
            NotificationCommand::Send {
                recipient,
                content,
                by,
                at,
            } => {
                if self.delivery.is_some() {
                    return Err(NotificationError::AlreadySent);
                }
                Ok(NotificationEvent::NotificationSent {
                    recipient,
                    content,
                    by,
                    at,
                })
            }
            NotificationCommand::MarkRead { by, at } => {
                let delivery = self.delivery.as_ref().ok_or(NotificationError::NotFound)?;
                // Checked before `read`, so nobody else learns whether the recipient read it.
                if delivery.recipient != by {
                    return Err(NotificationError::NotRecipient);
                }
                if delivery.read {
                    return Err(NotificationError::AlreadyRead);
                }
                Ok(NotificationEvent::NotificationRead {
                    recipient: delivery.recipient.clone(),
                    by,
                    at,
                })
            }
        }
    }
}

impl Aggregate for Notification {
    const TYPE: &'static str = "notification";
    type Command = NotificationCommand;
    type Event = NotificationEvent;
    type Error = NotificationError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let event = self.decide(command)?;
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            NotificationEvent::NotificationSent { recipient, .. } => {
                self.delivery = Some(Delivery {
                    recipient,
                    read: false,
                });
            }
            NotificationEvent::NotificationRead { .. } => {
                if let Some(delivery) = self.delivery.as_mut() {
                    delivery.read = true;
                }
            }
        }
    }
}
