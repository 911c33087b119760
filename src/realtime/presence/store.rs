//! Presence in PostgreSQL: the node's store writer (heartbeat, sweep, session rows,
//! notifications, in order) and the presence query.
//!
//! The writer is one task per node fed by a bounded queue, so a node's writes and
//! notifications reach PostgreSQL — and so every other node — in the order the hub made
//! them: a disconnect can never overtake its connect, nor an `unview` its `view`. It keeps
//! a mirror of the sessions it was told about; whenever the table may disagree with it (a
//! failed write, a queue overflow, the cluster having presumed this node dead) it is
//! "dirty", and its next heartbeat rewrites the node's rows from the mirror.

use std::collections::{BTreeSet, HashMap};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aggregates::types::{HospitalId, Role, UserId};
use sqlx::{PgPool, Row};
use tokio::sync::{mpsc, oneshot};
use tokio::time::MissedTickBehavior;
use uuid::Uuid;

use super::note::Note;
use super::state::{aggregate_presence, OnlineUser, PresenceRow};
use super::{Peers, CHANNEL, OUTBOX_CAPACITY};
use crate::config::PresenceSettings;
use crate::realtime::SessionId;

/// One connection as stored in `presence_sessions`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRow {
    pub session: SessionId,
    pub hospital: HospitalId,
    pub user: UserId,
    pub role: Role,
}

/// What the hub asks the writer to do, in order.
#[derive(Debug)]
pub enum Op {
    /// Store a connection and announce its hospital's presence change.
    Connect(SessionRow),
    /// Delete a connection and announce its hospital's presence change.
    Disconnect { session: SessionId },
    /// Send a notification.
    Notify(Note),
    /// The hub's full set of connections, after the queue overflowed: replaces the mirror
    /// and rewrites the rows at the next heartbeat.
    Resync(Vec<SessionRow>),
    /// The node leaves the cluster (graceful shutdown): delete its rows, announce it, answer,
    /// and stop.
    Leave(oneshot::Sender<()>),
}

impl Op {
    /// Whether losing this op would leave the tables wrong (rather than some typing or
    /// viewing state briefly stale).
    pub fn is_essential(&self) -> bool {
        !matches!(self, Op::Notify(_))
    }
}

/// Starts the node's writer on the current runtime; it registers the node at once, then
/// heartbeats and sweeps every `settings.node_heartbeat`. It stops after [`Op::Leave`]
/// (having deleted the node's rows), or when the returned sender is dropped (the hub
/// stopped) without deleting anything: a node that stops without leaving is, to the
/// cluster, a dead node, swept after the node timeout.
///
/// `leaving` is set by the hub when the node leaves: from then on the writer skips the
/// database work of everything queued before the [`Op::Leave`] (connects, disconnects,
/// notifications, heartbeats — the leave deletes all of the node's rows anyway), so a node
/// shutting down with thousands of connections closing leaves at once instead of after
/// thousands of single-row deletes.
pub fn spawn_writer(
    pool: PgPool,
    node: Uuid,
    settings: &PresenceSettings,
    peers: Arc<Peers>,
    leaving: Arc<AtomicBool>,
) -> mpsc::Sender<Op> {
    let (sender, receiver) = mpsc::channel(OUTBOX_CAPACITY);
    let writer = Writer {
        pool,
        node,
        peers,
        leaving,
        timeout: settings.node_timeout,
        mirror: HashMap::new(),
        dirty: true,
    };
    tokio::spawn(writer.run(receiver, settings.node_heartbeat));
    sender
}

struct Writer {
    pool: PgPool,
    node: Uuid,
    /// Other live nodes, counted at each heartbeat.
    peers: Arc<Peers>,
    /// Set by the hub when the node leaves the cluster (see [`spawn_writer`]).
    leaving: Arc<AtomicBool>,
    timeout: Duration,
    /// The sessions this node holds, as far as the writer was told.
    mirror: HashMap<SessionId, SessionRow>,
    /// Whether the tables may disagree with `mirror`; starts true so that the first
    /// heartbeat registers the node and clears leftovers of a previous run with its id.
    dirty: bool,
}

