//! The mail scenarios: a restock fan-out to 20,000 confirmed subscribers through an SMTP sink
//! (aiosmtpd, counting only), against the sink's own ceiling from a plain client; two workers
//! against one; a worker killed mid fan-out; and the database load of an idle worker.

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use anyhow::Context;
use chrono::Utc;
use entity::accounts::Role;
use lettre::Message;
use sea_orm::{ActiveValue::Set, ConnectionTrait, EntityTrait, Statement};
use serde_json::{Value, json};

use crate::{Figure, load, store::Store};

const SUBSCRIBERS: usize = 20_000;
/// The store's default `MAIL_CONNECTIONS`: the plain client gets as many.
const CONNECTIONS: usize = 16;

/// The benchmark's SMTP server: aiosmtpd with a handler that only counts.
struct SmtpSink {
    child: std::process::Child,
    port: u16,
    out: std::path::PathBuf,
}

impl SmtpSink {
    fn start() -> anyhow::Result<Self> {
        use std::io::BufRead;
        let out = std::env::temp_dir().join(format!(
            "hd-bench-mail-{}.txt",
            uuid::Uuid::new_v4().simple()
        ));
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/smtp/bench_sink.py");
        let mut child = std::process::Command::new("python3")
            .arg(script)
            .arg("--out")
            .arg(&out)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .context(
                "cannot start the SMTP sink (python3 with aiosmtpd; run scripts/services.sh)",
            )?;
        let stdout = child.stdout.take().context("sink stdout")?;
        let mut line = String::new();
        std::io::BufReader::new(stdout).read_line(&mut line)?;
        let port = line
            .trim()
            .strip_prefix("READY ")
            .context("sink did not start")?
            .parse()?;
        Ok(Self { child, port, out })
    }

    fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    fn recipients(&self) -> Vec<String> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.out);
    }
}

/// What the sink accepts from a plain client: `CONNECTIONS` connections (`TCP_NODELAY`, as
/// the store's own), each sending its share of `n` ready-made messages of an alert's size
/// back to back; no database, no templates.
async fn sink_ceiling(n: usize) -> anyhow::Result<f64> {
    use lettre::transport::smtp::{client::AsyncSmtpConnection, extension::ClientId};
    let sink = SmtpSink::start()?;
    let body = "x".repeat(3_000);
    let started = Instant::now();
    let per_task = n / CONNECTIONS;
    let tasks = (0..CONNECTIONS).map(|task| {
        let (body, port) = (body.clone(), sink.port);
        tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
            stream.set_nodelay(true)?;
            let hello = ClientId::default();
            let mut connection =
                AsyncSmtpConnection::connect_with_transport(Box::new(stream), &hello).await?;
            for i in 0..per_task {
                let message = Message::builder()
                    .from("bench@honeydrop.local".parse()?)
                    .to(format!("plain{task}-{i}@bench.example").parse()?)
                    .subject("Bench honey is back in stock")
                    .body(body.clone())?;
                connection
                    .send(message.envelope(), &message.formatted())
                    .await?;
            }
            anyhow::Ok(())
        })
    });
    for task in futures::future::join_all(tasks).await {
        task??;
    }
    let sent = per_task * CONNECTIONS;
    // Until the sink's file shows them all (it flushes every 50 ms).
    while sink.recipients().len() < sent && started.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(sent as f64 / started.elapsed().as_secs_f64())
}

/// A store whose mail goes to `sink`, with `workers` worker processes in all.
async fn store_with_workers(sink: &SmtpSink, workers: usize) -> anyhow::Result<Store> {
    let mut store = Store::start(&[("SMTP_URL", &sink.url())]).await?;
    for _ in 1..workers {
        store.add_worker()?;
    }
    Ok(store)
}

