//! One typed settings struct, read once from the environment (and an optional `.env`).
//!
//! It lives in `worker` because both binaries need it and `worker` cannot depend on `api`.

use std::{collections::HashMap, fmt, net::IpAddr, path::PathBuf, str::FromStr, time::Duration};

use rand::RngCore;

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

#[derive(Clone, Debug)]
pub struct Settings {
    pub host: IpAddr,
    pub port: u16,
    pub data_dir: PathBuf,
    pub database_url: Secret,
    pub database_max_connections: u32,
    pub redis_url: Option<Secret>,
    /// Prefix of every Redis key and channel, so several stores (or tests) share one Redis.
    pub redis_prefix: String,
    pub jwt_access_secret: Secret,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    pub reservation_ttl: Duration,
    pub smtp_url: Option<Secret>,
    pub mail_from: String,
    pub mail_rate_per_sec: u32,
    pub mail_max_attempts: i32,
    /// Wait before the first retry of a transiently failed email; doubles with each try.
    pub mail_retry_base: Duration,
    /// A queued email nobody has touched for this long has lost its job and is re-enqueued.
    pub mail_stuck_after: Duration,
    pub public_base_url: String,
    pub contentful_webhook_secret: Option<Secret>,
    pub contentful_locale: String,
    pub contentful_webhook_ttl: Duration,
    pub admin_email: Option<String>,
    pub admin_password: Option<Secret>,
    pub log_format: LogFormat,
    /// Run job workers inside the api process (always true in embedded mode).
    pub embed_worker: bool,
    pub worker_concurrency: usize,
    pub sweep_interval: Duration,
    pub reconcile_interval: Duration,
    pub login_max_failures: u32,
    pub login_lockout: Duration,
    pub auth_rate_limit_per_minute: u32,
    pub max_body_bytes: usize,
    /// Where Socket.IO is served (`SOCKET_IO_PATH`), without a trailing slash: `/socket.io`.
    pub socket_io_path: String,
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
        let host: IpAddr = env.parse("HOST")?.unwrap_or(IpAddr::from([127, 0, 0, 1]));
        let port: u16 = env.parse("PORT")?.unwrap_or(3000);
        let data_dir = PathBuf::from(env.get("DATA_DIR").unwrap_or("./data"));
        let redis_url = env.get("REDIS_URL").map(Secret::new);
        if let Some(url) = &redis_url
            && !(url.expose().starts_with("redis://") || url.expose().starts_with("rediss://"))
        {
            return Err(invalid(
                "REDIS_URL",
                "must start with redis:// or rediss://",
            ));
        }
        let mode = if redis_url.is_some() {
            Mode::Distributed
        } else {
            Mode::Embedded
        };

