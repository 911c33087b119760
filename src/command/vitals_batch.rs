//! Batched vitals: many readings, for many patients, recorded in ONE transaction.
//!
//! Bedside monitors send a reading every few seconds per patient; one transaction per reading
//! caps ingest at the hospital's commit rate. A batch pays for one commit (and one fsync)
//! whatever its size, while each reading stays its own `VitalsRecorded` event of its
//! patient's `PatientVitals` aggregate, with its own position in the hospital's stream, so
//! readers, projectors and the out-of-range policy see exactly what single readings produce.
//!
//! Why not cqrs-es's `execute` per reading: each call commits its own transaction. This
//! module does what cqrs-es does (load the aggregate, `decide`, insert with the next
//! sequence; a concurrent writer to the same patient makes the insert violate the primary key
//! and the batch is retried against the new state) for all readings in one transaction, and
//! writes rows the same shape postgres-es writes, so cqrs-es loads them as its own.
//!
//! At most once, as for single commands: every event of the batch carries the batch's one
//! `command_id`, the event trigger's guard lets a command id commit in one transaction only,
//! and a failure around the commit is resolved ([`CommandBus::resolve`]) before answering.
//! All or nothing: the readings commit together or not at all.

use std::collections::HashMap;
use std::ops::RangeInclusive;

use aggregates::types::{HospitalId, PatientId};
use aggregates::vitals::{PatientVitals, VitalSigns, VitalsCommand, VitalsError, VitalsEvent};
use chrono::{DateTime, Utc};
use cqrs_es::{Aggregate, DomainEvent};
use sqlx::{Postgres, Row, Transaction};

use super::{
    is_guarded, is_unavailable, CommandBus, CommandContext, CommandError, CommandOutcome,
    Resolution, CONFLICT_RETRIES,
};
use crate::stream::announce::Announcer;
use crate::stream::{store_key, Position};

/// One reading of a batch, already parsed (the HTTP edge validated its shape).
#[derive(Clone, Debug)]
pub struct BatchReading {
    /// The patient.
    pub patient: PatientId,
    /// The values.
    pub signs: VitalSigns,
    /// When they were measured.
    pub at: DateTime<Utc>,
}

/// Where one reading of a committed batch landed.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordedReading {
    /// Position in the hospital's stream.
    pub position: Position,
    /// The reading's number for its patient (the aggregate's sequence).
    pub reading: i64,
}

/// A committed batch: one entry per reading, in request order (which is position order).
#[derive(Clone, Debug, PartialEq)]
pub struct BatchCommitted {
    /// The readings' positions and numbers, index for index with the request.
    pub readings: Vec<RecordedReading>,
}

/// A reading the aggregate refused; the whole batch is refused with it.
#[derive(Clone, Copy, Debug, PartialEq, thiserror::Error)]
#[error("reading {index}: {error}")]
pub struct ReadingRefused {
    /// The reading's index in the batch.
    pub index: usize,
    /// Why.
    pub error: VitalsError,
}

/// The stored event version of a reading, as postgres-es writes it (`DomainEvent::event_version`).
const EVENT_VERSION: &str = "1.0";

/// Takes the hospital's stream head before the batch reads any state.
///
/// Every writer of a hospital holds this row's lock from its first event to its commit (the
/// position trigger updates it), so writers of one hospital already run one after another.
/// Taking it *first* means no other writer of the hospital can commit between this batch's
/// reads and its inserts: its aggregate states cannot go stale, and a batch never conflicts
/// (without it, concurrent batches over the same patients — every gateway's batch touches
/// many — each waited for the other's commit only to violate the primary key and start
/// over). The extra hold is the load query, about a millisecond. A hospital without a head
/// yet (its first event) locks nothing; a conflict there is retried as usual.
///
/// Used for a batch of one reading only; larger batches take the lock with their
/// reservation ([`RESERVE`]).
const LOCK_HEAD: &str = "SELECT 1 FROM stream_heads WHERE hospital = $1 FOR UPDATE";

