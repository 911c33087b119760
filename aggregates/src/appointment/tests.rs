//! Given/when/then specifications of the appointment's rules, one per rule.

use chrono::TimeDelta;
use cqrs_es::test::{AggregateTestExecutor, TestFramework};
use cqrs_es::DomainEvent;

use super::*;
use crate::rejection::{Rejection, RejectionKind};
use crate::test_support::{at, patient, text, user};

fn given(events: Vec<AppointmentEvent>) -> AggregateTestExecutor<Appointment> {
    TestFramework::<Appointment>::with(()).given(events)
}

fn scheduled() -> AppointmentEvent {
    AppointmentEvent::AppointmentScheduled {
        patient: patient("mrn-9"),
        clinician: user("dr-1"),
        start: at(60),
        end: at(90),
        reason: Some(text("follow-up")),
        by: user("reception-1"),
        at: at(0),
    }
}

fn checked_in() -> AppointmentEvent {
    AppointmentEvent::PatientCheckedIn {
        patient: patient("mrn-9"),
        clinician: user("dr-1"),
        by: user("reception-1"),
        at: at(55),
    }
}

fn cancelled() -> AppointmentEvent {
    AppointmentEvent::AppointmentCancelled {
        patient: patient("mrn-9"),
        clinician: user("dr-1"),
        reason: text("patient unwell"),
        by: user("reception-1"),
        at: at(10),
    }
}

fn schedule(start: i64, end: i64) -> AppointmentCommand {
    AppointmentCommand::Schedule {
        patient: patient("mrn-9"),
        clinician: user("dr-1"),
        start: at(start),
        end: at(end),
        reason: Some(text("follow-up")),
        by: user("reception-1"),
        at: at(0),
    }
}

fn reschedule(start: i64, end: i64) -> AppointmentCommand {
    AppointmentCommand::Reschedule {
        start: at(start),
        end: at(end),
        by: user("reception-2"),
        at: at(20),
    }
}

fn check_in() -> AppointmentCommand {
    AppointmentCommand::CheckIn {
        by: user("reception-2"),
        at: at(58),
    }
}

fn cancel() -> AppointmentCommand {
    AppointmentCommand::Cancel {
        reason: text("clinician off sick"),
        by: user("reception-2"),
        at: at(20),
    }
}

const DAY_IN_MINUTES: i64 = 24 * 60;

#[tokio::test]
async fn scheduling_an_appointment_records_the_slot_and_the_reason() {
    given(vec![])
        .when_async(schedule(60, 90))
        .await
        .then_expect_events(vec![scheduled()]);
}

#[tokio::test]
async fn an_appointment_may_be_scheduled_without_a_reason() {
    given(vec![])
        .when_async(AppointmentCommand::Schedule {
            patient: patient("mrn-9"),
            clinician: user("dr-1"),
            start: at(60),
            end: at(90),
            reason: None,
            by: user("reception-1"),
            at: at(0),
        })
        .await
        .then_expect_events(vec![AppointmentEvent::AppointmentScheduled {
            patient: patient("mrn-9"),
            clinician: user("dr-1"),
            start: at(60),
            end: at(90),
            reason: None,
            by: user("reception-1"),
            at: at(0),
        }]);
}

#[tokio::test]
async fn scheduling_an_appointment_twice_is_rejected() {
    given(vec![scheduled()])
        .when_async(schedule(60, 90))
        .await
        .then_expect_error(AppointmentError::AlreadyScheduled);
}

#[tokio::test]
async fn scheduling_a_slot_that_ends_when_it_starts_is_rejected() {
    given(vec![])
        .when_async(schedule(60, 60))
        .await
        .then_expect_error(AppointmentError::EndNotAfterStart);
}

#[tokio::test]
async fn scheduling_a_slot_that_ends_before_it_starts_is_rejected() {
    given(vec![])
        .when_async(schedule(60, 30))
        .await
        .then_expect_error(AppointmentError::EndNotAfterStart);
}

