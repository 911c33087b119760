//! Post-commit announcements: how a writer tells every node that a hospital's stream moved,
//! and hands its own node the events it has just committed.
//!
//! **Why after the commit.** The event trigger used to `pg_notify` inside the command's
//! transaction. A notifying transaction holds PostgreSQL's cluster-wide notification-queue
//! lock from its pre-commit step until it has ended, across its commit record's fsync, so
//! every command commit in the cluster waited for the previous one's flush whatever its
//! hospital (BENCHMARKS.md, "Stream append": ~2,100-2,460 commits/s with the NOTIFY,
//! 4,800-7,000/s without). Now the writer, once its transaction has committed, calls
//! [`Announcer::committed`]; an in-process task coalesces the announcements (hospital →
//! highest position) and sends all of them with **one** `SELECT pg_notify(...)` statement
//! per wake-up on a pooled connection. That statement's implicit transaction writes no WAL
//! of its own (a notification is not logged), so its commit waits for no fsync while it
//! holds the queue lock, and one statement covers every command committed meanwhile.
//!
//! **A lost announcement delays, never loses.** The writer may die between its commit and
//! its announcement, the statement may fail, PostgreSQL may restart: readers then learn of
//! the commit from the head poll of [`super::listener`], which reads `stream_heads` every
//! few hundred milliseconds and wakes them for any head beyond what was heard. Readers
//! always read "after my last position" from the table, which is the truth.
//!
//! **Same-node handoff.** [`Announcer::handed_off`] also publishes the committed events
//! themselves on an in-process broadcast ([`Announcer::subscribe_handoffs`]), so this node's
//! hospital actor can append them to its window without reading back what the command path
//! has just written. The events are decoded from the committed rows exactly as a read-back
//! decodes them ([`super::read::decode_row`]), so a handed-off frame is byte-identical to a
//! read-back one; on a gap (the actor's head is not the position just before) the actor
//! reads from the table as before. Other nodes still read back, woken by the NOTIFY.
//!
//! Every path that inserts events must announce: the [`crate::command::CommandBus`] does
//! (policies and HTTP commands go through it); anything else that inserts into `events`
//! calls [`Announcer::committed`] after its commit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use aggregates::types::HospitalId;
use sqlx::PgPool;
use tokio::sync::{broadcast, mpsc};

use super::listener::CHANNEL;
use super::{Position, StreamEvent};

/// Handoffs buffered for a slow subscriber (a hospital actor) before it lags; a lagging
/// actor reads from the table instead, so this bounds memory, not correctness.
pub const HANDOFF_BUFFER: usize = 1024;

/// The announcement statement: one NOTIFY per hospital, all in one implicit transaction.
/// Payload `'<hospital> <position>'`, as [`super::listener`] parses it.
const ANNOUNCE: &str = "SELECT pg_notify($1, h || ' ' || p) \
     FROM unnest($2::text[], $3::bigint[]) AS t(h, p)";

/// Events one transaction committed in one hospital, handed to this node's readers.
#[derive(Debug)]
pub struct Handoff {
    /// The hospital whose stream the events extend.
    pub hospital: HospitalId,
    /// The committed events, in position order (dense: one transaction's positions are
    /// consecutive, since it held the hospital's head until it committed).
    pub events: Vec<StreamEvent>,
}

/// Announces committed positions to every node, and hands committed events to this node's
/// readers. Cheap to clone (shares one task). A disabled announcer ([`Announcer::disabled`])
/// does neither: readers then rely on the head poll alone (used to test that path).
#[derive(Clone, Debug)]
pub struct Announcer {
    inner: Option<Arc<Inner>>,
}

#[derive(Debug)]
struct Inner {
    /// Hospital → highest committed position not yet announced.
    pending: Mutex<HashMap<HospitalId, Position>>,
    /// Wakes the task; capacity 1, so announcements while one wake is queued coalesce.
    wake: mpsc::Sender<()>,
    handoffs: broadcast::Sender<Arc<Handoff>>,
}

impl Announcer {
    /// An announcer sending on `pool`, its task spawned on the current tokio runtime. The task
    /// ends when the last clone is dropped.
    pub fn spawn(pool: PgPool) -> Self {
        let (wake, woken) = mpsc::channel(1);
        let (handoffs, _) = broadcast::channel(HANDOFF_BUFFER);
        let inner = Arc::new(Inner {
            pending: Mutex::new(HashMap::new()),
            wake,
            handoffs,
        });
        tokio::spawn(run(pool, Arc::downgrade(&inner), woken));
        Self { inner: Some(inner) }
    }

    /// An announcer that announces nothing and hands off nothing.
    pub fn disabled() -> Self {
        Self { inner: None }
    }

    /// Records that `hospital`'s stream has committed up to `position`; every node's readers
    /// are woken shortly after (one statement per wake-up of the announcer's task, however
    /// many calls came in meanwhile). Call it after the transaction has committed — never
    /// before, or a reader may read too early and wait for the next wake-up. Never blocks,
    /// never fails: a lost announcement is covered by the head poll.
    pub fn committed(&self, hospital: &HospitalId, position: Position) {
        let Some(inner) = &self.inner else {
            return;
        };
        {
            let mut pending = inner.pending.lock().unwrap_or_else(|p| p.into_inner());
            let entry = pending.entry(hospital.clone()).or_insert(position);
            *entry = (*entry).max(position);
        }
        // Full means a wake is already queued, which will take this entry too.
        let _ = inner.wake.try_send(());
    }

    /// [`Self::committed`] for the last of `events`, and hands the events to this node's
    /// readers. `events` are one committed transaction's events in `hospital`, in order.
    pub fn handed_off(&self, hospital: &HospitalId, events: Vec<StreamEvent>) {
        let Some(last) = events.last().map(|e| e.position) else {
            return;
        };
        if let Some(inner) = &self.inner {
            // No subscriber (no hospital actor on this node) is fine.
            let _ = inner.handoffs.send(Arc::new(Handoff {
                hospital: hospital.clone(),
                events,
            }));
        }
        self.committed(hospital, last);
    }

    /// Committed events handed off on this node, for a reader that appends them without a
    /// read-back. `None` for a disabled announcer.
    pub fn subscribe_handoffs(&self) -> Option<broadcast::Receiver<Arc<Handoff>>> {
        self.inner.as_ref().map(|inner| inner.handoffs.subscribe())
    }
}

/// The announcer's task: takes what is pending at each wake-up and sends it in one
/// statement, until every [`Announcer`] is gone.
async fn run(pool: PgPool, inner: Weak<Inner>, mut woken: mpsc::Receiver<()>) {
    while woken.recv().await.is_some() {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let batch = std::mem::take(&mut *strong.pending.lock().unwrap_or_else(|p| p.into_inner()));
        drop(strong);
        if batch.is_empty() {
            continue;
        }
        let (hospitals, positions): (Vec<String>, Vec<Position>) = batch
            .into_iter()
            .map(|(hospital, position)| (hospital.as_str().to_owned(), position))
            .unzip();
        if let Err(error) = sqlx::query(ANNOUNCE)
            .bind(CHANNEL)
            .bind(&hospitals)
            .bind(&positions)
            .execute(&pool)
            .await
        {
            // Not retried: by the time PostgreSQL answers again the head poll has woken the
            // readers, and a retry would only announce late what they already read.
            tracing::warn!(
                %error,
                hospitals = hospitals.len(),
                "announcing commits failed; readers catch up at the next head poll"
            );
        }
    }
}
