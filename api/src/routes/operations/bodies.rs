//! What the console's API answers, and how an item's payload is traced to the drop, product
//! or email it concerns.

use chrono::{DateTime, Utc};
use entity::{
    models::{email_messages, ops_audit, ops_workers, reservations, restock_events},
    ops::{ItemState, mail_queue},
};
use poem_openapi::{Enum, Object};
use sea_orm::EntityTrait;
use worker::ops::{self, QueueName, QueueSummary, Store, WorkerState};

use super::State;
use crate::{http::error::ApiResult, state::AppState};

/// Every queue at one instant.
#[derive(Object)]
pub struct QueuesBody {
    pub at: DateTime<Utc>,
    pub queues: Vec<QueueBody>,
}

/// One queue at a glance.
#[derive(Object)]
#[oai(rename_all = "camelCase", skip_serializing_if_is_none)]
pub struct QueueBody {
    /// Its name in paths: `expiry`, `fanout`, `draw`, `ping`, `mail`.
    name: String,
    /// The job type it carries (`ExpireReservation`, ...); absent for the mail ledger.
    job: Option<String>,
    ready: u64,
    scheduled: u64,
    in_flight: u64,
    retrying: u64,
    failed: u64,
    /// Finished in the last 15 minutes.
    done_recently: u64,
    /// Age of the oldest ready item, in seconds (the queue's lag); 0 when none waits.
    lag_seconds: f64,
    /// Finished and failed items over the last 1, 5 and 15 minutes.
    throughput: Vec<Window>,
    /// Finished and failed items in each of the last 15 minutes, oldest first, as the
    /// workers counted them (the console's chart).
    per_minute: Vec<Minute>,
    /// Set while the queue is paused.
    paused: Option<Pause>,
}

/// Items finished and failed over a window.
#[derive(Object)]
#[oai(rename_all = "camelCase")]
pub struct Window {
    minutes: i64,
    done: u64,
    failed: u64,
}

/// Items finished and failed in one minute.
#[derive(Object)]
pub struct Minute {
    done: u64,
    failed: u64,
}

/// Who paused a queue, and when.
#[derive(Object)]
#[oai(rename_all = "camelCase")]
pub struct Pause {
    by: String,
    at: DateTime<Utc>,
}

impl QueueBody {
    pub fn new(q: &QueueSummary, now: DateTime<Utc>) -> Self {
        Self {
            name: q.queue.name.into(),
            job: q.queue.job.map(Into::into),
            ready: q.ready,
            scheduled: q.scheduled,
            in_flight: q.in_flight,
            retrying: q.retrying,
            failed: q.failed,
            done_recently: q.done_recently,
            lag_seconds: q.oldest_ready_at.map_or(0.0, |at| {
                (now - at).num_milliseconds().max(0) as f64 / 1000.0
            }),
            throughput: ops::WINDOWS
                .iter()
                .zip(q.throughput)
                .map(|(minutes, (done, failed))| Window {
                    minutes: *minutes,
                    done,
                    failed,
                })
                .collect(),
            per_minute: q
                .per_minute
                .iter()
                .map(|&(done, failed)| Minute { done, failed })
                .collect(),
            paused: q.paused.as_ref().map(|p| Pause {
                by: p.paused_by.clone(),
                at: p.paused_at,
            }),
        }
    }
}

/// A page of items.
#[derive(Object)]
#[oai(rename_all = "camelCase", skip_serializing_if_is_none)]
pub struct ItemsPage {
    pub items: Vec<ItemBody>,
    /// The cursor of the next page; absent on the last.
    pub next_cursor: Option<String>,
}

