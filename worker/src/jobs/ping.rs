use std::sync::Arc;

use apalis::prelude::{AbortError, BoxDynError};

use super::{Deps, Job, payloads::Ping};
use crate::platform::events::{Event, WorkerPong};

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
