//! Vigil's domain: the event-sourced aggregates of a hospital, and nothing else.
//!
//! Every aggregate here is a pure state machine on top of [`cqrs_es::Aggregate`]: a command
//! goes in, business rules decide, and either events or a typed rejection come out. This crate
//! does no I/O, reads no clock and knows nothing of HTTP, SQL or WebSockets; the server wires
//! it to PostgreSQL and the network. Because of that, every rule is tested here with plain
//! given/when/then tests and no infrastructure.
//!
//! - [`types`]: validated value types (identifiers, bounded text, roles). Parse, don't validate:
//!   an invalid value cannot be constructed, so it never reaches an aggregate.
//! - [`rejection`]: how the HTTP edge classifies a domain error (not found, conflict, ...).
//! - [`alert`], [`case_thread`], [`vitals`], [`appointment`], [`notification`]: one module per
//!   aggregate, each with its commands, events, errors and tests.
//! - [`routing`]: what the realtime layer needs to route a stored event without loading state.

#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod alert;
pub mod appointment;
pub mod case_thread;
pub mod notification;
pub mod rejection;
pub mod routing;
pub mod types;
pub mod vitals;

#[cfg(test)]
mod test_support;
