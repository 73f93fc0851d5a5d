//! What both tiers read from the environment (and an optional `.env`), as one typed struct.
//! The api's own settings (its listener, sessions, the Contentful webhook, live sockets) are
//! the api crate's (`api::settings`), read with the same [`env`] parser.

use std::{collections::HashMap, fmt, net::IpAddr, path::PathBuf, time::Duration};

mod abuse;
mod anonymous;
mod database;
pub mod env;
mod read;
mod redis_target;

pub use abuse::{AbuseSettings, Cidr};
pub use anonymous::NotifyMeSettings;

use env::{Flag, Vars, chrono_secs, generated_secret, invalid};
pub use env::{create_private_dir, write_private};

/// A value that must never reach a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether an `Authorization` header carries this secret as its bearer token, in a time
    /// that tells nothing about where they differ or how long the secret is: both are MACed
    /// under the secret and the tags compared in constant time.
    pub fn is_bearer_of(&self, authorization: Option<&str>) -> bool {
        use hmac::{Hmac, Mac};
        let presented = authorization
            .and_then(|value| value.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map_or("", |(_, token)| token.trim());
        let tag = |message: &str| {
            Hmac::<sha2::Sha256>::new_from_slice(self.0.as_bytes()).map(|mut mac| {
                mac.update(message.as_bytes());
                mac
            })
        };
        match (tag(&self.0), tag(presented)) {
            (Ok(reference), Ok(candidate)) => candidate
                .verify_slice(&reference.finalize().into_bytes())
                .is_ok(),
            _ => false,
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("{name} is required{hint}")]
    Missing {
        name: &'static str,
        hint: &'static str,
    },
    #[error("{name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
    #[error("cannot prepare {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// SQLite, in-process queue and bus, worker inside the api.
    Embedded,
    /// Postgres, apalis-redis, Redis pub/sub, separate worker processes.
    Distributed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Everything the processes read from their environment, grouped by concern and held as
/// ready-to-use types, so no caller converts units or re-derives a default.
#[derive(Clone, Debug)]
pub struct Settings {
    pub http: HttpSettings,
    pub database: DatabaseSettings,
    /// Set in distributed mode only: its presence is what makes the mode.
    pub redis: Option<RedisSettings>,
    pub auth: AuthSettings,
    pub drops: DropSettings,
    pub mail: MailSettings,
    pub worker: WorkerSettings,
    pub retention: RetentionSettings,
    /// Limits on "notify me" (mail-bombing).
    pub notify_me: NotifyMeSettings,
    /// Client addresses behind proxies, per-address limits, the proof-of-work challenge.
    pub abuse: AbuseSettings,
    /// SQLite file, generated secrets, outbox.
    pub data_dir: PathBuf,
    pub log_format: LogFormat,
    /// Seed a demo store (products, drops, an admin) into an empty database (`DEMO_DATA`;
    /// on by default in embedded mode only).
    pub demo_data: bool,
}

/// Where the store is served, as every process needs it: the address (the api listens on
/// it, a worker's `/metrics` binds its host), the base of every link in an email, and who
/// may read `/metrics`.
#[derive(Clone, Debug)]
pub struct HttpSettings {
    pub host: IpAddr,
    pub port: u16,
    /// Used in links in emails.
    pub public_base_url: String,
    /// When set, `/metrics` requires `Authorization: Bearer <token>`.
    pub metrics_token: Option<Secret>,
    /// Without a token, whether `/metrics` is open to anyone: only in embedded mode (one
    /// machine); in distributed mode it is closed until `METRICS_TOKEN` is set.
    pub metrics_public: bool,
}

#[derive(Clone, Debug)]
pub struct DatabaseSettings {
    pub url: Secret,
    /// Postgres pool size per process.
    pub max_connections: u32,
    /// The api's second Postgres pool, where holds are taken (batched, so a few suffice).
    pub holds_connections: u32,
    /// How long an operation waits for a pooled connection before it is refused as
    /// overloaded (503).
    pub acquire_timeout: Duration,
    /// Straight to Postgres (or a session-mode pooler), or through a transaction-mode
    /// pooler such as PgBouncer (`DATABASE_POOL_MODE`).
    pub pool_mode: entity::db::PoolMode,
    /// Where migrations run (`DATABASE_MIGRATION_URL`, default `url`): Postgres itself when
    /// `url` is a transaction-mode pooler.
    pub migration_url: Secret,
}

#[derive(Clone, Debug)]
pub struct RedisSettings {
    /// `REDIS_URL`; with sentinels, only its user, password and database are used.
    pub url: Secret,
    /// Prefix of every Redis key, queue and channel, so several stores (or tests) share one Redis.
    pub prefix: String,
    /// Set when the master is found through Sentinel (`REDIS_SENTINELS`).
    pub sentinel: Option<SentinelSettings>,
}

#[derive(Clone, Debug)]
pub struct SentinelSettings {
    /// `host:port` of each sentinel (`REDIS_SENTINELS`, comma-separated).
    pub sentinels: Vec<String>,
    /// The master's name as the sentinels monitor it (`REDIS_MASTER_NAME`).
    pub master_name: String,
}

/// The secret both tiers derive their keys from: the api signs access tokens with it, and
/// the mail pump its links. Session lifetimes and sign-in limits are the api's own.
#[derive(Clone, Debug)]
pub struct AuthSettings {
    pub jwt_access_secret: Secret,
}

#[derive(Clone, Debug)]
pub struct DropSettings {
    /// How long a hold lasts.
    pub reservation_ttl: chrono::Duration,
    /// Period of the sweep that expires overdue holds nobody asked for.
    pub sweep_interval: Duration,
}

/// How a worker hands mail on (`MAIL_TRANSPORT`, `SMTP_URL`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MailTransport {
    /// `SMTP_URL`.
    Smtp,
    /// One file per email under `outbox_dir`: embedded mode's default without `SMTP_URL`,
    /// or chosen with `MAIL_TRANSPORT=outbox`. In distributed mode such mail is recorded
    /// `failed`, never `sent`: nobody receives it.
    Outbox,
    /// Distributed mode with neither: a worker refuses to start (see
    /// [`Settings::require_mail_transport`]); an api without a worker sends no mail.
    Missing,
}

#[derive(Clone, Debug)]
pub struct MailSettings {
    pub transport: MailTransport,
    /// Set exactly when `transport` is `Smtp`.
    pub smtp_url: Option<Secret>,
    pub from: String,
    pub outbox_dir: PathBuf,
    /// Send-rate cap per worker process, for providers' limits.
    pub rate_per_sec: u32,
    pub max_attempts: i32,
    /// Wait before the first retry of a transiently failed email; doubles with each try.
    pub retry_base: Duration,
    /// How long a send holds the row it claimed. A row whose lease ran out has no live send
    /// (its worker was killed), so it is due again for any worker's pump.
    pub lease: chrono::Duration,
    /// Bound on one send, SMTP connection and exchange included: half the lease, so a slow
    /// send gives up while its row is still held and is never doubled by another worker.
    pub send_timeout: Duration,
    /// SMTP connections per worker process, each carrying one send at a time: the pump
    /// claims as many rows as it has free connections.
    pub connections: usize,
    /// How often an idle pump looks for due rows (a retry whose backoff ran out, a lease
    /// that ran out); new rows wake it at once.
    pub poll_interval: Duration,
    /// How a restock's alerts are paced: waves of stock × factor, an interval apart.
    pub restock_waves: entity::catalog::waves::Waves,
}

#[derive(Clone, Debug)]
pub struct WorkerSettings {
    /// Run job workers inside the api process (always true in embedded mode).
    pub embed: bool,
    /// Jobs in flight per queue per worker process.
    pub concurrency: usize,
    /// Period of the reconciler that re-derives jobs Redis may have lost.
    pub reconcile_interval: Duration,
    /// How often a worker reports to the operations console (and reads its pauses); one
    /// missed three times over is shown as gone.
    pub heartbeat: Duration,
    /// A worker process's own `/metrics` listener (on `HOST`); unset = none.
    pub metrics_port: Option<u16>,
}

/// How long rows that only record the past are kept; a periodic pass deletes older ones.
#[derive(Clone, Debug)]
pub struct RetentionSettings {
    /// Period of the retention pass.
    pub interval: Duration,
    /// Idempotency keys, after they were made (a client retries within minutes, not days).
    pub idempotency_keys: chrono::Duration,
    /// Sessions, after they ended (revoked or expired); live sessions are never deleted.
    pub sessions: chrono::Duration,
    /// Verified Contentful deliveries, after they arrived.
    pub webhook_deliveries: chrono::Duration,
    /// Emails that were sent or failed, after they reached that state; queued ones stay.
    pub emails: chrono::Duration,
    /// Ended holds (expired or released). `None`, the default: kept, as the drops' history.
    pub holds: Option<chrono::Duration>,
}

impl Settings {
    /// Reads `.env` (if present) and the process environment.
    ///
    /// # Errors
    /// A missing or malformed variable, named in the error.
    pub fn from_env() -> Result<Self, SettingsError> {
        let _ = dotenvy::dotenv();
        Self::from_vars(std::env::vars().collect())
    }

    /// Builds settings from an explicit map; tests use this to start the app without touching
    /// the process environment.
    ///
    /// # Errors
    /// A missing or malformed variable, named in the error.
    pub fn from_vars(vars: HashMap<String, String>) -> Result<Self, SettingsError> {
        let env = Vars(vars);
        let data_dir = PathBuf::from(env.get("DATA_DIR").unwrap_or("./data"));
        let redis = RedisSettings::read(&env)?;
        let mode = if redis.is_some() {
            Mode::Distributed
        } else {
            Mode::Embedded
        };
        let http = HttpSettings::read(&env, mode)?;
        let log_format = match env.get("LOG_FORMAT").unwrap_or("text") {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(invalid(
                    "LOG_FORMAT",
                    format!("expected text or json, got {other:?}"),
                ));
            }
        };
        let auth = AuthSettings::read(&env, mode, &data_dir)?;
        Ok(Self {
            database: DatabaseSettings::read(&env, mode, &data_dir)?,
            abuse: AbuseSettings::read(&env, &auth.jwt_access_secret)?,
            auth,
            drops: DropSettings {
                reservation_ttl: chrono_secs(env.secs("RESERVATION_TTL_SECS", 60, 1)?),
                sweep_interval: env.millis("SWEEP_INTERVAL_MS", 1_000)?,
            },
            mail: MailSettings::read(&env, mode, &data_dir)?,
            worker: WorkerSettings {
                embed: mode == Mode::Embedded
                    || env.parse::<Flag>("EMBED_WORKER")?.is_some_and(|f| f.0),
                concurrency: env.positive("WORKER_CONCURRENCY", 16)?,
                reconcile_interval: env.secs("RECONCILE_INTERVAL_SECS", 30, 1)?,
                heartbeat: env.millis("WORKER_HEARTBEAT_MS", 5000)?,
                metrics_port: env.parse("METRICS_PORT")?,
            },
            retention: RetentionSettings::read(&env)?,
            notify_me: NotifyMeSettings::read(&env)?,
            http,
            redis,
            data_dir,
            log_format,
            demo_data: env
                .parse::<Flag>("DEMO_DATA")?
                .map_or(mode == Mode::Embedded, |f| f.0),
        })
        .and_then(|settings| {
            // An api that runs a worker sends mail: refuse to start it unable to.
            if settings.worker.embed {
                settings.require_mail_transport()?;
            }
            Ok(settings)
        })
    }

    /// A worker must be able to deliver mail: in distributed mode that takes `SMTP_URL`,
    /// or an explicit `MAIL_TRANSPORT=outbox` for development.
    ///
    /// # Errors
    /// `SMTP_URL` is missing, with what to do about it.
    pub fn require_mail_transport(&self) -> Result<(), SettingsError> {
        if self.mail.transport == MailTransport::Missing {
            return Err(SettingsError::Missing {
                name: "SMTP_URL",
                hint: " for a worker in distributed mode (REDIS_URL is set), or nobody gets the store's email; for development, MAIL_TRANSPORT=outbox writes each email to a file on the worker's disk instead (recorded failed, never sent)",
            });
        }
        Ok(())
    }

    pub fn mode(&self) -> Mode {
        if self.redis.is_some() {
            Mode::Distributed
        } else {
            Mode::Embedded
        }
    }
}

