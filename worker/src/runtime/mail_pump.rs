//! The mail pump: sends the email ledger's due rows at the SMTP server's pace.
//!
//! The ledger is the queue. Each worker process claims due rows in batches — up to four per
//! SMTP connection (`MAIL_CONNECTIONS`), as many as the rate cap allows — sends them over the
//! pooled connections, one at a time on each, and records the outcomes in batches: the
//! messages the server accepted are marked `sent` together, by one statement, as soon as the
//! previous mark has committed (group commit). Redis carries no mail: a flush or a restart
//! loses nothing, and several workers add up because their claims never overlap.
//!
//! A worker that dies mid-batch leaves its rows claimed; when their lease runs out they are
//! due again and another pump sends them. A row whose `sent` mark committed is never sent
//! again; a row whose mark did not commit (the worker died between the server's answer and
//! the mark) is sent once more, and the ledger counts it as a lapsed claim.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use entity::mail::Outgoing;
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore, broadcast, mpsc},
    time::Instant,
};

use super::{Shutdown, stopped};
use crate::{
    jobs::Deps,
    mailer::{SendError, backoff},
    ops,
    platform::events::Event,
};

/// Rows claimed per SMTP connection, at most: one being sent, the rest waiting their turn.
const CLAIM_AHEAD: usize = 4;
/// How long a stopping pump waits for the sends it has in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// A retry is looked for this long after it is due (the ledger's clock and the pump's
/// timer are read apart).
const RETRY_MARGIN: Duration = Duration::from_millis(10);
/// How long a small batch of outcomes waits for more before it is recorded.
const RECORD_LINGER: Duration = Duration::from_millis(5);
/// Outcomes recorded per statement, at most.
const RECORD_BATCH: usize = 512;
/// The first wait before recording a batch of sends again; it doubles up to
/// [`RECORD_RETRY_MAX`]. While the database is away a batch is tried until it is recorded
/// (or the process stops): a mark that lands before the rows' lease ends means no second
/// send, and one that lands after it still stops a third. Any other failure is tried
/// [`RECORD_TRIES`] times.
const RECORD_RETRY_FIRST: Duration = Duration::from_millis(100);
const RECORD_RETRY_MAX: Duration = Duration::from_millis(500);
const RECORD_TRIES: usize = 3;
/// A claim the database did not answer is tried again after this, doubling up to
/// [`CLAIM_RETRY_MAX`] (or the poll interval, if shorter), so a pump finds its rows within
/// moments of the database's return.
const CLAIM_RETRY_FIRST: Duration = Duration::from_millis(100);
const CLAIM_RETRY_MAX: Duration = Duration::from_millis(500);

/// One send's result, for the recorder.
struct Attempt {
    outgoing: Outgoing,
    result: Result<(), SendError>,
}

pub async fn run(deps: Arc<Deps>, shutdown: Shutdown) {
    let connections = deps.settings.mail.connections;
    // Rows are claimed ahead of the connections, so a connection that frees up finds the
    // next row waiting instead of waiting for a claim: claims are batches, not single rows.
    let ahead = connections.saturating_mul(CLAIM_AHEAD);
    let claimable = Arc::new(Semaphore::new(ahead));
    let sending = Arc::new(Semaphore::new(connections));
    let (outcomes, recorded) = mpsc::unbounded_channel();
    let next_retry = Arc::new(NextRetry::default());
    let recorder = tokio::spawn(record(
        deps.clone(),
        recorded,
        next_retry.clone(),
        shutdown.clone(),
    ));
    let mut wake = deps.bus.subscribe();
    let mut controls = deps.controls.clone();
    let stop = stopped(shutdown);
    tokio::pin!(stop);
    let mut claim_retry = CLAIM_RETRY_FIRST;
    loop {
        // Paused by an operator (or this process quieted): claim nothing until resumed.
        tokio::select! {
            () = &mut stop => break,
            () = ops::until_taking(&mut controls, ops::MAIL) => {}
        }
        let room = tokio::select! {
            () = &mut stop => break,
            room = room_for(&claimable, connections.min(ahead), ahead) => room,
        };
        let Some(mut room) = room else { break };
        let turns = tokio::select! {
            () = &mut stop => break,
            turns = deps.mailer.take_turns(room.len()) => turns,
        };
        room.truncate(turns);
        if !controls.borrow().takes(ops::MAIL) {
            deps.mailer.give_back_turns(room.len());
            continue;
        }
        let poll = deps.settings.mail.poll_interval;
        let claimed = match claim(&deps, room.len()).await {
            Ok(claimed) => {
                claim_retry = CLAIM_RETRY_FIRST;
                claimed
            }
            Err(error) => {
                tracing::warn!(error = %entity::error::chain(&error), "cannot claim emails");
                next_retry.at(Instant::now() + claim_retry);
                claim_retry = (claim_retry * 2).min(CLAIM_RETRY_MAX).min(poll);
                Vec::new()
            }
        };
        deps.mailer
            .give_back_turns(room.len().saturating_sub(claimed.len()));
        if claimed.is_empty() {
            drop(room);
            let look_again = next_retry.next_look(poll);
            tokio::select! {
                () = &mut stop => break,
                () = tokio::time::sleep_until(look_again) => {}
                () = mail_queued(&mut wake) => {}
            }
            continue;
        }
        for (outgoing, claim) in claimed.into_iter().zip(room) {
            let send = send(deps.clone(), outgoing, sending.clone(), outcomes.clone());
            tokio::spawn(async move {
                send.await;
                drop(claim);
            });
        }
    }
    // Stop claiming; let the claimed rows be sent and recorded.
    let drained = claimable.acquire_many(u32::try_from(ahead).unwrap_or(u32::MAX));
    if tokio::time::timeout(DRAIN_TIMEOUT, drained).await.is_err() {
        tracing::warn!("sends still in flight at shutdown; their rows go out after their lease");
    }
    drop(outcomes);
    let _ = recorder.await;
}

