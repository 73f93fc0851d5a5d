//! Starts a store in distributed mode from the release binaries: one `api`, one `worker`,
//! a fresh Postgres database and a fresh Redis namespace.

use std::{
    collections::HashMap,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use chrono::Utc;
use sea_orm::{ActiveValue::Set, DatabaseConnection, EntityTrait};

pub const JWT_SECRET: &str = "benchmark-secret-of-at-least-32-bytes!!";
/// Bench stores serve `/metrics` behind this, as distributed mode requires.
pub const METRICS_TOKEN: &str = "benchmark-metrics-token-0123456789";

/// Every bench store's Redis keys start with this.
const REDIS_PREFIX: &str = "hdbench";

/// What this run's stores left — their databases and Redis prefixes — removed when the next
/// store starts. Only these: other stores may share the Redis and the Postgres server.
static LEFTOVERS: std::sync::Mutex<Vec<(tests::TestDatabase, String)>> =
    std::sync::Mutex::new(Vec::new());

pub struct Store {
    pub base: String,
    pub port: u16,
    pub db: DatabaseConnection,
    /// The store's own database, for measurements beside it.
    pub database_url: String,
    pub api: Child,
    pub worker: Child,
    /// Workers started after the first, by [`Store::add_worker`].
    pub more_workers: Vec<Child>,
    env: HashMap<String, String>,
    /// From spawning the api to its first 200 on `/readyz`.
    pub start_to_ready: Duration,
    jwt: api::auth::Jwt,
}

impl Store {
    pub async fn start(extra: &[(&str, &str)]) -> anyhow::Result<Self> {
        clear_earlier_stores().await?;
        let port = tests::free_port();
        let database = tests::fresh_postgres_database().await;
        let prefix = format!("{REDIS_PREFIX}:{}", uuid::Uuid::new_v4().simple());
        let mut env: HashMap<String, String> = HashMap::from([
            ("PORT".into(), port.to_string()),
            (
                "DATA_DIR".into(),
                std::env::temp_dir()
                    .join(format!("hd-bench-{port}"))
                    .display()
                    .to_string(),
            ),
            ("DATABASE_URL".into(), database.url().to_owned()),
            ("REDIS_URL".into(), tests::test_redis_url()),
            ("REDIS_PREFIX".into(), prefix.clone()),
            ("JWT_ACCESS_SECRET".into(), JWT_SECRET.into()),
            ("RUST_LOG".into(), "warn".into()),
            ("AUTH_RATE_LIMIT_PER_MINUTE".into(), "1000000".into()),
            // One load generator from one address opens thousands of sockets and signs
            // thousands of addresses up: the per-address limits would throttle it.
            ("NOTIFY_ME_PER_ADDRESS_PER_HOUR".into(), "100000000".into()),
            (
                "NOTIFY_ME_EMAILS_PER_MAILBOX_PER_DAY".into(),
                "1000000".into(),
            ),
            ("LIVE_MAX_SOCKETS".into(), "1000000".into()),
            ("LIVE_MAX_SOCKETS_PER_ADDRESS".into(), "1000000".into()),
            (
                "LIVE_HANDSHAKES_PER_ADDRESS_PER_MINUTE".into(),
                "100000000".into(),
            ),
            ("METRICS_TOKEN".into(), METRICS_TOKEN.into()),
            // One load generator is one address: the per-address limits would throttle it.
            ("SIGNUPS_PER_ADDRESS_PER_HOUR".into(), "1000000".into()),
            ("HOLDS_PER_DROP_PER_ADDRESS".into(), "1000000".into()),
        ]);
        if !extra.iter().any(|(k, _)| *k == "SMTP_URL") {
            // Scenarios without an SMTP sink send no mail worth delivering.
            env.insert("MAIL_TRANSPORT".into(), "outbox".into());
        }
        for (k, v) in extra {
            env.insert((*k).into(), (*v).into());
        }
        // Migrate first, so the api's start-to-ready measures start-up, not schema creation.
        let status = spawn("migration", &env, &["up"])?.wait()?;
        if !status.success() {
            bail!("migration up failed");
        }
        let started = Instant::now();
        let api = spawn("api", &env, &[])?;
        let base = format!("http://127.0.0.1:{port}");
        wait_ready(&base).await?;
        let start_to_ready = started.elapsed();
        let worker = spawn("worker", &env, &[])?;
        let db = entity::db::connect(
            &env["DATABASE_URL"],
            8,
            Duration::from_secs(10),
            entity::db::PoolMode::Session,
        )
        .await?
        .pool()
        .clone();
        let jwt = api::auth::Jwt::new(JWT_SECRET, Duration::from_secs(3600));
        LEFTOVERS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((database, prefix));
        Ok(Self {
            base,
            port,
            db,
            database_url: env["DATABASE_URL"].clone(),
            api,
            worker,
            more_workers: Vec::new(),
            env,
            start_to_ready,
            jwt,
        })
    }

    /// `n` users with live sessions and access tokens, inserted in bulk: hashing thousands of
    /// argon2 passwords would measure argon2, not the store.
    pub async fn users(
        &self,
        prefix: &str,
        n: usize,
        role: entity::accounts::Role,
    ) -> anyhow::Result<Vec<(i64, String)>> {
        use entity::models::{sessions, users};
        let now = Utc::now();
        let mut out = Vec::with_capacity(n);
        for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
            let rows = chunk.iter().map(|i| users::ActiveModel {
                email: Set(format!("{prefix}{i}@bench.example")),
                display_name: Set(format!("{prefix}{i}")),
                password_hash: Set("$argon2id$v=19$m=19456,t=2,p=1$none$none".into()),
                role: Set(role),
                created_at: Set(now),
                ..Default::default()
            });
            let inserted = users::Entity::insert_many(rows)
                .exec_with_returning(&self.db)
                .await?;
            let session_rows = inserted.iter().map(|u| sessions::ActiveModel {
                user_id: Set(u.id),
                token_hash: Set(entity::tokens::hash(&entity::tokens::generate())),
                created_at: Set(now),
                last_used_at: Set(now),
                expires_at: Set(now + chrono::Duration::days(1)),
                revoked_at: Set(None),
                ..Default::default()
            });
            let sessions = sessions::Entity::insert_many(session_rows)
                .exec_with_returning(&self.db)
                .await?;
            for (user, session) in inserted.iter().zip(sessions) {
                out.push((user.id, self.jwt.issue(user.id, &session, role)?));
            }
        }
        Ok(out)
    }

    /// A setting the store's processes were started with.
    pub fn var(&self, name: &str) -> Option<&str> {
        self.env.get(name).map(String::as_str)
    }

    /// One more worker process beside the first.
    pub fn add_worker(&mut self) -> anyhow::Result<()> {
        self.more_workers.push(spawn("worker", &self.env, &[])?);
        Ok(())
    }

    pub fn rss_mb(&self, which: &Child) -> f64 {
        rss_mb(which.id())
    }

    pub fn stop(mut self) {
        let mut children = vec![&mut self.api, &mut self.worker];
        children.extend(self.more_workers.iter_mut());
        for child in &children {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
        for child in children {
            for _ in 0..100 {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Drops what earlier stores of this run left — their databases, and their Redis keys (a
/// sustained run leaves 40,000 scheduled expiries) — so that no scenario shares the machine
/// with the last one's autovacuum or memory. Keys of other stores in the same Redis stay.
pub async fn clear_earlier_stores() -> anyhow::Result<()> {
    let leftovers: Vec<(tests::TestDatabase, String)> = std::mem::take(
        &mut *LEFTOVERS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    for (database, prefix) in leftovers {
        // Dropping the guard drops the database.
        drop(database);
        tests::delete_redis_prefix(&tests::test_redis_url(), &prefix).await?;
    }
    Ok(())
}

fn spawn(name: &str, env: &HashMap<String, String>, args: &[&str]) -> anyhow::Result<Child> {
    Command::new(tests::binary(name))
        .args(args)
        .env_clear()
        .envs(env)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot start {name}"))
}

async fn wait_ready(base: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    for _ in 0..2000 {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    bail!("{base} never became ready")
}

/// Resident set size of a process, from /proc.
pub fn rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}
