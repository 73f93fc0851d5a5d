//! The api's own settings, read beside the ones both tiers share (`worker::Settings`, which
//! [`Settings`] derefs to): its listener (body limit, timeouts, connections, CORS, the
//! Socket.IO path), sessions (token lifetimes, leeway, sign-in limits, the admin account),
//! the Contentful webhook, and live sockets. They are read with the worker's environment
//! parser, so a variable is checked and refused the same way in either crate.

use std::{collections::HashMap, ops::Deref, time::Duration};

use worker::settings::{
    Mode, Secret, SettingsError,
    env::{Vars, chrono_secs, invalid},
};

/// Everything the api process reads from its environment.
#[derive(Clone, Debug)]
pub struct Settings {
    /// What both tiers read: database, Redis, mail, drops, the worker it may embed, ...
    pub shared: worker::Settings,
    pub listener: ListenerSettings,
    pub sessions: SessionSettings,
    pub contentful: ContentfulSettings,
    /// Limits on live sockets (`/ws` and Socket.IO).
    pub live: LiveSettings,
}

impl Deref for Settings {
    type Target = worker::Settings;
    fn deref(&self) -> &worker::Settings {
        &self.shared
    }
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
        let shared = worker::Settings::from_vars(vars.clone())?;
        let env = Vars(vars);
        Ok(Self {
            listener: ListenerSettings::read(&env, shared.mode())?,
            sessions: SessionSettings::read(&env)?,
            contentful: ContentfulSettings::read(&env)?,
            live: LiveSettings::read(&env)?,
            shared,
        })
    }
}

/// The listener: what one connection and one request may take.
#[derive(Clone, Debug)]
pub struct ListenerSettings {
    /// Larger request bodies are refused with 413. The default holds every body the OpenAPI
    /// document allows, even with each character sent as a JSON `\u` escape.
    pub max_body_bytes: usize,
    /// Where Socket.IO is served (`SOCKET_IO_PATH`), without a trailing slash: `/socket.io`.
    pub socket_io_path: String,
    /// A request's headers must arrive within this, counted from its first byte (or from the
    /// connection's opening), however slowly they trickle in.
    pub header_read_timeout: Duration,
    /// A connection idle between requests is closed after this long.
    pub keep_alive: Duration,
    /// Open connections per process; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// Which browser origins may read the API's answers (CORS), REST and Socket.IO alike.
    pub cors_allowed_origins: AllowedOrigins,
}

impl ListenerSettings {
    fn read(env: &Vars, mode: Mode) -> Result<Self, SettingsError> {
        Ok(Self {
            max_body_bytes: env.positive("MAX_BODY_BYTES", 128 * 1024)?,
            socket_io_path: socket_io_path(env.get("SOCKET_IO_PATH").unwrap_or("/socket.io/"))?,
            header_read_timeout: env.secs("HTTP_HEADER_READ_TIMEOUT_SECS", 10, 1)?,
            keep_alive: env.secs("HTTP_KEEP_ALIVE_SECS", 60, 1)?,
            max_connections: env.positive("HTTP_MAX_CONNECTIONS", 10_000)?,
            cors_allowed_origins: AllowedOrigins::read(env, mode)?,
        })
    }
}

/// `CORS_ALLOWED_ORIGINS`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AllowedOrigins {
    /// Any origin (`*`; the default in embedded mode).
    Any,
    /// Only these exact origins (`https://shop.example.com`); empty: no cross-origin reads
    /// (the default in distributed mode).
    Only(Vec<String>),
}

