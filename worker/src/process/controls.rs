//! What the operators want of a process — the queues paused, whether it was quieted — as
//! every loop that takes work consults it.

use std::collections::BTreeSet;

use tokio::sync::watch;

/// What an operator told the workers: the queues paused, and whether this process was
/// quieted. Each process holds the latest in a watch channel its loops consult.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ControlState {
    pub paused: BTreeSet<String>,
    pub quiet: bool,
}

impl ControlState {
    /// Whether this process takes new items from `queue` now.
    pub fn takes(&self, queue: &str) -> bool {
        !self.quiet && !self.paused.contains(queue)
    }
}

pub type Controls = watch::Receiver<ControlState>;

/// Waits until this process may take items from `queue` (at once when it may).
pub async fn until_taking(controls: &mut Controls, queue: &str) {
    let _ = controls.wait_for(|c| c.takes(queue)).await;
}

/// Waits until an operator pauses `queue` or quiets this process.
pub async fn until_held(controls: &mut Controls, queue: &str) {
    let _ = controls.wait_for(|c| !c.takes(queue)).await;
}
