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

use aggregates::routing::{Category, Scope};
use aggregates::types::{Role, UserId};

use super::StreamEvent;

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
                Category::Cases => scope.assignees.iter().any(|a| a == viewer.user),
                Category::Alerts | Category::Vitals => own_action,
                Category::Appointments | Category::Notifications => false,
            },
        },
    }
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
