//! What happened to a patient's vitals. Stored for ever: evolve with upcasters, never rename.

use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use super::{OutOfRange, VitalSigns};
use crate::types::{PatientId, UserId};

/// A fact recorded about a patient's vitals, serialized externally tagged
/// (`{"VitalsRecorded": {...}}`) under its [`event_type`](DomainEvent::event_type).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum VitalsEvent {
    /// A set of readings was taken.
    VitalsRecorded {
        /// The patient, for routing.
        patient: PatientId,
        /// The reading's number for this patient: 1, 2, 3...
        reading: u64,
        /// The values.
        signs: VitalSigns,
        /// The signs outside their reference ranges; empty when all are normal.
        out_of_range: Vec<OutOfRange>,
        /// Who measured.
        by: UserId,
        /// When.
        at: DateTime<Utc>,
    },
}

impl VitalsEvent {
    /// The patient the readings belong to.
    pub fn patient(&self) -> &PatientId {
        match self {
            VitalsEvent::VitalsRecorded { patient, .. } => patient,
        }
    }
}

impl DomainEvent for VitalsEvent {
    fn event_type(&self) -> String {
        match self {
            VitalsEvent::VitalsRecorded { .. } => "VitalsRecorded".to_string(),
        }
    }

    fn event_version(&self) -> String {
        "1.0".to_string()
    }
}
