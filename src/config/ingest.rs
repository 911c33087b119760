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
}

impl Default for IngestSettings {
    fn default() -> Self {
        Self {
            vitals_batch_max: DEFAULT_VITALS_BATCH_MAX,
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
