use std::time::{Duration, Instant};

use poem::{http::StatusCode, web::Data};
use poem_openapi::{Object, OpenApi, payload::Json};
use worker::{events::Event, jobs::Ping};

use super::ApiTags;
use crate::{
    auth::BearerAuth,
    error::{ApiError, ApiResult, ErrorCode},
    state::AppState,
};

pub struct DiagnosticsApi;

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
    /// the event bus. 503 when no worker answers.
    #[oai(path = "/worker-ping", method = "post")]
    async fn worker_ping(
        &self,
        Data(state): Data<&AppState>,
        auth: BearerAuth,
    ) -> ApiResult<Json<WorkerPing>> {
        auth.0.require_admin()?;
        let token = uuid::Uuid::new_v4().to_string();
        let mut events = state.bus.subscribe();
        let started = Instant::now();
        state
            .queue
            .ping(Ping {
                token: token.clone(),
            })
            .await
            .map_err(|e| ApiError::internal(&e))?;
        let answer = tokio::time::timeout(PING_TIMEOUT, async {
            loop {
                match events.recv().await {
                    Ok(Event::WorkerPong(pong)) if pong.token == token => return Some(pong.worker),
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
        .await;
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
