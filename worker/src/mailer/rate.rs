//! The process-wide send-rate cap (`MAIL_RATE_PER_SEC`).

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

/// A token bucket shared by every send of the process: at most `rate` a second, with bursts
/// of up to one second's worth.
pub(super) struct RateLimiter {
    rate: f64,
    state: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    pub(super) fn new(per_sec: u32) -> Self {
        let rate = f64::from(per_sec.max(1));
        Self {
            rate,
            state: Mutex::new((rate, Instant::now())),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, (f64, Instant)> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits for at least one token, then takes up to `wanted` of those there are.
    pub(super) async fn acquire_up_to(&self, wanted: usize) -> usize {
        let wanted = wanted.max(1);
        loop {
            let wait = {
                let mut state = self.state();
                let (tokens, last) = *state;
                let now = Instant::now();
                let tokens =
                    (tokens + now.duration_since(last).as_secs_f64() * self.rate).min(self.rate);
                if tokens >= 1.0 {
                    // Whole tokens (at most `rate`), never more than wanted.
                    let taken = (tokens.floor() as usize).min(wanted);
                    let left = tokens - taken as f64;
                    *state = (left, now);
                    return taken;
                }
                *state = (tokens, now);
                Duration::from_secs_f64((1.0 - tokens) / self.rate)
            };
            tokio::time::sleep(wait).await;
        }
    }

    pub(super) fn give_back(&self, unused: usize) {
        let mut state = self.state();
        let tokens = (state.0 + unused as f64).min(self.rate);
        state.0 = tokens;
    }
}
