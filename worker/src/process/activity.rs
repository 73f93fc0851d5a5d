//! What this process's workers are doing, counted in memory: items in flight, finished and
//! failed per queue (per minute for the last 15, for the console's throughput, and in total
//! with run times, for `/metrics`). Costs a job or a send a few atomic adds.

use std::{
    collections::BTreeMap,
    sync::{
        Mutex,
        atomic::{AtomicI64, AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use chrono::Utc;
use serde::{Deserialize, Serialize};

/// Upper bounds of the run-time histogram's buckets, in seconds.
pub const BUCKETS: [f64; 10] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0];
/// Minutes of throughput kept.
pub const MINUTES: usize = 15;

/// One queue's counters in this process.
#[derive(Debug, Default)]
pub struct QueueActivity {
    pub in_flight: AtomicI64,
    pub done: AtomicU64,
    pub failed: AtomicU64,
    /// Runs that fell in each bucket of [`BUCKETS`], the last for longer ones.
    pub histogram: [AtomicU64; BUCKETS.len() + 1],
    pub run_micros: AtomicU64,
    minutes: Mutex<Minutes>,
}

/// Per-minute counts, newest last; `minute` is the unix minute of the newest.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Minutes {
    pub minute: i64,
    pub done: Vec<u64>,
    pub failed: Vec<u64>,
}

impl Minutes {
    /// Moves the window to `minute`, zeroing the minutes that passed.
    fn advance(&mut self, minute: i64) {
        if self.done.len() != MINUTES {
            *self = Self {
                minute,
                done: vec![0; MINUTES],
                failed: vec![0; MINUTES],
            };
            return;
        }
        let passed = usize::try_from(minute - self.minute)
            .unwrap_or(0)
            .min(MINUTES);
        if passed > 0 {
            self.done.rotate_left(passed);
            self.failed.rotate_left(passed);
            for i in MINUTES - passed..MINUTES {
                self.done[i] = 0;
                self.failed[i] = 0;
            }
            self.minute = minute;
        }
    }

    /// Finished and failed items in the last `minutes` minutes before `now_minute`.
    pub fn within(&self, minutes: usize, now_minute: i64) -> (u64, u64) {
        let age = usize::try_from(now_minute - self.minute).unwrap_or(usize::MAX);
        let take = minutes.saturating_sub(age).min(self.done.len());
        let from = self.done.len() - take;
        (
            self.done[from..].iter().sum(),
            self.failed[from..].iter().sum(),
        )
    }
}

fn this_minute() -> i64 {
    Utc::now().timestamp().div_euclid(60)
}

/// Counts items out of flight when dropped, however the run ended.
pub struct InFlight<'a>(&'a QueueActivity);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

impl QueueActivity {
    pub fn start(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Relaxed);
        InFlight(self)
    }

    /// One item finished (or failed), after `took`.
    pub fn finished(&self, ok: bool, took: Duration) {
        self.finished_many(u64::from(ok), u64::from(!ok));
        let secs = took.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        self.histogram[bucket].fetch_add(1, Relaxed);
        self.run_micros
            .fetch_add(u64::try_from(took.as_micros()).unwrap_or(u64::MAX), Relaxed);
    }

    /// Items finished without a run time of their own (a batch of sends).
    pub fn finished_many(&self, done: u64, failed: u64) {
        self.done.fetch_add(done, Relaxed);
        self.failed.fetch_add(failed, Relaxed);
        let mut minutes = self
            .minutes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        minutes.advance(this_minute());
        let Minutes {
            done: done_by_minute,
            failed: failed_by_minute,
            ..
        } = &mut *minutes;
        if let (Some(d), Some(f)) = (done_by_minute.last_mut(), failed_by_minute.last_mut()) {
            *d += done;
            *f += failed;
        }
    }

    pub fn minutes(&self) -> Minutes {
        let mut minutes = self
            .minutes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        minutes.advance(this_minute());
        minutes.clone()
    }
}

/// Every queue's counters in this process, by queue name.
#[derive(Debug, Default)]
pub struct Activity(BTreeMap<&'static str, QueueActivity>);

impl Activity {
    pub fn new(queues: impl IntoIterator<Item = &'static str>) -> Self {
        Self(
            queues
                .into_iter()
                .map(|q| (q, QueueActivity::default()))
                .collect(),
        )
    }

    /// The counters of `queue`. Every queue is known when the process starts; an unknown
    /// name (never the case) counts into a throwaway.
    pub fn of(&self, queue: &str) -> Option<&QueueActivity> {
        self.0.get(queue)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &QueueActivity)> {
        self.0.iter().map(|(name, a)| (*name, a))
    }

    /// Items in flight by queue, for the heartbeat.
    pub fn in_flight(&self) -> serde_json::Value {
        self.iter()
            .map(|(name, a)| (name.to_owned(), a.in_flight.load(Relaxed).into()))
            .collect::<serde_json::Map<_, _>>()
            .into()
    }

    /// Per-minute throughput by queue, for the heartbeat.
    pub fn throughput(&self) -> serde_json::Value {
        self.iter()
            .filter_map(|(name, a)| {
                Some((name.to_owned(), serde_json::to_value(a.minutes()).ok()?))
            })
            .collect::<serde_json::Map<_, _>>()
            .into()
    }
}

#[cfg(test)]
mod tests {
    use super::Minutes;

    #[test]
    fn a_window_counts_only_its_minutes_and_moves_with_the_clock() {
        let mut m = Minutes::default();
        m.advance(100);
        m.done[14] = 3;
        m.advance(102);
        m.done[14] = 5;
        assert_eq!(m.within(1, 102), (5, 0));
        assert_eq!(m.within(5, 102), (8, 0));
        // Read a minute later without new items: the newest minute is no longer "the last".
        assert_eq!(m.within(1, 103), (0, 0));
        assert_eq!(m.within(15, 103), (8, 0));
        m.advance(200);
        assert_eq!(m.within(15, 200), (0, 0));
    }
}