/// Reserves the batch's positions in one call (migration
/// `20261207000013_reserve_stream_positions.sql`): the command id guard once, the hospital's
/// head advanced by the batch's size in one update — taking the head row's lock first, as
/// [`LOCK_HEAD`] does, held to commit — and the range recorded for this transaction, so the
/// events can be inserted with their positions given instead of the trigger assigning them
/// row by row (what cost the most per reading). Returns the first position. The database
/// refuses a preset position outside the reservation and a commit that leaves part of it
/// unwritten, so positions stay dense and commit-ordered whatever this code does.
const RESERVE: &str = "SELECT vigil_reserve_stream_positions($1, $2, $3)";

/// Loads the last event of each patient's vitals aggregate: one index probe per patient,
/// whatever the length of the stay (see [`PatientVitals::after_last`]).
const LOAD_LAST: &str = "SELECT ids.id, e.payload::text AS payload \
     FROM unnest($1::text[]) AS ids(id) \
     LEFT JOIN LATERAL (SELECT payload FROM events \
        WHERE aggregate_type = $2 AND aggregate_id = ids.id \
        ORDER BY sequence DESC LIMIT 1) e ON true";

/// Inserts the batch's events in request order; the columns are postgres-es's seven, plus
/// the stream columns when the positions were reserved (`$8`: the first one; NULL leaves
/// them to the per-row trigger, which assigns them in that order).
macro_rules! insert_events {
    () => {
        "INSERT INTO events \
           (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, \
            metadata, hospital, position, command_id) \
         SELECT $1, t.aggregate_id, t.sequence, t.event_type, $2, t.payload::json, $3::json, \
                $9, $8::bigint + t.n - 1, $10 \
         FROM unnest($4::text[], $5::bigint[], $6::text[], $7::text[]) WITH ORDINALITY \
              AS t(aggregate_id, sequence, event_type, payload, n) \
         ORDER BY t.n"
    };
}

/// The insert with reserved positions: nothing to read back, row i is at the first + i.
const INSERT_EVENTS: &str = insert_events!();

/// The insert when the trigger assigns the positions: they are read back.
const INSERT_EVENTS_RETURNING: &str = concat!(
    insert_events!(),
    " RETURNING aggregate_id, sequence, position"
);

/// How one transaction of the batch ended.
enum Attempt {
    Committed(BatchCommitted),
    /// Another writer took a sequence this batch wanted: retry against the new state.
    Conflict,
    /// The guard refused the command id: it committed before, or was fenced.
    Guarded,
    Refused(CommandError<ReadingRefused>),
    Failed {
        unavailable: bool,
        reason: String,
    },
}

impl CommandBus {
    /// Records `readings` in one transaction under `ctx.command_id`, or nothing.
    ///
    /// Same contract as [`CommandBus::execute`]: running the same command id again answers
    /// the first run's outcome, and every error but [`CommandError::OutcomeUnknown`] means
    /// nothing persisted, ever.
    pub async fn record_vitals_batch(
        &self,
        ctx: &CommandContext,
        readings: &[BatchReading],
    ) -> Result<BatchCommitted, CommandError<ReadingRefused>> {
        let mut attempt = 0;
        let failure = loop {
            attempt += 1;
            match self.batch_attempt(ctx, readings).await {
                Attempt::Committed(committed) => {
                    announce_committed(self.announcer(), &ctx.hospital, &committed);
                    return Ok(committed);
                }
                Attempt::Conflict if attempt <= CONFLICT_RETRIES => {
                    tracing::debug!(attempt, "vitals batch conflicted; retrying");
                }
                Attempt::Conflict => return Err(CommandError::Conflict),
                Attempt::Refused(error) => return Err(error),
                Attempt::Guarded => break (true, "already committed or withdrawn".to_owned()),
                Attempt::Failed {
                    unavailable,
                    reason,
                } => break (unavailable, reason),
            }
        };
        let (unavailable, reason) = failure;
        match self.resolve_within(ctx.command_id, &ctx.hospital).await {
            Some(Resolution::Committed(outcome)) => {
                let committed = from_outcome(&outcome);
                announce_committed(self.announcer(), &ctx.hospital, &committed);
                Ok(committed)
            }
            Some(Resolution::NeverCommitted) if unavailable => {
                Err(CommandError::Unavailable(reason))
            }
            Some(Resolution::NeverCommitted) => Err(CommandError::Store(reason)),
            None => Err(CommandError::OutcomeUnknown {
                command_id: ctx.command_id,
                reason,
            }),
        }
    }

