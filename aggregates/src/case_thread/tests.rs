//! Given/when/then specifications of the case thread's rules, one per rule.

use cqrs_es::test::{AggregateTestExecutor, TestFramework};
use cqrs_es::DomainEvent;

use super::*;
use crate::rejection::{Rejection, RejectionKind};
use crate::test_support::{at, patient, text, user};

fn given(events: Vec<CaseEvent>) -> AggregateTestExecutor<CaseThread> {
    TestFramework::<CaseThread>::with(()).given(events)
}

fn opened() -> CaseEvent {
    CaseEvent::CaseOpened {
        patient: patient("mrn-7"),
        title: text("Fever for three days"),
        assignee: Some(user("asha-1")),
        by: user("asha-1"),
        at: at(0),
    }
}

fn opened_unassigned() -> CaseEvent {
    CaseEvent::CaseOpened {
        patient: patient("mrn-7"),
        title: text("Fever for three days"),
        assignee: None,
        by: user("chw-1"),
        at: at(0),
    }
}

fn assigned_to(assignee: &str, previous: Option<&str>) -> CaseEvent {
    CaseEvent::CaseAssigned {
        patient: patient("mrn-7"),
        assignee: user(assignee),
        previous: previous.map(user),
        by: user("admin-1"),
        at: at(1),
    }
}

fn moved(from: CaseStatus, to: CaseStatus) -> CaseEvent {
    CaseEvent::CaseStatusChanged {
        patient: patient("mrn-7"),
        from,
        to,
        note: None,
        assignee: Some(user("asha-1")),
        by: user("dr-1"),
        at: at(2),
    }
}

fn posted(message_id: u64) -> CaseEvent {
    CaseEvent::MessagePosted {
        patient: patient("mrn-7"),
        message_id,
        body: text("Temperature 38.9 this morning"),
        assignee: Some(user("asha-1")),
        by: user("asha-1"),
        at: at(3),
    }
}

fn read_by(reader: &str, up_to: u64) -> CaseEvent {
    CaseEvent::MessagesRead {
        patient: patient("mrn-7"),
        up_to,
        assignee: Some(user("asha-1")),
        by: user(reader),
        at: at(4),
    }
}

fn change_status(to: CaseStatus) -> CaseCommand {
    CaseCommand::ChangeStatus {
        to,
        note: Some(text("reviewed")),
        by: user("dr-1"),
        at: at(10),
    }
}

fn mark_read(reader: &str, up_to: u64) -> CaseCommand {
    CaseCommand::MarkRead {
        up_to,
        by: user(reader),
        at: at(10),
    }
}

#[tokio::test]
async fn opening_a_case_records_the_patient_title_and_assignee() {
    given(vec![])
        .when_async(CaseCommand::Open {
            patient: patient("mrn-7"),
            title: text("Fever for three days"),
            assignee: Some(user("asha-1")),
            by: user("asha-1"),
            at: at(0),
        })
        .await
        .then_expect_events(vec![opened()]);
}

#[tokio::test]
async fn a_case_may_be_opened_without_an_assignee() {
    given(vec![])
        .when_async(CaseCommand::Open {
            patient: patient("mrn-7"),
            title: text("Fever for three days"),
            assignee: None,
            by: user("chw-1"),
            at: at(0),
        })
        .await
        .then_expect_events(vec![opened_unassigned()]);
}

#[tokio::test]
async fn opening_a_case_twice_is_rejected() {
    given(vec![opened()])
        .when_async(CaseCommand::Open {
            patient: patient("mrn-7"),
            title: text("Again"),
            assignee: None,
            by: user("chw-1"),
            at: at(5),
        })
        .await
        .then_expect_error(CaseError::AlreadyOpened);
}

#[tokio::test]
async fn assigning_a_case_records_the_previous_assignee() {
    given(vec![opened()])
        .when_async(CaseCommand::Assign {
            assignee: user("dr-1"),
            by: user("admin-1"),
            at: at(10),
        })
        .await
        .then_expect_events(vec![CaseEvent::CaseAssigned {
            patient: patient("mrn-7"),
            assignee: user("dr-1"),
            previous: Some(user("asha-1")),
            by: user("admin-1"),
            at: at(10),
        }]);
}

