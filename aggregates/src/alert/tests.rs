//! Given/when/then specifications of the alert's rules, one per rule.

use cqrs_es::test::TestFramework;
use cqrs_es::DomainEvent;

use super::*;
use crate::rejection::{Rejection, RejectionKind};
use crate::test_support::{at, patient, text, user};

fn given(events: Vec<AlertEvent>) -> cqrs_es::test::AggregateTestExecutor<Alert> {
    TestFramework::<Alert>::with(()).given(events)
}

fn raised() -> AlertEvent {
    AlertEvent::AlertRaised {
        severity: Severity::High,
        message: text("SpO2 dropping in bed 4"),
        department: Some(text("ICU")),
        patient: Some(patient("mrn-1")),
        by: user("monitor"),
        at: at(0),
    }
}

fn acknowledged() -> AlertEvent {
    AlertEvent::AlertAcknowledged {
        patient: Some(patient("mrn-1")),
        by: user("nurse-1"),
        at: at(1),
    }
}

fn escalated(level: u8) -> AlertEvent {
    AlertEvent::AlertEscalated {
        patient: Some(patient("mrn-1")),
        level,
        reason: text("no response"),
        by: user("nurse-1"),
        at: at(i64::from(level) + 1),
    }
}

fn resolved() -> AlertEvent {
    AlertEvent::AlertResolved {
        patient: Some(patient("mrn-1")),
        note: text("oxygen increased, stable"),
        by: user("dr-1"),
        at: at(30),
    }
}

fn raise() -> AlertCommand {
    AlertCommand::Raise {
        severity: Severity::High,
        message: text("SpO2 dropping in bed 4"),
        department: Some(text("ICU")),
        patient: Some(patient("mrn-1")),
        by: user("monitor"),
        at: at(0),
    }
}

fn acknowledge() -> AlertCommand {
    AlertCommand::Acknowledge {
        by: user("nurse-2"),
        at: at(40),
    }
}

fn escalate() -> AlertCommand {
    escalate_if(EscalationGuard::Always)
}

fn escalate_if(guard: EscalationGuard) -> AlertCommand {
    AlertCommand::Escalate {
        reason: text("needs a physician"),
        guard,
        by: user("nurse-2"),
        at: at(40),
    }
}

fn resolve() -> AlertCommand {
    AlertCommand::Resolve {
        note: text("false alarm, probe reseated"),
        by: user("nurse-2"),
        at: at(40),
    }
}

#[tokio::test]
async fn raising_an_alert_records_what_who_and_when() {
    given(vec![])
        .when_async(raise())
        .await
        .then_expect_events(vec![raised()]);
}

#[tokio::test]
async fn an_alert_may_be_raised_without_patient_or_department() {
    given(vec![])
        .when_async(AlertCommand::Raise {
            severity: Severity::Low,
            message: text("printer out of labels"),
            department: None,
            patient: None,
            by: user("operator-1"),
            at: at(0),
        })
        .await
        .then_expect_events(vec![AlertEvent::AlertRaised {
            severity: Severity::Low,
            message: text("printer out of labels"),
            department: None,
            patient: None,
            by: user("operator-1"),
            at: at(0),
        }]);
}

#[tokio::test]
async fn raising_an_alert_twice_is_rejected() {
    given(vec![raised()])
        .when_async(raise())
        .await
        .then_expect_error(AlertError::AlreadyRaised);
}

#[tokio::test]
async fn raising_a_resolved_alert_again_is_rejected_as_already_raised() {
    given(vec![raised(), resolved()])
        .when_async(raise())
        .await
        .then_expect_error(AlertError::AlreadyRaised);
}

#[tokio::test]
async fn acknowledging_a_raised_alert_records_the_owner_and_the_patient() {
    given(vec![raised()])
        .when_async(acknowledge())
        .await
        .then_expect_events(vec![AlertEvent::AlertAcknowledged {
            patient: Some(patient("mrn-1")),
            by: user("nurse-2"),
            at: at(40),
        }]);
}

#[tokio::test]
async fn acknowledging_an_escalated_alert_is_allowed() {
    given(vec![raised(), escalated(1)])
        .when_async(acknowledge())
        .await
        .then_expect_events(vec![AlertEvent::AlertAcknowledged {
            patient: Some(patient("mrn-1")),
            by: user("nurse-2"),
            at: at(40),
        }]);
}

