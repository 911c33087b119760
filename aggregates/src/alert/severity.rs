//! How urgent an alert is.

use serde::{Deserialize, Serialize};

/// How urgently an alert needs attention, ordered from least to most urgent so dashboards and
/// notification rules can compare (`severity >= Severity::High`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Informational; handle in the normal course of work.
    Low,
    /// Needs attention this shift.
    Medium,
    /// Needs attention now.
    High,
    /// Life-threatening; drop everything.
    Critical,
}
