//! Where a case is in the review flow, and which moves are allowed.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Where a case is in the review flow; see the table in the [module docs](super).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaseStatus {
    /// Opened by the worker; waiting for a clinician.
    Open,
    /// A clinician is reviewing it.
    InReview,
    /// The clinician has taken the case on.
    Accepted,
    /// The patient was referred elsewhere (a facility or specialist).
    Referred,
    /// The clinician prescribed treatment.
    Prescribed,
    /// Nothing left to do (until reopened).
    Completed,
}

impl CaseStatus {
    /// Every status, for listings and exhaustive tests.
    pub const ALL: [CaseStatus; 6] = [
        CaseStatus::Open,
        CaseStatus::InReview,
        CaseStatus::Accepted,
        CaseStatus::Referred,
        CaseStatus::Prescribed,
        CaseStatus::Completed,
    ];

    /// Whether a case may move from `self` to `to`. The single source of the flow's rules, so
    /// clients can ask (e.g. to grey out buttons) with exactly the aggregate's answer.
    pub fn can_transition_to(self, to: CaseStatus) -> bool {
        use CaseStatus::*;
        matches!(
            (self, to),
            (Open, InReview)
                | (InReview, Accepted | Referred | Prescribed | Open)
                | (Accepted, Prescribed | Referred | Completed)
                | (Prescribed, Completed)
                | (Referred, Completed)
                | (Completed, Open)
        )
    }

    /// The status's wire name, identical to its serde form (e.g. `"in_review"`).
    pub fn as_str(self) -> &'static str {
        match self {
            CaseStatus::Open => "open",
            CaseStatus::InReview => "in_review",
            CaseStatus::Accepted => "accepted",
            CaseStatus::Referred => "referred",
            CaseStatus::Prescribed => "prescribed",
            CaseStatus::Completed => "completed",
        }
    }
}

impl fmt::Display for CaseStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
