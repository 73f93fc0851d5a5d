//! Who may open a live socket: `/ws` upgrades and Socket.IO sessions share one budget per
//! process (`LIVE_MAX_SOCKETS`), one per client address (`LIVE_MAX_SOCKETS_PER_ADDRESS`),
//! and a handshake rate per address (`LIVE_HANDSHAKES_PER_ADDRESS_PER_MINUTE`).
//!
//! A Socket.IO long-polling session is not a connection: thousands can ride on a few, so
//! `HTTP_MAX_CONNECTIONS` cannot bound them. Each admitted socket holds a [`Slot`] for as
//! long as it lives and gives it back when dropped: a `/ws` socket's task holds it, and a
//! Socket.IO session holds it in the extensions of its handshake request, which Engine.IO
//! keeps for the session's life (a session that never joins a namespace is closed after
//! socketioxide's connect timeout).

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use crate::settings::LiveSettings;
use poem::http::StatusCode;

use crate::{
    http::client::limit_key,
    http::error::{ApiError, ErrorCode},
};

/// The handshake-rate window.
const WINDOW: Duration = Duration::from_secs(60);
/// What a refused client is told to wait when the process is full.
const FULL_RETRY_AFTER: u64 = 5;

pub struct LiveGate {
    settings: LiveSettings,
    open: AtomicUsize,
    by_address: Mutex<HashMap<String, Address>>,
}

/// One client address's sockets and handshakes.
#[derive(Default)]
struct Address {
    open: usize,
    handshakes: u32,
    window_started: Option<Instant>,
}

/// A live socket's place in the budget, given back when dropped.
pub struct Slot {
    gate: Arc<LiveGate>,
    key: String,
}

impl LiveGate {
    pub fn new(settings: LiveSettings) -> Arc<Self> {
        Arc::new(Self {
            settings,
            open: AtomicUsize::new(0),
            by_address: Mutex::new(HashMap::new()),
        })
    }

    /// Sockets open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Admits a new socket from `ip`, or says why not: 429 `too_many_requests` past the
    /// handshake rate, 429 `too_many_sockets` when the address has its share open, 503
    /// `too_many_sockets` when the process has (each with `Retry-After`).
    ///
    /// # Errors
    /// The refusal, ready to answer.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, ApiError> {
        let key = limit_key(ip);
        let now = Instant::now();
        let mut addresses = self
            .by_address
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let address = addresses.entry(key.clone()).or_default();
        let started = match address.window_started {
            Some(at) if now.duration_since(at) < WINDOW => at,
            _ => {
                address.handshakes = 0;
                address.window_started = Some(now);
                now
            }
        };
        address.handshakes = address.handshakes.saturating_add(1);
        if address.handshakes > self.settings.handshakes_per_address_per_minute {
            let wait = WINDOW.saturating_sub(now.duration_since(started));
            return Err(ApiError::too_many(
                ErrorCode::TooManyRequests,
                "too many new sockets from this address; slow down",
                wait.as_secs_f64().ceil() as u64,
            ));
        }
        if address.open >= self.settings.max_sockets_per_address {
            return Err(ApiError::too_many(
                ErrorCode::TooManySockets,
                format!(
                    "this address has {} live sockets open, the most it may (LIVE_MAX_SOCKETS_PER_ADDRESS); close one first",
                    address.open
                ),
                FULL_RETRY_AFTER,
            ));
        }
        let taken = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < self.settings.max_sockets).then_some(open + 1)
            });
        if taken.is_err() {
            return Err(ApiError {
                retry_after: Some(FULL_RETRY_AFTER),
                ..ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::TooManySockets,
                    "this instance has all the live sockets it takes; try again shortly",
                )
            });
        }
        address.open += 1;
        Ok(Slot {
            gate: self.clone(),
            key,
        })
    }

    fn release(&self, key: &str) {
        self.open.fetch_sub(1, Ordering::AcqRel);
        let mut addresses = self
            .by_address
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(address) = addresses.get_mut(key) {
            address.open = address.open.saturating_sub(1);
            let window_over = address
                .window_started
                .is_none_or(|at| at.elapsed() >= WINDOW);
            if address.open == 0 && window_over {
                addresses.remove(key);
            }
        }
        // Addresses whose window ran out with nothing open are forgotten now and then.
        if addresses.len() > 10_000 {
            addresses.retain(|_, a| {
                a.open > 0 || a.window_started.is_some_and(|at| at.elapsed() < WINDOW)
            });
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.gate.release(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn gate(max: usize, per_address: usize, per_minute: u32) -> Arc<LiveGate> {
        LiveGate::new(LiveSettings {
            max_sockets: max,
            max_sockets_per_address: per_address,
            handshakes_per_address_per_minute: per_minute,
        })
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(203, 0, 113, last))
    }

    #[test]
    fn an_address_gets_its_share_and_gets_it_back_when_a_socket_closes() {
        let gate = gate(100, 2, 100);
        let first = gate.admit(ip(1));
        let _second = gate.admit(ip(1));
        let third = gate.admit(ip(1));
        assert_eq!(third.err().map(|e| e.code), Some(ErrorCode::TooManySockets));
        assert!(
            gate.admit(ip(2)).is_ok(),
            "another address is not held back"
        );
        drop(first);
        assert!(gate.admit(ip(1)).is_ok());
    }

    #[test]
    fn the_process_budget_is_shared_by_every_address() {
        let gate = gate(2, 10, 100);
        let _a = gate.admit(ip(1));
        let _b = gate.admit(ip(2));
        let refused = gate.admit(ip(3)).err();
        assert_eq!(
            refused.map(|e| (e.status, e.code)),
            Some((StatusCode::SERVICE_UNAVAILABLE, ErrorCode::TooManySockets))
        );
        assert_eq!(gate.open(), 2);
    }

    #[test]
    fn handshakes_past_the_rate_are_refused_even_with_room() {
        let gate = gate(100, 100, 3);
        for _ in 0..3 {
            drop(gate.admit(ip(1)));
        }
        let refused = gate.admit(ip(1)).err();
        assert_eq!(refused.map(|e| e.code), Some(ErrorCode::TooManyRequests));
    }
}
