//! The retention pass: deletes rows that only record the past once their time is up
//! (`RETENTION_*` settings). Every worker runs it; the deletes are idempotent and, on
//! Postgres, skip rows another worker is deleting, so running it several times at once is
//! harmless.

use std::future::Future;

use chrono::{DateTime, Utc};
use entity::retention::{self, Record};

use super::{Shutdown, stopped};
use crate::platform::settings::RetentionSettings;

/// Rows per delete statement: small enough that no statement holds its locks for long.
const BATCH: u64 = 1000;
/// Statements per table per pass; a backlog larger than that is worked off over several
/// passes rather than in one long one.
const MAX_BATCHES: u32 = 100;
/// After a failed pass (the database was down), the next one comes this soon rather than a
/// whole `RETENTION_INTERVAL_SECS` later.
const RETRY_AFTER_FAILURE: std::time::Duration = std::time::Duration::from_secs(10);

/// How many rows of each kind one pass deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Purged {
    pub idempotency_keys: u64,
    pub sessions: u64,
    pub webhook_deliveries: u64,
    pub emails: u64,
    pub holds: u64,
    pub mail_quotas: u64,
}

impl Purged {
    pub fn total(&self) -> u64 {
        self.idempotency_keys
            + self.sessions
            + self.webhook_deliveries
            + self.emails
            + self.holds
            + self.mail_quotas
    }

    fn count_mut(&mut self, record: Record) -> &mut u64 {
        match record {
            Record::IdempotencyKeys => &mut self.idempotency_keys,
            Record::Sessions => &mut self.sessions,
            Record::WebhookDeliveries => &mut self.webhook_deliveries,
            Record::Emails => &mut self.emails,
            Record::Holds => &mut self.holds,
            Record::MailQuotas => &mut self.mail_quotas,
        }
    }
}

/// Runs a pass every `RETENTION_INTERVAL_SECS` (the first at start) until `shutdown`.
pub async fn run(db: &entity::db::Db, settings: &RetentionSettings, shutdown: Shutdown) {
    let mut tick = tokio::time::interval(settings.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stop = stopped(shutdown);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return,
            _ = tick.tick() => {}
        }
        // Stopping drops the pass between statements; each statement commits on its own.
        let pass = tokio::select! {
            () = &mut stop => return,
            pass = purge_old_rows(db, settings, Utc::now()) => pass,
        };
        match pass {
            Ok(purged) if purged.total() > 0 => tracing::info!(?purged, "retention pass"),
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(error = %entity::error::chain(&error), "retention pass failed");
                tick.reset_after(retry_after_failure(settings.interval));
            }
        }
    }
}

/// When the pass after a failed one runs: soon, but never later than the regular interval.
fn retry_after_failure(interval: std::time::Duration) -> std::time::Duration {
    RETRY_AFTER_FAILURE.min(interval)
}

/// One retention pass as of `now`: every kind of row, in batches.
///
/// # Errors
/// Database failure; rows deleted before it stay deleted, and the next pass goes on.
pub async fn purge_old_rows(
    db: &impl entity::db::Conn,
    settings: &RetentionSettings,
    now: DateTime<Utc>,
) -> Result<Purged, entity::Error> {
    let keep = [
        (Record::Holds, settings.holds),
        (Record::IdempotencyKeys, Some(settings.idempotency_keys)),
        (Record::Sessions, Some(settings.sessions)),
        (Record::WebhookDeliveries, Some(settings.webhook_deliveries)),
        (Record::Emails, Some(settings.emails)),
        // Not a setting: a window is a day, and an ended one counts nothing.
        (Record::MailQuotas, Some(entity::catalog::quota::WINDOW)),
    ];
    let mut purged = Purged::default();
    for (record, keep) in keep {
        // Kept forever (holds by default), or a time to keep longer than the calendar.
        let Some(cutoff) = keep.and_then(|keep| now.checked_sub_signed(keep)) else {
            continue;
        };
        *purged.count_mut(record) =
            drain(move || retention::delete_old(db, record, cutoff, BATCH)).await?;
    }
    Ok(purged)
}

/// Repeats a batch delete until a batch comes back short, or [`MAX_BATCHES`] ran.
async fn drain<F, Fut>(mut batch: F) -> Result<u64, entity::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<u64, entity::Error>>,
{
    let mut total = 0;
    for _ in 0..MAX_BATCHES {
        let deleted = batch().await?;
        total += deleted;
        if deleted < BATCH {
            break;
        }
    }
    Ok(total)
}
