//! `/api/admin/ops/...`: the operations console's API. Every queue (each apalis job type and
//! the mail ledger) counted by state with its lag, throughput and pause; its items paged and
//! looked at; failed items retried or discarded, scheduled ones run now; queues paused and
//! resumed for the whole cluster; worker processes listed and quieted; every action audited.
//! Admin accounts only. Actions are safe to repeat: one that finds nothing to do answers
//! `affected: 0`, and an item that vanished answers 404.

use chrono::Utc;
use entity::{models::ops_audit, ops::ItemState};
use poem::http::StatusCode;
use poem_openapi::{
    Enum, OpenApi,
    param::{Path, Query},
    payload::Json,
};
use worker::{
    events::{Event, MailQueued, OpsChanged},
    ops::{self, QueueName, Store},
};

use super::ApiTags;
use crate::{
    auth::AdminAuth,
    http::error::{ApiError, ApiResult, ErrorCode},
    state::AppState,
};

mod bodies;

use bodies::{ActionBody, AuditEntry, ItemBody, ItemsPage, QueueBody, QueuesBody, WorkerBody};

pub struct OperationsApi {
    pub state: AppState,
}

/// Where an item of a queue is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum State {
    /// Due, waiting for a worker.
    Ready,
    /// Due later.
    Scheduled,
    /// Held by a worker now.
    InFlight,
    /// Failed, and due again later.
    Retrying,
    /// Given up on: waits for an operator.
    Failed,
    /// Finished (kept briefly: finished items are removed within seconds).
    Done,
}

impl From<State> for ItemState {
    fn from(s: State) -> Self {
        match s {
            State::Ready => Self::Ready,
            State::Scheduled => Self::Scheduled,
            State::InFlight => Self::InFlight,
            State::Retrying => Self::Retrying,
            State::Failed => Self::Failed,
            State::Done => Self::Done,
        }
    }
}

impl From<ItemState> for State {
    fn from(s: ItemState) -> Self {
        match s {
            ItemState::Ready => Self::Ready,
            ItemState::Scheduled => Self::Scheduled,
            ItemState::InFlight => Self::InFlight,
            ItemState::Retrying => Self::Retrying,
            ItemState::Failed => Self::Failed,
            ItemState::Done => Self::Done,
        }
    }
}

const DEFAULT_PAGE: u32 = 50;

fn queue(name: &str) -> Result<QueueName, ApiError> {
    ops::queue_named(name).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::QueueNotFound,
            format!("no queue named {name:?}; GET /api/admin/ops/queues lists them"),
        )
    })
}

fn item_not_found(queue: QueueName, id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::ItemNotFound,
        format!("queue {} has no item {id:?}", queue.name),
    )
}

/// A mail ledger id; anything else names no item there.
fn mail_id(queue: QueueName, id: &str) -> Result<i64, ApiError> {
    id.parse().map_err(|_| item_not_found(queue, id))
}

/// What an item-level action can do.
#[derive(Clone, Copy)]
enum ItemAction {
    Retry,
    Discard,
    RunNow,
}

impl ItemAction {
    fn name(self) -> &'static str {
        match self {
            Self::Retry => "retry",
            Self::Discard => "discard",
            Self::RunNow => "run_now",
        }
    }
}

#[OpenApi(prefix_path = "/api/admin/ops", tag = "ApiTags::Operations")]
impl OperationsApi {
    /// Every queue at a glance
    ///
    /// Each apalis job queue and the mail ledger: items by state (ready, scheduled, in
    /// flight, retrying, failed), finished in the last 15 minutes, the oldest ready item's
    /// age (the queue's lag), finished and failed items over the last 1, 5 and 15 minutes
    /// (summed over every worker), and whether it is paused. The same on both backends.
    #[oai(path = "/queues", method = "get", operation_id = "listQueues")]
    async fn queues(&self, _admin: AdminAuth) -> ApiResult<Json<QueuesBody>> {
        let now = Utc::now();
        let queues = ops::summary(&self.state.db, &self.state.queue, now).await?;
        Ok(Json(QueuesBody {
            at: now,
            queues: queues.iter().map(|q| QueueBody::new(q, now)).collect(),
        }))
    }

