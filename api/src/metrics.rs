//! Counters for `/metrics`, in Prometheus's text format. Atomics only: nothing on a hot path
//! takes a lock to count. Figures that must add up over every instance (the drops' demand,
//! the mail ledger) are read from the database when scraped.

use std::{
    fmt::Write,
    sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed},
};

use entity::drops::stats::DropStats;

/// A metric family: name, help, type, and what gives its samples.
type Family<T> = (&'static str, &'static str, &'static str, T);

/// A per-drop series: the figure it shows of each drop.
type DropSeries = Family<fn(&DropStats) -> i64>;

const PER_DROP: [DropSeries; 9] = [
    (
        "honeydrop_drop_reserve_attempts_total",
        "Reserve requests per drop, from every instance (recorded each second).",
        "counter",
        |d| d.reserve_attempts,
    ),
    (
        "honeydrop_drop_holds_total",
        "Holds taken per drop (waitlist offers and draw wins included).",
        "counter",
        |d| d.holds,
    ),
    (
        "honeydrop_drop_expiries_total",
        "Holds per drop that ran out unbought.",
        "counter",
        |d| d.expiries,
    ),
    (
        "honeydrop_drop_releases_total",
        "Holds per drop let go by their buyer.",
        "counter",
        |d| d.releases,
    ),
    (
        "honeydrop_drop_purchases_total",
        "Purchases per drop.",
        "counter",
        |d| d.purchases,
    ),
    (
        "honeydrop_drop_offers_made_total",
        "Returned units offered to a drop's waitlist.",
        "counter",
        |d| d.offers_made,
    ),
    (
        "honeydrop_drop_offers_taken_total",
        "Waitlist offers bought.",
        "counter",
        |d| d.offers_taken,
    ),
    (
        "honeydrop_drop_draw_entries_total",
        "Entries in a drop's draw.",
        "counter",
        |d| d.draw_entries,
    ),
    (
        "honeydrop_drop_waitlist_length",
        "Buyers waiting in a drop's line now.",
        "gauge",
        |d| d.waitlist_length,
    ),
];

/// A counter's value as a sample.
fn total(counter: &AtomicU64) -> i64 {
    i64::try_from(counter.load(Relaxed)).unwrap_or(i64::MAX)
}

/// Appends one family in the text format.
fn write_family<L: AsRef<str>>(
    out: &mut String,
    (name, help, kind): (&str, &str, &str),
    samples: &[(L, i64)],
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{} {value}", labels.as_ref());
    }
}

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
    /// Queries those lookups took (sessions waiting together are asked about in one).
    pub session_lookup_queries: AtomicU64,
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

    /// The counters, the ledger's lapsed mail claims and the recent drops' demand figures
    /// (both read from the database; left out when they could not be).
    pub fn render(&self, lapsed_mail_claims: Option<i64>, drops: &[DropStats]) -> String {
        let mut out = String::new();
        for (name, help, kind, samples) in self.by_label() {
            write_family(&mut out, (name, help, kind), &samples);
        }
        let lapsed = lapsed_mail_claims.map(|lapsed| {
            (
                "honeydrop_mail_lapsed_claims",
                "Email sends whose worker died before recording the outcome, over the rows the ledger keeps: each message may have gone out once more.",
                "gauge",
                lapsed,
            )
        });
        for (name, help, kind, value) in self.single_valued().into_iter().chain(lapsed) {
            write_family(&mut out, (name, help, kind), &[("", value)]);
        }
        for (name, help, kind, pick) in PER_DROP {
            let samples: Vec<(String, i64)> = drops
                .iter()
                .map(|d| (format!("{{drop=\"{}\"}}", d.drop_id), pick(d)))
                .collect();
            write_family(&mut out, (name, help, kind), &samples);
        }
        out
    }

    /// The families with labelled samples: name, help, type, (labels, value).
    fn by_label(&self) -> [Family<[(&'static str, i64); 3]>; 2] {
        [
            (
                "honeydrop_http_responses_total",
                "HTTP responses by status class.",
                "counter",
                [
                    ("{class=\"2xx\"}", total(&self.http_2xx)),
                    ("{class=\"4xx\"}", total(&self.http_4xx)),
                    ("{class=\"5xx\"}", total(&self.http_5xx)),
                ],
            ),
            (
                "honeydrop_reservations_total",
                "Reserve attempts by outcome.",
                "counter",
                [
                    ("{outcome=\"created\"}", total(&self.reservations_created)),
                    ("{outcome=\"sold_out\"}", total(&self.reservations_sold_out)),
                    (
                        "{outcome=\"sold_out_cached\"}",
                        total(&self.reservations_sold_out_cached),
                    ),
                ],
            ),
        ]
    }

    /// The families with one unlabelled sample: name, help, type, value.
    fn single_valued(&self) -> [Family<i64>; 9] {
        [
            (
                "honeydrop_reserve_batches_total",
                "Statements that served several buyers of one drop at once (group commit).",
                "counter",
                total(&self.reserve_batches),
            ),
            (
                "honeydrop_reserves_batched_total",
                "Holds taken by batched statements.",
                "counter",
                total(&self.reserves_batched),
            ),
            (
                "honeydrop_purchases_total",
                "Completed purchases.",
                "counter",
                total(&self.purchases),
            ),
            (
                "honeydrop_overloaded_total",
                "Requests answered 503 overloaded (no database connection in time, too many clients).",
                "counter",
                total(&crate::http::error::OVERLOADED),
            ),
            (
                "honeydrop_database_unavailable_total",
                "Requests answered 503 database_unavailable (the connection broke or Postgres was restarting).",
                "counter",
                total(&crate::http::error::DATABASE_UNAVAILABLE),
            ),
            (
                "honeydrop_session_lookups_total",
                "Requests authenticated by a database query because the session view was not current.",
                "counter",
                total(&self.session_lookups),
            ),
            (
                "honeydrop_session_lookup_queries_total",
                "Database queries those session lookups took: the sessions waiting at once are asked about in one.",
                "counter",
                total(&self.session_lookup_queries),
            ),
            (
                "honeydrop_websocket_clients",
                "Open WebSocket connections.",
                "gauge",
                self.websocket_clients.load(Relaxed),
            ),
            (
                "honeydrop_socketio_clients",
                "Connected Socket.IO sockets.",
                "gauge",
                self.socketio_clients.load(Relaxed),
            ),
        ]
    }
}
