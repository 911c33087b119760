//! Integration tests: the real server on port 0, a real PostgreSQL started by the harness,
//! real HTTP. One binary, one module per area.

mod abuse;
mod announce;
mod auth_keys;
mod cli;
mod commands;
mod conformance;
mod direct_writes;
mod errors;
mod events;
mod exactly_once;
mod field_workers;
mod group_commit;
mod helpers;
mod idempotency;
mod listener_faults;
mod operations;
mod policies;
mod presence;
mod projections_engine;
mod read_models;
mod realtime;
mod resume;
mod robustness;
mod stream_ordering;
mod vitals_batch;
mod websocket_frames;
