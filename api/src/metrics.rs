//! Counters for `/metrics`, in Prometheus's text format. Atomics only: nothing on a hot path
//! takes a lock to count.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

#[derive(Default)]
pub struct Metrics {
    pub http_2xx: AtomicU64,
    pub http_4xx: AtomicU64,
    pub http_5xx: AtomicU64,
    pub reservations_created: AtomicU64,
    pub reservations_sold_out: AtomicU64,
    /// Sold-out answers given from the cache, without a database round trip.
    pub reservations_sold_out_cached: AtomicU64,
    /// Batched reserve statements, and the holds they took.
    pub reserve_batches: AtomicU64,
    pub reserves_batched: AtomicU64,
    pub purchases: AtomicU64,
    /// Requests whose session was checked in the database (the revocation view was not
    /// current).
    pub session_lookups: AtomicU64,
    pub websocket_clients: AtomicI64,
    pub socketio_clients: AtomicI64,
}

impl Metrics {
    pub fn count_status(&self, status: u16) {
        let counter = match status {
            500.. => &self.http_5xx,
            400.. => &self.http_4xx,
            _ => &self.http_2xx,
        };
        counter.fetch_add(1, Relaxed);
    }

    /// The counters, and the ledger's lapsed mail claims when they could be read.
    pub fn render(&self, lapsed_mail_claims: Option<i64>) -> String {
        let mut out = String::new();
        let mut line = |name: &str, help: &str, kind: &str, samples: &[(&str, i64)]| {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
            for (labels, value) in samples {
                out.push_str(&format!("{name}{labels} {value}\n"));
            }
        };
        let get = |c: &AtomicU64| i64::try_from(c.load(Relaxed)).unwrap_or(i64::MAX);
        line(
            "honeydrop_http_responses_total",
            "HTTP responses by status class.",
            "counter",
            &[
                ("{class=\"2xx\"}", get(&self.http_2xx)),
                ("{class=\"4xx\"}", get(&self.http_4xx)),
                ("{class=\"5xx\"}", get(&self.http_5xx)),
            ],
        );
        line(
            "honeydrop_reservations_total",
            "Reserve attempts by outcome.",
            "counter",
            &[
                ("{outcome=\"created\"}", get(&self.reservations_created)),
                ("{outcome=\"sold_out\"}", get(&self.reservations_sold_out)),
                (
                    "{outcome=\"sold_out_cached\"}",
                    get(&self.reservations_sold_out_cached),
                ),
            ],
        );
        line(
            "honeydrop_reserve_batches_total",
            "Statements that served several buyers of one drop at once (group commit).",
            "counter",
            &[("", get(&self.reserve_batches))],
        );
        line(
            "honeydrop_reserves_batched_total",
            "Holds taken by batched statements.",
            "counter",
            &[("", get(&self.reserves_batched))],
        );
        line(
            "honeydrop_purchases_total",
            "Completed purchases.",
            "counter",
            &[("", get(&self.purchases))],
        );
        line(
            "honeydrop_overloaded_total",
            "Requests answered 503 overloaded (no database connection in time, too many clients).",
            "counter",
            &[("", get(&crate::error::OVERLOADED))],
        );
        line(
            "honeydrop_session_lookups_total",
            "Requests authenticated by a database query because the session view was not current.",
            "counter",
            &[("", get(&self.session_lookups))],
        );
        line(
            "honeydrop_websocket_clients",
            "Open WebSocket connections.",
            "gauge",
            &[("", self.websocket_clients.load(Relaxed))],
        );
        line(
            "honeydrop_socketio_clients",
            "Connected Socket.IO sockets.",
            "gauge",
            &[("", self.socketio_clients.load(Relaxed))],
        );
        if let Some(lapsed) = lapsed_mail_claims {
            line(
                "honeydrop_mail_lapsed_claims",
                "Email sends whose worker died before recording the outcome, over the rows the ledger keeps: each message may have gone out once more.",
                "gauge",
                &[("", lapsed)],
            );
        }
        out
    }
}