impl HttpSettings {
    fn read(env: &Vars, mode: Mode) -> Result<Self, SettingsError> {
        let host: IpAddr = env.parse("HOST")?.unwrap_or(IpAddr::from([127, 0, 0, 1]));
        let port: u16 = env.parse("PORT")?.unwrap_or(3000);
        let public_base_url = env
            .get("PUBLIC_BASE_URL")
            .map(|u| u.trim_end_matches('/').to_owned())
            .unwrap_or_else(|| format!("http://{host}:{port}"));
        if !(public_base_url.starts_with("http://") || public_base_url.starts_with("https://")) {
            return Err(invalid(
                "PUBLIC_BASE_URL",
                "must start with http:// or https://",
            ));
        }
        Ok(Self {
            host,
            port,
            public_base_url,
            metrics_token: match env.get("METRICS_TOKEN") {
                Some(token) if token.len() < 16 => {
                    return Err(invalid("METRICS_TOKEN", "must be at least 16 characters"));
                }
                token => token.map(Secret::new),
            },
            metrics_public: mode == Mode::Embedded,
        })
    }

    /// Whether a request with this `Authorization` header may read `/metrics` (the api's
    /// and every worker's own listener alike).
    pub fn may_read_metrics(&self, authorization: Option<&str>) -> bool {
        match &self.metrics_token {
            Some(token) => token.is_bearer_of(authorization),
            None => self.metrics_public,
        }
    }
}

