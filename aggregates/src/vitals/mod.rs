//! The `PatientVitals` aggregate: the series of vital-sign readings of one patient.
//!
//! Each `Record` command is checked twice over:
//!
//! 1. **Physically possible?** Values outside what a living adult can show (a heart rate of
//!    400, a temperature of 60 °C) are typing or device errors and are refused with
//!    [`VitalsError`], naming the sign, so the reading can be corrected before anyone acts on
//!    it. At least one sign must be given, and a diastolic pressure must be below the
//!    systolic one.
//! 2. **Clinically normal?** Accepted values are classified against adult reference ranges
//!    (the `NORMAL_*` constants); every sign outside its range is listed in the event's
//!    `out_of_range`, so dashboards and alerting can react without re-deriving the ranges.
//!    Abnormal readings are recorded, never refused: they are exactly the readings that matter.
//!
//! One aggregate per patient (its id is the patient id); readings are numbered 1, 2, 3... and
//! a command naming another patient is refused with `PatientMismatch`.
//!
//! # Constants
//!
//! The physical limits (`PHYSICAL_*`) and clinical reference ranges (`NORMAL_*`) are public
//! constants, documented with the reason for each value.

mod aggregate;
mod commands;
mod errors;
mod events;
pub mod fhir;
mod signs;
#[cfg(test)]
mod tests;

pub use aggregate::PatientVitals;
pub use commands::VitalsCommand;
pub use errors::VitalsError;
pub use events::VitalsEvent;
pub use signs::{
    Deviation, OutOfRange, VitalSign, VitalSigns, NORMAL_DIASTOLIC, NORMAL_HEART_RATE,
    NORMAL_RESPIRATORY_RATE, NORMAL_SPO2, NORMAL_SYSTOLIC, NORMAL_TEMPERATURE_C,
    PHYSICAL_DIASTOLIC, PHYSICAL_HEART_RATE, PHYSICAL_RESPIRATORY_RATE, PHYSICAL_SPO2,
    PHYSICAL_SYSTOLIC, PHYSICAL_TEMPERATURE_C,
};
