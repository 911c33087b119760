//! The `CaseThread` aggregate: one patient case and the conversation about it.
//!
//! This is the clinician / ASHA / CHW portal flow. A community worker (or anyone on the care
//! team) opens a case about a patient, optionally assigned to someone; a clinician reviews it
//! and accepts it, refers the patient on, or prescribes; the case is then completed, and may be
//! reopened if the patient's problem returns. Alongside, the team exchanges messages and each
//! reader's read position is tracked, so the portal can show unread counts.
//!
//! # Status flow
//!
//! | from \ to | allowed targets |
//! |---|---|
//! | `open` | `in_review` |
//! | `in_review` | `accepted`, `referred`, `prescribed`, `open` (sent back for more information) |
//! | `accepted` | `prescribed`, `referred`, `completed` |
//! | `prescribed` | `completed` |
//! | `referred` | `completed` |
//! | `completed` | `open` (reopen) |
//!
//! Anything else (including "changing" to the current status) is
//! [`CaseError::InvalidTransition`]; see [`CaseStatus::can_transition_to`].
//!
//! # Rules
//!
//! - `Open` creates the case (`AlreadyOpened` if it exists); every other command on a case that
//!   was never opened is `NotFound`.
//! - `Assign` to the current assignee is `AlreadyAssigned`.
//! - Messages are numbered 1, 2, 3... within the thread. `MarkRead { up_to }` must name an
//!   existing message (`UnknownMessage`) beyond the reader's current position (`AlreadyRead`).
//!   Posting does not mark the author's own message read: read positions move only through
//!   `MessagesRead`, so read models can derive them from that event alone.
//! - Every event carries the patient and the assignee at that moment, so the realtime layer
//!   can show an ASHA/CHW only the cases assigned to them without loading the aggregate.
//! - The aggregate keeps no message bodies, so loading a long thread stays cheap.

mod aggregate;
mod commands;
mod errors;
mod events;
mod status;
#[cfg(test)]
mod tests;

pub use aggregate::CaseThread;
pub use commands::CaseCommand;
pub use errors::CaseError;
pub use events::CaseEvent;
pub use status::CaseStatus;
