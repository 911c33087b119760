//! How many WebSocket connections a user holds on the *other* nodes of a cluster: what the
//! per-user connection limit adds to a node's own count when other nodes are alive.
//!
//! One query per admitted connection would put a database round trip and a statement on
//! every connection of a reconnect storm (10,000 clients reconnecting to the surviving nodes
//! after one died). Requests are therefore batched: one task runs the queries, and every
//! request that arrived while a query was in flight goes into the next one (one statement
//! over `unnest` of the keys). A lone request is not delayed; a storm costs a few statements.
//!
//! The count comes from `presence_sessions`, which a node fills shortly after it admits a
//! connection (its store writer inserts the row: milliseconds when idle, longer when the
//! writer is busy or rewriting its rows after a failed write). Connections opened on
//! different nodes before their rows are written do not see each other, so during that lag
//! each node can admit up to the whole limit: at worst limit × nodes for a moment.
//!
//! Only nodes heard from within [`PresenceSettings::admission_liveness`] count: a crashed
//! node's rows would otherwise hold its users' reconnects out until the sweep removes them.
//! And the count never holds an admission up for long: a query that does not answer within
//! [`QUERY_TIMEOUT`] (pool exhausted, database unreachable, a lock; PostgreSQL cancels it
//! too) counts as unknown, and the caller admits; a request waits at most 2 s in all.
//!
//! [`PresenceSettings::admission_liveness`]: super::PresenceSettings::admission_liveness

use std::time::Duration;

use aggregates::types::{HospitalId, UserId};
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

/// Most keys one query carries.
const MAX_BATCH: usize = 512;

/// Requests that may wait for the counting task; beyond, a request is answered "unknown".
const QUEUE: usize = 16_384;

/// Longest a count query may take before its batch is answered "unknown".
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(1);

/// The same limit on PostgreSQL's side, a little shorter: a query abandoned by the client
/// would otherwise go on waiting (on a lock, say) and keep its pooled connection, one more
/// per timed-out batch, until the pool had none left for commands.
const SERVER_TIMEOUT: &str = "SET LOCAL statement_timeout = '900ms'";

/// Longest a request waits for its answer (queued behind other batches, then its own
/// query) before it is "unknown".
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

type Request = (HospitalId, UserId, oneshot::Sender<Option<u32>>);

/// Handle to the counting task.
#[derive(Clone, Debug)]
pub struct Elsewhere {
    requests: mpsc::Sender<Request>,
}

impl Elsewhere {
    /// Starts the counting task on the current runtime: it counts the connections of nodes
    /// other than `node` whose heartbeat is younger than `live_within`.
    pub fn spawn(pool: PgPool, node: Uuid, live_within: Duration) -> Self {
        let (requests, receiver) = mpsc::channel(QUEUE);
        tokio::spawn(run(pool, node, live_within, receiver));
        Self { requests }
    }

    /// The connections `user` of `hospital` holds on other live nodes; `None` if they could
    /// not be counted within [`ANSWER_TIMEOUT`] (database unreachable or slow, queue full).
    pub async fn count(&self, hospital: HospitalId, user: UserId) -> Option<u32> {
        let (reply, answer) = oneshot::channel();
        self.requests.try_send((hospital, user, reply)).ok()?;
        tokio::time::timeout(ANSWER_TIMEOUT, answer)
            .await
            .ok()?
            .ok()
            .flatten()
    }
}

async fn run(
    pool: PgPool,
    node: Uuid,
    live_within: Duration,
    mut requests: mpsc::Receiver<Request>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while requests.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (hospitals, users): (Vec<&str>, Vec<&str>) = batch
            .iter()
            .map(|(hospital, user, _)| (hospital.as_str(), user.as_str()))
            .unzip();
        let counts = tokio::time::timeout(
            QUERY_TIMEOUT,
            count(&pool, node, live_within, &hospitals, &users),
        )
        .await;
        let counts = match counts {
            Ok(Ok(counts)) => counts,
            Ok(Err(error)) => {
                tracing::warn!(%error, "cannot count connections on other nodes");
                Vec::new()
            }
            Err(_) => {
                tracing::warn!(timeout = ?QUERY_TIMEOUT, "counting connections on other nodes timed out");
                Vec::new()
            }
        };
        for (i, (_, _, reply)) in batch.drain(..).enumerate() {
            let _ = reply.send(counts.get(i).copied());
        }
    }
}

/// One count per (hospital, user) pair, in the order given.
async fn count(
    pool: &PgPool,
    node: Uuid,
    live_within: Duration,
    hospitals: &[&str],
    users: &[&str],
) -> Result<Vec<u32>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query(SERVER_TIMEOUT).execute(&mut *tx).await?;
    let rows: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT k.i, count(s.session_id) \
         FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS k(hospital, user_id, i) \
         LEFT JOIN presence_sessions s \
           ON s.hospital = k.hospital AND s.user_id = k.user_id AND s.node_id <> $3 \
          AND EXISTS (SELECT 1 FROM presence_nodes n WHERE n.node_id = s.node_id \
                      AND n.last_seen > clock_timestamp() - make_interval(secs => $4)) \
         GROUP BY k.i ORDER BY k.i",
    )
    .bind(hospitals)
    .bind(users)
    .bind(node)
    .bind(live_within.as_secs_f64())
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows
        .into_iter()
        .map(|(_, n)| u32::try_from(n).unwrap_or(u32::MAX))
        .collect())
}
