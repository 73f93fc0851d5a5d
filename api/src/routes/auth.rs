use chrono::Utc;
use entity::{
    EmailAddress,
    accounts::{self, DisplayName, Password, Refreshed},
    models::{sessions, users},
};
use poem::Request;
use poem_openapi::{ApiResponse, Object, OpenApi, param::Header, payload::Json};

use super::ApiTags;
use crate::{
    abuse::challenge,
    abuse::fairness,
    auth::BearerAuth,
    http::client::limit_key_of,
    http::error::{ApiError, ApiResult, ErrorCode},
    http::text::{Email, Text},
    state::AppState,
};

pub struct AuthApi {
    pub state: AppState,
}

#[derive(Object)]
#[oai(rename_all = "camelCase")]
struct SignupRequest {
    /// Used to sign in; compared case-insensitively.
    email: Email,
    /// 8 to 128 characters.
    #[oai(validator(min_length = 8, max_length = 128))]
    password: Text,
    /// Shown to other buyers; defaults to a neutral "Buyer 4821" (never anything from the
    /// email). At most 64 characters, not blank, no control characters, no bidi-override or
    /// zero-width characters.
    #[oai(validator(
        max_length = 64,
        pattern = r"^[^\x00-\x1f\x7f-\x9f\xad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]*[^ \xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\x00-\x1f\x7f-\x9f\xad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff][^\x00-\x1f\x7f-\x9f\xad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]*$"
    ))]
    display_name: Option<Text>,
}

#[derive(Object)]
struct LoginRequest {
    email: Email,
    #[oai(validator(max_length = 128))]
    password: Text,
}

#[derive(Object)]
#[oai(rename_all = "camelCase")]
struct RefreshRequest {
    /// The refresh token from signup, login or the previous refresh. Each works once.
    #[oai(validator(max_length = 512))]
    refresh_token: Text,
}

wire_enum! {
    /// What an account may do.
    AccountRole from entity::accounts::Role {
        /// Buys.
        Customer,
        /// Runs the store (the admin routes and the operations console).
        Admin,
    }
}

/// Always `Bearer`.
#[derive(poem_openapi::Enum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenType {
    Bearer,
}

/// An account as its owner sees it.
#[derive(Object)]
#[oai(rename_all = "camelCase", skip_serializing_if_is_none)]
pub struct User {
    id: i64,
    email: String,
    display_name: String,
    role: AccountRole,
    /// Whether the account followed the link of its verification email. Some drops take
    /// only verified buyers (`requireVerified`); `POST /api/auth/verification` sends the
    /// email again.
    email_verified: bool,
    /// When it did; absent until then.
    email_verified_at: Option<chrono::DateTime<Utc>>,
}

impl From<users::Model> for User {
    fn from(u: users::Model) -> Self {
        Self {
            id: u.id,
            email: u.email,
            display_name: u.display_name,
            role: u.role.into(),
            email_verified: u.email_verified_at.is_some(),
            email_verified_at: u.email_verified_at,
        }
    }
}

#[derive(Object)]
#[oai(rename_all = "camelCase")]
struct AuthResponse {
    user: User,
    /// Send as `Authorization: Bearer <accessToken>`.
    access_token: String,
    /// Exchange at `/api/auth/refresh` for a new pair; single use.
    refresh_token: String,
    token_type: TokenType,
    /// Seconds until the access token expires.
    expires_in: u64,
}

#[derive(ApiResponse)]
enum SignupResponse {
    /// Account created and signed in.
    #[oai(status = 201)]
    Created(Json<AuthResponse>),
}

#[derive(ApiResponse)]
enum SignedIn {
    /// Signed in.
    #[oai(status = 200)]
    Ok(Json<AuthResponse>),
}

#[derive(ApiResponse)]
enum LoggedOut {
    /// The session is over: its access and refresh tokens no longer work.
    #[oai(status = 204)]
    NoContent,
}

