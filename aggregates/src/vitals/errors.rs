//! Why a vitals reading was refused.

use super::VitalSign;
use crate::rejection::{Rejection, RejectionKind};

/// A refused vitals command. Every variant is a problem with the submitted values, reported
/// against the field to correct.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VitalsError {
    /// The reading holds no value at all.
    #[error("a vitals reading needs at least one value")]
    NoValues,
    /// A value no living patient can show: a device or typing error.
    #[error("{sign} must be within {}", .sign.physical_limits())]
    OutOfPhysicalRange {
        /// The implausible sign.
        sign: VitalSign,
    },
    /// Diastolic pressure at or above systolic, which cannot be measured.
    #[error("diastolic pressure must be below systolic pressure")]
    DiastolicNotBelowSystolic,
    /// The command names a patient other than the one this aggregate records.
    #[error("these vitals belong to a different patient")]
    PatientMismatch,
}

impl Rejection for VitalsError {
    fn code(&self) -> &'static str {
        match self {
            VitalsError::NoValues => "vitals_no_values",
            VitalsError::OutOfPhysicalRange { .. } => "vitals_out_of_physical_range",
            VitalsError::DiastolicNotBelowSystolic => "vitals_diastolic_not_below_systolic",
            VitalsError::PatientMismatch => "vitals_patient_mismatch",
        }
    }

    fn kind(&self) -> RejectionKind {
        let field = match self {
            VitalsError::NoValues => "signs",
            VitalsError::OutOfPhysicalRange { sign } => sign.field(),
            VitalsError::DiastolicNotBelowSystolic => "diastolic",
            VitalsError::PatientMismatch => "patient",
        };
        RejectionKind::Invalid { field }
    }
}
