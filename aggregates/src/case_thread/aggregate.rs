//! The case thread's state and rules: [`CaseThread::decide`] holds the rules, `apply` folds.

use std::collections::BTreeMap;

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use super::{CaseCommand, CaseError, CaseEvent, CaseStatus};
use crate::types::{PatientId, UserId};

/// One case thread. `None` until opened; the state of an opened case holds counters and read
/// positions but no message bodies, so loading a long thread stays cheap.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CaseThread {
    case: Option<OpenedCase>,
}

/// What the rules need to know about a case that exists.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct OpenedCase {
    patient: PatientId,
    status: CaseStatus,
    assignee: Option<UserId>,
    /// Also the id of the last message (ids are 1, 2, 3...).
    message_count: u64,
    /// Each reader's last read message.
    read_positions: BTreeMap<UserId, u64>,
}

impl CaseThread {
    /// The case's patient; `None` if it was never opened.
    pub fn patient(&self) -> Option<&PatientId> {
        self.case.as_ref().map(|case| &case.patient)
    }

    /// The case's status; `None` if it was never opened.
    pub fn status(&self) -> Option<CaseStatus> {
        self.case.as_ref().map(|case| case.status)
    }

    /// Who the case is assigned to, if anyone.
    pub fn assignee(&self) -> Option<&UserId> {
        self.case.as_ref().and_then(|case| case.assignee.as_ref())
    }

    /// How many messages the thread holds (also the last message's id).
    pub fn message_count(&self) -> u64 {
        self.case.as_ref().map_or(0, |case| case.message_count)
    }

    /// The last message `reader` has read (0 if none).
    pub fn read_position(&self, reader: &UserId) -> u64 {
        self.case
            .as_ref()
            .and_then(|case| case.read_positions.get(reader).copied())
            .unwrap_or(0)
    }

    /// The business rules: the single event a command records, or why it is refused.
    pub fn decide(&self, command: CaseCommand) -> Result<CaseEvent, CaseError> {
        match command {
            CaseCommand::Open {
                patient,
                title,
                assignee,
                by,
                at,
            } => {
                if self.case.is_some() {
                    return Err(CaseError::AlreadyOpened);
                }
                Ok(CaseEvent::CaseOpened {
                    patient,
                    title,
                    assignee,
                    by,
                    at,
                })
            }
            CaseCommand::Assign { assignee, by, at } => {
                let case = self.existing()?;
                if case.assignee.as_ref() == Some(&assignee) {
                    return Err(CaseError::AlreadyAssigned);
                }
                Ok(CaseEvent::CaseAssigned {
                    patient: case.patient.clone(),
                    assignee,
                    previous: case.assignee.clone(),
                    by,
                    at,
                })
            }
            CaseCommand::ChangeStatus { to, note, by, at } => {
                let case = self.existing()?;
                let from = case.status;
                if !from.can_transition_to(to) {
                    return Err(CaseError::InvalidTransition { from, to });
                }
                Ok(CaseEvent::CaseStatusChanged {
                    patient: case.patient.clone(),
                    from,
                    to,
                    note,
                    assignee: case.assignee.clone(),
                    by,
                    at,
                })
            }
            CaseCommand::PostMessage { body, by, at } => {
                let case = self.existing()?;
                Ok(CaseEvent::MessagePosted {
                    patient: case.patient.clone(),
                    message_id: case.message_count + 1,
                    body,
                    assignee: case.assignee.clone(),
                    by,
                    at,
                })
            }
            CaseCommand::MarkRead { up_to, by, at } => {
                let case = self.existing()?;
                if up_to == 0 || up_to > case.message_count {
                    return Err(CaseError::UnknownMessage);
                }
                if up_to <= case.read_positions.get(&by).copied().unwrap_or(0) {
                    return Err(CaseError::AlreadyRead);
                }
                Ok(CaseEvent::MessagesRead {
                    patient: case.patient.clone(),
                    up_to,
                    assignee: case.assignee.clone(),
                    by,
                    at,
                })
            }
        }
    }

    /// The opened case a command acts on, or `NotFound`.
    fn existing(&self) -> Result<&OpenedCase, CaseError> {
        self.case.as_ref().ok_or(CaseError::NotFound)
    }
}

impl Aggregate for CaseThread {
    const TYPE: &'static str = "case_thread";
    type Command = CaseCommand;
    type Event = CaseEvent;
    type Error = CaseError;
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
        if let CaseEvent::CaseOpened {
            patient, assignee, ..
        } = event
        {
            self.case = Some(OpenedCase {
                patient,
                status: CaseStatus::Open,
                assignee,
                message_count: 0,
                read_positions: BTreeMap::new(),
            });
            return;
        }
        // Every other event follows `CaseOpened` in a well-formed stream; one without it has
        // nothing to update.
        let Some(case) = self.case.as_mut() else {
            return;
        };
        match event {
            CaseEvent::CaseOpened { .. } => {}
            CaseEvent::CaseAssigned { assignee, .. } => case.assignee = Some(assignee),
            CaseEvent::CaseStatusChanged { to, .. } => case.status = to,
            CaseEvent::MessagePosted { message_id, .. } => case.message_count = message_id,
            CaseEvent::MessagesRead { up_to, by, .. } => {
                case.read_positions.insert(by, up_to);
            }
        }
    }
}
