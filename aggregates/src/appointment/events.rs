//! What happened to an appointment. Stored for ever: evolve with upcasters, never rename.

use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use crate::types::{PatientId, Reason, ShortText, UserId};

/// A fact recorded about an appointment, serialized externally tagged
/// (`{"AppointmentScheduled": {...}}`) under its [`event_type`](DomainEvent::event_type).
/// Every variant carries the patient and the clinician, so calendars and patient topics can
/// be updated without loading the aggregate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppointmentEvent {
    /// The slot was booked.
    AppointmentScheduled {
        /// Who is seen.
        patient: PatientId,
        /// Who sees them.
        clinician: UserId,
        /// When the slot begins.
        start: DateTime<Utc>,
        /// When it ends.
        end: DateTime<Utc>,
        /// Why the patient is coming, if given.
        reason: Option<ShortText>,
        /// Who booked it.
        by: UserId,
        /// When.
        at: DateTime<Utc>,
    },
    /// The slot moved.
    AppointmentRescheduled {
        /// Who is seen.
        patient: PatientId,
        /// Who sees them.
        clinician: UserId,
        /// The new beginning.
        start: DateTime<Utc>,
        /// The new end.
        end: DateTime<Utc>,
        /// The beginning before, so calendars can free the old slot.
        previous_start: DateTime<Utc>,
        /// The end before.
        previous_end: DateTime<Utc>,
        /// Who moved it.
        by: UserId,
        /// When.
        at: DateTime<Utc>,
    },
    /// The patient arrived.
    PatientCheckedIn {
        /// Who arrived.
        patient: PatientId,
        /// Who is expecting them.
        clinician: UserId,
        /// Who checked them in.
        by: UserId,
        /// When.
        at: DateTime<Utc>,
    },
    /// The appointment was called off.
    AppointmentCancelled {
        /// Who was to be seen.
        patient: PatientId,
        /// Who was to see them.
        clinician: UserId,
        /// Why.
        reason: Reason,
        /// Who cancelled.
        by: UserId,
        /// When.
        at: DateTime<Utc>,
    },
}

impl AppointmentEvent {
    /// The patient the appointment is for, whatever the event.
    pub fn patient(&self) -> &PatientId {
        match self {
            AppointmentEvent::AppointmentScheduled { patient, .. }
            | AppointmentEvent::AppointmentRescheduled { patient, .. }
            | AppointmentEvent::PatientCheckedIn { patient, .. }
            | AppointmentEvent::AppointmentCancelled { patient, .. } => patient,
        }
    }

    /// The clinician the appointment is with, whatever the event.
    pub fn clinician(&self) -> &UserId {
        match self {
            AppointmentEvent::AppointmentScheduled { clinician, .. }
            | AppointmentEvent::AppointmentRescheduled { clinician, .. }
            | AppointmentEvent::PatientCheckedIn { clinician, .. }
            | AppointmentEvent::AppointmentCancelled { clinician, .. } => clinician,
        }
    }
}

impl DomainEvent for AppointmentEvent {
    fn event_type(&self) -> String {
        match self {
            AppointmentEvent::AppointmentScheduled { .. } => "AppointmentScheduled",
            AppointmentEvent::AppointmentRescheduled { .. } => "AppointmentRescheduled",
            AppointmentEvent::PatientCheckedIn { .. } => "PatientCheckedIn",
            AppointmentEvent::AppointmentCancelled { .. } => "AppointmentCancelled",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1.0".to_string()
    }
}
