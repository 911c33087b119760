//! Access: the one place that answers "may this user do or see this?".
//!
//! Every edge — the HTTP commands and reads, the WebSocket session, SSE and polling — asks
//! this module and only maps its answers to a status, an error frame or a filter. A new role
//! or rule therefore changes this module and nothing else. What it decides:
//!
//! - [`authorize`]: a request is confined to the token's hospital, and its role must be
//!   permitted the [`Action`] ([`roles`]: the roles table);
//! - [`entitlement`]: which events of the hospital a user receives (live, replayed or
//!   polled), and which case a user may touch — the case rule also confines case commands,
//!   case topics, typing and viewing;
//! - [`reads`]: how much of each read model a role may read, and who may read metrics;
//! - [`topics`]: which topics a role may subscribe to.
//!
//! Tenant isolation is structural (aggregates are stored under `<hospital>/<id>`, a reader
//! reads only its hospital's stream) and [`authorize`] checks the token's hospital against the
//! path's on every request.

pub mod entitlement;
pub mod reads;
pub mod roles;
pub mod topics;

use aggregates::types::HospitalId;

use crate::auth::Identity;
pub use roles::{permits, Action};

/// Why a request was refused before anything ran.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// The token is for another hospital than the one in the path.
    #[error("your token is for hospital `{token}`")]
    WrongHospital {
        /// The token's hospital.
        token: HospitalId,
    },
    /// The role may not perform the action.
    #[error("role `{role}` may not {action:?}")]
    RoleForbidden {
        /// The caller's role.
        role: &'static str,
        /// What was asked.
        action: Action,
    },
}

/// Confines `identity` to `hospital` and checks that its role may perform `action`. Every
/// request and connection passes here first.
pub fn authorize(identity: &Identity, hospital: &HospitalId, action: Action) -> Result<(), Denied> {
    if &identity.hospital != hospital {
        return Err(Denied::WrongHospital {
            token: identity.hospital.clone(),
        });
    }
    if !permits(identity.role, action) {
        return Err(Denied::RoleForbidden {
            role: identity.role.as_str(),
            action,
        });
    }
    Ok(())
}