impl AllowedOrigins {
    fn read(env: &Vars, mode: Mode) -> Result<Self, SettingsError> {
        const NAME: &str = "CORS_ALLOWED_ORIGINS";
        let Some(raw) = env.get(NAME) else {
            return Ok(match mode {
                Mode::Embedded => Self::Any,
                Mode::Distributed => Self::Only(Vec::new()),
            });
        };
        if raw == "*" {
            return Ok(Self::Any);
        }
        let mut origins = Vec::new();
        for origin in raw.split(',').map(str::trim).filter(|o| !o.is_empty()) {
            let scheme_ok = origin.starts_with("http://") || origin.starts_with("https://");
            let host = origin.split_once("://").map_or("", |(_, rest)| rest);
            if !scheme_ok
                || host.is_empty()
                || host.contains('/')
                || !origin.bytes().all(|b| b.is_ascii_graphic())
            {
                return Err(invalid(
                    NAME,
                    format!(
                        "{origin:?} is not an origin; expected `*` or a comma list like https://shop.example.com,http://localhost:5173"
                    ),
                ));
            }
            origins.push(origin.to_owned());
        }
        Ok(Self::Only(origins))
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

/// Sessions and sign-in: token lifetimes, the leeway for clocks, the sign-in limits and the
/// admin account that exists after start. The signing secret is shared with the worker
/// (`worker::settings::AuthSettings`).
#[derive(Clone, Debug)]
pub struct SessionSettings {
    pub access_token_ttl: Duration,
    /// How long past its expiry an access token is still accepted (`JWT_LEEWAY_SECS`),
    /// for clocks that disagree between instances.
    pub jwt_leeway: Duration,
    /// Absolute lifetime of a session (its refresh-token family).
    pub refresh_token_ttl: chrono::Duration,
    pub login_max_failures: u32,
    pub login_lockout: Duration,
    pub rate_limit_per_minute: u32,
    /// When set, this admin account exists after start.
    pub admin: Option<AdminAccount>,
}

#[derive(Clone, Debug)]
pub struct AdminAccount {
    pub email: String,
    pub password: Secret,
}

impl SessionSettings {
    fn read(env: &Vars) -> Result<Self, SettingsError> {
        let admin = match (env.get("ADMIN_EMAIL"), env.get("ADMIN_PASSWORD")) {
            (Some(email), Some(password)) => Some(AdminAccount {
                email: email.to_owned(),
                password: Secret::new(password),
            }),
            (None, None) => None,
            _ => {
                return Err(invalid(
                    "ADMIN_PASSWORD",
                    "ADMIN_EMAIL and ADMIN_PASSWORD must be set together",
                ));
            }
        };
        Ok(Self {
            access_token_ttl: env.secs("ACCESS_TOKEN_TTL_SECS", 15 * 60, 1)?,
            jwt_leeway: match env.secs("JWT_LEEWAY_SECS", 0, 0)? {
                leeway if leeway > Duration::from_secs(60) => {
                    return Err(invalid("JWT_LEEWAY_SECS", "must be at most 60"));
                }
                leeway => leeway,
            },
            refresh_token_ttl: chrono_secs(env.secs(
                "REFRESH_TOKEN_TTL_SECS",
                30 * 24 * 3600,
                60,
            )?),
            login_max_failures: env.positive("LOGIN_MAX_FAILURES", 5)?,
            login_lockout: env.secs("LOGIN_LOCKOUT_SECS", 15 * 60, 1)?,
            rate_limit_per_minute: env.positive("AUTH_RATE_LIMIT_PER_MINUTE", 120)?,
            admin,
        })
    }
}

#[derive(Clone, Debug)]
pub struct ContentfulSettings {
    /// `None`: the webhook refuses everything (503 `webhook_disabled`).
    pub webhook_secret: Option<Secret>,
    pub locale: String,
    /// Maximum age of a signed request, in milliseconds.
    pub webhook_ttl_ms: i64,
}

impl ContentfulSettings {
    fn read(env: &Vars) -> Result<Self, SettingsError> {
        let webhook_secret = env.get("CONTENTFUL_WEBHOOK_SECRET").map(Secret::new);
        if let Some(secret) = &webhook_secret
            && secret.expose().len() < 32
        {
            return Err(invalid(
                "CONTENTFUL_WEBHOOK_SECRET",
                "must be at least 32 characters (Contentful issues 64)",
            ));
        }
        let ttl = env.secs("CONTENTFUL_WEBHOOK_TTL_SECS", 30, 1)?;
        Ok(Self {
            webhook_secret,
            locale: env.get("CONTENTFUL_LOCALE").unwrap_or("en-US").to_owned(),
            webhook_ttl_ms: i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX),
        })
    }
}

#[derive(Clone, Debug)]
pub struct LiveSettings {
    /// Live sockets per process, `/ws` and Socket.IO sessions together
    /// (`LIVE_MAX_SOCKETS`, default 10,000). A Socket.IO long-polling session holds no
    /// connection, so `HTTP_MAX_CONNECTIONS` alone would not bound it.
    pub max_sockets: usize,
    /// Live sockets per client address (`LIVE_MAX_SOCKETS_PER_ADDRESS`, default 64).
    pub max_sockets_per_address: usize,
    /// New sockets (`/ws` upgrades and Socket.IO handshakes) per client address per minute,
    /// per process (`LIVE_HANDSHAKES_PER_ADDRESS_PER_MINUTE`, default 120).
    pub handshakes_per_address_per_minute: u32,
}

impl LiveSettings {
    fn read(env: &Vars) -> Result<Self, SettingsError> {
        Ok(Self {
            max_sockets: env.positive("LIVE_MAX_SOCKETS", 10_000)?,
            max_sockets_per_address: env.positive("LIVE_MAX_SOCKETS_PER_ADDRESS", 64)?,
            handshakes_per_address_per_minute: env
                .positive("LIVE_HANDSHAKES_PER_ADDRESS_PER_MINUTE", 120)?,
        })
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    /// Settings of an embedded store with `extra` on top (a later pair wins).
    fn settings(extra: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let secret = "k".repeat(32);
        let base = [
            ("DATABASE_URL", "sqlite::memory:"),
            ("JWT_ACCESS_SECRET", &secret),
        ];
        let vars = base
            .iter()
            .chain(extra)
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Settings::from_vars(vars)
    }

    fn error_of(settings: Result<Settings, SettingsError>) -> String {
        settings.err().map(|e| e.to_string()).unwrap_or_default()
    }

    #[test]
    fn the_socket_io_path_is_kept_without_its_trailing_slash() {
        let with =
            |path: &str| settings(&[("SOCKET_IO_PATH", path)]).map(|s| s.listener.socket_io_path);
        assert_eq!(with("").ok().as_deref(), Some("/socket.io"));
        assert_eq!(with("/api/socket").ok().as_deref(), Some("/api/socket"));
        assert_eq!(with("/api/socket/").ok().as_deref(), Some("/api/socket"));
        for bad in ["/", "socket.io", "/a b", "/x?y", "//"] {
            let err = error_of(settings(&[("SOCKET_IO_PATH", bad)]));
            assert!(err.starts_with("SOCKET_IO_PATH is invalid"), "{bad}: {err}");
        }
    }

    #[test]
    fn cors_allows_any_origin_embedded_and_none_distributed_unless_listed() {
        let with =
            |pairs: &[(&str, &str)]| settings(pairs).map(|s| s.listener.cors_allowed_origins);
        let redis = ("REDIS_URL", "redis://127.0.0.1:6379");
        let postgres = ("DATABASE_URL", "postgres://x@localhost/db");
        assert_eq!(with(&[]).ok(), Some(AllowedOrigins::Any));
        assert_eq!(
            with(&[redis, postgres]).ok(),
            Some(AllowedOrigins::Only(Vec::new()))
        );
        assert_eq!(
            with(&[redis, postgres, ("CORS_ALLOWED_ORIGINS", "*")]).ok(),
            Some(AllowedOrigins::Any)
        );
        assert_eq!(
            with(&[(
                "CORS_ALLOWED_ORIGINS",
                "https://shop.example.com, http://localhost:5173"
            )])
            .ok(),
            Some(AllowedOrigins::Only(vec![
                "https://shop.example.com".into(),
                "http://localhost:5173".into()
            ]))
        );
        for bad in ["shop.example.com", "https://shop.example.com/", "https://"] {
            let err = error_of(settings(&[("CORS_ALLOWED_ORIGINS", bad)]));
            assert!(
                err.starts_with("CORS_ALLOWED_ORIGINS is invalid"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn the_leeway_is_none_by_default_and_at_most_a_minute() {
        let leeway = |secs: &str| settings(&[("JWT_LEEWAY_SECS", secs)]);
        let sessions = settings(&[]).expect("defaults").sessions;
        assert_eq!(sessions.jwt_leeway, Duration::ZERO);
        let sessions = leeway("5").expect("5 s").sessions;
        assert_eq!(sessions.jwt_leeway, Duration::from_secs(5));
        let err = error_of(leeway("61"));
        assert!(err.starts_with("JWT_LEEWAY_SECS is invalid"), "{err}");
    }
}
