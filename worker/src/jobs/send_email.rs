use std::{sync::Arc, time::Duration};

use apalis::prelude::BoxDynError;
use chrono::{DateTime, Utc};
use entity::mail::{Claim, Outgoing};
use serde::{Deserialize, Serialize};

use super::{Deps, Job, logged};
use crate::mailer::{SendError, backoff};

/// A send that finds its row not yet due waits this long in place rather than re-enqueuing
/// (apalis schedules in whole seconds, so a delayed job may start a little early).
const WAIT_IN_PLACE: Duration = Duration::from_secs(5);

/// Send one row of the email ledger.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendEmail {
    pub message_id: i64,
}

impl Job for SendEmail {
    const QUEUE: &'static str = "mail";

    /// Waits for the rate cap, then claims the row (so the claim's lease covers only the
    /// send), so it is never sent twice even if this job runs twice; counts
    /// attempts in the ledger (apalis-redis does not honour `max_attempts`) and schedules its
    /// own retries with exponential backoff, so the job itself succeeds unless the database
    /// fails.
    async fn run(self, deps: Arc<Deps>) -> Result<(), BoxDynError> {
        deps.mailer.wait_turn().await;
        let Some(outgoing) = claim(&deps, &self).await? else {
            return Ok(());
        };
        let sent = match deps.mailer.compose(&outgoing) {
            Ok(message) => deps.mailer.send(outgoing.id, message).await,
            Err(error) => Err(error),
        };
        record_outcome(&deps, self, &outgoing, sent, Utc::now())
            .await
            .map_err(|e| logged(e, "cannot record an email's outcome"))
    }
}

/// The row to send, or `None` when there is nothing to do now (already sent, or not due and
/// re-enqueued for when it is).
async fn claim(deps: &Deps, job: &SendEmail) -> Result<Option<Outgoing>, BoxDynError> {
    let mut waited = false;
    loop {
        let now = Utc::now();
        let lease = deps.settings.mail.lease;
        let claim = entity::mail::claim(&deps.db, job.message_id, lease, now).await;
        match claim.map_err(|e| logged(e, "cannot claim an email"))? {
            Claim::Ready(outgoing) => return Ok(Some(*outgoing)),
            Claim::Done => return Ok(None),
            Claim::NotYet(at) => {
                let wait = (at - now).to_std().unwrap_or_default();
                if waited || wait > WAIT_IN_PLACE {
                    if let Err(error) = deps.queue.push_at(job.clone(), at).await {
                        tracing::warn!(%error, "send not re-enqueued; the reconciler will retry");
                    }
                    return Ok(None);
                }
                waited = true;
                tokio::time::sleep(wait).await;
            }
        }
    }
}

async fn record_outcome(
    deps: &Deps,
    job: SendEmail,
    outgoing: &Outgoing,
    sent: Result<(), SendError>,
    now: DateTime<Utc>,
) -> Result<(), entity::Error> {
    let mail = &deps.settings.mail;
    match sent {
        Ok(()) => {
            entity::mail::mark_sent(&deps.db, outgoing.id, now).await?;
            tracing::info!(message_id = outgoing.id, kind = ?outgoing.kind, "email sent");
        }
        Err(SendError::Permanent(error)) => {
            tracing::warn!(message_id = outgoing.id, %error, "email rejected; not retrying");
            entity::mail::mark_failed(&deps.db, outgoing.id, &error, now).await?;
        }
        Err(SendError::Transient(error)) if outgoing.attempt >= mail.max_attempts => {
            tracing::warn!(message_id = outgoing.id, %error, attempts = outgoing.attempt, "email failed; giving up");
            let reason = format!("gave up after {} attempts: {error}", outgoing.attempt);
            entity::mail::mark_failed(&deps.db, outgoing.id, &reason, now).await?;
        }
        Err(SendError::Transient(error)) => {
            let delay = backoff(mail.retry_base, outgoing.attempt);
            let at = now + chrono::Duration::from_std(delay).unwrap_or(mail.lease);
            tracing::info!(message_id = outgoing.id, %error, attempt = outgoing.attempt, retry_in_ms = delay.as_millis(), "email deferred");
            entity::mail::retry_at(&deps.db, outgoing.id, &error, at, now).await?;
            if let Err(error) = deps.queue.push_at(job, at).await {
                tracing::warn!(%error, "retry not enqueued; the reconciler will retry");
            }
        }
    }
    Ok(())
}
