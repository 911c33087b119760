//! Integration tests: the real server on port 0, a real PostgreSQL started by the harness,
//! real HTTP. One binary, one module per area.

mod auth_keys;
mod cli;
mod commands;
mod errors;
mod events;
mod helpers;
mod idempotency;
mod operations;
mod realtime;
mod stream_ordering;
