//! Vigil: a realtime, event-sourced engine for hospital software.
//!
//! Commands arrive over REST, run [`aggregates`] through cqrs-es, and are persisted as events
//! in PostgreSQL. Every event gets a position in its hospital's ordered stream
//! ([`stream`]), which is what lets any client resume exactly where it left off. See
//! `ARCHITECTURE.md` for the map of the code and the invariants it keeps.

pub mod access;
pub mod auth;
pub mod cli;
pub mod command;
pub mod config;
pub mod demo;
pub mod http;
pub mod metrics;
pub mod policy;
pub mod projection;
pub mod rate_limit;
pub mod realtime;
pub mod startup;
pub mod store;
pub mod stream;
pub mod telemetry;
