use std::sync::Arc;

use apalis::prelude::{AbortError, BoxDynError};
use serde::{Deserialize, Serialize};

use super::{Deps, Job, Payload};
use crate::platform::events::{Event, WorkerPong};

/// Round trip through the job queue: a worker answers with a `WorkerPong` event naming
/// itself, so operators (and tests) see that the worker tier is alive and which worker ran
/// a job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ping {
    pub token: String,
    /// Fail for good (no retries: straight to the failed items) until this instant: a ping
    /// that exercises the failure path — alerts on failed jobs, the console's Retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_until: Option<chrono::DateTime<chrono::Utc>>,
}

impl Payload for Ping {
    const QUEUE: &'static str = "ping";
}

impl Job for Ping {
    fn concurrency(_: &crate::platform::settings::Settings) -> usize {
        4
    }

    async fn run(self, deps: Arc<Deps>) -> Result<(), BoxDynError> {
        if let Some(until) = self.fail_until.filter(|until| *until > chrono::Utc::now()) {
            let reason = format!("this ping was asked to fail until {until}");
            return Err(AbortError::new(BoxDynError::from(reason)).into());
        }
        let pong = WorkerPong {
            token: self.token,
            worker: deps.worker_name.clone(),
        };
        deps.bus.publish(&Event::WorkerPong(pong)).await?;
        Ok(())
    }
}