    /// A page of a queue's items
    ///
    /// Items in one `state` (`ready` by default): ready and scheduled ones due first, failed
    /// and finished ones newest first (Redis lists its failed set in no order). Pass the
    /// answer's `nextCursor` as `cursor` for the next page; it is absent on the last one.
    /// 404 `queue_not_found`; 404 `invalid_cursor` for a cursor this listing did not give out.
    #[oai(
        path = "/queues/:queue/items",
        method = "get",
        operation_id = "listQueueItems"
    )]
    async fn items(
        &self,
        _admin: AdminAuth,
        #[oai(validator(max_length = 64, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$"))] queue: Path<
            String,
        >,
        state: Query<Option<State>>,
        /// The `nextCursor` of the previous page, as given.
        #[oai(validator(max_length = 512, pattern = "^[A-Za-z0-9_-]*$"))]
        cursor: Query<Option<String>>,
        #[oai(validator(minimum(value = "1"), maximum(value = "200")))] limit: Query<Option<u32>>,
    ) -> ApiResult<Json<ItemsPage>> {
        let queue = self::queue(&queue.0)?;
        let state: ItemState = state.0.unwrap_or(State::Ready).into();
        let limit = limit.0.unwrap_or(DEFAULT_PAGE);
        let page = bodies::page(&self.state, queue, state, cursor.0.as_deref(), limit).await?;
        Ok(Json(page))
    }

    /// One item in full
    ///
    /// Its payload, state, attempts, last error, when it is (or was) due and finished, the
    /// worker that holds or ran it, and what it is about, with links to the admin figures
    /// of the drop or product it concerns. 404 `item_not_found`.
    #[oai(
        path = "/queues/:queue/items/:id",
        method = "get",
        operation_id = "getQueueItem"
    )]
    async fn item(
        &self,
        _admin: AdminAuth,
        #[oai(validator(max_length = 64, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$"))] queue: Path<
            String,
        >,
        #[oai(validator(max_length = 200, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$"))] id: Path<String>,
    ) -> ApiResult<Json<ItemBody>> {
        let queue = self::queue(&queue.0)?;
        bodies::item(&self.state, queue, &id.0)
            .await?
            .map(Json)
            .ok_or_else(|| item_not_found(queue, &id.0))
    }

    /// Retry a failed item now
    ///
    /// Its attempts start again from zero. An item that is not failed (already retried,
    /// running, done) is left alone: `affected: 0`.
    #[oai(
        path = "/queues/:queue/items/:id/retry",
        method = "post",
        operation_id = "retryQueueItem"
    )]
    async fn retry(
        &self,
        admin: AdminAuth,
        #[oai(validator(max_length = 64, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$"))] queue: Path<
            String,
        >,
        #[oai(validator(max_length = 200, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$"))] id: Path<String>,
    ) -> ApiResult<Json<ActionBody>> {
        self.on_item(&admin, &queue.0, &id.0, ItemAction::Retry)
            .await
    }

    /// Discard a failed item
    ///
    /// Deletes it for good. An item that is not failed is left alone: `affected: 0`.
    #[oai(
        path = "/queues/:queue/items/:id/discard",
        method = "post",
        operation_id = "discardQueueItem"
    )]
    async fn discard(
        &self,
        admin: AdminAuth,
        #[oai(validator(max_length = 64, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$"))] queue: Path<
            String,
        >,
        #[oai(validator(max_length = 200, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$"))] id: Path<String>,
    ) -> ApiResult<Json<ActionBody>> {
        self.on_item(&admin, &queue.0, &id.0, ItemAction::Discard)
            .await
    }

    /// Run a scheduled item now
    ///
    /// Makes it due at once (a hold's expiry job, a restock wave). Its handler re-checks
    /// the row, so an early expiry job changes nothing until the hold is really due.
    /// An item that is not scheduled is left alone: `affected: 0`.
    #[oai(
        path = "/queues/:queue/items/:id/run-now",
        method = "post",
        operation_id = "runQueueItemNow"
    )]
    async fn run_now(
        &self,
        admin: AdminAuth,
        #[oai(validator(max_length = 64, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$"))] queue: Path<
            String,
        >,
        #[oai(validator(max_length = 200, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$"))] id: Path<String>,
    ) -> ApiResult<Json<ActionBody>> {
        self.on_item(&admin, &queue.0, &id.0, ItemAction::RunNow)
            .await
    }

    /// Retry every failed item of a queue
    ///
    /// Each failed item starts again from zero attempts; `affected` counts them.
    #[oai(
        path = "/queues/:queue/retry-failed",
        method = "post",
        operation_id = "retryFailedItems"
    )]
    async fn retry_failed(
        &self,
        admin: AdminAuth,
        #[oai(validator(max_length = 64, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$"))] queue: Path<
            String,
        >,
    ) -> ApiResult<Json<ActionBody>> {
        self.on_failed(&admin, &queue.0, true).await
    }

    /// Discard every failed item of a queue
    ///
    /// Deletes each failed item for good; `affected` counts them.
    #[oai(
        path = "/queues/:queue/discard-failed",
        method = "post",
        operation_id = "discardFailedItems"
    )]
    async fn discard_failed(
        &self,
        admin: AdminAuth,
        #[oai(validator(max_length = 64, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$"))] queue: Path<
            String,
        >,
    ) -> ApiResult<Json<ActionBody>> {
        self.on_failed(&admin, &queue.0, false).await
    }

    /// Pause a queue for the whole cluster
    ///
    /// Every worker process stops taking new items from it within a second (at once when
    /// the event bus carries the word; at its next heartbeat otherwise) and finishes what it
    /// holds. Nothing is lost: items wait, and go out on resume. Pausing `mail` holds the
    /// email ledger's sends. Survives restarts of any process and of Redis.
    #[oai(
        path = "/queues/:queue/pause",
        method = "post",
        operation_id = "pauseQueue"
    )]
    async fn pause(
        &self,
        admin: AdminAuth,
        #[oai(validator(max_length = 64, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$"))] queue: Path<
            String,
        >,
    ) -> ApiResult<Json<ActionBody>> {
        self.set_paused(&admin, &queue.0, true).await
    }

    /// Resume a paused queue
    ///
    /// Every worker process takes items from it again, the waiting ones first.
    #[oai(
        path = "/queues/:queue/resume",
        method = "post",
        operation_id = "resumeQueue"
    )]
    async fn resume(
        &self,
        admin: AdminAuth,
        #[oai(validator(max_length = 64, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$"))] queue: Path<
            String,
        >,
    ) -> ApiResult<Json<ActionBody>> {
        self.set_paused(&admin, &queue.0, false).await
    }

    /// The worker processes
    ///
    /// Every worker process heard from in the last hour (an embedded store has one, inside
    /// the api): host, pid, version, start, last heartbeat, items in flight per queue, SMTP
    /// connections busy, resident memory, and its state: `running`, `quiet`, `stopped`, or
    /// `gone` when it missed three heartbeats (its claims go back when their leases end).
    #[oai(path = "/workers", method = "get", operation_id = "listWorkers")]
    async fn workers(&self, _admin: AdminAuth) -> ApiResult<Json<Vec<WorkerBody>>> {
        let heartbeat = self.state.settings.worker.heartbeat;
        let workers = ops::workers(&self.state.db, heartbeat, Utc::now()).await?;
        Ok(Json(workers.into_iter().map(WorkerBody::from).collect()))
    }

    /// Quiet a worker process
    ///
    /// It takes no new work from any queue and finishes what it holds, so it can be
    /// retired without losing anything. 404 `worker_not_found`.
    #[oai(
        path = "/workers/:name/quiet",
        method = "post",
        operation_id = "quietWorker"
    )]
    async fn quiet(
        &self,
        admin: AdminAuth,
        #[oai(validator(max_length = 200, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$"))] name: Path<
            String,
        >,
    ) -> ApiResult<Json<ActionBody>> {
        if !entity::ops::workers::quiet(&self.state.db, &name.0).await? {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                ErrorCode::WorkerNotFound,
                format!("no worker named {:?} has reported", name.0),
            ));
        }
        self.audit(&admin, "quiet", &name.0, None, 1).await?;
        self.announce(format!("quiet {}", name.0)).await;
        Ok(Json(ActionBody { affected: 1 }))
    }

    /// The audit trail
    ///
    /// Every operator action, newest first: who, what, on which queue or worker and item,
    /// when, and how many items it changed. Page with `before` (the last entry's id).
    #[oai(path = "/audit", method = "get", operation_id = "listAuditTrail")]
    async fn audit_trail(
        &self,
        _admin: AdminAuth,
        before: Query<Option<i64>>,
        #[oai(validator(minimum(value = "1"), maximum(value = "200")))] limit: Query<Option<u32>>,
    ) -> ApiResult<Json<Vec<AuditEntry>>> {
        let limit = u64::from(limit.0.unwrap_or(DEFAULT_PAGE));
        let entries = entity::ops::audit(&self.state.db, before.0, limit).await?;
        Ok(Json(
            entries
                .into_iter()
                .map(|e: ops_audit::Model| e.into())
                .collect(),
        ))
    }
}

