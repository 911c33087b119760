//! What a user can ask of an alert.

use chrono::{DateTime, Utc};

use super::Severity;
use crate::types::{AlertMessage, Department, Note, PatientId, Reason, UserId};

/// A request to change an alert. Each carries who acts (`by`) and when (`at`), because the
/// aggregate never reads the clock and the audit trail must say who did it.
#[derive(Clone, Debug, PartialEq)]
pub enum AlertCommand {
    /// Open a new alert.
    Raise {
        /// How urgent it is.
        severity: Severity,
        /// What is wrong, for the people who will respond.
        message: AlertMessage,
        /// The department it concerns, if any, for routing to the right dashboard.
        department: Option<Department>,
        /// The patient it concerns, if any, so their care team sees it.
        patient: Option<PatientId>,
        /// Who raised it.
        by: UserId,
        /// When it was raised.
        at: DateTime<Utc>,
    },
    /// Take ownership: "I have seen it and I am on it".
    Acknowledge {
        /// Who takes ownership.
        by: UserId,
        /// When.
        at: DateTime<Utc>,
    },
    /// Page the next tier.
    Escalate {
        /// Why the next tier is needed.
        reason: Reason,
        /// When it applies, checked against the alert as it is when the command runs.
        guard: EscalationGuard,
        /// Who escalates.
        by: UserId,
        /// When.
        at: DateTime<Utc>,
    },
    /// Close the alert.
    Resolve {
        /// What was done, for the record.
        note: Note,
        /// Who resolved it.
        by: UserId,
        /// When.
        at: DateTime<Utc>,
    },
}

/// When an escalation applies. Whoever decides to escalate decided it from the alert as
/// they saw it; the guard makes the command fail rather than act on an alert that moved on
/// in between.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EscalationGuard {
    /// At whatever level the alert is: a person paging the next tier.
    Always,
    /// Only while the alert is still at this level: two people who both saw level N and
    /// pressed "escalate" make one escalation, not two.
    FromLevel(u8),
    /// Only while the alert is at this level and nobody has acknowledged it: an escalation
    /// by deadline, which a concurrent acknowledgement or escalation must cancel.
    Unacknowledged {
        /// The level the deadline was armed at.
        from_level: u8,
    },
}
