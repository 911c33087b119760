//! Vigil's read models, built from the ordered hospital streams.
//!
//! A read model ([`engine::ReadModel`]) is a set of real tables with indexes for the queries it
//! serves, and a function that applies one event to them. The engine ([`engine`]) feeds it
//! each hospital's stream in position order and applies every batch **in the same PostgreSQL
//! transaction that advances the model's checkpoint**, so a crash at any point neither loses
//! nor double-applies an event. Several nodes may run the same projector: the checkpoint row
//! is locked (`FOR UPDATE SKIP LOCKED`) for the batch, so only one node advances a given
//! (model, hospital) at a time, and any node takes over when another dies.
//!
//! Rebuilds ([`engine::rebuild`]) project the whole log into shadow tables while the live
//! ones keep serving, then swap them in one transaction.

pub mod alert_board;
pub mod case_list;
pub mod engine;
pub mod event;
pub mod notification_inbox;
pub mod patient_view;
pub mod schedule;