impl AuthSettings {
    fn read(env: &Vars, mode: Mode, data_dir: &std::path::Path) -> Result<Self, SettingsError> {
        let jwt_access_secret = match env.get("JWT_ACCESS_SECRET") {
            Some(secret) if secret.len() >= 32 => Secret::new(secret),
            Some(_) => return Err(invalid("JWT_ACCESS_SECRET", "must be at least 32 bytes")),
            None if mode == Mode::Embedded => generated_secret(data_dir)?,
            None => {
                return Err(SettingsError::Missing {
                    name: "JWT_ACCESS_SECRET",
                    hint: " in distributed mode (REDIS_URL is set): every api instance must share it",
                });
            }
        };
        Ok(Self { jwt_access_secret })
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn distributed_mode_requires_a_shared_jwt_secret() {
        let err = Settings::from_vars(vars(&[
            ("REDIS_URL", "redis://127.0.0.1:6379"),
            ("DATABASE_URL", "postgres://x@localhost/db"),
        ]))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(err.contains("JWT_ACCESS_SECRET"), "{err}");
    }

    #[test]
    fn malformed_numbers_name_their_variable() {
        let err = Settings::from_vars(vars(&[
            ("PORT", "eighty"),
            ("DATABASE_URL", "sqlite::memory:"),
            ("JWT_ACCESS_SECRET", &"k".repeat(32)),
        ]))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(err.starts_with("PORT is invalid"), "{err}");
    }

    #[test]
    fn the_mail_lease_bounds_the_send() {
        let embedded = |extra: &[(&str, &str)]| {
            let mut pairs = vec![
                ("DATABASE_URL", "sqlite::memory:"),
                ("JWT_ACCESS_SECRET", "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk"),
            ];
            pairs.extend_from_slice(extra);
            Settings::from_vars(vars(&pairs))
        };
        let mail = embedded(&[]).map(|s| s.mail).expect("defaults");
        assert_eq!(mail.lease, chrono::Duration::seconds(15));
        assert_eq!(mail.send_timeout, Duration::from_millis(7500));
        assert_eq!(mail.connections, 16);
        assert_eq!(mail.poll_interval, Duration::from_secs(2));

        let err = embedded(&[("MAIL_LEASE_SECS", "1")])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.starts_with("MAIL_LEASE_SECS is invalid"), "{err}");
    }