#[tokio::test]
async fn assigning_an_unassigned_case_has_no_previous_assignee() {
    given(vec![opened_unassigned()])
        .when_async(CaseCommand::Assign {
            assignee: user("chw-2"),
            by: user("admin-1"),
            at: at(10),
        })
        .await
        .then_expect_events(vec![CaseEvent::CaseAssigned {
            patient: patient("mrn-7"),
            assignee: user("chw-2"),
            previous: None,
            by: user("admin-1"),
            at: at(10),
        }]);
}

#[tokio::test]
async fn assigning_a_case_to_its_current_assignee_is_rejected() {
    given(vec![opened(), assigned_to("dr-1", Some("asha-1"))])
        .when_async(CaseCommand::Assign {
            assignee: user("dr-1"),
            by: user("admin-1"),
            at: at(10),
        })
        .await
        .then_expect_error(CaseError::AlreadyAssigned);
}

#[tokio::test]
async fn assigning_a_case_that_was_never_opened_is_rejected() {
    given(vec![])
        .when_async(CaseCommand::Assign {
            assignee: user("dr-1"),
            by: user("admin-1"),
            at: at(10),
        })
        .await
        .then_expect_error(CaseError::NotFound);
}

#[tokio::test]
async fn putting_an_open_case_in_review_records_both_statuses_and_the_assignee() {
    given(vec![opened()])
        .when_async(change_status(CaseStatus::InReview))
        .await
        .then_expect_events(vec![CaseEvent::CaseStatusChanged {
            patient: patient("mrn-7"),
            from: CaseStatus::Open,
            to: CaseStatus::InReview,
            note: Some(text("reviewed")),
            assignee: Some(user("asha-1")),
            by: user("dr-1"),
            at: at(10),
        }]);
}

#[tokio::test]
async fn a_status_change_carries_the_assignee_after_reassignment() {
    given(vec![opened(), assigned_to("dr-1", Some("asha-1"))])
        .when_async(change_status(CaseStatus::InReview))
        .await
        .then_expect_events(vec![CaseEvent::CaseStatusChanged {
            patient: patient("mrn-7"),
            from: CaseStatus::Open,
            to: CaseStatus::InReview,
            note: Some(text("reviewed")),
            assignee: Some(user("dr-1")),
            by: user("dr-1"),
            at: at(10),
        }]);
}

#[tokio::test]
async fn prescribing_for_a_case_in_review_is_allowed() {
    given(vec![
        opened(),
        moved(CaseStatus::Open, CaseStatus::InReview),
    ])
    .when_async(change_status(CaseStatus::Prescribed))
    .await
    .then_expect_events(vec![CaseEvent::CaseStatusChanged {
        patient: patient("mrn-7"),
        from: CaseStatus::InReview,
        to: CaseStatus::Prescribed,
        note: Some(text("reviewed")),
        assignee: Some(user("asha-1")),
        by: user("dr-1"),
        at: at(10),
    }]);
}

#[tokio::test]
async fn reopening_a_completed_case_is_allowed() {
    given(vec![
        opened(),
        moved(CaseStatus::Open, CaseStatus::InReview),
        moved(CaseStatus::InReview, CaseStatus::Accepted),
        moved(CaseStatus::Accepted, CaseStatus::Completed),
    ])
    .when_async(change_status(CaseStatus::Open))
    .await
    .then_expect_events(vec![CaseEvent::CaseStatusChanged {
        patient: patient("mrn-7"),
        from: CaseStatus::Completed,
        to: CaseStatus::Open,
        note: Some(text("reviewed")),
        assignee: Some(user("asha-1")),
        by: user("dr-1"),
        at: at(10),
    }]);
}

#[tokio::test]
async fn completing_a_case_nobody_reviewed_is_rejected() {
    given(vec![opened()])
        .when_async(change_status(CaseStatus::Completed))
        .await
        .then_expect_error(CaseError::InvalidTransition {
            from: CaseStatus::Open,
            to: CaseStatus::Completed,
        });
}

#[tokio::test]
async fn changing_a_case_to_its_current_status_is_rejected() {
    given(vec![
        opened(),
        moved(CaseStatus::Open, CaseStatus::InReview),
    ])
    .when_async(change_status(CaseStatus::InReview))
    .await
    .then_expect_error(CaseError::InvalidTransition {
        from: CaseStatus::InReview,
        to: CaseStatus::InReview,
    });
}

