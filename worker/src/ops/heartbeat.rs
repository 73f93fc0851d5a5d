//! Each worker process reports to the console and learns what the operators want: every
//! `WORKER_HEARTBEAT_MS` (5 s) — or at once when an operator acts (`ops_changed` on the
//! bus) — one transaction writes its report and reads the pauses and its own quiet flag, and
//! the process's loops follow the result through a watch channel. One transaction a beat,
//! so an idle worker stays within its budget of database work.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use entity::ops::workers::Report;
use sea_orm::TransactionTrait;
use tokio::sync::{broadcast, watch};

use super::{ControlState, MAIL};
use crate::{
    jobs::Deps,
    platform::events::Event,
    platform::shutdown::{Shutdown, stopped},
};

/// Reports of workers silent this long are deleted.
const FORGET_AFTER: chrono::Duration = chrono::Duration::days(1);

/// The first report, before the process takes any work, so it starts obeying the pauses
/// in force. Tries for a few seconds; a database still away by then leaves nothing to take
/// work from anyway, and the heartbeat catches up.
pub async fn first(deps: &Deps, controls: &watch::Sender<ControlState>, started_at: DateTime<Utc>) {
    for delay in [100, 200, 400, 800, 1600] {
        match beat(deps, started_at, false).await {
            Ok(state) => {
                controls.send_replace(state);
                return;
            }
            Err(error) => {
                tracing::warn!(error = %entity::error::chain(&error), "cannot read the operators' controls yet");
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
        }
    }
}

/// Runs until `shutdown`, then says goodbye (a final report marked stopped).
pub async fn run(
    deps: Arc<Deps>,
    controls: watch::Sender<ControlState>,
    started_at: DateTime<Utc>,
    shutdown: Shutdown,
) {
    let mut wake = deps.bus.subscribe();
    let stop = stopped(shutdown);
    tokio::pin!(stop);
    let mut beats: u64 = 0;
    loop {
        match beat(&deps, started_at, false).await {
            Ok(state) => {
                controls.send_if_modified(|current| {
                    let changed = *current != state;
                    if changed {
                        tracing::info!(paused = ?state.paused, quiet = state.quiet, "operator controls changed");
                        *current = state;
                    }
                    changed
                });
            }
            Err(error) => {
                tracing::warn!(error = %entity::error::chain(&error), "cannot report to the operations console");
            }
        }
        beats += 1;
        if beats % 100 == 1 {
            let _ = entity::ops::workers::forget_before(&deps.db, Utc::now() - FORGET_AFTER).await;
        }
        tokio::select! {
            () = &mut stop => break,
            () = tokio::time::sleep(deps.settings.worker.heartbeat) => {}
            () = ops_changed(&mut wake) => {}
        }
    }
    if let Err(error) = beat(&deps, started_at, true).await {
        tracing::warn!(error = %entity::error::chain(&error), "cannot say goodbye to the operations console");
    }
}

/// Writes the report and reads the controls, in one transaction.
async fn beat(
    deps: &Deps,
    started_at: DateTime<Utc>,
    stopping: bool,
) -> Result<ControlState, entity::Error> {
    let report = Report {
        name: deps.worker_name.clone(),
        host: host(),
        pid: i64::from(std::process::id()),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        started_at,
        in_flight: deps.activity.in_flight(),
        smtp_busy: deps.activity.of(MAIL).map_or(0, |m| {
            i32::try_from(m.in_flight.load(std::sync::atomic::Ordering::Relaxed)).unwrap_or(0)
        }),
        rss_bytes: resident_bytes(),
        throughput: deps.activity.throughput(),
        stopped: stopping,
    };
    let now = Utc::now();
    let txn = deps.db.begin().await?;
    let quiet = entity::ops::workers::heartbeat(&txn, report, now).await?;
    let paused: BTreeSet<String> = entity::ops::paused(&txn)
        .await?
        .into_iter()
        .map(|p| p.queue)
        .collect();
    txn.commit().await?;
    Ok(ControlState { paused, quiet })
}

async fn ops_changed(wake: &mut broadcast::Receiver<Event>) {
    loop {
        match wake.recv().await {
            Ok(Event::OpsChanged(_)) | Err(broadcast::error::RecvError::Lagged(_)) => return,
            Ok(_) => {}
            Err(broadcast::error::RecvError::Closed) => {
                // No bus: the heartbeat alone keeps the controls current.
                std::future::pending::<()>().await;
            }
        }
    }
}

pub fn host() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into())
}

/// This process's resident memory, from `/proc/self/statm` (0 where there is none).
pub fn resident_bytes() -> i64 {
    const PAGE: i64 = 4096;
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<i64>().ok())
        .map_or(0, |pages| pages * PAGE)
}

/// How long a quieted or paused loop waits before it looks at the controls again, should
/// the watch channel's sender be gone.
pub const RECHECK: Duration = Duration::from_secs(1);
