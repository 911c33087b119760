//! The `Appointment` aggregate: one booked slot between a patient and a clinician.
//!
//! # State machine
//!
//! | command \ status | never scheduled | `Scheduled` | `CheckedIn` | `Cancelled` |
//! |---|---|---|---|---|
//! | `Schedule` | `AppointmentScheduled` → `Scheduled` | `AlreadyScheduled` | `AlreadyScheduled` | `AlreadyScheduled` |
//! | `Reschedule` | `NotFound` | `AppointmentRescheduled` (stays `Scheduled`) | `AlreadyCheckedIn` | `Cancelled` |
//! | `CheckIn` | `NotFound` | `PatientCheckedIn` → `CheckedIn` | `AlreadyCheckedIn` | `Cancelled` |
//! | `Cancel` | `NotFound` | `AppointmentCancelled` → `Cancelled` | `AlreadyCheckedIn` | `Cancelled` |
//!
//! Times: `end` must be after `start` (`EndNotAfterStart`) and at most
//! [`MAX_APPOINTMENT_DURATION`] later (`TooLong`); rescheduling to the very same times is
//! `Unchanged`, so the record holds no empty moves. Times in the past are accepted on
//! purpose: clinics back-enter walk-ins and visits booked on paper.

mod aggregate;
mod commands;
mod errors;
mod events;
#[cfg(test)]
mod tests;

pub use aggregate::{Appointment, AppointmentStatus, MAX_APPOINTMENT_DURATION};
pub use commands::AppointmentCommand;
pub use errors::AppointmentError;
pub use events::AppointmentEvent;