        let database_url = match env.get("DATABASE_URL") {
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                url.to_owned()
            }
            Some(url) if url.starts_with("sqlite:") => url.to_owned(),
            Some(_) => {
                return Err(invalid(
                    "DATABASE_URL",
                    "must start with postgres://, postgresql:// or sqlite:",
                ));
            }
            None => {
                ensure_dir(&data_dir)?;
                format!(
                    "sqlite://{}?mode=rwc",
                    data_dir.join("honeydrop.db").display()
                )
            }
        };

        let jwt_access_secret = match env.get("JWT_ACCESS_SECRET") {
            Some(secret) if secret.len() >= 32 => Secret::new(secret),
            Some(_) => return Err(invalid("JWT_ACCESS_SECRET", "must be at least 32 bytes")),
            None if mode == Mode::Embedded => generated_secret(&data_dir)?,
            None => {
                return Err(SettingsError::Missing {
                    name: "JWT_ACCESS_SECRET",
                    hint: " in distributed mode (REDIS_URL is set): every api instance must share it",
                });
            }
        };

        let smtp_url = env.get("SMTP_URL").map(Secret::new);
        if let Some(url) = &smtp_url
            && !(url.expose().starts_with("smtp://") || url.expose().starts_with("smtps://"))
        {
            return Err(invalid("SMTP_URL", "must start with smtp:// or smtps://"));
        }

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

        let contentful_webhook_secret = env.get("CONTENTFUL_WEBHOOK_SECRET").map(Secret::new);
        if let Some(secret) = &contentful_webhook_secret
            && secret.expose().len() < 32
        {
            return Err(invalid(
                "CONTENTFUL_WEBHOOK_SECRET",
                "must be at least 32 characters (Contentful issues 64)",
            ));
        }

        let admin_email = env.get("ADMIN_EMAIL").map(str::to_owned);
        let admin_password = env.get("ADMIN_PASSWORD").map(Secret::new);
        if admin_email.is_some() != admin_password.is_some() {
            return Err(invalid(
                "ADMIN_PASSWORD",
                "ADMIN_EMAIL and ADMIN_PASSWORD must be set together",
            ));
        }

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

        let embed_worker =
            mode == Mode::Embedded || env.parse::<Flag>("EMBED_WORKER")?.is_some_and(|f| f.0);

        Ok(Self {
            host,
            port,
            database_url: Secret::new(database_url),
            database_max_connections: env.positive("DATABASE_MAX_CONNECTIONS", 24)?,
            redis_url,
            redis_prefix: env.get("REDIS_PREFIX").unwrap_or("honeydrop").to_owned(),
            jwt_access_secret,
            access_token_ttl: env.secs("ACCESS_TOKEN_TTL_SECS", 15 * 60, 1)?,
            refresh_token_ttl: env.secs("REFRESH_TOKEN_TTL_SECS", 30 * 24 * 3600, 60)?,
            reservation_ttl: env.secs("RESERVATION_TTL_SECS", 60, 1)?,
            smtp_url,
            mail_from: env
                .get("MAIL_FROM")
                .unwrap_or("Honeydrop <no-reply@honeydrop.local>")
                .to_owned(),
            mail_rate_per_sec: env.positive("MAIL_RATE_PER_SEC", 2_000)?,
            mail_max_attempts: env.positive("MAIL_MAX_ATTEMPTS", 6)?,
            mail_retry_base: env.millis("MAIL_RETRY_BASE_MS", 30_000)?,
            mail_stuck_after: env.secs("MAIL_STUCK_AFTER_SECS", 60, 1)?,
            public_base_url,
            contentful_webhook_secret,
            contentful_locale: env.get("CONTENTFUL_LOCALE").unwrap_or("en-US").to_owned(),
            contentful_webhook_ttl: env.secs("CONTENTFUL_WEBHOOK_TTL_SECS", 30, 1)?,
            admin_email,
            admin_password,
            log_format,
            embed_worker,
            worker_concurrency: env.positive("WORKER_CONCURRENCY", 16)?,
            sweep_interval: env.millis("SWEEP_INTERVAL_MS", 1_000)?,
            reconcile_interval: env.secs("RECONCILE_INTERVAL_SECS", 30, 1)?,
            login_max_failures: env.positive("LOGIN_MAX_FAILURES", 5)?,
            login_lockout: env.secs("LOGIN_LOCKOUT_SECS", 15 * 60, 1)?,
            auth_rate_limit_per_minute: env.positive("AUTH_RATE_LIMIT_PER_MINUTE", 120)?,
            max_body_bytes: env.positive("MAX_BODY_BYTES", 64 * 1024)?,
            socket_io_path: socket_io_path(env.get("SOCKET_IO_PATH").unwrap_or("/socket.io/"))?,
            data_dir,
        })
    }

    pub fn mode(&self) -> Mode {
        if self.redis_url.is_some() {
            Mode::Distributed
        } else {
            Mode::Embedded
        }
    }

    pub fn outbox_dir(&self) -> PathBuf {
        self.data_dir.join("outbox")
    }
}

struct Vars(HashMap<String, String>);

/// `true`/`false`/`1`/`0`.
struct Flag(bool);

impl FromStr for Flag {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" => Ok(Flag(true)),
            "0" | "false" | "no" => Ok(Flag(false)),
            _ => Err("expected true or false".into()),
        }
    }
}