    #[test]
    fn retention_keeps_holds_unless_told_and_names_a_bad_variable() {
        let base = [
            ("DATABASE_URL", "sqlite::memory:"),
            ("JWT_ACCESS_SECRET", "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk"),
        ];
        let retention = Settings::from_vars(vars(&base))
            .map(|s| s.retention)
            .expect("defaults");
        assert_eq!(retention.idempotency_keys, chrono::Duration::hours(24));
        assert_eq!(retention.sessions, chrono::Duration::days(30));
        assert_eq!(retention.webhook_deliveries, chrono::Duration::days(90));
        assert_eq!(retention.emails, chrono::Duration::days(90));
        assert_eq!(retention.holds, None);
        assert_eq!(retention.interval, Duration::from_secs(3600));

        let with = |pair: (&'static str, &'static str)| {
            let mut pairs = base.to_vec();
            pairs.push(pair);
            Settings::from_vars(vars(&pairs))
        };
        let holds = with(("RETENTION_HOLDS_DAYS", "400")).map(|s| s.retention.holds);
        assert_eq!(holds.ok().flatten(), Some(chrono::Duration::days(400)));
        for (name, bad) in [
            ("RETENTION_SESSIONS_DAYS", "0"),
            ("RETENTION_EMAILS_DAYS", "ninety"),
            ("RETENTION_IDEMPOTENCY_HOURS", "-1"),
            ("RETENTION_HOLDS_DAYS", "99999999"),
        ] {
            let err = with((name, bad))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                err.starts_with(&format!("{name} is invalid")),
                "{name}={bad}: {err}"
            );
        }
    }

    fn distributed(extra: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let mut all = vars(&[
            ("REDIS_URL", "redis://127.0.0.1:6379"),
            ("DATABASE_URL", "postgres://x@localhost/db"),
            ("JWT_ACCESS_SECRET", &"k".repeat(32)),
        ]);
        all.extend(vars(extra));
        Settings::from_vars(all)
    }

    fn error_of(settings: Result<Settings, SettingsError>) -> String {
        settings.err().map(|e| e.to_string()).unwrap_or_default()
    }

    #[test]
    fn distributed_mode_takes_only_a_postgres_database() {
        let dir = tempfile_dir();
        let data_dir = ("DATA_DIR", dir.as_str());
        for url in ["sqlite://x.db?mode=rwc", "sqlite::memory:"] {
            let err = error_of(distributed(&[("DATABASE_URL", url), data_dir]));
            assert!(err.starts_with("DATABASE_URL is invalid"), "{url}: {err}");
        }
        let mut unset = vars(&[
            ("REDIS_URL", "redis://127.0.0.1:6379"),
            ("JWT_ACCESS_SECRET", &"k".repeat(32)),
            data_dir,
        ]);
        unset.remove("DATABASE_URL");
        let err = error_of(Settings::from_vars(unset));
        assert!(err.starts_with("DATABASE_URL is required"), "{err}");
        assert!(
            !std::path::Path::new(&dir).join("honeydrop.db").exists(),
            "no private SQLite file is made"
        );
        assert!(distributed(&[("DATABASE_URL", "postgresql://x@db/store")]).is_ok());
    }

    /// A directory name of this test's own that does not exist yet.
    fn tempfile_dir() -> String {
        std::env::temp_dir()
            .join(format!("hd-settings-{}", rand::random::<u64>()))
            .display()
            .to_string()
    }

    #[test]
    fn a_distributed_worker_needs_smtp_or_an_explicit_outbox() {
        let api = distributed(&[]).expect("an api without a worker sends no mail");
        assert_eq!(api.mail.transport, MailTransport::Missing);
        let err = error_of(api.require_mail_transport().map(|()| api.clone()));
        assert!(err.starts_with("SMTP_URL is required"), "{err}");
        assert!(err.contains("MAIL_TRANSPORT=outbox"), "{err}");

        let err = error_of(distributed(&[("EMBED_WORKER", "true")]));
        assert!(err.starts_with("SMTP_URL is required"), "{err}");

        let outbox = distributed(&[("MAIL_TRANSPORT", "outbox"), ("EMBED_WORKER", "true")])
            .expect("an explicit outbox");
        assert_eq!(outbox.mail.transport, MailTransport::Outbox);
        let smtp = distributed(&[("SMTP_URL", "smtp://mail:25")]).expect("smtp");
        assert_eq!(smtp.mail.transport, MailTransport::Smtp);
        assert!(smtp.require_mail_transport().is_ok());

        let both = error_of(distributed(&[
            ("SMTP_URL", "smtp://mail:25"),
            ("MAIL_TRANSPORT", "outbox"),
        ]));
        assert!(both.starts_with("MAIL_TRANSPORT is invalid"), "{both}");
        let unknown = error_of(distributed(&[("MAIL_TRANSPORT", "pigeon")]));
        assert!(
            unknown.starts_with("MAIL_TRANSPORT is invalid"),
            "{unknown}"
        );
    }

    #[test]
    fn the_demo_is_on_by_default_embedded_only() {
        let embedded = |extra: &[(&str, &str)]| {
            let mut all = vars(&[
                ("DATABASE_URL", "sqlite::memory:"),
                ("JWT_ACCESS_SECRET", &"k".repeat(32)),
            ]);
            all.extend(vars(extra));
            Settings::from_vars(all)
        };
        assert!(embedded(&[]).expect("defaults").demo_data);
        assert!(!embedded(&[("DEMO_DATA", "false")]).expect("off").demo_data);
        assert!(!distributed(&[]).expect("defaults").demo_data);
        assert!(
            distributed(&[("DEMO_DATA", "true")])
                .expect("asked")
                .demo_data
        );
        let err = error_of(embedded(&[("DEMO_DATA", "maybe")]));
        assert!(err.starts_with("DEMO_DATA is invalid"), "{err}");
    }

    #[test]
    fn secrets_never_print() {
        assert_eq!(
            format!("{:?}", Secret::new("hunter2")),
            "Secret([redacted])"
        );
    }
}

#[cfg(test)]
mod secret_tests {
    use super::Secret;

    #[test]
    fn only_the_exact_bearer_token_is_the_secret() {
        let token = Secret::new("a-metrics-token-of-some-length");
        assert!(token.is_bearer_of(Some("Bearer a-metrics-token-of-some-length")));
        assert!(token.is_bearer_of(Some("bearer  a-metrics-token-of-some-length ")));
        for other in [
            None,
            Some(""),
            Some("a-metrics-token-of-some-length"),
            Some("Basic a-metrics-token-of-some-length"),
            Some("Bearer a-metrics-token"),
            Some("Bearer a-metrics-token-of-some-lengthX"),
            Some("Bearer A-metrics-token-of-some-length"),
        ] {
            assert!(!token.is_bearer_of(other), "{other:?}");
        }
    }
}
