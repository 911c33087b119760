//! How many WebSocket connections a user holds on the *other* nodes of a cluster: what the
//! per-user connection limit adds to a node's own count when other nodes are alive.
//!
//! One query per admitted connection would put a database round trip and a statement on
//! every connection of a reconnect storm (10,000 clients reconnecting to the surviving nodes
//! after one died). Requests are therefore batched: one task runs the queries, and every
//! request that arrived while a query was in flight goes into the next one (one statement
//! over `unnest` of the keys). A lone request is not delayed; a storm costs a few statements.
//!
//! The count comes from `presence_sessions`, which a node fills a few milliseconds after it
//! admits a connection (its store writer inserts the row), so connections opened at the same
//! instant on different nodes can each pass: the limit can be exceeded by one connection per
//! node for that instant.

use std::time::Duration;

use aggregates::types::{HospitalId, UserId};
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

/// Most keys one query carries.
const MAX_BATCH: usize = 512;

/// Requests that may wait for the counting task; beyond, a request is answered "unknown".
const QUEUE: usize = 16_384;

type Request = (HospitalId, UserId, oneshot::Sender<Option<u32>>);

/// Handle to the counting task.
#[derive(Clone, Debug)]
pub struct Elsewhere {
    requests: mpsc::Sender<Request>,
}

impl Elsewhere {
    /// Starts the counting task on the current runtime: it counts the connections of nodes
    /// other than `node` whose heartbeat is younger than `timeout`.
    pub fn spawn(pool: PgPool, node: Uuid, timeout: Duration) -> Self {
        let (requests, receiver) = mpsc::channel(QUEUE);
        tokio::spawn(run(pool, node, timeout, receiver));
        Self { requests }
    }

    /// The connections `user` of `hospital` holds on other live nodes; `None` if they could
    /// not be counted (database unreachable, queue full).
    pub async fn count(&self, hospital: HospitalId, user: UserId) -> Option<u32> {
        let (reply, answer) = oneshot::channel();
        self.requests.try_send((hospital, user, reply)).ok()?;
        answer.await.ok().flatten()
    }
}

async fn run(pool: PgPool, node: Uuid, timeout: Duration, mut requests: mpsc::Receiver<Request>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while requests.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (hospitals, users): (Vec<&str>, Vec<&str>) = batch
            .iter()
            .map(|(hospital, user, _)| (hospital.as_str(), user.as_str()))
            .unzip();
        let counts = count(&pool, node, timeout, &hospitals, &users).await;
        let counts = match counts {
            Ok(counts) => counts,
            Err(error) => {
                tracing::warn!(%error, "cannot count connections on other nodes");
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
    timeout: Duration,
    hospitals: &[&str],
    users: &[&str],
) -> Result<Vec<u32>, sqlx::Error> {
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
    .bind(timeout.as_secs_f64())
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(_, n)| u32::try_from(n).unwrap_or(u32::MAX))
        .collect())
}
