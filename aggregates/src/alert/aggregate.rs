//! The alert's state and rules: [`Alert::decide`] holds the business rules, `apply` only folds.

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use super::{AlertCommand, AlertError, AlertEvent, EscalationGuard};
use crate::types::PatientId;

/// The highest escalation level. A typical escalation chain has at most five tiers (for
/// example ward nurse, charge nurse, on-call physician, consultant, medical director); past the
/// last one another page reaches nobody new, and the alert needs resolving instead.
pub const MAX_ESCALATION_LEVEL: u8 = 5;

/// Where an alert is in its life; see the state machine in the [module docs](super).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    /// Raised and not yet owned.
    Raised,
    /// Someone owns it.
    Acknowledged,
    /// Closed; no further changes.
    Resolved,
}

/// One clinical alert. Holds only what the rules need, so loading it stays cheap.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// `None` until raised.
    status: Option<AlertStatus>,
    /// Copied onto every later event so each can be routed on its own.
    patient: Option<PatientId>,
    /// 0 until the first escalation.
    escalation_level: u8,
}

impl Alert {
    /// Where the alert is in its life; `None` if it was never raised.
    pub fn status(&self) -> Option<AlertStatus> {
        self.status
    }

    /// The current escalation level (0 = never escalated).
    pub fn escalation_level(&self) -> u8 {
        self.escalation_level
    }

    /// The patient the alert concerns, if any.
    pub fn patient(&self) -> Option<&PatientId> {
        self.patient.as_ref()
    }

    /// The business rules: the single event a command records, or why it is refused.
    ///
    /// Kept synchronous and free of the event sink so the rules read top to bottom.
    pub fn decide(&self, command: AlertCommand) -> Result<AlertEvent, AlertError> {
        match command {
            AlertCommand::Raise {
                severity,
                message,
                department,
                patient,
                by,
                at,
            } => {
                if self.status.is_some() {
                    return Err(AlertError::AlreadyRaised);
                }
                Ok(AlertEvent::AlertRaised {
                    severity,
                    message,
                    department,
                    patient,
                    by,
                    at,
                })
            }
            AlertCommand::Acknowledge { by, at } => {
                if self.open_status()? == AlertStatus::Acknowledged {
                    return Err(AlertError::AlreadyAcknowledged);
                }
                Ok(AlertEvent::AlertAcknowledged {
                    patient: self.patient.clone(),
                    by,
                    at,
                })
            }
            AlertCommand::Escalate {
                reason,
                guard,
                by,
                at,
            } => {
                let status = self.open_status()?;
                match guard {
                    EscalationGuard::Always => {}
                    EscalationGuard::FromLevel(level) if level != self.escalation_level => {
                        return Err(AlertError::EscalationLevelChanged);
                    }
                    EscalationGuard::FromLevel(_) => {}
                    EscalationGuard::Unacknowledged { .. }
                        if status == AlertStatus::Acknowledged =>
                    {
                        return Err(AlertError::AlreadyAcknowledged);
                    }
                    EscalationGuard::Unacknowledged { from_level }
                        if from_level != self.escalation_level =>
                    {
                        return Err(AlertError::EscalationLevelChanged);
                    }
                    EscalationGuard::Unacknowledged { .. } => {}
                }
                if self.escalation_level >= MAX_ESCALATION_LEVEL {
                    return Err(AlertError::MaxEscalationReached);
                }
                Ok(AlertEvent::AlertEscalated {
                    patient: self.patient.clone(),
                    level: self.escalation_level + 1,
                    reason,
                    by,
                    at,
                })
            }
            AlertCommand::Resolve { note, by, at } => {
                self.open_status()?;
                Ok(AlertEvent::AlertResolved {
                    patient: self.patient.clone(),
                    note,
                    by,
                    at,
                })
            }
        }
    }

    /// The status of an alert that exists and is still open, or why it is not.
    fn open_status(&self) -> Result<AlertStatus, AlertError> {
        match self.status {
            None => Err(AlertError::NotFound),
            Some(AlertStatus::Resolved) => Err(AlertError::AlreadyResolved),
            Some(open) => Ok(open),
        }
    }
}

impl Aggregate for Alert {
    const TYPE: &'static str = "alert";
    type Command = AlertCommand;
    type Event = AlertEvent;
    type Error = AlertError;
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
            AlertEvent::AlertRaised { patient, .. } => {
                self.status = Some(AlertStatus::Raised);
                self.patient = patient;
            }
            AlertEvent::AlertAcknowledged { .. } => self.status = Some(AlertStatus::Acknowledged),
            AlertEvent::AlertEscalated { level, .. } => self.escalation_level = level,
            AlertEvent::AlertResolved { .. } => self.status = Some(AlertStatus::Resolved),
        }
    }
}
