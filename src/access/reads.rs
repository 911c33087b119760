//! Who may read what through the read endpoints.
//!
//! Reads follow the stream's entitlement rules (`access::entitlement`), so a user sees the
//! same things whether they poll the stream, subscribe to it, or load a read model:
//!
//! | read model          | admin, physician, nurse | operator | chw, asha                  |
//! |---------------------|-------------------------|----------|----------------------------|
//! | alert board         | all                     | all      | alerts they raised         |
//! | case list           | all                     | refused  | cases assigned to them now |
//! | patient view        | all                     | refused  | readings they recorded     |
//! | schedule            | all                     | all      | refused                    |
//! | notification inbox  | own                     | own      | own                        |
//!
//! [`visibility`] is that table; a test checks it against `entitlement::may_see_scope` for
//! every role and category, so the two cannot drift apart. A field worker's case list uses
//! the case's *current* assignee: a case reassigned away from them leaves their list.
//!
//! Commands on one case are confined by the same rule (`http::reads_access::require_case`,
//! which asks `entitlement::case_access`): a field worker's command on another worker's case is
//! answered exactly as one on a case that does not exist.

use aggregates::routing::Category;
use aggregates::types::Role;

/// How much of a category's records a role may read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Visibility {
    /// Every record of the hospital.
    All,
    /// Only the user's own: alerts they raised, cases assigned to them, readings they
    /// recorded, notifications addressed to them.
    Own,
    /// None: the read is refused.
    Nothing,
}

/// How much of `category` `role` may read (the table in the module docs).
pub fn visibility(role: Role, category: Category) -> Visibility {
    use Visibility::*;
    match (category, role) {
        (Category::Notifications, _) => Own,
        (_, Role::Admin | Role::Physician | Role::Nurse) => All,
        (Category::Alerts | Category::Appointments, Role::Operator) => All,
        (Category::Cases | Category::Vitals, Role::Operator) => Nothing,
        (Category::Alerts | Category::Cases | Category::Vitals, Role::Chw | Role::Asha) => Own,
        (Category::Appointments, Role::Chw | Role::Asha) => Nothing,
    }
}

/// Whether `role` may read the hospital's metrics (open alerts, response times, cases by
/// status, users online by role): everyone who runs the floor, not field workers.
pub fn may_read_metrics(role: Role) -> bool {
    matches!(
        role,
        Role::Admin | Role::Physician | Role::Nurse | Role::Operator
    )
}

#[cfg(test)]
mod tests {
    use aggregates::routing::Scope;
    use aggregates::types::UserId;

    use super::*;
    use crate::access::entitlement::{may_see_scope, Viewer};

    fn user(id: &str) -> UserId {
        UserId::parse(id).unwrap()
    }

    /// An event of `category` that concerns `whom` in every way entitlement looks at: they
    /// caused it, it is assigned to them, it is addressed to them.
    fn about(category: Category, whom: &UserId) -> (Scope, Option<UserId>) {
        let scope = Scope {
            category,
            patient: None,
            assignees: vec![whom.clone()],
            recipient: Some(whom.clone()),
        };
        (scope, Some(whom.clone()))
    }

    #[test]
    fn read_visibility_matches_stream_entitlement_for_every_role_and_category() {
        let reader = user("reader");
        let someone_else = user("someone-else");
        for role in Role::ALL {
            for category in Category::ALL {
                let viewer = Viewer {
                    user: &reader,
                    role,
                };
                let (others, other_author) = about(category, &someone_else);
                let (own, own_author) = about(category, &reader);
                let sees_others = may_see_scope(viewer, &others, other_author.as_ref());
                let sees_own = may_see_scope(viewer, &own, own_author.as_ref());
                let expected = match (sees_others, sees_own) {
                    (true, _) => Visibility::All,
                    (false, true) => Visibility::Own,
                    (false, false) => Visibility::Nothing,
                };
                assert_eq!(visibility(role, category), expected, "{role} {category:?}");
            }
        }
    }
}
