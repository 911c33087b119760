//! Entitlement: which events of their hospital a user may receive.
//!
//! One function, [`may_see`], decides for every transport — the polling endpoint, and the
//! realtime gateway's live delivery and replay — so the rules cannot drift apart. (Tenant
//! isolation is not decided here: a reader only ever reads its own hospital's stream.)
//!
//! | category       | admin, physician, nurse | operator | chw, asha                     |
//! |----------------|-------------------------|----------|-------------------------------|
//! | alerts         | all                     | all      | those they raised             |
//! | cases          | all                     | none     | cases assigned to them        |
//! | vitals         | all                     | none     | readings they recorded        |
//! | appointments   | all                     | all      | none                          |
//! | notifications  | own only                | own only | own only                      |
//!
//! "Assigned to them" uses the assignee recorded in each case event (and, for a
//! reassignment, the previous assignee too, so a worker learns a case left them). A
//! notification reaches only its recipient, whatever the role — administrators included.
//!
//! The same rule decides what a user may *do* to one case, not only what they receive:
//! [`may_touch_case`] is the case row of the table, and [`case_access`] applies it to a
//! case's current assignee, read from the log. Every path that names a case calls it — the
//! case commands (`http::cases`), the case read (`http::reads_cases`, through the same
//! table), subscribing to `case:<id>` over WebSocket or SSE, and sending `typing` or `view`
//! into it (`realtime::session`) — so a field worker can neither write to, watch, nor learn
//! about another worker's case by any of them. A refusal looks exactly like an unknown case.

use aggregates::case_thread::{CaseEvent, CaseThread};
use aggregates::routing::{Category, Scope};
use aggregates::types::{HospitalId, Role, UserId};
use cqrs_es::Aggregate;
use sqlx::PgPool;
use uuid::Uuid;

use crate::stream::{store_key, StreamEvent};

/// The reader an event is being filtered for.
#[derive(Clone, Copy, Debug)]
pub struct Viewer<'a> {
    /// The reading user.
    pub user: &'a UserId,
    /// Their role.
    pub role: Role,
}

/// Whether `viewer` may receive `event`.
pub fn may_see(viewer: Viewer<'_>, event: &StreamEvent) -> bool {
    may_see_scope(viewer, &event.scope, event.metadata.user.as_ref())
}

/// [`may_see`] on the routing facts alone; `author` is the user who caused the event.
pub fn may_see_scope(viewer: Viewer<'_>, scope: &Scope, author: Option<&UserId>) -> bool {
    let own_action = author == Some(viewer.user);
    match scope.category {
        Category::Notifications => scope.recipient.as_ref() == Some(viewer.user),
        category => match viewer.role {
            Role::Admin | Role::Physician | Role::Nurse => true,
            Role::Operator => matches!(category, Category::Alerts | Category::Appointments),
            Role::Chw | Role::Asha => match category {
                Category::Cases => may_touch_case(viewer, &scope.assignees),
                Category::Alerts | Category::Vitals => own_action,
                Category::Appointments | Category::Notifications => false,
            },
        },
    }
}

/// Whether `viewer` may read, write, watch, type in or view a case whose assignees (its
/// current one; for a reassignment event, the previous one too) are `assignees`: the
/// `cases` row of the table above. Staff roles may touch every case, operators none, field
/// workers only one assigned to them.
pub fn may_touch_case(viewer: Viewer<'_>, assignees: &[UserId]) -> bool {
    match viewer.role {
        Role::Admin | Role::Physician | Role::Nurse => true,
        Role::Operator => false,
        Role::Chw | Role::Asha => assignees.iter().any(|a| a == viewer.user),
    }
}

/// Whether [`may_touch_case`] depends on the case at all for `role` (only field workers'
/// access does): when it does not, [`case_access`] answers without reading the log, and a
/// connection's cases need no re-checking when they change hands.
pub fn depends_on_the_case(role: Role) -> bool {
    matches!(role, Role::Chw | Role::Asha)
}