#[tokio::test]
async fn scheduling_a_slot_of_exactly_24_hours_is_allowed() {
    let result = given(vec![])
        .when_async(schedule(0, DAY_IN_MINUTES))
        .await
        .inspect_result();
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(MAX_APPOINTMENT_DURATION, TimeDelta::minutes(DAY_IN_MINUTES));
}

#[tokio::test]
async fn scheduling_a_slot_longer_than_24_hours_is_rejected() {
    given(vec![])
        .when_async(schedule(0, DAY_IN_MINUTES + 1))
        .await
        .then_expect_error(AppointmentError::TooLong);
}

#[tokio::test]
async fn rescheduling_records_the_new_and_previous_slot() {
    given(vec![scheduled()])
        .when_async(reschedule(120, 150))
        .await
        .then_expect_events(vec![AppointmentEvent::AppointmentRescheduled {
            patient: patient("mrn-9"),
            clinician: user("dr-1"),
            start: at(120),
            end: at(150),
            previous_start: at(60),
            previous_end: at(90),
            by: user("reception-2"),
            at: at(20),
        }]);
}

#[tokio::test]
async fn rescheduling_twice_starts_from_the_latest_slot() {
    let moved = AppointmentEvent::AppointmentRescheduled {
        patient: patient("mrn-9"),
        clinician: user("dr-1"),
        start: at(120),
        end: at(150),
        previous_start: at(60),
        previous_end: at(90),
        by: user("reception-2"),
        at: at(20),
    };
    given(vec![scheduled(), moved])
        .when_async(reschedule(60, 90))
        .await
        .then_expect_events(vec![AppointmentEvent::AppointmentRescheduled {
            patient: patient("mrn-9"),
            clinician: user("dr-1"),
            start: at(60),
            end: at(90),
            previous_start: at(120),
            previous_end: at(150),
            by: user("reception-2"),
            at: at(20),
        }]);
}

#[tokio::test]
async fn rescheduling_to_the_same_slot_is_rejected() {
    given(vec![scheduled()])
        .when_async(reschedule(60, 90))
        .await
        .then_expect_error(AppointmentError::Unchanged);
}

#[tokio::test]
async fn rescheduling_to_a_slot_that_ends_before_it_starts_is_rejected() {
    given(vec![scheduled()])
        .when_async(reschedule(150, 120))
        .await
        .then_expect_error(AppointmentError::EndNotAfterStart);
}

#[tokio::test]
async fn rescheduling_to_a_slot_longer_than_24_hours_is_rejected() {
    given(vec![scheduled()])
        .when_async(reschedule(60, 60 + DAY_IN_MINUTES + 1))
        .await
        .then_expect_error(AppointmentError::TooLong);
}

#[tokio::test]
async fn rescheduling_an_appointment_that_was_never_scheduled_is_rejected() {
    given(vec![])
        .when_async(reschedule(120, 150))
        .await
        .then_expect_error(AppointmentError::NotFound);
}

#[tokio::test]
async fn rescheduling_a_cancelled_appointment_is_rejected() {
    given(vec![scheduled(), cancelled()])
        .when_async(reschedule(120, 150))
        .await
        .then_expect_error(AppointmentError::Cancelled);
}

#[tokio::test]
async fn rescheduling_after_check_in_is_rejected() {
    given(vec![scheduled(), checked_in()])
        .when_async(reschedule(120, 150))
        .await
        .then_expect_error(AppointmentError::AlreadyCheckedIn);
}

#[tokio::test]
async fn checking_in_records_who_arrived_for_whom() {
    given(vec![scheduled()])
        .when_async(check_in())
        .await
        .then_expect_events(vec![AppointmentEvent::PatientCheckedIn {
            patient: patient("mrn-9"),
            clinician: user("dr-1"),
            by: user("reception-2"),
            at: at(58),
        }]);
}

#[tokio::test]
async fn checking_in_twice_is_rejected() {
    given(vec![scheduled(), checked_in()])
        .when_async(check_in())
        .await
        .then_expect_error(AppointmentError::AlreadyCheckedIn);
}

#[tokio::test]
async fn checking_in_to_a_cancelled_appointment_is_rejected() {
    given(vec![scheduled(), cancelled()])
        .when_async(check_in())
        .await
        .then_expect_error(AppointmentError::Cancelled);
}

