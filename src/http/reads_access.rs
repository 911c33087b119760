//! The read endpoints' side of access: [`confine`] and [`require_case`] turn the decisions of
//! `access::reads` and `access::entitlement` into answers, plus the query checks the read
//! endpoints share.

use aggregates::case_thread::CaseError;
use aggregates::routing::Category;
use aggregates::types::{HospitalId, UserId};
use sqlx::PgPool;
use uuid::Uuid;

use super::commands::rejection;
use super::problem::ApiError;
use crate::access::entitlement::{case_access, Viewer};
use crate::access::reads::{visibility, Visibility};
use crate::auth::Identity;

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
    use super::*;

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
