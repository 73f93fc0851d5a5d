use std::time::{Duration, Instant};

use poem::http::StatusCode;
use poem_openapi::{Object, OpenApi, payload::Json};
use worker::{
    events::Event,
    jobs::{Payload, Ping},
};

use super::ApiTags;
use crate::{
    auth::AdminAuth,
    http::error::{ApiError, ApiResult, ErrorCode},
    state::AppState,
};

pub struct DiagnosticsApi {
    pub state: AppState,
}

const PING_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Object)]
#[oai(rename_all = "camelCase")]
struct WorkerPing {
    /// The worker that ran the job (name-host-pid-suffix-queue).
    worker: String,
    /// From enqueue to the worker's answer arriving here.
    latency_ms: u64,
}

#[OpenApi(prefix_path = "/api/admin", tag = "ApiTags::Admin")]
impl DiagnosticsApi {
    /// Round trip through the job queue
    ///
    /// Enqueues a ping job and waits (up to 5 s) for the worker that ran it to answer over
    /// the event bus. 409 `queue_paused` while an operator has paused the `ping` queue or
    /// quieted every worker; 503 when no worker answers.
    #[oai(path = "/worker-ping", method = "post", operation_id = "pingWorker")]
    async fn worker_ping(&self, _admin: AdminAuth) -> ApiResult<Json<WorkerPing>> {
        self.takers().await?;
        let token = uuid::Uuid::new_v4().to_string();
        let mut events = self.state.bus.subscribe();
        let started = Instant::now();
        let ping = Ping {
            token: token.clone(),
            fail_until: None,
        };
        self.state.queue.push(ping).await?;
        let answer = tokio::time::timeout(PING_TIMEOUT, pong(&mut events, &token)).await;
        match answer {
            Ok(Some(worker)) => Ok(Json(WorkerPing {
                worker,
                latency_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            })),
            _ => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::ServiceUnavailable,
                "no worker answered within 5 s",
            )),
        }
    }
}

impl DiagnosticsApi {
    /// Refuses a ping no worker would take, at once, rather than after the timeout: the
    /// `ping` queue paused, or the workers that reported quieted and none running.
    async fn takers(&self) -> ApiResult<()> {
        let db = &self.state.db;
        if entity::ops::paused(db)
            .await?
            .iter()
            .any(|p| p.queue == Ping::QUEUE)
        {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::QueuePaused,
                "an operator paused the ping queue: resume it at /ops",
            ));
        }
        let heartbeat = self.state.settings.worker.heartbeat;
        let workers = worker::ops::workers(db, heartbeat, chrono::Utc::now()).await?;
        // A worker still starting has not reported yet: only quieted ones are evidence.
        let any = |wanted| workers.iter().any(|(_, s)| *s == wanted);
        if any(worker::ops::WorkerState::Quiet) && !any(worker::ops::WorkerState::Running) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::QueuePaused,
                "every running worker is quieted: start one, or see /ops",
            ));
        }
        Ok(())
    }
}

/// The name of the worker that answered the ping with `token`.
async fn pong(events: &mut tokio::sync::broadcast::Receiver<Event>, token: &str) -> Option<String> {
    loop {
        match events.recv().await {
            Ok(Event::WorkerPong(pong)) if pong.token == token => return Some(pong.worker),
            Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
        }
    }
}