/// One item of a queue.
#[derive(Object)]
#[oai(rename_all = "camelCase", skip_serializing_if_is_none)]
pub struct ItemBody {
    /// Its id: the task id of an apalis job, the ledger id of an email.
    id: String,
    queue: String,
    state: State,
    /// What the job carries (ids only), or the email's kind, recipient and content.
    payload: serde_json::Value,
    attempts: i64,
    last_error: Option<String>,
    /// When it runs (or ran) at the earliest.
    due_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    /// The worker that holds it or ran it last (apalis jobs).
    worker: Option<String>,
    /// What it concerns, with links to the admin figures (on the item's own answer).
    about: Vec<About>,
}

/// A thing an item concerns.
#[derive(Object)]
#[oai(rename_all = "camelCase", skip_serializing_if_is_none)]
pub struct About {
    /// `reservation`, `drop`, `restock`, `product`, `subscription`, `email`.
    kind: String,
    id: i64,
    /// The admin endpoint that shows it, where there is one.
    href: Option<String>,
}

impl About {
    fn new(kind: &str, id: i64, href: Option<String>) -> Self {
        Self {
            kind: kind.into(),
            id,
            href,
        }
    }
}

fn from_job(queue: QueueName, item: ops::Item) -> ItemBody {
    ItemBody {
        id: item.id,
        queue: queue.name.into(),
        state: item.state.into(),
        payload: item.payload,
        attempts: item.attempts,
        last_error: item.last_error,
        due_at: item.due_at,
        finished_at: item.finished_at,
        worker: item.worker,
        about: Vec::new(),
    }
}

fn from_mail(queue: QueueName, row: email_messages::Model, now: DateTime<Utc>) -> ItemBody {
    let state = mail_queue::state_of(&row, now);
    ItemBody {
        id: row.id.to_string(),
        queue: queue.name.into(),
        state: state.into(),
        payload: serde_json::json!({
            "kind": sea_orm::ActiveEnum::to_value(&row.kind),
            "recipient": row.recipient,
            "content": row.payload,
            "wave": row.wave,
        }),
        attempts: i64::from(row.attempts),
        last_error: row.last_error,
        due_at: row.next_attempt_at.or(Some(row.created_at)),
        finished_at: row.sent_at,
        worker: None,
        about: row
            .subscription_id
            .map(|id| About::new("subscription", id, None))
            .into_iter()
            .collect(),
    }
}

/// A page of `queue`'s items in `state`.
pub async fn page(
    state: &AppState,
    queue: QueueName,
    item_state: ItemState,
    cursor: Option<&str>,
    limit: u32,
) -> ApiResult<ItemsPage> {
    let now = Utc::now();
    if queue.is_mail() {
        let after = cursor
            .map(|c| {
                c.parse::<i64>()
                    .map_err(|_| worker::ops::InspectError::BadCursor)
            })
            .transpose()?;
        let rows = mail_queue::page(&state.db, item_state, after, u64::from(limit), now).await?;
        let next_cursor = (rows.len() == limit as usize)
            .then(|| rows.last().map(|r| r.id.to_string()))
            .flatten();
        let items = rows.into_iter().map(|r| from_mail(queue, r, now)).collect();
        return Ok(ItemsPage { items, next_cursor });
    }
    let page = Store::of(&state.queue, &state.db, queue.name)
        .page(item_state, cursor, limit, now)
        .await?;
    Ok(ItemsPage {
        items: page.items.into_iter().map(|i| from_job(queue, i)).collect(),
        next_cursor: page.next,
    })
}

/// One item, with what it is about.
pub async fn item(state: &AppState, queue: QueueName, id: &str) -> ApiResult<Option<ItemBody>> {
    let now = Utc::now();
    if queue.is_mail() {
        let Ok(id) = id.parse::<i64>() else {
            return Ok(None);
        };
        let row = email_messages::Entity::find_by_id(id).one(&state.db).await;
        let row = row.map_err(entity::Error::from)?;
        return Ok(row.map(|r| from_mail(queue, r, now)));
    }
    let Some(item) = Store::of(&state.queue, &state.db, queue.name)
        .item(id, now)
        .await?
    else {
        return Ok(None);
    };
    let about = about(state, &item.payload).await?;
    Ok(Some(ItemBody {
        about,
        ..from_job(queue, item)
    }))
}

