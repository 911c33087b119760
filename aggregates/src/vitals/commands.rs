//! What a user can ask of a patient's vitals.

use chrono::{DateTime, Utc};

use super::VitalSigns;
use crate::types::{PatientId, UserId};

/// A request to record vitals. Carries who took them and when, since the aggregate never
/// reads the clock and the chart must say who measured.
#[derive(Clone, Debug, PartialEq)]
pub enum VitalsCommand {
    /// Record one set of readings.
    Record {
        /// The patient; must match the aggregate's patient once the first reading exists.
        patient: PatientId,
        /// The measured values.
        signs: VitalSigns,
        /// Who measured.
        by: UserId,
        /// When they were measured.
        at: DateTime<Utc>,
    },
}