impl Writer {
    async fn run(mut self, mut ops: mpsc::Receiver<Op>, heartbeat: Duration) {
        let mut beat = tokio::time::interval(heartbeat);
        beat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                // Heartbeats first: a flood of changes must not make the node look dead.
                biased;
                _ = beat.tick() => self.beat().await,
                op = ops.recv() => match op {
                    Some(op) => {
                        if self.apply(op).await.is_break() {
                            break;
                        }
                    }
                    None => break,
                },
            }
        }
        tracing::info!(node = %self.node, "presence writer stopped");
    }

    /// Carries out `op`; breaks once the node has left the cluster.
    async fn apply(&mut self, op: Op) -> ControlFlow<()> {
        if self.leaving.load(Ordering::Acquire) && !matches!(op, Op::Leave(_)) {
            return ControlFlow::Continue(());
        }
        match op {
            Op::Connect(row) => {
                self.mirror.insert(row.session, row.clone());
                if !self.dirty {
                    if let Err(error) = insert_session(&self.pool, self.node, &row).await {
                        tracing::warn!(%error, "cannot store a connection; rewriting at the next heartbeat");
                        self.dirty = true;
                    }
                }
            }
            Op::Disconnect { session } => {
                let Some(row) = self.mirror.remove(&session) else {
                    return ControlFlow::Continue(());
                };
                if !self.dirty {
                    if let Err(error) = delete_session(&self.pool, self.node, &row).await {
                        tracing::warn!(%error, "cannot delete a connection; rewriting at the next heartbeat");
                        self.dirty = true;
                    }
                }
            }
            Op::Notify(note) => {
                let Some(payload) = note.to_payload() else {
                    return ControlFlow::Continue(());
                };
                if let Err(error) = notify(&self.pool, &payload).await {
                    // Typing and viewing are refreshed anyway; nothing to repair.
                    tracing::debug!(%error, "cannot send a presence notification");
                }
            }
            Op::Resync(rows) => {
                self.mirror = rows.into_iter().map(|r| (r.session, r)).collect();
                self.dirty = true;
            }
            Op::Leave(done) => {
                self.leave().await;
                let _ = done.send(());
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    }

    async fn leave(&mut self) {
        match leave(&self.pool, self.node).await {
            Ok(sessions) => {
                tracing::info!(node = %self.node, sessions, "left the cluster");
            }
            Err(error) => {
                tracing::warn!(%error, node = %self.node, "cannot leave the cluster; the other nodes will sweep this one after the node timeout");
            }
        }
        self.mirror.clear();
    }

    async fn beat(&mut self) {
        if self.leaving.load(Ordering::Acquire) {
            return;
        }
        if !self.dirty {
            match touch_node(&self.pool, self.node).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(node = %self.node, "the cluster presumed this node dead; registering it again");
                    self.dirty = true;
                }
                Err(error) => {
                    tracing::warn!(%error, "presence heartbeat failed");
                    self.dirty = true;
                    return;
                }
            }
        }
        if self.dirty {
            let rows: Vec<&SessionRow> = self.mirror.values().collect();
            match rewrite_node(&self.pool, self.node, &rows).await {
                Ok(()) => self.dirty = false,
                Err(error) => {
                    tracing::warn!(%error, "cannot register this node's presence");
                    return;
                }
            }
        }
        if let Err(error) = sweep(&self.pool, self.node, self.timeout).await {
            tracing::warn!(%error, "presence sweep failed");
        }
        match live_peers(&self.pool, self.node, self.timeout).await {
            Ok(count) => self.peers.set(count),
            Err(error) => tracing::warn!(%error, "cannot count the other nodes"),
        }
    }
}

/// Other nodes whose heartbeat is younger than `timeout`.
async fn live_peers(pool: &PgPool, node: Uuid, timeout: Duration) -> Result<usize, sqlx::Error> {
    let count: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM presence_nodes WHERE node_id <> $1 \
         AND last_seen > clock_timestamp() - make_interval(secs => $2)",
    )
    .bind(node)
    .bind(timeout.as_secs_f64())
    .fetch_one(pool)
    .await?;
    Ok(usize::try_from(count).unwrap_or(0))
}

/// `session_id` is `bigint`; session ids are `u64`. The cast keeps the bits (and so is
/// reversible and never fails); ids are small in practice anyway.
fn session_column(session: SessionId) -> i64 {
    session as i64
}

fn presence_payload(hospital: &HospitalId) -> Option<String> {
    Note::Presence {
        hospital: hospital.clone(),
    }
    .to_payload()
}