/// The rows a job's payload names, traced to the drop or product they belong to.
async fn about(state: &AppState, payload: &serde_json::Value) -> ApiResult<Vec<About>> {
    let id = |field: &str| payload.get(field).and_then(serde_json::Value::as_i64);
    let drop_stats = |drop_id: i64| Some(format!("/api/admin/drops/{drop_id}/stats"));
    let mut about = Vec::new();
    if let Some(reservation) = id("reservation_id") {
        about.push(About::new("reservation", reservation, None));
        let hold = reservations::Entity::find_by_id(reservation)
            .one(&state.db)
            .await;
        if let Some(hold) = hold.map_err(entity::Error::from)? {
            about.push(About::new("drop", hold.drop_id, drop_stats(hold.drop_id)));
        }
    }
    if let Some(drop_id) = id("drop_id") {
        about.push(About::new("drop", drop_id, drop_stats(drop_id)));
    }
    if let Some(restock) = id("restock_event_id") {
        about.push(About::new("restock", restock, None));
        let event = restock_events::Entity::find_by_id(restock)
            .one(&state.db)
            .await;
        if let Some(event) = event.map_err(entity::Error::from)? {
            let href = format!("/api/admin/products/{}/stats", event.product_id);
            about.push(About::new("product", event.product_id, Some(href)));
        }
    }
    Ok(about)
}

/// How a worker process stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum WorkerStateBody {
    Running,
    /// Quieted by an operator: finishing what it holds, taking nothing new.
    Quiet,
    /// Shut down cleanly.
    Stopped,
    /// Missed three heartbeats.
    Gone,
}

/// A worker process, from its last report.
#[derive(Object)]
#[oai(rename_all = "camelCase")]
pub struct WorkerBody {
    name: String,
    host: String,
    pid: i64,
    version: String,
    started_at: DateTime<Utc>,
    last_heartbeat: DateTime<Utc>,
    state: WorkerStateBody,
    /// Items held now, by queue.
    in_flight: serde_json::Value,
    smtp_busy: i32,
    rss_bytes: i64,
}

impl From<(ops_workers::Model, WorkerState)> for WorkerBody {
    fn from((w, state): (ops_workers::Model, WorkerState)) -> Self {
        Self {
            state: match state {
                WorkerState::Running => WorkerStateBody::Running,
                WorkerState::Quiet => WorkerStateBody::Quiet,
                WorkerState::Stopped => WorkerStateBody::Stopped,
                WorkerState::Gone => WorkerStateBody::Gone,
            },
            name: w.name,
            host: w.host,
            pid: w.pid,
            version: w.version,
            started_at: w.started_at,
            last_heartbeat: w.last_heartbeat,
            in_flight: w.in_flight,
            smtp_busy: w.smtp_busy,
            rss_bytes: w.rss_bytes,
        }
    }
}

/// What an action changed.
#[derive(Object)]
pub struct ActionBody {
    /// Items (or queues, workers) it changed; 0 when there was nothing to do.
    pub affected: u64,
}

/// One operator action.
#[derive(Object)]
#[oai(rename_all = "camelCase", skip_serializing_if_is_none)]
pub struct AuditEntry {
    id: i64,
    at: DateTime<Utc>,
    /// The admin's email.
    actor: String,
    /// `pause`, `resume`, `retry`, `discard`, `run_now`, `retry_all`, `discard_all`, `quiet`.
    action: String,
    /// The queue or worker acted on.
    target: String,
    item: Option<String>,
    affected: i64,
}

impl From<ops_audit::Model> for AuditEntry {
    fn from(e: ops_audit::Model) -> Self {
        Self {
            id: e.id,
            at: e.at,
            actor: e.actor,
            action: e.action,
            target: e.target,
            item: e.item,
            affected: e.affected,
        }
    }
}