    async fn batch_attempt(&self, ctx: &CommandContext, readings: &[BatchReading]) -> Attempt {
        let mut tx = match self.pool.begin().await {
            Ok(tx) => tx,
            Err(error) => {
                return Attempt::Refused(CommandError::Unavailable(format!(
                    "cannot begin a transaction: {error}"
                )))
            }
        };
        let first = match reserve(&mut tx, ctx, readings.len()).await {
            Ok(first) => first,
            Err(error) => return classify(error),
        };
        let rows = match plan(&mut tx, ctx, readings).await {
            Ok(Ok(rows)) => rows,
            Ok(Err(refused)) => return Attempt::Refused(CommandError::Rejected(refused)),
            Err(error) => return classify(error),
        };
        let inserted = match insert(&mut tx, ctx, first, &rows).await {
            Ok(inserted) => inserted,
            Err(error) => return classify(error),
        };
        match tx.commit().await {
            Ok(()) => Attempt::Committed(inserted),
            Err(error) => classify(error),
        }
    }
}

/// Locks the hospital's stream head and, for two readings or more, reserves their positions:
/// the first one, or `None` when the trigger assigns them.
async fn reserve(
    tx: &mut Transaction<'_, Postgres>,
    ctx: &CommandContext,
    count: usize,
) -> Result<Option<Position>, sqlx::Error> {
    if count < 2 {
        sqlx::query(LOCK_HEAD)
            .bind(ctx.hospital.as_str())
            .execute(&mut **tx)
            .await?;
        return Ok(None);
    }
    // The HTTP edge bounds a batch's size far below i64::MAX.
    let count = i64::try_from(count).unwrap_or(i64::MAX);
    let first: Position = sqlx::query_scalar(RESERVE)
        .bind(ctx.hospital.as_str())
        .bind(count)
        .bind(ctx.command_id)
        .fetch_one(&mut **tx)
        .await?;
    Ok(Some(first))
}

/// One event to insert.
struct EventRow {
    aggregate_id: String,
    sequence: i64,
    event_type: String,
    payload: String,
}

/// The events to insert, in request order.
type Rows = Vec<EventRow>;

/// Loads every patient's state and lets the aggregate decide each reading in turn (two
/// readings of one patient in a batch are numbered one after the other).
async fn plan(
    tx: &mut Transaction<'_, Postgres>,
    ctx: &CommandContext,
    readings: &[BatchReading],
) -> Result<Result<Rows, ReadingRefused>, sqlx::Error> {
    let mut keys: Vec<String> = readings
        .iter()
        .map(|r| store_key(&ctx.hospital, r.patient.as_str()))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    let loaded = sqlx::query(LOAD_LAST)
        .bind(&keys)
        .bind(PatientVitals::TYPE)
        .fetch_all(&mut **tx)
        .await?;
    let mut states: HashMap<String, PatientVitals> = HashMap::with_capacity(keys.len());
    for row in loaded {
        let key: String = row.try_get("id")?;
        let payload: Option<String> = row.try_get("payload")?;
        let state = match payload {
            None => PatientVitals::default(),
            Some(json) => {
                let last: VitalsEvent =
                    serde_json::from_str(&json).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
                PatientVitals::after_last(last)
            }
        };
        states.insert(key, state);
    }
    let mut rows = Vec::with_capacity(readings.len());
    for (index, reading) in readings.iter().enumerate() {
        let key = store_key(&ctx.hospital, reading.patient.as_str());
        let state = states.entry(key.clone()).or_default();
        let event = match state.decide(VitalsCommand::Record {
            patient: reading.patient.clone(),
            signs: reading.signs.clone(),
            by: ctx.user.clone(),
            at: reading.at,
        }) {
            Ok(event) => event,
            Err(error) => return Ok(Err(ReadingRefused { index, error })),
        };
        let payload =
            serde_json::to_string(&event).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
        let event_type = event.event_type();
        state.apply(event);
        rows.push(EventRow {
            aggregate_id: key,
            // The aggregate numbers readings 1, 2, 3...: its sequence.
            sequence: state.readings() as i64,
            event_type,
            payload,
        });
    }
    Ok(Ok(rows))
}

