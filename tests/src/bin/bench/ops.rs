//! The operations console's reads with a deep queue: the queue summary, a page of scheduled
//! items (the first and the twentieth, through cursors) and one item, on an empty store and
//! again with 100,000 hold expiries scheduled. Each read is timed 50 times in a row.

use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use entity::accounts::Role;
use serde_json::Value;
use worker::{jobs::ExpireReservation, queue::Queue};

use crate::{Figure, load, store::Store};

const SCHEDULED: i64 = 100_000;
const SAMPLES: usize = 50;

pub async fn console_reads() -> anyhow::Result<Vec<Figure>> {
    let store = Store::start(&[]).await?;
    let admin = store.users("ops", 1, Role::Admin).await?.remove(0).1;
    let client = load::client(1)?;
    let mut figures = Vec::new();
    for (label, depth) in [("empty", 0), ("100k scheduled", SCHEDULED)] {
        schedule(&store, depth).await?;
        let read = |path: String| {
            let client = client.clone();
            let url = format!("{}{path}", store.base);
            let admin = admin.clone();
            async move { timed(&client, &url, &admin).await }
        };
        let (summary, body) = read("/api/admin/ops/queues".into()).await?;
        let expiry = body["queues"]
            .as_array()
            .and_then(|q| q.iter().find(|q| q["name"] == "expiry"));
        anyhow::ensure!(
            expiry.and_then(|q| q["scheduled"].as_i64()) == Some(depth),
            "the summary does not count {depth} scheduled: {expiry:?}"
        );
        let page = "/api/admin/ops/queues/expiry/items?state=scheduled&limit=50";
        let (first, body) = read(page.into()).await?;
        let mut cursor = body["nextCursor"].as_str().map(str::to_owned);
        for _ in 0..18 {
            let Some(c) = cursor.take() else { break };
            let (_, body) = read(format!("{page}&cursor={c}")).await?;
            cursor = body["nextCursor"].as_str().map(str::to_owned);
        }
        let twentieth = match &cursor {
            Some(c) => read(format!("{page}&cursor={c}")).await?.0,
            None => first.clone(),
        };
        for (what, mut latencies) in [
            ("summary", summary),
            ("first page of 50", first),
            ("20th page of 50", twentieth),
        ] {
            let median = load::percentile_ms(&mut latencies, 50.0);
            let p99 = load::percentile_ms(&mut latencies, 99.0);
            figures.push(Figure::new(
                "ops-console",
                &format!("{what}, {label}: p50"),
                median,
                "ms",
                "≤ 50 ms",
            ));
            figures.push(Figure::new(
                "ops-console",
                &format!("{what}, {label}: p99"),
                p99,
                "ms",
                "—",
            ));
        }
    }
    store.stop();
    Ok(figures)
}

/// Schedules `n` hold expiries an hour from now, as holds would, in batches of one script.
async fn schedule(store: &Store, n: i64) -> anyhow::Result<()> {
    if n == 0 {
        return Ok(());
    }
    let client = redis::Client::open(tests::test_redis_url())?;
    let queue = Queue::Redis {
        conn: worker::platform::redis_conn::manager(&client).await?,
        prefix: store
            .var("REDIS_PREFIX")
            .context("the store's Redis prefix")?
            .to_owned(),
    };
    let at = Utc::now() + chrono::Duration::hours(1);
    let ids: Vec<i64> = (1..=n).collect();
    for chunk in ids.chunks(5_000) {
        let jobs = chunk
            .iter()
            .map(|&reservation_id| (ExpireReservation { reservation_id }, at))
            .collect();
        queue.push_all_at(jobs).await?;
    }
    Ok(())
}

/// `SAMPLES` reads of `url` one after another: their latencies and the last body.
async fn timed(
    client: &reqwest::Client,
    url: &str,
    token: &str,
) -> anyhow::Result<(Vec<Duration>, Value)> {
    let mut latencies = Vec::with_capacity(SAMPLES);
    let mut body = Value::Null;
    for _ in 0..SAMPLES {
        let started = Instant::now();
        let response = client.get(url).bearer_auth(token).send().await?;
        anyhow::ensure!(
            response.status().is_success(),
            "{url}: {}",
            response.status()
        );
        body = response.json().await?;
        latencies.push(started.elapsed());
    }
    Ok((latencies, body))
}