impl Vars {
    /// A variable set to an empty string counts as unset, as platforms often do.
    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    fn parse<T: FromStr>(&self, name: &'static str) -> Result<Option<T>, SettingsError>
    where
        T::Err: fmt::Display,
    {
        self.get(name)
            .map(|raw| {
                raw.parse::<T>()
                    .map_err(|e| invalid(name, format!("{raw:?}: {e}")))
            })
            .transpose()
    }

    fn positive<T>(&self, name: &'static str, default: T) -> Result<T, SettingsError>
    where
        T: FromStr + PartialOrd + Default,
        T::Err: fmt::Display,
    {
        let value = self.parse(name)?.unwrap_or(default);
        if value <= T::default() {
            return Err(invalid(name, "must be greater than zero"));
        }
        Ok(value)
    }

    fn secs(&self, name: &'static str, default: u64, min: u64) -> Result<Duration, SettingsError> {
        let value: u64 = self.parse(name)?.unwrap_or(default);
        if value < min {
            return Err(invalid(name, format!("must be at least {min}")));
        }
        Ok(Duration::from_secs(value))
    }

    fn millis(&self, name: &'static str, default: u64) -> Result<Duration, SettingsError> {
        let value: u64 = self.positive(name, default)?;
        Ok(Duration::from_millis(value))
    }
}

fn invalid(name: &'static str, reason: impl Into<String>) -> SettingsError {
    SettingsError::Invalid {
        name,
        reason: reason.into(),
    }
}

/// `/socket.io/` and `/socket.io` name the same place; a client's `path` option adds the slash.
fn socket_io_path(raw: &str) -> Result<String, SettingsError> {
    let path = raw.trim_end_matches('/');
    let well_formed = raw.starts_with('/')
        && !path.is_empty()
        && !path.contains("//")
        && path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/-._~".contains(c));
    if !well_formed {
        return Err(invalid(
            "SOCKET_IO_PATH",
            format!(
                "{raw:?}: expected a path such as /socket.io/ (letters, digits, - . _ ~ and /)"
            ),
        ));
    }
    Ok(path.to_owned())
}

fn ensure_dir(dir: &std::path::Path) -> Result<(), SettingsError> {
    std::fs::create_dir_all(dir).map_err(|source| SettingsError::Io {
        path: dir.display().to_string(),
        source,
    })
}

/// Embedded mode keeps a generated signing key under the data directory, so tokens survive a
/// restart without the operator configuring anything.
fn generated_secret(data_dir: &std::path::Path) -> Result<Secret, SettingsError> {
    ensure_dir(data_dir)?;
    let path = data_dir.join("jwt_access_secret");
    let io = |source| SettingsError::Io {
        path: path.display().to_string(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(existing) if existing.trim().len() >= 32 => return Ok(Secret::new(existing.trim())),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(&path, &secret).map_err(io)?;
    Ok(Secret::new(secret))
}

#[cfg(test)]
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
    fn the_socket_io_path_is_kept_without_its_trailing_slash() {
        let with = |path: &str| {
            let mut vars = vars(&[
                ("DATABASE_URL", "sqlite::memory:"),
                ("JWT_ACCESS_SECRET", &"k".repeat(32)),
            ]);
            vars.insert("SOCKET_IO_PATH".into(), path.into());
            Settings::from_vars(vars).map(|s| s.socket_io_path)
        };
        assert_eq!(with("").ok().as_deref(), Some("/socket.io"));
        assert_eq!(with("/api/socket").ok().as_deref(), Some("/api/socket"));
        assert_eq!(with("/api/socket/").ok().as_deref(), Some("/api/socket"));
        for bad in ["/", "socket.io", "/a b", "/x?y", "//"] {
            let err = with(bad).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.starts_with("SOCKET_IO_PATH is invalid"), "{bad}: {err}");
        }
    }

    #[test]
    fn secrets_never_print() {
        assert_eq!(
            format!("{:?}", Secret::new("hunter2")),
            "Secret([redacted])"
        );
    }
}