/// An out-of-stock product with `SUBSCRIBERS` confirmed subscribers; returns the admin token
/// and the product id.
async fn product_with_subscribers(store: &Store) -> anyhow::Result<(String, i64)> {
    use entity::models::subscriptions;
    let admin = store.users("admin", 1, Role::Admin).await?.remove(0).1;
    let product: Value = load::client(2)?
        .post(format!("{}/api/admin/products", store.base))
        .bearer_auth(&admin)
        .json(&json!({"name": "Bench honey", "slug": "bench-honey", "priceCents": 1200, "inStock": false}))
        .send()
        .await?
        .json()
        .await?;
    let product_id = product["id"]
        .as_i64()
        .with_context(|| format!("product not created: {product}"))?;
    // Confirmed subscribers, inserted directly: the double opt-in is not what is measured.
    let now = Utc::now();
    for chunk in (0..SUBSCRIBERS).collect::<Vec<_>>().chunks(2000) {
        let rows = chunk.iter().map(|i| subscriptions::ActiveModel {
            product_id: Set(product_id),
            email: Set(format!("fan{i}@bench.example")),
            status: Set(subscriptions::SubscriptionStatus::Confirmed),
            confirm_token_hash: Set(entity::tokens::hash(&entity::tokens::generate())),
            unsubscribe_token_hash: Set(entity::tokens::hash(&entity::tokens::generate())),
            confirmation_sent_at: Set(Some(now)),
            confirmed_at: Set(Some(now)),
            notified_at: Set(None),
            created_at: Set(now),
            ..Default::default()
        });
        subscriptions::Entity::insert_many(rows)
            .exec(&store.db)
            .await?;
    }
    Ok((admin, product_id))
}

async fn restock(store: &Store, admin: &str, product_id: i64) -> anyhow::Result<()> {
    let restock = load::client(2)?
        .patch(format!("{}/api/admin/products/{product_id}", store.base))
        .bearer_auth(admin)
        .json(&json!({"inStock": true}))
        .send()
        .await?;
    anyhow::ensure!(
        restock.status().is_success(),
        "restock refused: {}",
        restock.text().await?
    );
    Ok(())
}

/// How a fan-out went, as the sink saw it.
struct FanOut {
    elapsed: Duration,
    distinct: usize,
    duplicates: usize,
}

