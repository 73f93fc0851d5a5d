//! Reserves sustained at the machine's limit (issue #10), beside the ceiling the same
//! Postgres allows one row: the single-row conditional decrement that one reserve per buyer
//! would be bound by.

use std::{str::FromStr, time::Duration};

use entity::accounts::Role;
use reqwest::StatusCode;
use sea_orm::sqlx::{
    self,
    postgres::{PgConnectOptions, PgPoolOptions},
};

use crate::{
    Figure,
    load::{self, percentile_ms},
    scenarios::create_drop,
    store::Store,
};

const BUYERS: usize = 40_000;
const STOCK: i32 = 1_000_000;
const CONNECTIONS: usize = 256;
const WINDOW: Duration = Duration::from_secs(10);
const CEILING_CONNECTIONS: u32 = 8;

pub async fn sustained_reserve() -> anyhow::Result<Vec<Figure>> {
    let store = Store::start(&[]).await?;
    let client = load::client(CONNECTIONS)?;
    let admin = store.users("admin", 1, Role::Admin).await?.remove(0).1;
    let drop_id = create_drop(&client, &store, &admin, STOCK).await?;
    let buyers = store.users("steady", BUYERS, Role::Customer).await?;
    let health = format!("{}/healthz", store.base);
    load::run_all(&client, CONNECTIONS, vec![(); CONNECTIONS], move |c, ()| {
        c.get(&health)
    })
    .await;

    let url = format!("{}/api/drops/{drop_id}/reserve", store.base);
    let samples = load::run_until(
        &client,
        CONNECTIONS,
        buyers,
        Some(WINDOW),
        move |c, (_, token): (i64, String)| c.post(&url).bearer_auth(token),
    )
    .await;
    let reserved = samples
        .iter()
        .filter(|(_, s)| s.status == StatusCode::CREATED)
        .count();
    let server_errors = samples
        .iter()
        .filter(|(_, s)| s.status.is_server_error())
        .count();
    let span = samples
        .iter()
        .map(|(_, s)| s.at)
        .max()
        .unwrap_or(WINDOW)
        .as_secs_f64();
    let mut latencies: Vec<Duration> = samples.iter().map(|(_, s)| s.latency).collect();
    let audit = entity::drops::audit(&store.db, drop_id).await?;
    let oversold = (audit.active_holds + audit.purchases - audit.total_stock).max(0);
    let database_url = store.database_url.clone();
    store.stop();

    let rate = reserved as f64 / span;
    let ceiling = single_row_ceiling(&database_url).await?;
    let s = "sustained";
    Ok(vec![
        Figure::new(s, "successful reserves per second", rate, "/s", ""),
        Figure::new(
            s,
            "reserve p50",
            percentile_ms(&mut latencies, 50.0),
            "ms",
            "",
        ),
        Figure::new(
            s,
            "reserve p99",
            percentile_ms(&mut latencies, 99.0),
            "ms",
            "<= 100",
        ),
        Figure::new(s, "5xx answers", server_errors as f64, "", "0"),
        Figure::new(s, "oversold units", oversold as f64, "", "0"),
        Figure::new(
            s,
            "invariant available + active + sold = total",
            f64::from(u8::from(audit.holds())),
            "",
            "1",
        ),
        Figure::new(
            s,
            "single-row decrement ceiling (8 conns)",
            ceiling,
            "/s",
            "",
        ),
        Figure::new(
            s,
            "reserves/s ÷ single-row ceiling",
            rate / ceiling.max(1.0),
            "",
            ">= 0.6, aim >= 1.0",
        ),
    ])
}

/// `UPDATE … SET stock = stock - 1 WHERE id = 1 AND stock > 0` on one row, 8 connections,
/// `synchronous_commit = off`, for [`WINDOW`]: updates per second. Holds commit durably, but
/// one flush serves a whole batch of them, so the bar is the hot row's rate without any flush.
async fn single_row_ceiling(database_url: &str) -> anyhow::Result<f64> {
    let options =
        PgConnectOptions::from_str(database_url)?.options([("synchronous_commit", "off")]);
    let pool = PgPoolOptions::new()
        .max_connections(CEILING_CONNECTIONS)
        .connect_with(options)
        .await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS bench_ceiling (id int PRIMARY KEY, stock bigint NOT NULL)",
    )
    .execute(&pool)
    .await?;
    sqlx::query("INSERT INTO bench_ceiling VALUES (1, 1000000000000) ON CONFLICT (id) DO NOTHING")
        .execute(&pool)
        .await?;
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CEILING_CONNECTIONS {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let mut done = 0u64;
            while started.elapsed() < WINDOW {
                let updated = sqlx::query(
                    "UPDATE bench_ceiling SET stock = stock - 1 WHERE id = 1 AND stock > 0",
                )
                .execute(&pool)
                .await;
                if updated.is_ok_and(|r| r.rows_affected() == 1) {
                    done += 1;
                }
            }
            done
        }));
    }
    let mut total = 0u64;
    for task in tasks {
        total += task.await.unwrap_or(0);
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}