async fn insert(
    tx: &mut Transaction<'_, Postgres>,
    ctx: &CommandContext,
    first: Option<Position>,
    rows: &Rows,
) -> Result<BatchCommitted, sqlx::Error> {
    let metadata =
        serde_json::to_string(&ctx.metadata()).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let ids: Vec<&str> = rows.iter().map(|r| r.aggregate_id.as_str()).collect();
    let sequences: Vec<i64> = rows.iter().map(|r| r.sequence).collect();
    let types: Vec<&str> = rows.iter().map(|r| r.event_type.as_str()).collect();
    let payloads: Vec<&str> = rows.iter().map(|r| r.payload.as_str()).collect();
    let sql = if first.is_some() {
        INSERT_EVENTS
    } else {
        INSERT_EVENTS_RETURNING
    };
    let query = sqlx::query(sql)
        .bind(PatientVitals::TYPE)
        .bind(EVENT_VERSION)
        .bind(metadata)
        .bind(&ids)
        .bind(&sequences)
        .bind(&types)
        .bind(&payloads)
        .bind(first)
        .bind(first.map(|_| ctx.hospital.as_str()))
        .bind(first.map(|_| ctx.command_id));
    if let Some(first) = first {
        // Reserved: row i is at first + i (the database refused anything else).
        query.execute(&mut **tx).await?;
        let readings = (0_i64..)
            .zip(rows)
            .map(|(i, row)| RecordedReading {
                position: first + i,
                reading: row.sequence,
            })
            .collect();
        return Ok(BatchCommitted { readings });
    }
    let returned = query.fetch_all(&mut **tx).await?;
    let mut at: HashMap<(String, i64), Position> = HashMap::with_capacity(returned.len());
    for row in returned {
        at.insert(
            (row.try_get("aggregate_id")?, row.try_get("sequence")?),
            row.try_get("position")?,
        );
    }
    let readings = rows
        .iter()
        .map(|row| {
            let position = at
                .get(&(row.aggregate_id.clone(), row.sequence))
                .copied()
                .ok_or(sqlx::Error::RowNotFound)?;
            Ok(RecordedReading {
                position,
                reading: row.sequence,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok(BatchCommitted { readings })
}

/// Sorts a failed statement or commit into what the bus does next.
fn classify(error: sqlx::Error) -> Attempt {
    if let sqlx::Error::Database(db) = &error {
        // The events' primary key: a concurrent writer recorded a reading of one of the
        // batch's patients first; the transaction rolled back, certain.
        if db.code().as_deref() == Some("23505") {
            return Attempt::Conflict;
        }
    }
    if is_guarded(&error) {
        return Attempt::Guarded;
    }
    Attempt::Failed {
        unavailable: is_unavailable(&error),
        reason: error.to_string(),
    }
}

/// The batch as a generic outcome found in the log (after a failure around the commit, or on
/// a retry): its events in position order, which is request order.
pub fn from_outcome(outcome: &CommandOutcome) -> BatchCommitted {
    BatchCommitted {
        readings: outcome
            .events
            .iter()
            .map(|e| RecordedReading {
                position: e.position,
                reading: e.sequence,
            })
            .collect(),
    }
}

/// The positions a committed batch occupies (dense: one transaction held the hospital's
/// stream head for all of them).
pub fn positions(committed: &BatchCommitted) -> Option<RangeInclusive<Position>> {
    let first = committed.readings.first()?.position;
    let last = committed.readings.last()?.position;
    Some(first..=last)
}

/// The one place a batch is known committed, whichever way it was learned (the commit
/// returned, or the log was asked after a failure around it): every node's readers are woken
/// for its last position (one coalesced NOTIFY, see [`crate::stream::announce`]). The events
/// are not handed off in-process: this node's hospital actor reads the batch from the table in
/// one query, which costs less than decoding a thousand rows here for it.
fn announce_committed(announcer: &Announcer, hospital: &HospitalId, committed: &BatchCommitted) {
    if let Some(range) = positions(committed) {
        tracing::trace!(%hospital, first = range.start(), last = range.end(), "vitals batch committed");
        announcer.committed(hospital, *range.end());
    }
}