impl FanOut {
    fn per_sec(&self) -> f64 {
        self.distinct as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Restocks and waits until every subscriber was reached; `during` runs once `at` mails were
/// accepted (a fault to inject).
async fn fan_out(
    store: &mut Store,
    sink: &SmtpSink,
    at: usize,
    during: impl FnOnce(&mut Store),
) -> anyhow::Result<FanOut> {
    let (admin, product_id) = product_with_subscribers(store).await?;
    let started = Instant::now();
    restock(store, &admin, product_id).await?;
    let mut during = Some(during);
    let mut distinct = 0;
    while started.elapsed() < Duration::from_secs(240) {
        let recipients = sink.recipients();
        distinct = recipients.iter().collect::<HashSet<_>>().len();
        if distinct >= SUBSCRIBERS {
            break;
        }
        if recipients.len() >= at
            && let Some(during) = during.take()
        {
            during(store);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = started.elapsed();
    // Anything still in flight that would make a duplicate has a moment to show up.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let recipients = sink.recipients();
    let distinct_now = recipients.iter().collect::<HashSet<_>>().len();
    Ok(FanOut {
        elapsed,
        distinct: distinct.max(distinct_now),
        duplicates: recipients.len() - distinct_now,
    })
}

/// One worker, then two, each at the default settings, against the sink's ceiling.
pub async fn restock_fanout() -> anyhow::Result<Vec<Figure>> {
    let scenario = "restock-fanout";
    let ceiling = sink_ceiling(SUBSCRIBERS).await?;
    let mut runs = Vec::new();
    for workers in [1, 2] {
        let sink = SmtpSink::start()?;
        let mut store = store_with_workers(&sink, workers).await?;
        let run = fan_out(&mut store, &sink, usize::MAX, |_| {}).await?;
        store.stop();
        runs.push(run);
    }
    let (one, two) = (&runs[0], &runs[1]);
    Ok(vec![
        Figure::new(
            scenario,
            "sink ceiling, plain client, 16 connections",
            ceiling,
            "/s",
            "",
        ),
        Figure::new(
            scenario,
            "mails accepted, one worker",
            one.distinct as f64,
            "",
            "= 20000",
        ),
        Figure::new(
            scenario,
            "mails per second, one worker",
            one.per_sec(),
            "/s",
            ">= 1000",
        ),
        Figure::new(
            scenario,
            "one worker / sink ceiling",
            one.per_sec() / ceiling,
            "x",
            ">= 0.7",
        ),
        Figure::new(
            scenario,
            "mails accepted, two workers",
            two.distinct as f64,
            "",
            "= 20000",
        ),
        Figure::new(
            scenario,
            "mails per second, two workers",
            two.per_sec(),
            "/s",
            "",
        ),
        Figure::new(
            scenario,
            "two workers / one worker",
            two.per_sec() / one.per_sec(),
            "x",
            ">= 1.7 or the sink's ceiling",
        ),
        Figure::new(
            scenario,
            "two workers / sink ceiling",
            two.per_sec() / ceiling,
            "x",
            "near 1: the sink is the limit",
        ),
        Figure::new(
            scenario,
            "duplicate mails",
            (one.duplicates + two.duplicates) as f64,
            "",
            "= 0",
        ),
    ])
}

/// Two workers; one is killed (`SIGKILL`) once 5,000 mails were accepted. Every subscriber
/// must still be reached; a duplicate only for a send the dead worker had in flight, and
/// each such send counted by `/metrics` as a lapsed claim.
pub async fn restock_kill() -> anyhow::Result<Vec<Figure>> {
    let scenario = "restock-kill";
    let sink = SmtpSink::start()?;
    let mut store = store_with_workers(&sink, 2).await?;
    let run = fan_out(&mut store, &sink, 5_000, |store| {
        let _ = store.worker.kill();
    })
    .await?;
    let metrics = load::client(1)?
        .get(format!("{}/metrics", store.base))
        .bearer_auth(crate::store::METRICS_TOKEN)
        .send()
        .await?
        .text()
        .await?;
    let lapsed = metrics
        .lines()
        .find_map(|l| l.strip_prefix("honeydrop_mail_lapsed_claims "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(f64::NAN);
    store.stop();
    Ok(vec![
        Figure::new(
            scenario,
            "subscribers not reached",
            (SUBSCRIBERS - run.distinct.min(SUBSCRIBERS)) as f64,
            "",
            "= 0",
        ),
        Figure::new(
            scenario,
            "duplicate mails",
            run.duplicates as f64,
            "",
            "<= 64 (its claimed rows)",
        ),
        Figure::new(
            scenario,
            "lapsed claims in /metrics",
            lapsed,
            "",
            ">= duplicates",
        ),
        Figure::new(
            scenario,
            "restock to last mail",
            run.elapsed.as_secs_f64(),
            "s",
            "",
        ),
    ])
}

/// Transactions per second a lone, idle worker runs against its database (the api stopped,
/// nothing due), from Postgres's own statistics over 30 s.
pub async fn idle_queries() -> anyhow::Result<Vec<Figure>> {
    let mut store = Store::start(&[]).await?;
    let _ = store.api.kill();
    let _ = store.api.wait();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before = transactions(&store).await?;
    let window = Duration::from_secs(30);
    tokio::time::sleep(window).await;
    let after = transactions(&store).await?;
    store.stop();
    // Less this measurement's own first read.
    let per_sec = (after - before - 1) as f64 / window.as_secs_f64();
    Ok(vec![Figure::new(
        "idle-worker",
        "database transactions per second",
        per_sec,
        "/s",
        "<= 2",
    )])
}

async fn transactions(store: &Store) -> anyhow::Result<i64> {
    let row = store
        .db
        .query_one_raw(Statement::from_string(
            store.db.get_database_backend(),
            "SELECT (xact_commit + xact_rollback)::bigint AS n FROM pg_stat_database \
             WHERE datname = current_database()",
        ))
        .await?
        .context("pg_stat_database has no row for the store's database")?;
    Ok(row.try_get::<i64>("", "n")?)
}