impl OperationsApi {
    async fn on_item(
        &self,
        admin: &AdminAuth,
        queue: &str,
        id: &str,
        action: ItemAction,
    ) -> ApiResult<Json<ActionBody>> {
        let queue = self::queue(queue)?;
        let (db, now) = (&self.state.db, Utc::now());
        let affected = if queue.is_mail() {
            let mail = mail_id(queue, id)?;
            match action {
                ItemAction::Retry => entity::ops::mail_queue::retry(db, mail, now).await?,
                ItemAction::Discard => entity::ops::mail_queue::discard(db, mail).await?,
                ItemAction::RunNow => entity::ops::mail_queue::run_now(db, mail, now).await?,
            }
        } else {
            let store = Store::of(&self.state.queue, db, queue.name);
            let affected = match action {
                ItemAction::Retry => store.retry(id).await?,
                ItemAction::Discard => store.discard(id).await?,
                ItemAction::RunNow => store.run_now(id, now).await?,
            };
            (affected > 0 || store.item(id, now).await?.is_some()).then_some(affected)
        };
        let affected = affected.ok_or_else(|| item_not_found(queue, id))?;
        self.audit(admin, action.name(), queue.name, Some(id), affected)
            .await?;
        if queue.is_mail() && affected > 0 {
            self.wake_mail(affected).await;
        }
        Ok(Json(ActionBody { affected }))
    }

