//! Access tokens (JWT), the bearer security scheme, and the bounded password-hashing pool.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, atomic::Ordering::Relaxed},
    time::{Duration, Instant},
};

use chrono::Utc;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use poem::Request;
use poem_openapi::{SecurityScheme, auth::Bearer};
use sea_orm::DbErr;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use entity::{
    accounts::{HashMemory, Role},
    models::sessions,
};

use crate::{http::error::ApiError, metrics::Metrics};

const ISSUER: &str = "honeydrop";
const AUDIENCE: &str = "honeydrop-api";

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
    leeway: Duration,
}

impl Jwt {
    /// A token is refused once its `exp` has passed: no leeway unless
    /// [`Jwt::with_leeway`] grants one (`JWT_LEEWAY_SECS`).
    pub fn new(secret: &str, ttl: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        Self {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            validation,
            ttl,
            leeway: Duration::ZERO,
        }
    }

    /// Accepts a token up to `leeway` past its expiry, for instances whose clocks disagree.
    #[must_use]
    pub fn with_leeway(mut self, leeway: Duration) -> Self {
        self.validation.leeway = leeway.as_secs();
        self.leeway = leeway;
        self
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// An access token for `session`, expiring after the token lifetime or with the session,
    /// whichever comes first: so a token never outlives its session, and whether a session
    /// is live comes down to whether it was revoked.
    ///
    /// # Errors
    /// Signing failed (it does not with an HMAC key).
    pub fn issue(
        &self,
        user_id: i64,
        session: &sessions::Model,
        role: Role,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let now = Utc::now().timestamp();
        let lifetime = i64::try_from(self.ttl.as_secs()).unwrap_or(900);
        let claims = Claims {
            sub: user_id.to_string(),
            sid: session.id,
            jti: uuid::Uuid::new_v4().to_string(),
            iat: now,
            exp: (now + lifetime).min(session.expires_at.timestamp()),
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
    let auth = req
        .data::<Authenticator>()
        .ok_or_else(|| ApiError::unauthorized("authentication is unavailable"))?;
    Ok(auth.authenticate(&bearer.token).await?)
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

/// Which sessions ended, held in memory so that authenticating a request needs no database
/// round trip. Kept current two ways: `session_ended` events on the bus (every instance hears
/// a logout at once) and [`Authenticator::sync_sessions`], which reads the sessions ended in
/// the last few seconds from the database every [`SESSION_SYNC_EVERY`] — so a process that
/// missed events (a Redis blip, a restart) still learns of every revocation within a second.
///
/// A session ends when it is revoked, or when it is deleted while live (on its own, or with
/// its account, by an operator or a script): a trigger then leaves a tombstone that the same
/// read finds, so a deletion is refused everywhere within a second too, with no query per
/// session. A write in that second for a deleted account fails its foreign key, which answers
/// 401.
///
/// An access token never outlives its session (see [`Jwt::issue`]), and one of a session
/// ended longer than a token's lifetime ago has expired anyway. While the view is not
/// current (before the first read, or when the database has not answered for
/// [`SESSION_VIEW_STALE`]) each request asks the database.
pub struct SessionView {
    inner: Mutex<ViewState>,
}

#[derive(Default)]
struct ViewState {
    /// Ended sessions, with when we learned of it (pruned after a token's lifetime).
    revoked: HashMap<i64, Instant>,
    synced_at: Option<Instant>,
}

pub const SESSION_SYNC_EVERY: Duration = Duration::from_millis(500);
/// A view not refreshed for this long is not trusted.
pub const SESSION_VIEW_STALE: Duration = Duration::from_secs(5);
/// Ended sessions are read back this far each time: a revocation committed late, or stamped by
/// an instance whose clock is behind, is still seen.
const SESSION_SYNC_OVERLAP: Duration = Duration::from_secs(10);

impl SessionView {
    pub fn new() -> Self {
        Self {
            inner: Mutex::new(ViewState::default()),
        }
    }

    /// `Some(true)` if ended, `None` when the view cannot be trusted.
    pub fn is_revoked(&self, session_id: i64) -> Option<bool> {
        let view = self.lock();
        let current = view
            .synced_at
            .is_some_and(|at| at.elapsed() < SESSION_VIEW_STALE);
        current.then(|| view.revoked.contains_key(&session_id))
    }

    /// The session ended (heard on the bus, or done here).
    pub fn end(&self, session_id: i64) {
        self.lock().revoked.insert(session_id, Instant::now());
    }

    fn synced(&self, ended: Vec<i64>, forget_after: Duration) {
        let now = Instant::now();
        let mut view = self.lock();
        view.revoked
            .retain(|_, at| now.duration_since(*at) < forget_after);
        for session_id in ended {
            view.revoked.entry(session_id).or_insert(now);
        }
        view.synced_at = Some(now);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ViewState> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Default for SessionView {
    fn default() -> Self {
        Self::new()
    }
}

/// The most sessions one lookup asks about.
const MAX_LOOKUP_BATCH: usize = 1000;
/// The most lookups out at once. A caller waits for its own query only while one of these is
/// free; past them, the sessions that arrive wait together for the first to come back.
const MAX_LOOKUPS_OUT: usize = 4;

type LookupReply = oneshot::Sender<Result<bool, DbErr>>;

/// Sessions to look up in the database, asked about together: while [`MAX_LOOKUPS_OUT`]
/// queries are out, the tokens that arrive wait for the next, which asks about all of them at
/// once (the reserve line's group commit, for reads). A drop's opening brings thousands of
/// buyers to a process for the first time within a second; each would otherwise cost a query
/// and a pooled connection, on the same pool the reserves need.
#[derive(Default)]
struct Lookups(Mutex<LookupLine>);

#[derive(Default)]
struct LookupLine {
    /// Tasks serving the line (each serves until the line is empty).
    servers: usize,
    waiting: Vec<(i64, LookupReply)>,
}

impl Lookups {
    /// Joins the line; `true` when the caller must start a server (fewer than
    /// [`MAX_LOOKUPS_OUT`] are serving).
    fn join(&self, session_id: i64, reply: LookupReply) -> bool {
        let mut line = self.lock();
        line.waiting.push((session_id, reply));
        let starts = line.servers < MAX_LOOKUPS_OUT;
        if starts {
            line.servers += 1;
        }
        starts
    }

    /// The next sessions to ask about, or `None` (and one server fewer) when it is empty.
    fn next_batch(&self) -> Option<Vec<(i64, LookupReply)>> {
        let mut line = self.lock();
        if line.waiting.is_empty() {
            line.servers -= 1;
            return None;
        }
        let take = line.waiting.len().min(MAX_LOOKUP_BATCH);
        Some(line.waiting.drain(..take).collect())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LookupLine> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Turns access tokens into callers: the signing keys, the view of revoked sessions, and the
/// database it falls back on. Shared by the security schemes (as request data), `/ws` and
/// Socket.IO.
#[derive(Clone)]
pub struct Authenticator(Arc<AuthParts>);

pub struct AuthParts {
    pub jwt: Jwt,
    /// Ended sessions, so authenticating needs no database round trip.
    pub sessions: SessionView,
    /// Sessions waiting to be looked up in the database.
    lookups: Lookups,
    db: entity::db::Db,
    metrics: Arc<Metrics>,
}

impl std::ops::Deref for Authenticator {
    type Target = AuthParts;
    fn deref(&self) -> &AuthParts {
        &self.0
    }
}

impl Authenticator {
    pub fn new(jwt: Jwt, db: entity::db::Db, metrics: Arc<Metrics>) -> Self {
        Self(Arc::new(AuthParts {
            jwt,
            sessions: SessionView::new(),
            lookups: Lookups::default(),
            db,
            metrics,
        }))
    }

    /// Turns an access token into the caller: a valid signature and claims (checked here), of
    /// a session not ended (from [`crate::auth::SessionView`], without a database round
    /// trip while the view is current).
    ///
    /// # Errors
    /// 401 `unauthorized` for anything else.
    pub async fn authenticate(&self, token: &str) -> Result<CurrentUser, ApiError> {
        let claims = self
            .jwt
            .verify(token)
            .ok_or_else(|| ApiError::unauthorized("invalid or expired access token"))?;
        let user_id: i64 = claims
            .sub
            .parse()
            .map_err(|_| ApiError::unauthorized("invalid access token"))?;
        let ended = match self.sessions.is_revoked(claims.sid) {
            Some(ended) => ended,
            None => {
                self.metrics.session_lookups.fetch_add(1, Relaxed);
                self.look_up(claims.sid).await?
            }
        };
        if ended {
            return Err(ApiError::unauthorized(
                "this session has ended; sign in again",
            ));
        }
        Ok(CurrentUser {
            user_id,
            session_id: claims.sid,
            is_admin: claims.role == entity::accounts::Role::Admin,
        })
    }

    /// Whether the session is over (revoked, expired or gone), from the database. Asked
    /// together with every other session waiting to be looked up (see
    /// [`Lookups`]).
    async fn look_up(&self, session_id: i64) -> Result<bool, ApiError> {
        let (reply, answer) = oneshot::channel();
        let leads = self.lookups.join(session_id, reply);
        if leads {
            // On its own task: a caller who hangs up must not strand the others.
            tokio::spawn(self.clone().serve_lookups());
        }
        let live = answer
            .await
            .unwrap_or_else(|_| Err(DbErr::Custom("the session lookup was dropped".into())))
            .map_err(entity::Error::from)?;
        Ok(!live)
    }

    /// Looks up the waiting sessions, a batch per query, until none is left.
    async fn serve_lookups(self) {
        while let Some(batch) = self.lookups.next_batch() {
            let ids: Vec<i64> = batch.iter().map(|(id, _)| *id).collect();
            self.metrics.session_lookup_queries.fetch_add(1, Relaxed);
            match entity::accounts::live_sessions(&self.db, &ids, Utc::now()).await {
                Ok(live) => {
                    let live: HashSet<i64> = live.into_iter().collect();
                    for (session_id, reply) in batch {
                        let _ = reply.send(Ok(live.contains(&session_id)));
                    }
                }
                Err(error) => {
                    let error = match error {
                        entity::Error::Database(error) => error,
                        other => DbErr::Custom(other.to_string()),
                    };
                    for (_, reply) in batch {
                        let _ = reply.send(Err(entity::db::same_failure(&error)));
                    }
                }
            }
        }
    }

    /// Keeps the session view current from the database until the process stops.
    pub async fn sync_sessions(&self) {
        // Tokens of a session revoked before this can no longer be valid.
        let token_life = self.jwt.ttl() + self.jwt.leeway;
        let overlap = chrono::Duration::from_std(SESSION_SYNC_OVERLAP).unwrap_or_default();
        let mut since = Utc::now() - chrono::Duration::from_std(token_life).unwrap_or_default();
        let mut tick = tokio::time::interval(SESSION_SYNC_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tick.tick().await;
            let started = Utc::now();
            match entity::accounts::ended_since(&self.db, since).await {
                Ok(ended) => {
                    self.sessions.synced(ended, token_life);
                    since = started - overlap;
                    if std::mem::take(&mut failing) {
                        tracing::info!("session view current again");
                    }
                }
                Err(error) if !failing => {
                    failing = true;
                    tracing::warn!(error = %entity::error::chain(&error), "cannot read ended sessions; checking each request against the database");
                }
                Err(_) => {}
            }
        }
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

impl From<HashError> for ApiError {
    fn from(error: HashError) -> Self {
        Self::internal(&error)
    }
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
                .map_err(|e| {
                    entity::Error::Internal(format!("cannot start hashing thread: {e}"))
                })?;
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

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    fn reply() -> LookupReply {
        oneshot::channel().0
    }

    #[test]
    fn sessions_arriving_while_every_lookup_is_out_wait_for_one_query_together() {
        let lookups = Lookups::default();
        for id in 0..MAX_LOOKUPS_OUT {
            assert!(lookups.join(id as i64, reply()), "a free lookup: serve");
        }
        assert!(!lookups.join(100, reply()), "every lookup is out: wait");
        assert!(!lookups.join(101, reply()));
        let batch = lookups.next_batch().expect("a batch");
        assert_eq!(
            batch.len(),
            MAX_LOOKUPS_OUT + 2,
            "one query for all waiting"
        );
        // The other servers find the line empty and stop.
        for _ in 1..MAX_LOOKUPS_OUT {
            assert!(lookups.next_batch().is_none());
        }
        // Arriving while the last server's query is out: a free lookup serves it at once.
        assert!(lookups.join(102, reply()));
        assert_eq!(lookups.next_batch().expect("a batch").len(), 1);
        assert!(lookups.next_batch().is_none());
        assert!(lookups.next_batch().is_none());
        // Every server stopped: the next caller starts one again.
        assert!(lookups.join(103, reply()));
    }

    #[test]
    fn one_query_asks_about_at_most_a_thousand_sessions() {
        let lookups = Lookups::default();
        for id in 0..2_500 {
            lookups.join(id, reply());
        }
        let sizes: Vec<usize> =
            std::iter::from_fn(|| lookups.next_batch().map(|b| b.len())).collect();
        assert_eq!(sizes, [1_000, 1_000, 500]);
    }
}
