//! Assignment → notification: when a case is given to someone (opened with an assignee, or
//! assigned later), the assignee gets a `TaskAssigned` notification — unless they assigned
//! it to themselves.
//!
//! The notification's id is derived from the causing event's (hospital, position), so a
//! retried batch re-sends the same id, which the aggregate refuses (`AlreadySent`): the
//! assignee is told exactly once. `CaseAssigned` does not carry the case's title, so it is
//! read from the case's `CaseOpened` event in the store (cases cannot be renamed).

use aggregates::case_thread::{CaseEvent, CaseThread};
use aggregates::notification::NotificationContent;
use aggregates::types::{CaseTitle, ShortText, UserId};
use cqrs_es::Aggregate;
use projections::event::{DomainEvent, Envelope};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{derived_id, kinds, Cause, Effect, HandleFuture, Planned, Policy};

/// The assignment policy.
pub struct AssignmentPolicy;

/// Purpose tag of the derived notification id.
const PURPOSE: &str = "assignment-notification";

/// The most characters a notification title ([`ShortText`]) holds.
const TITLE_MAX_CHARS: usize = 200;

/// Who should be told of `event`, if anyone: the new assignee, unless they assigned the case
/// to themselves.
pub fn recipient(event: &CaseEvent) -> Option<&UserId> {
    let (assignee, by) = match event {
        CaseEvent::CaseOpened {
            assignee: Some(assignee),
            by,
            ..
        }
        | CaseEvent::CaseAssigned { assignee, by, .. } => (assignee, by),
        _ => return None,
    };
    (assignee != by).then_some(assignee)
}

/// The notification's title: `Case assigned: <case title>`, cut to what a notification title
/// holds (on a character boundary).
pub fn title(case_title: Option<&str>) -> ShortText {
    let full = match case_title {
        Some(t) => format!("Case assigned: {t}"),
        None => "Case assigned".to_owned(),
    };
    let cut: String = full.chars().take(TITLE_MAX_CHARS).collect();
    // Non-empty and within the limit by construction.
    ShortText::parse(&cut).expect("a non-empty title within the limit")
}

/// The case's title, from its first event.
async fn case_title(
    conn: &mut PgConnection,
    hospital: &str,
    case_id: &str,
) -> Result<Option<CaseTitle>, sqlx::Error> {
    let payload: Option<serde_json::Value> = sqlx::query_scalar(
        "SELECT payload FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 \
         ORDER BY sequence LIMIT 1",
    )
    .bind(CaseThread::TYPE)
    .bind(format!("{hospital}/{case_id}"))
    .fetch_optional(&mut *conn)
    .await?;
    Ok(match payload.map(serde_json::from_value::<CaseEvent>) {
        Some(Ok(CaseEvent::CaseOpened { title, .. })) => Some(title),
        _ => None,
    })
}

impl Policy for AssignmentPolicy {
    fn name(&self) -> &'static str {
        "assignment"
    }

    fn kinds(&self) -> Option<&'static [&'static str]> {
        Some(&[kinds::CASE_THREAD])
    }

    fn handle<'a>(&'a self, tx: &'a mut PgConnection, e: &'a Envelope) -> HandleFuture<'a> {
        Box::pin(async move {
            let DomainEvent::Case(event) = &e.event else {
                return Ok(vec![]);
            };
            let Some(recipient) = recipient(event) else {
                return Ok(vec![]);
            };
            let case_title = match event {
                CaseEvent::CaseOpened { title, .. } => Some(title.clone()),
                _ => case_title(tx, &e.hospital, &e.aggregate_id).await?,
            };
            let cause = Cause::of(tx, e).await?;
            Ok(vec![Planned {
                effect: Effect::SendNotification {
                    id: derived_id(&e.hospital, e.position, PURPOSE),
                    recipient: recipient.clone(),
                    content: NotificationContent::TaskAssigned {
                        title: title(case_title.as_ref().map(|t| t.as_str())),
                        case_id: Uuid::parse_str(&e.aggregate_id).ok(),
                    },
                },
                cause,
            }])
        })
    }
}

#[cfg(test)]
mod tests {
    use aggregates::types::PatientId;
    use chrono::Utc;

    use super::*;

    fn user(id: &str) -> UserId {
        UserId::parse(id).unwrap()
    }

    fn opened(assignee: Option<&str>, by: &str) -> CaseEvent {
        CaseEvent::CaseOpened {
            patient: PatientId::parse("p-1").unwrap(),
            title: CaseTitle::parse("Fever").unwrap(),
            assignee: assignee.map(user),
            by: user(by),
            at: Utc::now(),
        }
    }

    fn assigned(assignee: &str, by: &str) -> CaseEvent {
        CaseEvent::CaseAssigned {
            patient: PatientId::parse("p-1").unwrap(),
            assignee: user(assignee),
            previous: None,
            by: user(by),
            at: Utc::now(),
        }
    }

    #[test]
    fn a_case_opened_for_someone_else_notifies_them() {
        assert_eq!(
            recipient(&opened(Some("asha-1"), "dr-a")),
            Some(&user("asha-1"))
        );
    }

    #[test]
    fn a_case_opened_without_assignee_or_for_oneself_notifies_nobody() {
        assert_eq!(recipient(&opened(None, "dr-a")), None);
        assert_eq!(recipient(&opened(Some("asha-1"), "asha-1")), None);
    }

    #[test]
    fn a_reassignment_notifies_the_new_assignee_unless_they_took_it_themselves() {
        assert_eq!(recipient(&assigned("chw-1", "dr-a")), Some(&user("chw-1")));
        assert_eq!(recipient(&assigned("chw-1", "chw-1")), None);
    }

    #[test]
    fn a_long_case_title_is_cut_to_a_notification_title() {
        let long = "é".repeat(200);
        let t = title(Some(&long));
        assert_eq!(t.as_str().chars().count(), TITLE_MAX_CHARS);
        assert!(t.as_str().starts_with("Case assigned: é"));
        assert_eq!(title(None).as_str(), "Case assigned");
    }

    #[test]
    fn the_notification_id_is_the_same_for_every_run_over_an_event() {
        assert_eq!(derived_id("h", 7, PURPOSE), derived_id("h", 7, PURPOSE));
        assert_ne!(derived_id("h", 7, PURPOSE), derived_id("h", 8, PURPOSE));
        assert_ne!(derived_id("h", 7, PURPOSE), derived_id("g", 7, PURPOSE));
    }
}