#[OpenApi(prefix_path = "/api/auth", tag = "ApiTags::Auth")]
impl AuthApi {
    /// Create an account
    ///
    /// Creates a customer account, signs it in, and sends it a verification email (some
    /// drops take only verified buyers). At most `SIGNUPS_PER_ADDRESS_PER_HOUR` accounts per
    /// address (429 past it); when the store asks for it (`ALTCHA_ON_SIGNUP`), a solved
    /// challenge in `X-Altcha` (see `GET /api/challenge`).
    #[oai(path = "/signup", method = "post", operation_id = "signup")]
    async fn signup(
        &self,
        req: &Request,
        body: Json<SignupRequest>,
        #[oai(name = "X-Altcha", validator(max_length = 4096))] altcha: Header<Option<String>>,
    ) -> ApiResult<SignupResponse> {
        limit_ip(&self.state, req).await?;
        let body = body.0;
        let email = body.email.into_value();
        let password = Password::parse(&body.password).map_err(ApiError::bad_request)?;
        let display_name = match &body.display_name {
            Some(name) => DisplayName::parse(name).map_err(ApiError::bad_request)?,
            None => DisplayName::neutral(),
        };
        fairness::limit_signups(self.state.admission(), req).await?;
        if self.state.settings.abuse.altcha_on_signup {
            challenge::spend(
                &self.state.settings.abuse,
                &self.state.db,
                altcha.as_deref(),
            )
            .await?;
        }
        let hash = self.state.passwords.hash(password).await?;
        let (user, message_id) =
            entity::verification::sign_up(&self.state.db, &email, &display_name, hash, Utc::now())
                .await?;
        self.state.effects.emails_queued(&[message_id]).await;
        Ok(SignupResponse::Created(Json(
            sign_in(&self.state, user).await?,
        )))
    }

    /// Sign in
    ///
    /// A wrong password and an unknown email get the same answer. After repeated failures the
    /// account is locked for a while (429 with `Retry-After`).
    #[oai(path = "/login", method = "post", operation_id = "login")]
    async fn login(&self, req: &Request, body: Json<LoginRequest>) -> ApiResult<SignedIn> {
        limit_ip(&self.state, req).await?;
        let body = body.0;
        let email = body.email.into_value();
        let password = Password::for_login(&body.password).map_err(ApiError::bad_request)?;
        let lockout = Lockout::of(&self.state, &email, &limit_key_of(req));
        lockout.admit().await?;
        let user = accounts::find_by_email(&self.state.db, &email).await?;
        let stored = user.as_ref().map(|u| u.password_hash.clone());
        let verified = self
            .state
            .passwords
            .verify(password.clone(), stored)
            .await?;
        let Some(user) = user.filter(|_| verified.matches) else {
            return Err(ApiError::new(
                poem::http::StatusCode::UNAUTHORIZED,
                ErrorCode::InvalidCredentials,
                "email or password is incorrect",
            ));
        };
        lockout.succeeded().await;
        if verified.needs_rehash {
            let hash = self.state.passwords.hash(password).await?;
            accounts::set_password_hash(&self.state.db, user.id, hash).await?;
        }
        Ok(SignedIn::Ok(Json(sign_in(&self.state, user).await?)))
    }

    /// Exchange a refresh token
    ///
    /// Returns a new access token and a new refresh token; the old refresh token stops
    /// working. Presenting a refresh token that was already exchanged ends the whole session.
    #[oai(path = "/refresh", method = "post", operation_id = "refreshSession")]
    async fn refresh(&self, req: &Request, body: Json<RefreshRequest>) -> ApiResult<SignedIn> {
        limit_ip(&self.state, req).await?;
        match accounts::refresh(&self.state.db, &body.refresh_token, Utc::now()).await? {
            Refreshed::Rotated {
                session,
                refresh_token,
            } => {
                let user = accounts::find_user(&self.state.db, session.user_id)
                    .await?
                    .ok_or_else(|| ApiError::unauthorized("this account no longer exists"))?;
                Ok(SignedIn::Ok(Json(tokens(
                    &self.state,
                    user,
                    &session,
                    refresh_token,
                )?)))
            }
            Refreshed::ReuseDetected { session_id } => {
                Err(ended_by_reuse(&self.state, session_id).await)
            }
            Refreshed::Invalid => Err(ApiError::unauthorized("invalid or expired refresh token")),
        }
    }

    /// Sign out
    ///
    /// Ends the session: its access token and refresh token are refused from now on, by every
    /// api instance.
    #[oai(path = "/logout", method = "post", operation_id = "logout")]
    async fn logout(&self, auth: BearerAuth) -> ApiResult<LoggedOut> {
        let session_id = auth.0.session_id;
        accounts::revoke(&self.state.db, session_id, Utc::now()).await?;
        self.state.auth.sessions.end(session_id);
        self.state.effects.session_ended(session_id).await;
        Ok(LoggedOut::NoContent)
    }

    /// The signed-in account
    ///
    /// Who the access token belongs to: id, email, display name and role.
    #[oai(path = "/me", method = "get", operation_id = "getCurrentUser")]
    async fn me(&self, auth: BearerAuth) -> ApiResult<Json<User>> {
        let user = accounts::find_user(&self.state.db, auth.0.user_id)
            .await?
            .ok_or_else(|| ApiError::unauthorized("this account no longer exists"))?;
        Ok(Json(user.into()))
    }
}

