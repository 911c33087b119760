//! Running the read models: one projector task per model on every node (the checkpoint
//! locks make that safe), woken by the same NOTIFY as the realtime readers, plus the
//! automatic rebuild of models whose code version changed.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use projections::alert_board::AlertBoard;
use projections::case_list::CaseList;
use projections::engine::{self, ReadModel};
use projections::notification_inbox::NotificationInbox;
use projections::patient_view::PatientView;
use projections::schedule::Schedule;
use sqlx::PgPool;

use crate::stream::listener::{StreamListener, WakeScope, Wakeups};

pub mod metrics;
pub mod rebuilds;

/// A projector wakes at least this often even without notifications (a safety net; the
/// NOTIFY path is the fast one).
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Delay before retrying after a projection error.
const RETRY: Duration = Duration::from_millis(500);

/// Every read model the server maintains.
pub fn models() -> Vec<Arc<dyn ReadModel>> {
    vec![
        Arc::new(AlertBoard),
        Arc::new(CaseList),
        Arc::new(PatientView),
        Arc::new(Schedule),
        Arc::new(NotificationInbox),
    ]
}

/// The model called `name`.
pub fn model(name: &str) -> Option<Arc<dyn ReadModel>> {
    models().into_iter().find(|m| m.name() == name)
}

/// Starts one projector task per model; rebuilds first any model whose version changed.
/// Each projector's passes are at least `spacing` apart (see [`Wakeups`]).
pub fn spawn(pool: PgPool, listener: &StreamListener, spacing: Duration) {
    for model in models() {
        let pool = pool.clone();
        let wakeups = Wakeups::new(listener.subscribe(), POLL_INTERVAL, spacing);
        tokio::spawn(async move {
            match engine::version_changed(&pool, model.as_ref()).await {
                Ok(true) => {
                    tracing::info!(
                        model = model.name(),
                        version = model.version(),
                        "read model version changed; rebuilding"
                    );
                    // The same lock as admin and CLI rebuilds: with several nodes starting
                    // at once, one rebuilds and the others keep projecting.
                    match rebuilds::RebuildLock::try_acquire(&pool, model.name()).await {
                        Ok(Some(lock)) => {
                            let cancel = AtomicBool::new(false);
                            // An interrupted rebuild of all hospitals is resumed; one of a
                            // single hospital is dropped, every hospital needs the new code.
                            let restart = matches!(
                                engine::pending_rebuild(&pool, model.as_ref()).await,
                                Ok(Some(engine::Scope::Hospital(_)))
                            );
                            if let Err(error) =
                                engine::rebuild(&pool, model.as_ref(), restart, &cancel, |_, _| {})
                                    .await
                            {
                                tracing::error!(model = model.name(), %error, "automatic rebuild failed");
                            }
                            lock.release().await;
                        }
                        Ok(None) => {
                            tracing::info!(
                                model = model.name(),
                                "another process is rebuilding this model"
                            );
                        }
                        Err(error) => {
                            tracing::error!(model = model.name(), %error, "cannot take the rebuild lock");
                        }
                    }
                }
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(model = model.name(), %error, "cannot check read model version")
                }
            }
            follow(pool, model, wakeups).await;
        });
    }
}

/// The live projector of one model: catches up every hospital, then those each wake-up
/// names (every hospital again after a resync, missed notifications, an error or the safety
/// poll), until the listener closes. What `spawn` runs per model after the version check,
/// and what the projections benchmark measures.
pub async fn follow(pool: PgPool, model: Arc<dyn ReadModel>, mut wakeups: Wakeups) {
    let mut scope = WakeScope::All;
    loop {
        let result = match scope {
            WakeScope::Hospitals(hospitals) => {
                engine::catch_up_hospitals(&pool, model.as_ref(), hospitals).await
            }
            WakeScope::All => engine::catch_up(&pool, model.as_ref()).await,
            WakeScope::Closed => return,
        };
        if let Err(error) = result {
            tracing::warn!(model = model.name(), %error, "projection failed; retrying");
            tokio::time::sleep(RETRY).await;
            scope = WakeScope::All;
            continue;
        }
        scope = wakeups.next().await;
    }
}

/// Waits (bounded) until `model` has projected `hospital`'s stream up to `position`; returns
/// the checkpoint reached.
pub async fn wait_for(
    pool: &PgPool,
    model: &str,
    hospital: &str,
    position: i64,
    timeout: Duration,
) -> Result<i64, sqlx::Error> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut delay = Duration::from_millis(5);
    loop {
        let at = engine::checkpoint(pool, model, hospital).await?;
        if at >= position || tokio::time::Instant::now() >= deadline {
            return Ok(at);
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(50));
    }
}
