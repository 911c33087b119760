//! Given/when/then specifications of the notification's rules, one per rule.

use cqrs_es::test::{AggregateTestExecutor, TestFramework};
use cqrs_es::DomainEvent;
use uuid::Uuid;

use super::*;
use crate::rejection::{Rejection, RejectionKind};
use crate::test_support::{at, patient, text, user};

fn given(events: Vec<NotificationEvent>) -> AggregateTestExecutor<Notification> {
    TestFramework::<Notification>::with(()).given(events)
}

fn lab_result() -> NotificationContent {
    NotificationContent::LabResult {
        patient: patient("mrn-5"),
        test: text("Potassium"),
        summary: text("6.4 mmol/L, critical"),
        urgent: true,
    }
}

fn sent() -> NotificationEvent {
    NotificationEvent::NotificationSent {
        recipient: user("dr-1"),
        content: lab_result(),
        by: user("lab-system"),
        at: at(0),
    }
}

fn read() -> NotificationEvent {
    NotificationEvent::NotificationRead {
        recipient: user("dr-1"),
        by: user("dr-1"),
        at: at(5),
    }
}

fn mark_read_by(reader: &str) -> NotificationCommand {
    NotificationCommand::MarkRead {
        by: user(reader),
        at: at(7),
    }
}

#[tokio::test]
async fn sending_a_notification_records_its_recipient_and_content() {
    given(vec![])
        .when_async(NotificationCommand::Send {
            recipient: user("dr-1"),
            content: lab_result(),
            by: user("lab-system"),
            at: at(0),
        })
        .await
        .then_expect_events(vec![sent()]);
}

#[tokio::test]
async fn sending_a_notification_twice_is_rejected() {
    given(vec![sent()])
        .when_async(NotificationCommand::Send {
            recipient: user("dr-2"),
            content: lab_result(),
            by: user("lab-system"),
            at: at(1),
        })
        .await
        .then_expect_error(NotificationError::AlreadySent);
}

#[tokio::test]
async fn the_recipient_marking_it_read_records_the_read() {
    given(vec![sent()])
        .when_async(mark_read_by("dr-1"))
        .await
        .then_expect_events(vec![NotificationEvent::NotificationRead {
            recipient: user("dr-1"),
            by: user("dr-1"),
            at: at(7),
        }]);
}

#[tokio::test]
async fn marking_someone_elses_notification_read_is_forbidden() {
    given(vec![sent()])
        .when_async(mark_read_by("nurse-1"))
        .await
        .then_expect_error(NotificationError::NotRecipient);
}

#[tokio::test]
async fn marking_someone_elses_read_notification_is_forbidden_without_revealing_it_was_read() {
    given(vec![sent(), read()])
        .when_async(mark_read_by("nurse-1"))
        .await
        .then_expect_error(NotificationError::NotRecipient);
}

#[tokio::test]
async fn marking_a_notification_read_twice_is_rejected() {
    given(vec![sent(), read()])
        .when_async(mark_read_by("dr-1"))
        .await
        .then_expect_error(NotificationError::AlreadyRead);
}

#[tokio::test]
async fn marking_a_notification_that_was_never_sent_read_is_rejected() {
    given(vec![])
        .when_async(mark_read_by("dr-1"))
        .await
        .then_expect_error(NotificationError::NotFound);
}

#[test]
fn replaying_events_rebuilds_the_recipient_and_read_flag() {
    let mut notification = Notification::default();
    cqrs_es::Aggregate::apply(&mut notification, sent());
    assert_eq!(notification.recipient(), Some(&user("dr-1")));
    assert!(!notification.is_read());
    cqrs_es::Aggregate::apply(&mut notification, read());
    assert!(notification.is_read());
}

#[test]
fn content_is_tagged_by_kind_in_snake_case() {
    let task = NotificationContent::TaskAssigned {
        title: text("Review referral"),
        case_id: Some(Uuid::nil()),
    };
    assert_eq!(
        serde_json::to_value(&task).unwrap(),
        serde_json::json!({
            "kind": "task_assigned",
            "title": "Review referral",
            "case_id": "00000000-0000-0000-0000-000000000000"
        })
    );
    let auth = NotificationContent::PriorAuthorization {
        patient: patient("mrn-5"),
        request: text("MRI lumbar spine"),
        status: PriorAuthStatus::InfoRequested,
    };
    let json = serde_json::to_value(&auth).unwrap();
    assert_eq!(json["kind"], "prior_authorization");
    assert_eq!(json["status"], "info_requested");
    assert_eq!(
        serde_json::from_value::<NotificationContent>(json).unwrap(),
        auth
    );
}

#[test]
fn deserializing_content_validates_its_text() {
    let raw = serde_json::json!({"kind": "task_assigned", "title": "  ", "case_id": null});
    let error = serde_json::from_value::<NotificationContent>(raw).unwrap_err();
    assert!(error.to_string().contains("must not be empty"), "{error}");
}

#[test]
fn only_lab_results_and_prior_authorizations_concern_a_patient() {
    let task = NotificationContent::TaskAssigned {
        title: text("Sign discharge letter"),
        case_id: None,
    };
    assert_eq!(task.patient(), None);
    assert_eq!(lab_result().patient(), Some(&patient("mrn-5")));
}

#[test]
fn every_event_is_stored_under_its_event_type_with_the_recipient() {
    for event in [sent(), read()] {
        let json = serde_json::to_value(&event).unwrap();
        let object = json.as_object().unwrap();
        assert_eq!(object.len(), 1);
        assert_eq!(object[&event.event_type()]["recipient"], "dr-1");
        assert_eq!(event.event_version(), "1.0");
        assert_eq!(
            serde_json::from_value::<NotificationEvent>(json).unwrap(),
            event
        );
    }
}

#[test]
fn every_error_has_a_stable_code_and_kind() {
    let expected = [
        (
            NotificationError::AlreadySent,
            "notification_already_sent",
            RejectionKind::Conflict,
        ),
        (
            NotificationError::NotFound,
            "notification_not_found",
            RejectionKind::NotFound,
        ),
        (
            NotificationError::NotRecipient,
            "notification_not_recipient",
            RejectionKind::Forbidden,
        ),
        (
            NotificationError::AlreadyRead,
            "notification_already_read",
            RejectionKind::Conflict,
        ),
    ];
    for (error, code, kind) in expected {
        assert_eq!(error.code(), code);
        assert_eq!(error.kind(), kind);
    }
}
