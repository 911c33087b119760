//! What a notification says: a closed set of kinds, so clients can render each properly.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::types::{Note, PatientId, ShortText};

/// Where a prior authorization request (an insurer's approval before a treatment) stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PriorAuthStatus {
    /// Sent to the payer.
    Submitted,
    /// The payer is considering it.
    Pending,
    /// Approved: treatment may go ahead.
    Approved,
    /// Denied: treatment needs another plan or an appeal.
    Denied,
    /// The payer needs more information before deciding.
    InfoRequested,
}

/// The body of a notification. Serialized internally tagged (`{"kind": "lab_result", ...}`) so
/// clients switch on one field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum NotificationContent {
    /// Someone gave the recipient a task.
    TaskAssigned {
        /// What to do.
        title: ShortText,
        /// The case thread it belongs to, if any, so the client can link to it.
        case_id: Option<Uuid>,
    },
    /// A lab result is available.
    LabResult {
        /// Whose result.
        patient: PatientId,
        /// Which test.
        test: ShortText,
        /// The result in brief.
        summary: Note,
        /// Whether it needs action now (a critical value); clients may alert loudly.
        urgent: bool,
    },
    /// A prior authorization request changed status.
    PriorAuthorization {
        /// Whose request.
        patient: PatientId,
        /// What was requested.
        request: ShortText,
        /// Where it stands now.
        status: PriorAuthStatus,
    },
}

impl NotificationContent {
    /// The patient the notification concerns, if any, for routing to patient topics.
    pub fn patient(&self) -> Option<&PatientId> {
        match self {
            NotificationContent::TaskAssigned { .. } => None,
            NotificationContent::LabResult { patient, .. }
            | NotificationContent::PriorAuthorization { patient, .. } => Some(patient),
        }
    }
}