/// The soonest retry this pump's sends scheduled: an idle pump wakes for it rather than
/// waiting out its poll.
#[derive(Default)]
struct NextRetry(std::sync::Mutex<Option<Instant>>);

impl NextRetry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn at(&self, when: Instant) {
        let mut soonest = self.lock();
        *soonest = Some(soonest.map_or(when, |at| at.min(when)));
    }

    /// When an idle pump looks again: after `poll`, or at a retry due sooner (then
    /// forgotten: the look claims it).
    fn next_look(&self, poll: Duration) -> Instant {
        let after_poll = Instant::now() + poll;
        let mut soonest = self.lock();
        match *soonest {
            Some(at) if at < after_poll => {
                *soonest = None;
                at
            }
            _ => after_poll,
        }
    }
}

/// Waits until `at_least` claimed rows could be taken on (so a busy pump claims in batches),
/// then takes room for every other one up to `most`; `None` if the semaphore closed.
async fn room_for(
    claimable: &Arc<Semaphore>,
    at_least: usize,
    most: usize,
) -> Option<Vec<OwnedSemaphorePermit>> {
    let mut room = Vec::with_capacity(most);
    while room.len() < at_least.max(1) {
        room.push(claimable.clone().acquire_owned().await.ok()?);
    }
    while room.len() < most {
        match claimable.clone().try_acquire_owned() {
            Ok(more) => room.push(more),
            Err(_) => break,
        }
    }
    Some(room)
}

async fn claim(deps: &Deps, wanted: usize) -> Result<Vec<Outgoing>, entity::Error> {
    let limit = u64::try_from(wanted).unwrap_or(u64::MAX);
    let links = entity::tokens::LinkKey::new(deps.settings.auth.jwt_access_secret.expose());
    entity::mail::claim_due(
        &deps.db,
        limit,
        deps.settings.mail.lease,
        &links,
        Utc::now(),
    )
    .await
}

/// Returns when rows were queued (or the bus lagged, which may have hidden that); never if
/// the bus is gone, leaving the pump to its poll.
async fn mail_queued(wake: &mut broadcast::Receiver<Event>) {
    loop {
        match wake.recv().await {
            Ok(Event::MailQueued(_)) | Err(broadcast::error::RecvError::Lagged(_)) => return,
            Ok(_) => {}
            Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
        }
    }
}

/// Renders one claimed row, waits for a free connection (in claim order: the semaphore is
/// fair), sends it, and hands the result on. Rendering comes first, so a connection carries
/// only the SMTP exchange: the next row is ready the moment it frees up.
async fn send(
    deps: Arc<Deps>,
    outgoing: Outgoing,
    sending: Arc<Semaphore>,
    outcomes: mpsc::UnboundedSender<Attempt>,
) {
    let activity = deps.activity.of(ops::MAIL);
    let result = match deps.mailer.compose(&outgoing) {
        Ok(message) => {
            let Ok(_connection) = sending.acquire().await else {
                return;
            };
            let _busy = activity.map(ops::activity::QueueActivity::start);
            deps.mailer.send(outgoing.id, message).await
        }
        Err(error) => Err(error),
    };
    if let Some(activity) = activity {
        activity.finished_many(u64::from(result.is_ok()), u64::from(result.is_err()));
    }
    let _ = outcomes.send(Attempt { outgoing, result });
}

