//! What happened to an alert. Stored for ever: evolve with upcasters, never by renaming.

use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use super::Severity;
use crate::types::{AlertMessage, Department, Note, PatientId, Reason, UserId};

/// A fact recorded about an alert.
///
/// Serialized externally tagged (`{"AlertRaised": {...}}`) with the variant name equal to
/// [`event_type`](DomainEvent::event_type), which is how the server reads a stored payload.
/// Every variant carries the alert's `patient` so the realtime layer can route it to the
/// `patient:{id}` topic without loading the aggregate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AlertEvent {
    /// The alert was opened.
    AlertRaised {
        /// How urgent it is.
        severity: Severity,
        /// What is wrong.
        message: AlertMessage,
        /// The department it concerns, if any.
        department: Option<Department>,
        /// The patient it concerns, if any.
        patient: Option<PatientId>,
        /// Who raised it.
        by: UserId,
        /// When.
        at: DateTime<Utc>,
    },
    /// Someone took ownership.
    AlertAcknowledged {
        /// The alert's patient, for routing.
        patient: Option<PatientId>,
        /// Who took ownership.
        by: UserId,
        /// When.
        at: DateTime<Utc>,
    },
    /// The next tier was paged.
    AlertEscalated {
        /// The alert's patient, for routing.
        patient: Option<PatientId>,
        /// The new escalation level: 1 for the first escalation.
        level: u8,
        /// Why.
        reason: Reason,
        /// Who escalated.
        by: UserId,
        /// When.
        at: DateTime<Utc>,
    },
    /// The alert was closed.
    AlertResolved {
        /// The alert's patient, for routing.
        patient: Option<PatientId>,
        /// What was done.
        note: Note,
        /// Who resolved it.
        by: UserId,
        /// When.
        at: DateTime<Utc>,
    },
}

impl AlertEvent {
    /// The patient the alert concerns, whatever the event.
    pub fn patient(&self) -> Option<&PatientId> {
        match self {
            AlertEvent::AlertRaised { patient, .. }
            | AlertEvent::AlertAcknowledged { patient, .. }
            | AlertEvent::AlertEscalated { patient, .. }
            | AlertEvent::AlertResolved { patient, .. } => patient.as_ref(),
        }
    }
}

impl DomainEvent for AlertEvent {
    fn event_type(&self) -> String {
        match self {
            AlertEvent::AlertRaised { .. } => "AlertRaised",
            AlertEvent::AlertAcknowledged { .. } => "AlertAcknowledged",
            AlertEvent::AlertEscalated { .. } => "AlertEscalated",
            AlertEvent::AlertResolved { .. } => "AlertResolved",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1.0".to_string()
    }
}
