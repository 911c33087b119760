//! What a user can ask of an appointment.

use chrono::{DateTime, Utc};

use crate::types::{PatientId, Reason, ShortText, UserId};

/// A request to change an appointment. Each carries who acts (`by`) and when (`at`), since
/// the aggregate never reads the clock.
#[derive(Clone, Debug, PartialEq)]
pub enum AppointmentCommand {
    /// Book the slot.
    Schedule {
        /// Who is seen.
        patient: PatientId,
        /// Who sees them.
        clinician: UserId,
        /// When the slot begins.
        start: DateTime<Utc>,
        /// When it ends; after `start`, at most [`MAX_APPOINTMENT_DURATION`](super::MAX_APPOINTMENT_DURATION) later.
        end: DateTime<Utc>,
        /// Why the patient is coming, if given.
        reason: Option<ShortText>,
        /// Who booked it.
        by: UserId,
        /// When.
        at: DateTime<Utc>,
    },
    /// Move the slot.
    Reschedule {
        /// The new beginning.
        start: DateTime<Utc>,
        /// The new end.
        end: DateTime<Utc>,
        /// Who moved it.
        by: UserId,
        /// When.
        at: DateTime<Utc>,
    },
    /// The patient has arrived.
    CheckIn {
        /// Who checked them in.
        by: UserId,
        /// When.
        at: DateTime<Utc>,
    },
    /// Call the appointment off.
    Cancel {
        /// Why, for the record and for the patient.
        reason: Reason,
        /// Who cancelled.
        by: UserId,
        /// When.
        at: DateTime<Utc>,
    },
}