/// Inserts (or replaces) a connection and announces its hospital, in one statement: the
/// notification is sent if and only if the row is written.
async fn insert_session(pool: &PgPool, node: Uuid, row: &SessionRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "WITH written AS ( \
             INSERT INTO presence_sessions (node_id, session_id, hospital, user_id, role) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (node_id, session_id) DO UPDATE \
                 SET hospital = EXCLUDED.hospital, user_id = EXCLUDED.user_id, \
                     role = EXCLUDED.role, connected_at = clock_timestamp() \
             RETURNING 1) \
         SELECT pg_notify($6, $7) FROM written",
    )
    .bind(node)
    .bind(session_column(row.session))
    .bind(row.hospital.as_str())
    .bind(row.user.as_str())
    .bind(row.role.as_str())
    .bind(CHANNEL)
    .bind(presence_payload(&row.hospital))
    .execute(pool)
    .await?;
    Ok(())
}

/// Deletes a connection and announces its hospital if there was one.
async fn delete_session(pool: &PgPool, node: Uuid, row: &SessionRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "WITH deleted AS ( \
             DELETE FROM presence_sessions WHERE node_id = $1 AND session_id = $2 RETURNING 1) \
         SELECT pg_notify($3, $4) FROM deleted",
    )
    .bind(node)
    .bind(session_column(row.session))
    .bind(CHANNEL)
    .bind(presence_payload(&row.hospital))
    .execute(pool)
    .await?;
    Ok(())
}

async fn notify(pool: &PgPool, payload: &str) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(payload)
        .execute(pool)
        .await?;
    Ok(())
}

/// Refreshes the node's `last_seen`; false if its row is gone (swept as dead).
async fn touch_node(pool: &PgPool, node: Uuid) -> Result<bool, sqlx::Error> {
    let updated =
        sqlx::query("UPDATE presence_nodes SET last_seen = clock_timestamp() WHERE node_id = $1")
            .bind(node)
            .execute(pool)
            .await?;
    Ok(updated.rows_affected() == 1)
}

/// Registers the node and replaces its sessions with `rows`, announcing every hospital
/// whose sessions may have changed; all in one transaction.
async fn rewrite_node(pool: &PgPool, node: Uuid, rows: &[&SessionRow]) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO presence_nodes (node_id) VALUES ($1) \
         ON CONFLICT (node_id) DO UPDATE SET last_seen = clock_timestamp()",
    )
    .bind(node)
    .execute(&mut *tx)
    .await?;
    let removed: Vec<String> = sqlx::query_scalar(
        "WITH removed AS (DELETE FROM presence_sessions WHERE node_id = $1 RETURNING hospital) \
         SELECT DISTINCT hospital FROM removed",
    )
    .bind(node)
    .fetch_all(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO presence_sessions (node_id, session_id, hospital, user_id, role) \
         SELECT $1, * FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[])",
    )
    .bind(node)
    .bind(
        rows.iter()
            .map(|r| session_column(r.session))
            .collect::<Vec<_>>(),
    )
    .bind(rows.iter().map(|r| r.hospital.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.user.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.role.as_str()).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await?;
    let mut hospitals: BTreeSet<&str> = rows.iter().map(|r| r.hospital.as_str()).collect();
    hospitals.extend(removed.iter().map(String::as_str));
    notify_all(&mut tx, &departure_notes(&[], hospitals)).await?;
    tx.commit().await
}

/// What the cluster is told when sessions disappear: each node gone as down, each hospital
/// whose sessions changed (ids that are not valid hospitals are skipped).
fn departure_notes<'a>(nodes: &[Uuid], hospitals: impl IntoIterator<Item = &'a str>) -> Vec<Note> {
    let mut notes: Vec<Note> = nodes.iter().map(|&node| Note::NodeDown { node }).collect();
    notes.extend(
        hospitals
            .into_iter()
            .filter_map(|h| HospitalId::parse(h).ok())
            .map(|hospital| Note::Presence { hospital }),
    );
    notes
}

/// Sends `notes` in the transaction (delivered if and only if it commits).
async fn notify_all(conn: &mut sqlx::PgConnection, notes: &[Note]) -> Result<(), sqlx::Error> {
    let payloads: Vec<String> = notes.iter().filter_map(Note::to_payload).collect();
    if payloads.is_empty() {
        return Ok(());
    }
    sqlx::query("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p")
        .bind(CHANNEL)
        .bind(&payloads)
        .execute(conn)
        .await?;
    Ok(())
}

