use poem::Request;
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    payload::{Json, PlainText},
};
use sea_orm::ConnectionTrait;

use super::ApiTags;
use crate::{
    http::error::{ApiError, ApiResult},
    state::AppState,
};

pub struct HealthApi {
    pub state: AppState,
}

/// Whether a check passed.
#[derive(poem_openapi::Enum, Clone, Copy, Debug, PartialEq, Eq)]
#[oai(rename_all = "snake_case")]
enum CheckStatus {
    Ok,
    Unavailable,
}

/// How the store runs (see README, "Two ways to run").
#[derive(poem_openapi::Enum, Clone, Copy, Debug, PartialEq, Eq)]
#[oai(rename_all = "snake_case")]
enum RunMode {
    /// One process, SQLite, no Redis.
    Embedded,
    /// Api and worker processes on Postgres and Redis.
    Distributed,
}

#[derive(Object)]
struct Health {
    /// `ok`: the process answers.
    status: CheckStatus,
}

#[derive(Object)]
#[oai(rename_all = "camelCase", skip_serializing_if_is_none)]
struct Readiness {
    status: CheckStatus,
    mode: RunMode,
    /// `ok` or the reason the database check failed.
    database: String,
    /// `ok`, the reason the Redis check failed, or absent in embedded mode.
    redis: Option<String>,
}

#[derive(ApiResponse)]
enum ReadyResponse {
    /// Every dependency answered.
    #[oai(status = 200)]
    Ready(Json<Readiness>),
    /// A dependency did not answer; the body says which.
    #[oai(status = 503)]
    NotReady(Json<Readiness>),
}

#[OpenApi(prefix_path = "/", tag = "ApiTags::Health")]
impl HealthApi {
    /// Liveness
    ///
    /// The process is up and answering; checks nothing else (see `/readyz`).
    #[oai(path = "/healthz", method = "get", operation_id = "checkHealth")]
    async fn healthz(&self) -> Json<Health> {
        Json(Health {
            status: CheckStatus::Ok,
        })
    }

    /// Prometheus metrics
    ///
    /// Counters in Prometheus's text format, with the demand figures of the drops open now
    /// or closed within a day (the newest 50), and every job queue's depth, lag and pause. When the
    /// store sets `METRICS_TOKEN`, send it as `Authorization: Bearer <token>`; without it the
    /// answer is 401. A distributed store without `METRICS_TOKEN` answers 401 to everyone
    /// (only an embedded store's metrics are open).
    #[oai(path = "/metrics", method = "get", operation_id = "getMetrics")]
    async fn metrics(&self, req: &Request) -> ApiResult<PlainText<String>> {
        let http = &self.state.settings.http;
        if !http.may_read_metrics(req.header("authorization")) {
            return Err(ApiError::unauthorized(if http.metrics_token.is_some() {
                "metrics need `Authorization: Bearer <METRICS_TOKEN>`"
            } else {
                "metrics are closed: set METRICS_TOKEN and send it as `Authorization: Bearer <token>`"
            }));
        }
        // Read from the ledger, so it counts every worker's sends; left out if unreadable.
        let lapsed_claims = entity::mail::lapsed_claims(&self.state.db).await.ok();
        let drops = entity::drops::stats::recent(&self.state.db, METRICS_DROPS).await;
        let drops = drops.unwrap_or_default();
        let mut out = self.state.metrics.render(lapsed_claims, &drops);
        // Every queue's depth, lag and pause, as each worker's own `/metrics` shows them.
        let now = chrono::Utc::now();
        if let Ok(queues) = worker::ops::summary(&self.state.db, &self.state.queue, now).await {
            worker::ops::metrics::render_queues(&mut out, &queues, now);
        }
        Ok(PlainText(out))
    }

    /// Readiness
    ///
    /// The process can serve: the database (and Redis, in distributed mode) answer. 503
    /// while one of them does not.
    #[oai(path = "/readyz", method = "get", operation_id = "checkReadiness")]
    async fn readyz(&self) -> ReadyResponse {
        let redis = async {
            match &self.state.redis {
                None => None,
                Some(conn) => Some(ping_redis(conn.clone()).await),
            }
        };
        let (database, redis) = tokio::join!(ping_database(&self.state.db), redis);
        let ready = database == "ok" && redis.as_deref().is_none_or(|r| r == "ok");
        let body = Readiness {
            status: if ready {
                CheckStatus::Ok
            } else {
                CheckStatus::Unavailable
            },
            mode: run_mode(self.state.settings.mode()),
            database,
            redis,
        };
        if ready {
            ReadyResponse::Ready(Json(body))
        } else {
            ReadyResponse::NotReady(Json(body))
        }
    }
}

/// A check answers within this, so a load balancer hears "not ready" within a second
/// whatever is hanging.
/// How many drops `/metrics` gives demand figures for.
const METRICS_DROPS: u64 = 50;

const CHECK_PATIENCE: std::time::Duration = std::time::Duration::from_millis(800);

async fn ping_database(db: &entity::db::Db) -> String {
    match tokio::time::timeout(CHECK_PATIENCE, db.execute_unprepared("SELECT 1")).await {
        Ok(Ok(_)) => "ok".to_owned(),
        Ok(Err(e)) => format!("unreachable: {e}"),
        Err(_) => "unreachable: no answer within 800 ms".to_owned(),
    }
}

async fn ping_redis(mut conn: redis::aio::ConnectionManager) -> String {
    let ping = redis::cmd("PING");
    match tokio::time::timeout(CHECK_PATIENCE, ping.query_async::<String>(&mut conn)).await {
        Ok(Ok(_)) => "ok".to_owned(),
        Ok(Err(e)) => format!("unreachable: {e}"),
        Err(_) => "unreachable: no answer within 800 ms".to_owned(),
    }
}

fn run_mode(mode: worker::settings::Mode) -> RunMode {
    match mode {
        worker::settings::Mode::Embedded => RunMode::Embedded,
        worker::settings::Mode::Distributed => RunMode::Distributed,
    }
}
