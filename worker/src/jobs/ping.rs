use std::sync::Arc;

use apalis::prelude::BoxDynError;
use serde::{Deserialize, Serialize};

use super::{Deps, Job};
use crate::platform::events::{Event, WorkerPong};

/// Round trip through the job queue: a worker answers with a `WorkerPong` event naming
/// itself, so operators (and tests) see that the worker tier is alive and which worker ran
/// a job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ping {
    pub token: String,
}

impl Job for Ping {
    const QUEUE: &'static str = "ping";

    fn concurrency(_: &crate::platform::settings::Settings) -> usize {
        4
    }

    async fn run(self, deps: Arc<Deps>) -> Result<(), BoxDynError> {
        let pong = WorkerPong {
            token: self.token,
            worker: deps.worker_name.clone(),
        };
        deps.bus.publish(&Event::WorkerPong(pong)).await?;
        Ok(())
    }
}
