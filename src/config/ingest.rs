//! Limits of bulk ingest (`POST /api/hospitals/{h}/vitals:batch`), as plain data with a flag
//! and a `VIGIL_*` variable each.

use clap::Args;

/// Default most readings per batch. A batch is one transaction holding the hospital's stream
/// head for its whole insert: 1,000 readings keep that under ~20 ms on a loaded core (other
/// writers of the hospital wait that long at most), while a gateway sending every few seconds
/// for a ward of 1,000 beds still needs only one request per round.
pub const DEFAULT_VITALS_BATCH_MAX: usize = 1_000;

/// Body bytes allowed per reading of a batch: a FHIR `Observation` with a blood-pressure panel,
/// `fullUrl` and `request` is ~1 KiB; twice that leaves room for verbose gateways.
pub const BATCH_BYTES_PER_READING: usize = 2 * 1024;

/// Limits of the batch endpoints.
#[derive(Clone, Debug, Args)]
pub struct IngestSettings {
    /// Most readings one `vitals:batch` request may carry (native or FHIR); larger batches are
    /// refused with 413 `batch_too_large` and change nothing.
    #[arg(long, env = "VIGIL_VITALS_BATCH_MAX", default_value_t = DEFAULT_VITALS_BATCH_MAX)]
    pub vitals_batch_max: usize,

    /// Group-commit lanes of the command bus: each commits the queued commands of its share of
    /// the hospitals in one statement (`command::group_commit`). More lanes commit more
    /// hospitals side by side; fewer make larger batches. One hospital always uses one lane.
    #[arg(long, env = "VIGIL_COMMIT_LANES", default_value_t = DEFAULT_COMMIT_LANES,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=64))]
    pub commit_lanes: usize,
}

/// Default group-commit lanes: enough for hospitals to commit side by side on a small
/// database host, few enough that batches stay large under load (BENCHMARKS.md).
pub const DEFAULT_COMMIT_LANES: usize = 4;

impl Default for IngestSettings {
    fn default() -> Self {
        Self {
            vitals_batch_max: DEFAULT_VITALS_BATCH_MAX,
            commit_lanes: DEFAULT_COMMIT_LANES,
        }
    }
}

impl IngestSettings {
    /// Largest body of a batch request: what its most readings may take, and never less
    /// than any other command may send.
    pub fn batch_body_bytes(&self) -> usize {
        self.vitals_batch_max
            .saturating_mul(BATCH_BYTES_PER_READING)
            .max(super::MAX_BODY_BYTES)
    }
}
