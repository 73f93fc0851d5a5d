//! Access tokens (JWT), the bearer security scheme, and the bounded password-hashing pool.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chrono::Utc;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use poem::Request;
use poem_openapi::{SecurityScheme, auth::Bearer};
use serde::{Deserialize, Serialize};

use entity::accounts::{HashMemory, Role};

use crate::{error::ApiError, state::AppState};

const ISSUER: &str = "honeydrop";
const AUDIENCE: &str = "honeydrop-api";
/// Clock skew we forgive between instances.
const LEEWAY_SECS: u64 = 5;

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub sid: i64,
    pub jti: String,
    pub iat: i64,
    pub exp: i64,
    pub iss: String,
    pub aud: String,
    pub role: Role,
}

pub struct Jwt {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
}

impl Jwt {
    pub fn new(secret: &str, ttl: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECS;
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        Self {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            validation,
            ttl,
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// # Errors
    /// Signing failed (it does not with an HMAC key).
    pub fn issue(
        &self,
        user_id: i64,
        session_id: i64,
        role: Role,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let now = Utc::now().timestamp();
        let claims = Claims {
            sub: user_id.to_string(),
            sid: session_id,
            jti: uuid::Uuid::new_v4().to_string(),
            iat: now,
            exp: now + i64::try_from(self.ttl.as_secs()).unwrap_or(900),
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            role,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
    }

    /// Verifies signature (HS256 only), `exp`, `iss` and `aud`.
    pub fn verify(&self, token: &str) -> Option<Claims> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .ok()
            .map(|data| data.claims)
    }
}

/// The signed-in caller.
#[derive(Clone, Debug)]
pub struct CurrentUser {
    pub user_id: i64,
    pub session_id: i64,
    pub is_admin: bool,
}

/// `Authorization: Bearer <access token>`.
#[derive(SecurityScheme)]
#[oai(ty = "bearer", bearer_format = "JWT", checker = "check_bearer")]
pub struct BearerAuth(pub CurrentUser);

async fn check_bearer(req: &Request, bearer: Bearer) -> poem::Result<CurrentUser> {
    let state = req
        .data::<AppState>()
        .ok_or_else(|| ApiError::unauthorized("authentication is unavailable"))?;
    Ok(state.authenticate(&bearer.token).await?)
}

/// `Authorization: Bearer <access token>` of an admin account; anyone else gets 403.
#[derive(SecurityScheme)]
#[oai(ty = "bearer", bearer_format = "JWT", checker = "check_admin")]
pub struct AdminAuth(pub CurrentUser);

async fn check_admin(req: &Request, bearer: Bearer) -> poem::Result<CurrentUser> {
    let user = check_bearer(req, bearer).await?;
    if !user.is_admin {
        return Err(ApiError::forbidden().into());
    }
    Ok(user)
}

/// Remembers for a moment that a session was live, so a stampede of requests does not each
/// ask the database. A logout is seen by every instance within [`SESSION_RECHECK`].
pub struct SessionCache {
    live: Mutex<HashMap<i64, Instant>>,
}

pub const SESSION_RECHECK: Duration = Duration::from_millis(900);

impl SessionCache {
    pub fn new() -> Self {
        Self {
            live: Mutex::new(HashMap::new()),
        }
    }

    pub fn recently_live(&self, session_id: i64) -> bool {
        let live = self
            .live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        live.get(&session_id)
            .is_some_and(|at| at.elapsed() < SESSION_RECHECK)
    }

    pub fn mark_live(&self, session_id: i64) {
        let mut live = self
            .live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if live.len() > 200_000 {
            live.retain(|_, at| at.elapsed() < SESSION_RECHECK);
        }
        live.insert(session_id, Instant::now());
    }

    pub fn forget(&self, session_id: i64) {
        self.live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&session_id);
    }
}

impl Default for SessionCache {
    fn default() -> Self {
        Self::new()
    }
}

/// Argon2 runs on a few threads of its own (half the cores), so a burst of logins cannot
/// take every core from reservations, and each thread reuses one 19 MiB working memory
/// ([`HashMemory`]): allocated per hash on tokio's blocking threads, those blocks fragmented
/// the C heap and a burst of logins left ~300 MB resident for good.
#[derive(Clone)]
pub struct PasswordPool {
    jobs: tokio::sync::mpsc::Sender<HashJob>,
    dummy_hash: Arc<String>,
}

type HashJob = Box<dyn FnOnce(&mut HashMemory) + Send>;

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("password hashing failed")]
    Hash(#[from] entity::Error),
    #[error("password hashing threads are gone")]
    Closed,
}

impl PasswordPool {
    /// # Errors
    /// argon2 failed to make the dummy hash, or a hashing thread could not be started.
    pub fn new() -> Result<Self, entity::Error> {
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        let threads = (cores / 2).max(1);
        // Waiting requests queue here, not in threads.
        let (jobs, queue) = tokio::sync::mpsc::channel::<HashJob>(1024);
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..threads {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{n}"))
                .spawn(move || {
                    let mut memory = HashMemory::default();
                    loop {
                        let job = queue
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .blocking_recv();
                        match job {
                            Some(job) => job(&mut memory),
                            None => return,
                        }
                    }
                })
                .map_err(|e| entity::Error::Invalid(format!("cannot start hashing thread: {e}")))?;
        }
        Ok(Self {
            jobs,
            dummy_hash: Arc::new(entity::accounts::dummy_hash()?),
        })
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut HashMemory) -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let (done, result) = tokio::sync::oneshot::channel();
        let job: HashJob = Box::new(move |memory| {
            let _ = done.send(f(memory));
        });
        self.jobs.send(job).await.map_err(|_| HashError::Closed)?;
        result.await.map_err(|_| HashError::Closed)
    }

    /// # Errors
    /// Hashing failed.
    pub async fn hash(&self, password: entity::accounts::Password) -> Result<String, HashError> {
        Ok(self
            .run(move |memory| entity::accounts::hash_password_in(&password, memory))
            .await??)
    }

    /// Verifies against `stored`, or against a dummy hash when there is no account, so both
    /// cases take the same time.
    ///
    /// # Errors
    /// The pool failed.
    pub async fn verify(
        &self,
        password: entity::accounts::Password,
        stored: Option<String>,
    ) -> Result<entity::accounts::Verified, HashError> {
        let exists = stored.is_some();
        let hash = stored.unwrap_or_else(|| self.dummy_hash.as_str().to_owned());
        let verified = self
            .run(move |memory| entity::accounts::verify_password_in(&password, &hash, memory))
            .await?;
        Ok(entity::accounts::Verified {
            matches: verified.matches && exists,
            ..verified
        })
    }
}