    async fn on_failed(
        &self,
        admin: &AdminAuth,
        queue: &str,
        retry: bool,
    ) -> ApiResult<Json<ActionBody>> {
        let queue = self::queue(queue)?;
        let db = &self.state.db;
        let affected = match (queue.is_mail(), retry) {
            (true, true) => entity::ops::mail_queue::retry_all(db, Utc::now()).await?,
            (true, false) => entity::ops::mail_queue::discard_all(db).await?,
            (false, true) => {
                Store::of(&self.state.queue, db, queue.name)
                    .retry_all()
                    .await?
            }
            (false, false) => {
                Store::of(&self.state.queue, db, queue.name)
                    .discard_all()
                    .await?
            }
        };
        let action = if retry { "retry_all" } else { "discard_all" };
        self.audit(admin, action, queue.name, None, affected)
            .await?;
        if queue.is_mail() && retry && affected > 0 {
            self.wake_mail(affected).await;
        }
        Ok(Json(ActionBody { affected }))
    }

    async fn set_paused(
        &self,
        admin: &AdminAuth,
        queue: &str,
        paused: bool,
    ) -> ApiResult<Json<ActionBody>> {
        let queue = self::queue(queue)?;
        let db = &self.state.db;
        let actor = self.actor(admin).await?;
        if paused {
            entity::ops::pause(db, queue.name, &actor, Utc::now()).await?;
        } else {
            entity::ops::resume(db, queue.name).await?;
        }
        let action = if paused { "pause" } else { "resume" };
        self.audit(admin, action, queue.name, None, 1).await?;
        self.announce(format!("{action} {}", queue.name)).await;
        if !paused && queue.is_mail() {
            self.wake_mail(1).await;
        }
        Ok(Json(ActionBody { affected: 1 }))
    }

    /// The admin's email, as the audit trail names them.
    async fn actor(&self, admin: &AdminAuth) -> ApiResult<String> {
        let user = entity::accounts::find_user(&self.state.db, admin.0.user_id).await?;
        Ok(user.map_or_else(|| format!("user {}", admin.0.user_id), |u| u.email))
    }

    async fn audit(
        &self,
        admin: &AdminAuth,
        action: &str,
        target: &str,
        item: Option<&str>,
        affected: u64,
    ) -> ApiResult<()> {
        let actor = self.actor(admin).await?;
        let entry = entity::ops::Action {
            actor: &actor,
            action,
            target,
            item,
            affected,
        };
        entity::ops::record(&self.state.db, entry, Utc::now()).await?;
        tracing::info!(%actor, action, target, ?item, affected, "operator action");
        Ok(())
    }

    /// Tells every process at once; the heartbeat reads the same from the database.
    async fn announce(&self, what: String) {
        self.state
            .bus
            .publish_or_log(&Event::OpsChanged(OpsChanged { what }))
            .await;
    }

    /// Idle mail pumps look at the ledger at once instead of at their next poll.
    async fn wake_mail(&self, messages: u64) {
        let queued = MailQueued {
            messages: usize::try_from(messages).unwrap_or(usize::MAX),
        };
        self.state
            .bus
            .publish_or_log(&Event::MailQueued(queued))
            .await;
    }
}
