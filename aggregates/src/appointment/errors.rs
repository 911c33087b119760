//! Why an appointment command was refused.

use crate::rejection::{Rejection, RejectionKind};

/// A refused appointment command; compared exactly in tests, with messages for humans.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AppointmentError {
    /// `Schedule` on an appointment id that already exists.
    #[error("this appointment has already been scheduled")]
    AlreadyScheduled,
    /// Any command other than `Schedule` on an appointment that was never scheduled.
    #[error("no such appointment")]
    NotFound,
    /// The slot would end at or before its start.
    #[error("an appointment must end after it starts")]
    EndNotAfterStart,
    /// The slot would last longer than a day.
    #[error("an appointment may last at most 24 hours")]
    TooLong,
    /// The appointment was cancelled; nothing more can happen to it.
    #[error("the appointment has been cancelled")]
    Cancelled,
    /// The patient has already arrived; the slot can no longer move or be cancelled.
    #[error("the patient has already checked in")]
    AlreadyCheckedIn,
    /// Rescheduling to the times it already has.
    #[error("the appointment already has these times")]
    Unchanged,
}

impl Rejection for AppointmentError {
    fn code(&self) -> &'static str {
        match self {
            AppointmentError::AlreadyScheduled => "appointment_already_scheduled",
            AppointmentError::NotFound => "appointment_not_found",
            AppointmentError::EndNotAfterStart => "appointment_end_not_after_start",
            AppointmentError::TooLong => "appointment_too_long",
            AppointmentError::Cancelled => "appointment_cancelled",
            AppointmentError::AlreadyCheckedIn => "appointment_already_checked_in",
            AppointmentError::Unchanged => "appointment_unchanged",
        }
    }

    fn kind(&self) -> RejectionKind {
        match self {
            AppointmentError::NotFound => RejectionKind::NotFound,
            AppointmentError::EndNotAfterStart | AppointmentError::TooLong => {
                RejectionKind::Invalid { field: "end" }
            }
            AppointmentError::AlreadyScheduled
            | AppointmentError::Cancelled
            | AppointmentError::AlreadyCheckedIn
            | AppointmentError::Unchanged => RejectionKind::Conflict,
        }
    }
}
