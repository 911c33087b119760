//! Why an alert command was refused.

use super::MAX_ESCALATION_LEVEL;
use crate::rejection::{Rejection, RejectionKind};

/// A refused alert command. Variants carry no text so tests and the HTTP edge compare them
/// exactly; the messages are for humans.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AlertError {
    /// `Raise` on an alert id that already exists.
    #[error("this alert has already been raised")]
    AlreadyRaised,
    /// Any command other than `Raise` on an alert that was never raised.
    #[error("no such alert")]
    NotFound,
    /// A second acknowledgement: someone already owns the alert.
    #[error("the alert has already been acknowledged")]
    AlreadyAcknowledged,
    /// Any change after resolution: a resolved alert is closed for good.
    #[error("the alert has already been resolved")]
    AlreadyResolved,
    /// Escalating beyond the last tier.
    #[error("the alert is already at the highest escalation level ({MAX_ESCALATION_LEVEL})")]
    MaxEscalationReached,
    /// A guarded escalation of an alert whose level is no longer the one the escalation was
    /// decided at: someone else escalated it meanwhile.
    #[error("the alert's escalation level changed since this escalation was decided")]
    EscalationLevelChanged,
}

impl Rejection for AlertError {
    fn code(&self) -> &'static str {
        match self {
            AlertError::AlreadyRaised => "alert_already_raised",
            AlertError::NotFound => "alert_not_found",
            AlertError::AlreadyAcknowledged => "alert_already_acknowledged",
            AlertError::AlreadyResolved => "alert_already_resolved",
            AlertError::MaxEscalationReached => "alert_max_escalation_reached",
            AlertError::EscalationLevelChanged => "alert_escalation_level_changed",
        }
    }

    fn kind(&self) -> RejectionKind {
        match self {
            AlertError::NotFound => RejectionKind::NotFound,
            AlertError::AlreadyRaised
            | AlertError::AlreadyAcknowledged
            | AlertError::AlreadyResolved
            | AlertError::MaxEscalationReached
            | AlertError::EscalationLevelChanged => RejectionKind::Conflict,
        }
    }
}