#[tokio::test]
async fn acknowledging_an_alert_that_was_never_raised_is_rejected() {
    given(vec![])
        .when_async(acknowledge())
        .await
        .then_expect_error(AlertError::NotFound);
}

#[tokio::test]
async fn acknowledging_an_acknowledged_alert_is_rejected() {
    given(vec![raised(), acknowledged()])
        .when_async(acknowledge())
        .await
        .then_expect_error(AlertError::AlreadyAcknowledged);
}

#[tokio::test]
async fn acknowledging_a_resolved_alert_is_rejected() {
    given(vec![raised(), resolved()])
        .when_async(acknowledge())
        .await
        .then_expect_error(AlertError::AlreadyResolved);
}

#[tokio::test]
async fn the_first_escalation_of_a_raised_alert_is_level_one() {
    given(vec![raised()])
        .when_async(escalate())
        .await
        .then_expect_events(vec![AlertEvent::AlertEscalated {
            patient: Some(patient("mrn-1")),
            level: 1,
            reason: text("needs a physician"),
            by: user("nurse-2"),
            at: at(40),
        }]);
}

#[tokio::test]
async fn escalating_an_acknowledged_alert_raises_its_level() {
    given(vec![raised(), escalated(1), acknowledged()])
        .when_async(escalate())
        .await
        .then_expect_events(vec![AlertEvent::AlertEscalated {
            patient: Some(patient("mrn-1")),
            level: 2,
            reason: text("needs a physician"),
            by: user("nurse-2"),
            at: at(40),
        }]);
}

#[tokio::test]
async fn escalating_to_the_maximum_level_is_allowed() {
    given(vec![
        raised(),
        escalated(1),
        escalated(2),
        escalated(3),
        escalated(4),
    ])
    .when_async(escalate())
    .await
    .then_expect_events(vec![AlertEvent::AlertEscalated {
        patient: Some(patient("mrn-1")),
        level: MAX_ESCALATION_LEVEL,
        reason: text("needs a physician"),
        by: user("nurse-2"),
        at: at(40),
    }]);
}

#[tokio::test]
async fn escalating_beyond_the_maximum_level_is_rejected() {
    given(vec![
        raised(),
        escalated(1),
        escalated(2),
        escalated(3),
        escalated(4),
        escalated(5),
    ])
    .when_async(escalate())
    .await
    .then_expect_error(AlertError::MaxEscalationReached);
}

#[tokio::test]
async fn escalating_an_alert_that_was_never_raised_is_rejected() {
    given(vec![])
        .when_async(escalate())
        .await
        .then_expect_error(AlertError::NotFound);
}

#[tokio::test]
async fn escalating_a_resolved_alert_is_rejected() {
    given(vec![raised(), resolved()])
        .when_async(escalate())
        .await
        .then_expect_error(AlertError::AlreadyResolved);
}

#[tokio::test]
async fn an_escalation_from_the_level_the_alert_is_at_applies() {
    given(vec![raised(), escalated(1)])
        .when_async(escalate_if(EscalationGuard::FromLevel(1)))
        .await
        .then_expect_events(vec![AlertEvent::AlertEscalated {
            patient: Some(patient("mrn-1")),
            level: 2,
            reason: text("needs a physician"),
            by: user("nurse-2"),
            at: at(40),
        }]);
}

#[tokio::test]
async fn an_escalation_decided_at_a_level_the_alert_has_left_is_refused() {
    // Two nurses saw level 1 and pressed "escalate": the second finds level 2.
    given(vec![raised(), escalated(1), escalated(2)])
        .when_async(escalate_if(EscalationGuard::FromLevel(1)))
        .await
        .then_expect_error(AlertError::EscalationLevelChanged);
}

#[tokio::test]
async fn a_deadline_escalation_of_an_unowned_alert_at_its_level_applies() {
    given(vec![raised()])
        .when_async(escalate_if(EscalationGuard::Unacknowledged {
            from_level: 0,
        }))
        .await
        .then_expect_events(vec![AlertEvent::AlertEscalated {
            patient: Some(patient("mrn-1")),
            level: 1,
            reason: text("needs a physician"),
            by: user("nurse-2"),
            at: at(40),
        }]);
}

#[tokio::test]
async fn a_deadline_escalation_is_cancelled_by_an_acknowledgement() {
    given(vec![raised(), acknowledged()])
        .when_async(escalate_if(EscalationGuard::Unacknowledged {
            from_level: 0,
        }))
        .await
        .then_expect_error(AlertError::AlreadyAcknowledged);
}

