//! The `Alert` aggregate: a clinical alert from the moment it is raised until it is resolved.
//!
//! An alert (a deteriorating patient, a failed device, a code call) must be seen, owned and
//! closed, and the record must show who did what and when. Escalation pages the next tier when
//! nobody owns the alert or its owner needs help; it does not change who acknowledged it.
//!
//! # State machine
//!
//! Rows are commands, columns the alert's status before the command; each cell is the event
//! recorded (and the status after it) or the [`AlertError`] returned.
//!
//! | command \ status | never raised | `Raised` | `Acknowledged` | `Resolved` |
//! |---|---|---|---|---|
//! | `Raise` | `AlertRaised` → `Raised` | `AlreadyRaised` | `AlreadyRaised` | `AlreadyRaised` |
//! | `Acknowledge` | `NotFound` | `AlertAcknowledged` → `Acknowledged` | `AlreadyAcknowledged` | `AlreadyResolved` |
//! | `Escalate` | `NotFound` | `AlertEscalated` (stays `Raised`) | `AlertEscalated` (stays `Acknowledged`) | `AlreadyResolved` |
//! | `Resolve` | `NotFound` | `AlertResolved` → `Resolved` | `AlertResolved` → `Resolved` | `AlreadyResolved` |
//!
//! Escalation levels count from 0 (raised, not escalated); each `AlertEscalated` carries the new
//! level, and an alert already at [`MAX_ESCALATION_LEVEL`] is refused with
//! `MaxEscalationReached`. An escalation may carry an [`EscalationGuard`]: with `FromLevel(n)`
//! it is refused with `EscalationLevelChanged` unless the alert is at level `n`, and with
//! `Unacknowledged { from_level: n }` also with `AlreadyAcknowledged` once someone owns it.
//! `Raise` on an existing alert is always `AlreadyRaised`, even once
//! resolved: an alert id names one alert for ever, and a recurrence is a new alert.

mod aggregate;
mod commands;
mod errors;
mod events;
mod severity;
#[cfg(test)]
mod tests;

pub use aggregate::{Alert, AlertStatus, MAX_ESCALATION_LEVEL};
pub use commands::{AlertCommand, EscalationGuard};
pub use errors::AlertError;
pub use events::AlertEvent;
pub use severity::Severity;
