//! How the HTTP edge classifies a domain error without knowing each aggregate.
//!
//! Every aggregate's error implements [`Rejection`]: a stable machine-readable `code` (what
//! clients branch on; the human message may be reworded, the code may not) and a
//! [`RejectionKind`] that the server maps to a status (404, 409, 403, 422). Keeping the
//! classification here, beside the rules, means the server needs no per-error match.

/// The broad class of a rejected command, which decides the HTTP status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RejectionKind {
    /// The command targets something that does not exist (yet).
    NotFound,
    /// The command is well formed but the aggregate's current state forbids it (retrying the
    /// same command cannot succeed; re-reading the state may show why).
    Conflict,
    /// The actor may not do this to this aggregate, whatever its state.
    Forbidden,
    /// A value in the command is unacceptable; `field` names it so a form can highlight it.
    Invalid {
        /// The command field (JSON name) that holds the unacceptable value.
        field: &'static str,
    },
}

/// A domain error the HTTP edge can report generically.
pub trait Rejection {
    /// A stable snake_case machine code, e.g. `"alert_already_acknowledged"`. Clients depend
    /// on it, so it never changes once published.
    fn code(&self) -> &'static str;

    /// The class of the rejection, from which the server picks the HTTP status.
    fn kind(&self) -> RejectionKind;
}