/// A spent refresh token came back: the family was revoked; every instance forgets it now.
async fn ended_by_reuse(state: &AppState, session_id: i64) -> ApiError {
    state.auth.sessions.end(session_id);
    state.effects.session_ended(session_id).await;
    ApiError::unauthorized("this refresh token was already used; the session has been ended")
}

async fn sign_in(state: &AppState, user: users::Model) -> ApiResult<AuthResponse> {
    let lifetime = state.settings.sessions.refresh_token_ttl;
    let (session, refresh_token) =
        accounts::start_session(&state.db, user.id, lifetime, Utc::now()).await?;
    tokens(state, user, &session, refresh_token)
}

fn tokens(
    state: &AppState,
    user: users::Model,
    session: &sessions::Model,
    refresh_token: String,
) -> ApiResult<AuthResponse> {
    let access_token = state.auth.jwt.issue(user.id, session, user.role)?;
    Ok(AuthResponse {
        user: user.into(),
        access_token,
        refresh_token,
        token_type: TokenType::Bearer,
        // A token never outlives its session (see `Jwt::issue`).
        expires_in: u64::try_from((session.expires_at - Utc::now()).num_seconds())
            .unwrap_or(0)
            .min(state.auth.jwt.ttl().as_secs()),
    })
}

/// Auth endpoints are rate-limited per client address.
async fn limit_ip(state: &AppState, req: &Request) -> ApiResult<()> {
    let window = state
        .limiter
        .hit(
            &format!("auth-ip:{}", limit_key_of(req)),
            std::time::Duration::from_secs(60),
        )
        .await;
    if window.count > state.settings.sessions.rate_limit_per_minute {
        return Err(ApiError::too_many(
            ErrorCode::TooManyRequests,
            "too many requests from this address; slow down",
            window.resets_in.as_secs_f64().ceil() as u64,
        ));
    }
    Ok(())
}

/// Guessing passwords, bounded (OWASP's authentication cheat sheet, "account lockout"):
///
/// - **Hard lock per (account, address).** Every sign-in attempt is counted *before* its
///   password is checked, atomically (Redis `INCR`, or one mutex in memory), so at most
///   `LOGIN_MAX_FAILURES` guesses from one address are ever verified per
///   `LOGIN_LOCKOUT_SECS`, however many are sent at once. A success clears the count.
///   Scoping it to the address means nobody can lock the owner (or the admin) out from
///   elsewhere by failing on purpose.
/// - **Slow-down per account.** Past [`SLOWDOWN_AFTER`] × `LOGIN_MAX_FAILURES` attempts on
///   one account in a window, from any addresses, the account takes one attempt per
///   [`SLOWDOWN_INTERVAL`]: a guesser spread over many addresses gets a trickle, and the
///   owner signing in from their own address gets through after a moment's wait.
struct Lockout<'a> {
    state: &'a AppState,
    address_key: String,
    account_key: String,
    gate_key: String,
}

/// Attempts on one account (all addresses) per window before it is slowed down, as a
/// multiple of `LOGIN_MAX_FAILURES`.
const SLOWDOWN_AFTER: u32 = 4;
/// A slowed-down account takes one attempt this often.
const SLOWDOWN_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

impl<'a> Lockout<'a> {
    fn of(state: &'a AppState, email: &EmailAddress, ip: &str) -> Self {
        Self {
            state,
            address_key: format!("login-attempts:{email}:{ip}"),
            account_key: format!("login-attempts:{email}"),
            gate_key: format!("login-gate:{email}"),
        }
    }

    /// Counts this attempt; 429 `account_locked` when it is one too many from this address,
    /// 429 `too_many_requests` while the account is slowed down.
    async fn admit(&self) -> ApiResult<()> {
        let auth = &self.state.settings.sessions;
        let limiter = &self.state.limiter;
        let from_here = limiter.hit(&self.address_key, auth.login_lockout).await;
        if from_here.count > auth.login_max_failures {
            return Err(ApiError::too_many(
                ErrorCode::AccountLocked,
                "too many failed sign-ins for this account from this address; try again later",
                from_here.resets_in.as_secs_f64().ceil() as u64,
            ));
        }
        let on_account = limiter.hit(&self.account_key, auth.login_lockout).await;
        if on_account.count > auth.login_max_failures.saturating_mul(SLOWDOWN_AFTER) {
            let gate = limiter.hit(&self.gate_key, SLOWDOWN_INTERVAL).await;
            if gate.count > 1 {
                return Err(ApiError::too_many(
                    ErrorCode::TooManyRequests,
                    "many failed sign-ins for this account; try again in a moment",
                    gate.resets_in.as_secs_f64().ceil() as u64,
                ));
            }
        }
        Ok(())
    }

    /// The password was right: this address starts afresh.
    async fn succeeded(&self) {
        self.state.limiter.reset(&self.address_key).await;
    }
}