#[tokio::test]
async fn changing_the_status_of_a_case_that_was_never_opened_is_rejected() {
    given(vec![])
        .when_async(change_status(CaseStatus::InReview))
        .await
        .then_expect_error(CaseError::NotFound);
}

#[tokio::test]
async fn the_first_message_in_a_thread_is_number_one() {
    given(vec![opened()])
        .when_async(CaseCommand::PostMessage {
            body: text("Temperature 38.9 this morning"),
            by: user("asha-1"),
            at: at(3),
        })
        .await
        .then_expect_events(vec![posted(1)]);
}

#[tokio::test]
async fn messages_are_numbered_in_order_within_the_thread() {
    given(vec![opened(), posted(1), posted(2)])
        .when_async(CaseCommand::PostMessage {
            body: text("Please start paracetamol"),
            by: user("dr-1"),
            at: at(20),
        })
        .await
        .then_expect_events(vec![CaseEvent::MessagePosted {
            patient: patient("mrn-7"),
            message_id: 3,
            body: text("Please start paracetamol"),
            assignee: Some(user("asha-1")),
            by: user("dr-1"),
            at: at(20),
        }]);
}

#[tokio::test]
async fn posting_to_a_case_that_was_never_opened_is_rejected() {
    given(vec![])
        .when_async(CaseCommand::PostMessage {
            body: text("hello"),
            by: user("dr-1"),
            at: at(20),
        })
        .await
        .then_expect_error(CaseError::NotFound);
}

#[tokio::test]
async fn marking_messages_read_records_the_readers_position() {
    given(vec![opened(), posted(1), posted(2)])
        .when_async(mark_read("dr-1", 2))
        .await
        .then_expect_events(vec![CaseEvent::MessagesRead {
            patient: patient("mrn-7"),
            up_to: 2,
            assignee: Some(user("asha-1")),
            by: user("dr-1"),
            at: at(10),
        }]);
}

#[tokio::test]
async fn a_reader_may_move_their_position_forward() {
    given(vec![opened(), posted(1), posted(2), read_by("dr-1", 1)])
        .when_async(mark_read("dr-1", 2))
        .await
        .then_expect_events(vec![CaseEvent::MessagesRead {
            patient: patient("mrn-7"),
            up_to: 2,
            assignee: Some(user("asha-1")),
            by: user("dr-1"),
            at: at(10),
        }]);
}

#[tokio::test]
async fn read_positions_are_kept_per_reader() {
    given(vec![opened(), posted(1), read_by("asha-1", 1)])
        .when_async(mark_read("dr-1", 1))
        .await
        .then_expect_events(vec![CaseEvent::MessagesRead {
            patient: patient("mrn-7"),
            up_to: 1,
            assignee: Some(user("asha-1")),
            by: user("dr-1"),
            at: at(10),
        }]);
}

#[tokio::test]
async fn marking_read_beyond_the_last_message_is_rejected() {
    given(vec![opened(), posted(1)])
        .when_async(mark_read("dr-1", 2))
        .await
        .then_expect_error(CaseError::UnknownMessage);
}

#[tokio::test]
async fn marking_read_up_to_message_zero_is_rejected() {
    given(vec![opened(), posted(1)])
        .when_async(mark_read("dr-1", 0))
        .await
        .then_expect_error(CaseError::UnknownMessage);
}

#[tokio::test]
async fn marking_read_in_an_empty_thread_is_rejected() {
    given(vec![opened()])
        .when_async(mark_read("dr-1", 1))
        .await
        .then_expect_error(CaseError::UnknownMessage);
}

#[tokio::test]
async fn marking_the_same_messages_read_twice_is_rejected() {
    given(vec![opened(), posted(1), read_by("dr-1", 1)])
        .when_async(mark_read("dr-1", 1))
        .await
        .then_expect_error(CaseError::AlreadyRead);
}

#[tokio::test]
async fn moving_a_read_position_backwards_is_rejected() {
    given(vec![opened(), posted(1), posted(2), read_by("dr-1", 2)])
        .when_async(mark_read("dr-1", 1))
        .await
        .then_expect_error(CaseError::AlreadyRead);
}

