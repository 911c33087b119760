//! Who may read what through the read endpoints, and the query checks they share.
//!
//! Reads follow the stream's entitlement rules (`stream::entitlement`), so a user sees the
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
//! Commands on one case are confined by the same rule ([`require_case`], which asks
//! `entitlement::case_access`): a field worker's command on another worker's case is
//! answered exactly as one on a case that does not exist.

use aggregates::case_thread::CaseError;
use aggregates::routing::Category;
use aggregates::types::{HospitalId, Role, UserId};
use sqlx::PgPool;
use uuid::Uuid;

use super::commands::rejection;
use super::problem::ApiError;
use crate::auth::Identity;
use crate::stream::entitlement::{case_access, Viewer};

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

/// The user whose records `identity` is confined to in `category` (`None`: all of the
/// hospital's), or a 403 `role_forbidden` if their role may not read it at all.
pub fn confine(identity: &Identity, category: Category) -> Result<Option<&UserId>, ApiError> {
    match visibility(identity.role, category) {
        Visibility::All => Ok(None),
        Visibility::Own => Ok(Some(&identity.user)),
        Visibility::Nothing => Err(refused(identity, category.as_str())),
    }
}

/// Refuses a command on case `id` that `identity` may not touch (see
/// `entitlement::case_access`) with the very answer the case aggregate gives for a case that
/// does not exist — same status, code and detail — before anything runs or is persisted, so
/// neither the answer nor a side effect (a message count, a read receipt's bounds) tells a
/// field worker anything about another worker's case. Call it after `authorize`.
pub async fn require_case(
    pool: &PgPool,
    identity: &Identity,
    hospital: &HospitalId,
    id: &str,
) -> Result<(), ApiError> {
    let unknown = || rejection(CaseError::NotFound);
    let case = Uuid::parse_str(id).map_err(|_| unknown())?;
    let viewer = Viewer {
        user: &identity.user,
        role: identity.role,
    };
    match case_access(pool, viewer, hospital, &case).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(unknown()),
        Err(error) => Err(ApiError::database(error)),
    }
}

/// A 403 `role_forbidden` for a role that may not read `what`.
pub fn refused(identity: &Identity, what: &str) -> ApiError {
    ApiError::Forbidden {
        code: "role_forbidden",
        detail: format!("role `{}` may not read {what}", identity.role.as_str()),
    }
}

/// Refuses a query parameter outside `allowed`, naming it.
pub fn one_of(field: &str, value: Option<&str>, allowed: &[&str]) -> Result<(), ApiError> {
    match value {
        Some(v) if !allowed.contains(&v) => Err(ApiError::invalid_field(
            field,
            format!("`{field}` must be one of {}", allowed.join(", ")),
        )),
        _ => Ok(()),
    }
}

/// Parses an optional user-id query parameter, naming it if invalid.
pub fn user_param(field: &str, value: Option<&str>) -> Result<Option<UserId>, ApiError> {
    value
        .map(|raw| UserId::parse(raw).map_err(|e| ApiError::invalid_field(field, e.to_string())))
        .transpose()
}

/// Refuses a negative query parameter, naming it.
pub fn not_negative(field: &str, value: i64) -> Result<i64, ApiError> {
    if value < 0 {
        return Err(ApiError::invalid_field(field, "must be 0 or more"));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use aggregates::routing::Scope;

    use super::*;
    use crate::stream::entitlement::{may_see_scope, Viewer};

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

    #[test]
    fn unknown_values_are_refused_naming_the_parameter() {
        assert!(one_of("status", Some("open"), &["open", "completed"]).is_ok());
        assert!(one_of("status", None, &["open"]).is_ok());
        let error = one_of("status", Some("closed"), &["open"]).unwrap_err();
        assert_eq!(error.problem().field.as_deref(), Some("status"));
        let error = user_param("assignee", Some("no spaces")).unwrap_err();
        assert_eq!(error.problem().field.as_deref(), Some("assignee"));
        let error = not_negative("offset", -1).unwrap_err();
        assert_eq!(error.problem().field.as_deref(), Some("offset"));
    }
}