#[tokio::test]
async fn checking_in_to_an_appointment_that_was_never_scheduled_is_rejected() {
    given(vec![])
        .when_async(check_in())
        .await
        .then_expect_error(AppointmentError::NotFound);
}

#[tokio::test]
async fn cancelling_records_the_reason() {
    given(vec![scheduled()])
        .when_async(cancel())
        .await
        .then_expect_events(vec![AppointmentEvent::AppointmentCancelled {
            patient: patient("mrn-9"),
            clinician: user("dr-1"),
            reason: text("clinician off sick"),
            by: user("reception-2"),
            at: at(20),
        }]);
}

#[tokio::test]
async fn cancelling_twice_is_rejected() {
    given(vec![scheduled(), cancelled()])
        .when_async(cancel())
        .await
        .then_expect_error(AppointmentError::Cancelled);
}

#[tokio::test]
async fn cancelling_after_check_in_is_rejected() {
    given(vec![scheduled(), checked_in()])
        .when_async(cancel())
        .await
        .then_expect_error(AppointmentError::AlreadyCheckedIn);
}

#[tokio::test]
async fn cancelling_an_appointment_that_was_never_scheduled_is_rejected() {
    given(vec![])
        .when_async(cancel())
        .await
        .then_expect_error(AppointmentError::NotFound);
}

#[test]
fn replaying_events_rebuilds_the_status_and_slot() {
    let mut appointment = Appointment::default();
    assert_eq!(appointment.status(), None);
    cqrs_es::Aggregate::apply(&mut appointment, scheduled());
    assert_eq!(appointment.status(), Some(AppointmentStatus::Scheduled));
    assert_eq!(appointment.slot(), Some((at(60), at(90))));
    cqrs_es::Aggregate::apply(&mut appointment, checked_in());
    assert_eq!(appointment.status(), Some(AppointmentStatus::CheckedIn));
}

#[test]
fn every_event_is_stored_under_its_event_type_with_patient_and_clinician() {
    let rescheduled = AppointmentEvent::AppointmentRescheduled {
        patient: patient("mrn-9"),
        clinician: user("dr-1"),
        start: at(120),
        end: at(150),
        previous_start: at(60),
        previous_end: at(90),
        by: user("reception-2"),
        at: at(20),
    };
    for event in [scheduled(), rescheduled, checked_in(), cancelled()] {
        let json = serde_json::to_value(&event).unwrap();
        let object = json.as_object().unwrap();
        assert_eq!(object.len(), 1);
        let fields = &object[&event.event_type()];
        assert_eq!(fields["patient"], "mrn-9");
        assert_eq!(fields["clinician"], "dr-1");
        assert_eq!(event.event_version(), "1.0");
        assert_eq!(
            serde_json::from_value::<AppointmentEvent>(json).unwrap(),
            event
        );
    }
}

#[test]
fn every_error_has_a_stable_code_and_kind() {
    let expected = [
        (
            AppointmentError::AlreadyScheduled,
            "appointment_already_scheduled",
            RejectionKind::Conflict,
        ),
        (
            AppointmentError::NotFound,
            "appointment_not_found",
            RejectionKind::NotFound,
        ),
        (
            AppointmentError::EndNotAfterStart,
            "appointment_end_not_after_start",
            RejectionKind::Invalid { field: "end" },
        ),
        (
            AppointmentError::TooLong,
            "appointment_too_long",
            RejectionKind::Invalid { field: "end" },
        ),
        (
            AppointmentError::Cancelled,
            "appointment_cancelled",
            RejectionKind::Conflict,
        ),
        (
            AppointmentError::AlreadyCheckedIn,
            "appointment_already_checked_in",
            RejectionKind::Conflict,
        ),
        (
            AppointmentError::Unchanged,
            "appointment_unchanged",
            RejectionKind::Conflict,
        ),
    ];
    for (error, code, kind) in expected {
        assert_eq!(error.code(), code);
        assert_eq!(error.kind(), kind);
    }
}