/// [`may_touch_case`] for case `case` of `hospital` as it is now: its current assignee is
/// the one recorded in its last event (every case event carries it). A case that does not
/// exist is refused to anyone whose access depends on the case, exactly as one assigned to
/// someone else, so the answer never reveals whether it exists.
///
/// The check reads the committed log, not a read model: a case assigned to a worker a
/// moment ago is theirs at once, even before the projections catch up. A reassignment that
/// commits between this check and a command the check admitted is ordered after it; the
/// worker had the case when they acted.
pub async fn case_access(
    pool: &PgPool,
    viewer: Viewer<'_>,
    hospital: &HospitalId,
    case: &Uuid,
) -> Result<bool, sqlx::Error> {
    if !depends_on_the_case(viewer.role) {
        return Ok(may_touch_case(viewer, &[]));
    }
    let payload: Option<serde_json::Value> = sqlx::query_scalar(
        "SELECT payload FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 \
         ORDER BY sequence DESC LIMIT 1",
    )
    .bind(CaseThread::TYPE)
    .bind(store_key(hospital, &case.to_string()))
    .fetch_optional(pool)
    .await?;
    let assignee = payload
        .and_then(|p| serde_json::from_value::<CaseEvent>(p).ok())
        .and_then(|event| event.assignee().cloned());
    Ok(may_touch_case(viewer, assignee.as_slice()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str) -> UserId {
        UserId::parse(id).unwrap()
    }

    fn scope(category: Category) -> Scope {
        Scope {
            category,
            patient: None,
            assignees: vec![],
            recipient: None,
        }
    }

    #[test]
    fn a_notification_reaches_only_its_recipient_even_for_admins() {
        let mut s = scope(Category::Notifications);
        s.recipient = Some(user("dr-a"));
        let admin = user("admin");
        let dr_a = user("dr-a");
        assert!(!may_see_scope(
            Viewer {
                user: &admin,
                role: Role::Admin
            },
            &s,
            None
        ));
        assert!(may_see_scope(
            Viewer {
                user: &dr_a,
                role: Role::Physician
            },
            &s,
            None
        ));
    }

    #[test]
    fn a_field_worker_sees_only_cases_assigned_to_them() {
        let mut s = scope(Category::Cases);
        s.assignees = vec![user("asha-1")];
        let asha1 = user("asha-1");
        let asha2 = user("asha-2");
        assert!(may_see_scope(
            Viewer {
                user: &asha1,
                role: Role::Asha
            },
            &s,
            None
        ));
        assert!(!may_see_scope(
            Viewer {
                user: &asha2,
                role: Role::Asha
            },
            &s,
            None
        ));
        assert!(!may_see_scope(
            Viewer {
                user: &asha2,
                role: Role::Chw
            },
            &s,
            Some(&asha2)
        ));
    }

    #[test]
    fn only_staff_and_the_assigned_field_worker_may_touch_a_case() {
        let me = user("asha-1");
        let others = [user("asha-2")];
        let mine = [me.clone()];
        for role in Role::ALL {
            let v = Viewer { user: &me, role };
            let staff = matches!(role, Role::Admin | Role::Physician | Role::Nurse);
            let field = matches!(role, Role::Chw | Role::Asha);
            assert_eq!(may_touch_case(v, &others), staff, "{role}: another's case");
            assert_eq!(may_touch_case(v, &mine), staff || field, "{role}: own case");
            assert_eq!(may_touch_case(v, &[]), staff, "{role}: unassigned case");
            assert_eq!(depends_on_the_case(role), field, "{role}");
        }
    }

    #[test]
    fn operators_see_alerts_and_appointments_but_no_clinical_records() {
        let op = user("op");
        let v = Viewer {
            user: &op,
            role: Role::Operator,
        };
        assert!(may_see_scope(v, &scope(Category::Alerts), None));
        assert!(may_see_scope(v, &scope(Category::Appointments), None));
        assert!(!may_see_scope(v, &scope(Category::Cases), None));
        assert!(!may_see_scope(v, &scope(Category::Vitals), None));
    }

    #[test]
    fn field_workers_see_the_alerts_and_vitals_they_wrote() {
        let chw = user("chw-1");
        let v = Viewer {
            user: &chw,
            role: Role::Chw,
        };
        assert!(may_see_scope(v, &scope(Category::Vitals), Some(&chw)));
        assert!(!may_see_scope(
            v,
            &scope(Category::Vitals),
            Some(&user("nurse"))
        ));
        assert!(may_see_scope(v, &scope(Category::Alerts), Some(&chw)));
        assert!(!may_see_scope(
            v,
            &scope(Category::Appointments),
            Some(&chw)
        ));
    }
}