/// Records outcomes as they come: everything that arrived while the previous statement ran
/// goes in the next, the accepted sends in one `UPDATE`.
async fn record(
    deps: Arc<Deps>,
    mut attempts: mpsc::UnboundedReceiver<Attempt>,
    next_retry: Arc<NextRetry>,
    shutdown: Shutdown,
) {
    let mut batch = Vec::with_capacity(RECORD_BATCH);
    while attempts.recv_many(&mut batch, RECORD_BATCH).await > 0 {
        // A moment for the sends finishing alongside to join this statement.
        if batch.len() < RECORD_BATCH / 8 {
            tokio::time::sleep(RECORD_LINGER).await;
            while batch.len() < RECORD_BATCH {
                match attempts.try_recv() {
                    Ok(attempt) => batch.push(attempt),
                    Err(_) => break,
                }
            }
        }
        let mut sent = Vec::with_capacity(batch.len());
        for attempt in batch.drain(..) {
            match attempt.result {
                Ok(()) => sent.push(attempt.outgoing.id),
                Err(error) => {
                    if let Some(delay) = record_failure(&deps, &attempt.outgoing, error).await {
                        // A little after the row is due, so the look finds it due.
                        next_retry.at(Instant::now() + delay + RETRY_MARGIN);
                    }
                }
            }
        }
        record_sent(&deps, &sent, &shutdown).await;
    }
}

/// Marks the accepted sends `sent`, trying again while the database is away (see
/// [`RECORD_RETRY_FIRST`]). A batch left unrecorded goes out again after its lease, once,
/// counted as a lapsed claim.
async fn record_sent(deps: &Deps, sent: &[i64], shutdown: &Shutdown) {
    if sent.is_empty() {
        return;
    }
    let mut delay = RECORD_RETRY_FIRST;
    let mut other_failures = 0;
    loop {
        match entity::mail::mark_sent_many(&deps.db, sent, Utc::now()).await {
            Ok(()) => {
                tracing::debug!(count = sent.len(), "emails sent");
                return;
            }
            Err(error) => {
                let database_away = matches!(&error, entity::Error::Database(db)
                    if entity::db::is_unavailable(db) || entity::db::is_overload(db));
                if !database_away {
                    other_failures += 1;
                }
                let error = entity::error::chain(&error);
                if shutdown.is_cancelled() || other_failures >= RECORD_TRIES {
                    tracing::error!(%error, count = sent.len(), "sent emails not recorded; they go out again after their lease");
                    return;
                }
                tracing::warn!(%error, "cannot record sent emails; trying again");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(RECORD_RETRY_MAX);
            }
        }
    }
}

/// A refused send: a permanent answer or too many tries fail the row; a transient one is
/// due again after the backoff, which is returned.
async fn record_failure(deps: &Deps, outgoing: &Outgoing, error: SendError) -> Option<Duration> {
    let mail = &deps.settings.mail;
    let now = Utc::now();
    let mut retry_in = None;
    let recorded = match error {
        SendError::Permanent(error) => {
            tracing::warn!(message_id = outgoing.id, %error, "email rejected; not retrying");
            entity::mail::mark_failed(&deps.db, outgoing.id, &error, now).await
        }
        SendError::Transient(error) if outgoing.attempt >= mail.max_attempts => {
            tracing::warn!(message_id = outgoing.id, %error, attempts = outgoing.attempt, "email failed; giving up");
            let reason = format!("gave up after {} attempts: {error}", outgoing.attempt);
            entity::mail::mark_failed(&deps.db, outgoing.id, &reason, now).await
        }
        SendError::Transient(error) => {
            let delay = backoff(mail.retry_base, outgoing.attempt);
            let at = now + chrono::Duration::from_std(delay).unwrap_or(mail.lease);
            tracing::info!(message_id = outgoing.id, %error, attempt = outgoing.attempt, retry_in_ms = delay.as_millis(), "email deferred");
            retry_in = Some(delay);
            entity::mail::retry_at(&deps.db, outgoing.id, &error, at, now).await
        }
    };
    match recorded {
        Ok(()) => retry_in,
        Err(error) => {
            tracing::warn!(message_id = outgoing.id, error = %entity::error::chain(&error), "cannot record an email's outcome; it is tried again after its lease");
            None
        }
    }
}