/// Deletes `node` and the sessions it still holds, announcing it as down and each of those
/// sessions' hospitals, in one transaction. Returns how many sessions were deleted.
async fn leave(pool: &PgPool, node: Uuid) -> Result<i64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let row = sqlx::query(
        "WITH node AS (DELETE FROM presence_nodes WHERE node_id = $1), \
         gone AS (DELETE FROM presence_sessions WHERE node_id = $1 RETURNING hospital) \
         SELECT (SELECT count(*) FROM gone) AS sessions, \
                (SELECT coalesce(array_agg(DISTINCT hospital), '{}') FROM gone) AS hospitals",
    )
    .bind(node)
    .fetch_one(&mut *tx)
    .await?;
    let hospitals: Vec<String> = row.try_get("hospitals")?;
    notify_all(
        &mut tx,
        &departure_notes(&[node], hospitals.iter().map(String::as_str)),
    )
    .await?;
    tx.commit().await?;
    row.try_get("sessions")
}

/// Deletes the nodes silent for longer than `timeout` (never this one) with their sessions,
/// and sessions whose node row is gone; announces their hospitals and the dead nodes. In one
/// transaction, so a sweeper dying half-way cannot delete without announcing. Several nodes
/// sweeping at once is harmless: the second finds nothing left.
async fn sweep(pool: &PgPool, node: Uuid, timeout: Duration) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    let row = sqlx::query(
        "WITH dead AS ( \
             DELETE FROM presence_nodes \
             WHERE node_id <> $1 AND last_seen < clock_timestamp() - make_interval(secs => $2) \
             RETURNING node_id), \
         gone AS ( \
             DELETE FROM presence_sessions s \
             WHERE s.node_id <> $1 \
               AND (s.node_id IN (SELECT node_id FROM dead) \
                    OR NOT EXISTS (SELECT 1 FROM presence_nodes n WHERE n.node_id = s.node_id)) \
             RETURNING s.hospital) \
         SELECT (SELECT coalesce(array_agg(node_id), '{}') FROM dead) AS nodes, \
                (SELECT coalesce(array_agg(DISTINCT hospital), '{}') FROM gone) AS hospitals",
    )
    .bind(node)
    .bind(timeout.as_secs_f64())
    .fetch_one(&mut *tx)
    .await?;
    let nodes: Vec<Uuid> = row.try_get("nodes")?;
    let hospitals: Vec<String> = row.try_get("hospitals")?;
    if !nodes.is_empty() || !hospitals.is_empty() {
        tracing::info!(
            dead_nodes = nodes.len(),
            hospitals = hospitals.len(),
            "swept dead presence"
        );
        notify_all(
            &mut tx,
            &departure_notes(&nodes, hospitals.iter().map(String::as_str)),
        )
        .await?;
    }
    tx.commit().await
}

/// Who is online in `hospital` over all live nodes (nodes heard from within `timeout`).
pub async fn online(
    pool: &PgPool,
    hospital: &HospitalId,
    timeout: Duration,
) -> Result<Vec<OnlineUser>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT s.user_id, s.role, count(*) AS connections, max(s.connected_at) AS last_connected \
         FROM presence_sessions s JOIN presence_nodes n ON n.node_id = s.node_id \
         WHERE s.hospital = $1 \
           AND n.last_seen > clock_timestamp() - make_interval(secs => $2) \
         GROUP BY s.user_id, s.role",
    )
    .bind(hospital.as_str())
    .bind(timeout.as_secs_f64())
    .fetch_all(pool)
    .await?;
    let mut groups = Vec::with_capacity(rows.len());
    for row in rows {
        let role: String = row.try_get("role")?;
        let Ok(role) = role.parse::<Role>() else {
            tracing::warn!(role, "ignoring a presence row with an unknown role");
            continue;
        };
        let connections: i64 = row.try_get("connections")?;
        groups.push(PresenceRow {
            user: row.try_get("user_id")?,
            role,
            connections: u32::try_from(connections).unwrap_or(u32::MAX),
            last_connected: row.try_get("last_connected")?,
        });
    }
    Ok(aggregate_presence(groups))
}