#[tokio::test]
async fn marking_read_in_a_case_that_was_never_opened_is_rejected() {
    given(vec![])
        .when_async(mark_read("dr-1", 1))
        .await
        .then_expect_error(CaseError::NotFound);
}

#[test]
fn the_review_flow_allows_exactly_the_documented_transitions() {
    use CaseStatus::*;
    let allowed = [
        (Open, InReview),
        (InReview, Accepted),
        (InReview, Referred),
        (InReview, Prescribed),
        (InReview, Open),
        (Accepted, Prescribed),
        (Accepted, Referred),
        (Accepted, Completed),
        (Prescribed, Completed),
        (Referred, Completed),
        (Completed, Open),
    ];
    for from in CaseStatus::ALL {
        for to in CaseStatus::ALL {
            assert_eq!(
                from.can_transition_to(to),
                allowed.contains(&(from, to)),
                "{from} -> {to}"
            );
        }
    }
}

#[test]
fn case_statuses_use_snake_case_on_the_wire() {
    for status in CaseStatus::ALL {
        assert_eq!(
            serde_json::to_value(status).unwrap(),
            serde_json::Value::from(status.as_str())
        );
    }
    assert_eq!(CaseStatus::InReview.as_str(), "in_review");
}

#[test]
fn the_aggregate_keeps_counters_and_read_positions_but_no_message_bodies() {
    let mut thread = CaseThread::default();
    for event in [
        opened(),
        posted(1),
        posted(2),
        read_by("dr-1", 2),
        assigned_to("dr-1", Some("asha-1")),
        moved(CaseStatus::Open, CaseStatus::InReview),
    ] {
        cqrs_es::Aggregate::apply(&mut thread, event);
    }
    assert_eq!(thread.patient(), Some(&patient("mrn-7")));
    assert_eq!(thread.status(), Some(CaseStatus::InReview));
    assert_eq!(thread.assignee(), Some(&user("dr-1")));
    assert_eq!(thread.message_count(), 2);
    assert_eq!(thread.read_position(&user("dr-1")), 2);
    assert_eq!(thread.read_position(&user("asha-1")), 0);

    let snapshot = serde_json::to_string(&thread).unwrap();
    assert!(!snapshot.contains("Temperature"), "{snapshot}");
    let restored: CaseThread = serde_json::from_str(&snapshot).unwrap();
    assert_eq!(restored, thread);
}

#[test]
fn every_event_is_stored_under_its_event_type_with_patient_and_assignee() {
    for event in [
        opened(),
        assigned_to("dr-1", Some("asha-1")),
        moved(CaseStatus::Open, CaseStatus::InReview),
        posted(1),
        read_by("dr-1", 1),
    ] {
        let json = serde_json::to_value(&event).unwrap();
        let object = json.as_object().unwrap();
        assert_eq!(object.len(), 1);
        let fields = &object[&event.event_type()];
        assert_eq!(fields["patient"], "mrn-7");
        assert!(fields["assignee"].is_string(), "{json}");
        assert_eq!(event.event_version(), "1.0");
        assert_eq!(serde_json::from_value::<CaseEvent>(json).unwrap(), event);
    }
}

#[test]
fn every_error_has_a_stable_code_and_kind() {
    let expected = [
        (
            CaseError::AlreadyOpened,
            "case_already_opened",
            RejectionKind::Conflict,
        ),
        (
            CaseError::NotFound,
            "case_not_found",
            RejectionKind::NotFound,
        ),
        (
            CaseError::InvalidTransition {
                from: CaseStatus::Open,
                to: CaseStatus::Completed,
            },
            "case_invalid_transition",
            RejectionKind::Conflict,
        ),
        (
            CaseError::AlreadyAssigned,
            "case_already_assigned",
            RejectionKind::Conflict,
        ),
        (
            CaseError::UnknownMessage,
            "case_unknown_message",
            RejectionKind::Invalid { field: "up_to" },
        ),
        (
            CaseError::AlreadyRead,
            "case_already_read",
            RejectionKind::Conflict,
        ),
    ];
    for (error, code, kind) in expected {
        assert_eq!(error.code(), code);
        assert_eq!(error.kind(), kind);
    }
    assert_eq!(
        CaseError::InvalidTransition {
            from: CaseStatus::Open,
            to: CaseStatus::Completed
        }
        .to_string(),
        "a case cannot move from open to completed"
    );
}
