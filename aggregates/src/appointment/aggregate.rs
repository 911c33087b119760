//! The appointment's state and rules: [`Appointment::decide`] holds the rules.

use chrono::{DateTime, TimeDelta, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use super::{AppointmentCommand, AppointmentError, AppointmentEvent};
use crate::types::{PatientId, UserId};

/// The longest slot accepted. Consultations and day procedures fit within a day; a longer slot
/// is almost always a mistyped end date, and stays are admissions, not appointments.
pub const MAX_APPOINTMENT_DURATION: TimeDelta = TimeDelta::hours(24);

/// Where an appointment is in its life; see the state machine in the [module docs](super).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppointmentStatus {
    /// Booked; the patient is expected.
    Scheduled,
    /// The patient arrived.
    CheckedIn,
    /// Called off.
    Cancelled,
}

/// One appointment; `None` until scheduled.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Appointment {
    booking: Option<Booking>,
}

/// What the rules need to know about a scheduled appointment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Booking {
    patient: PatientId,
    clinician: UserId,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    status: AppointmentStatus,
}

impl Appointment {
    /// Where the appointment is in its life; `None` if it was never scheduled.
    pub fn status(&self) -> Option<AppointmentStatus> {
        self.booking.as_ref().map(|booking| booking.status)
    }

    /// The current slot, `(start, end)`, once scheduled.
    pub fn slot(&self) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        self.booking
            .as_ref()
            .map(|booking| (booking.start, booking.end))
    }

    /// The business rules: the single event a command records, or why it is refused.
    pub fn decide(
        &self,
        command: AppointmentCommand,
    ) -> Result<AppointmentEvent, AppointmentError> {
        match command {
            AppointmentCommand::Schedule {
                patient,
                clinician,
                start,
                end,
                reason,
                by,
                at,
            } => {
                if self.booking.is_some() {
                    return Err(AppointmentError::AlreadyScheduled);
                }
                check_slot(start, end)?;
                Ok(AppointmentEvent::AppointmentScheduled {
                    patient,
                    clinician,
                    start,
                    end,
                    reason,
                    by,
                    at,
                })
            }
            AppointmentCommand::Reschedule { start, end, by, at } => {
                let booking = self.still_scheduled()?;
                check_slot(start, end)?;
                if (start, end) == (booking.start, booking.end) {
                    return Err(AppointmentError::Unchanged);
                }
                Ok(AppointmentEvent::AppointmentRescheduled {
                    patient: booking.patient.clone(),
                    clinician: booking.clinician.clone(),
                    start,
                    end,
                    previous_start: booking.start,
                    previous_end: booking.end,
                    by,
                    at,
                })
            }
            AppointmentCommand::CheckIn { by, at } => {
                let booking = self.still_scheduled()?;
                Ok(AppointmentEvent::PatientCheckedIn {
                    patient: booking.patient.clone(),
                    clinician: booking.clinician.clone(),
                    by,
                    at,
                })
            }
            AppointmentCommand::Cancel { reason, by, at } => {
                let booking = self.still_scheduled()?;
                Ok(AppointmentEvent::AppointmentCancelled {
                    patient: booking.patient.clone(),
                    clinician: booking.clinician.clone(),
                    reason,
                    by,
                    at,
                })
            }
        }
    }

    /// The booking of an appointment that is still `Scheduled`, or why it is not.
    fn still_scheduled(&self) -> Result<&Booking, AppointmentError> {
        let booking = self.booking.as_ref().ok_or(AppointmentError::NotFound)?;
        match booking.status {
            AppointmentStatus::Scheduled => Ok(booking),
            AppointmentStatus::CheckedIn => Err(AppointmentError::AlreadyCheckedIn),
            AppointmentStatus::Cancelled => Err(AppointmentError::Cancelled),
        }
    }
}

/// A slot must end after it starts, within [`MAX_APPOINTMENT_DURATION`].
fn check_slot(start: DateTime<Utc>, end: DateTime<Utc>) -> Result<(), AppointmentError> {
    if end <= start {
        return Err(AppointmentError::EndNotAfterStart);
    }
    if end - start > MAX_APPOINTMENT_DURATION {
        return Err(AppointmentError::TooLong);
    }
    Ok(())
}

impl Aggregate for Appointment {
    const TYPE: &'static str = "appointment";
    type Command = AppointmentCommand;
    type Event = AppointmentEvent;
    type Error = AppointmentError;
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
        if let AppointmentEvent::AppointmentScheduled {
            patient,
            clinician,
            start,
            end,
            ..
        } = event
        {
            self.booking = Some(Booking {
                patient,
                clinician,
                start,
                end,
                status: AppointmentStatus::Scheduled,
            });
            return;
        }
        // Every other event follows `AppointmentScheduled` in a well-formed stream.
        let Some(booking) = self.booking.as_mut() else {
            return;
        };
        match event {
            AppointmentEvent::AppointmentScheduled { .. } => {}
            AppointmentEvent::AppointmentRescheduled { start, end, .. } => {
                booking.start = start;
                booking.end = end;
            }
            AppointmentEvent::PatientCheckedIn { .. } => {
                booking.status = AppointmentStatus::CheckedIn;
            }
            AppointmentEvent::AppointmentCancelled { .. } => {
                booking.status = AppointmentStatus::Cancelled;
            }
        }
    }
}