#[tokio::test]
async fn a_deadline_escalation_is_cancelled_by_an_escalation_meanwhile() {
    given(vec![raised(), escalated(1)])
        .when_async(escalate_if(EscalationGuard::Unacknowledged {
            from_level: 0,
        }))
        .await
        .then_expect_error(AlertError::EscalationLevelChanged);
}

#[tokio::test]
async fn an_unguarded_escalation_applies_at_any_level_and_to_an_owned_alert() {
    given(vec![raised(), escalated(1), escalated(2), acknowledged()])
        .when_async(escalate())
        .await
        .then_expect_events(vec![AlertEvent::AlertEscalated {
            patient: Some(patient("mrn-1")),
            level: 3,
            reason: text("needs a physician"),
            by: user("nurse-2"),
            at: at(40),
        }]);
}

#[tokio::test]
async fn resolving_a_raised_alert_records_the_note() {
    given(vec![raised()])
        .when_async(resolve())
        .await
        .then_expect_events(vec![AlertEvent::AlertResolved {
            patient: Some(patient("mrn-1")),
            note: text("false alarm, probe reseated"),
            by: user("nurse-2"),
            at: at(40),
        }]);
}

#[tokio::test]
async fn resolving_an_acknowledged_alert_is_allowed() {
    given(vec![raised(), acknowledged(), escalated(1)])
        .when_async(resolve())
        .await
        .then_expect_events(vec![AlertEvent::AlertResolved {
            patient: Some(patient("mrn-1")),
            note: text("false alarm, probe reseated"),
            by: user("nurse-2"),
            at: at(40),
        }]);
}

#[tokio::test]
async fn resolving_an_alert_that_was_never_raised_is_rejected() {
    given(vec![])
        .when_async(resolve())
        .await
        .then_expect_error(AlertError::NotFound);
}

#[tokio::test]
async fn resolving_a_resolved_alert_is_rejected() {
    given(vec![raised(), resolved()])
        .when_async(resolve())
        .await
        .then_expect_error(AlertError::AlreadyResolved);
}

#[test]
fn replaying_events_rebuilds_status_level_and_patient() {
    let mut alert = Alert::default();
    for event in [raised(), escalated(1), acknowledged(), escalated(2)] {
        cqrs_es::Aggregate::apply(&mut alert, event);
    }
    assert_eq!(alert.status(), Some(AlertStatus::Acknowledged));
    assert_eq!(alert.escalation_level(), 2);
    assert_eq!(alert.patient(), Some(&patient("mrn-1")));
}

#[test]
fn severities_are_ordered_from_low_to_critical() {
    assert!(Severity::Low < Severity::Medium);
    assert!(Severity::Medium < Severity::High);
    assert!(Severity::High < Severity::Critical);
    assert_eq!(
        serde_json::to_value(Severity::Critical).unwrap(),
        "critical"
    );
}

#[test]
fn every_event_is_stored_under_its_event_type() {
    for event in [raised(), acknowledged(), escalated(1), resolved()] {
        let json = serde_json::to_value(&event).unwrap();
        let object = json.as_object().unwrap();
        assert_eq!(object.len(), 1);
        assert!(object.contains_key(&event.event_type()), "{json}");
        assert_eq!(event.event_version(), "1.0");
        assert_eq!(serde_json::from_value::<AlertEvent>(json).unwrap(), event);
    }
}

#[test]
fn every_error_has_a_stable_code_and_kind() {
    let expected = [
        (
            AlertError::AlreadyRaised,
            "alert_already_raised",
            RejectionKind::Conflict,
        ),
        (
            AlertError::NotFound,
            "alert_not_found",
            RejectionKind::NotFound,
        ),
        (
            AlertError::AlreadyAcknowledged,
            "alert_already_acknowledged",
            RejectionKind::Conflict,
        ),
        (
            AlertError::AlreadyResolved,
            "alert_already_resolved",
            RejectionKind::Conflict,
        ),
        (
            AlertError::MaxEscalationReached,
            "alert_max_escalation_reached",
            RejectionKind::Conflict,
        ),
        (
            AlertError::EscalationLevelChanged,
            "alert_escalation_level_changed",
            RejectionKind::Conflict,
        ),
    ];
    for (error, code, kind) in expected {
        assert_eq!(error.code(), code);
        assert_eq!(error.kind(), kind);
    }
}
