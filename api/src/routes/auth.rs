use chrono::Utc;
use entity::{
    EmailAddress,
    accounts::{self, DisplayName, Password, Refreshed},
    models::users,
};
use poem::{Request, web::Data};
use poem_openapi::{ApiResponse, Object, OpenApi, payload::Json};
use sea_orm::ActiveEnum;

use super::ApiTags;
use crate::{
    auth::BearerAuth,
    error::{ApiError, ApiResult, ErrorCode},
    state::AppState,
    text::Text,
};

pub struct AuthApi;

#[derive(Object)]
#[oai(rename_all = "camelCase")]
struct SignupRequest {
    /// Used to sign in; compared case-insensitively.
    #[oai(validator(
        max_length = 254,
        pattern = r"^[ \t]*[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]([A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{0,62}[A-Za-z0-9!#$%&'*+/=?^_`{|}~-])?@[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+[ \t]*$"
    ))]
    email: Text,
    /// 8 to 128 characters.
    #[oai(validator(min_length = 8, max_length = 128))]
    password: Text,
    /// Shown to other buyers; defaults to the part of the email before `@`. At most 64
    /// characters, not blank, no control characters.
    #[oai(validator(
        max_length = 64,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^ \xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    ))]
    display_name: Option<Text>,
}

#[derive(Object)]
struct LoginRequest {
    #[oai(validator(
        max_length = 254,
        pattern = r"^[ \t]*[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]([A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{0,62}[A-Za-z0-9!#$%&'*+/=?^_`{|}~-])?@[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+[ \t]*$"
    ))]
    email: Text,
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

/// An account as its owner sees it.
#[derive(Object)]
#[oai(rename_all = "camelCase")]
pub struct User {
    id: i64,
    email: String,
    display_name: String,
    /// `customer` or `admin`.
    role: String,
}

impl From<users::Model> for User {
    fn from(u: users::Model) -> Self {
        Self {
            id: u.id,
            email: u.email,
            display_name: u.display_name,
            role: u.role.to_value(),
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
    /// Always `Bearer`.
    token_type: String,
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
    /// Creates a customer account and signs it in.
    #[oai(path = "/signup", method = "post")]
    async fn signup(
        &self,
        Data(state): Data<&AppState>,
        req: &Request,
        body: Json<SignupRequest>,
    ) -> ApiResult<SignupResponse> {
        limit_ip(state, req).await?;
        let email = EmailAddress::parse(&body.email).map_err(ApiError::bad_request)?;
        let password = Password::parse(&body.password).map_err(ApiError::bad_request)?;
        let display_name = match &body.display_name {
            Some(name) => DisplayName::parse(name).map_err(ApiError::bad_request)?,
            None => DisplayName::from_email(&email),
        };
        let hash = state.passwords.hash(password).await?;
        let role = accounts::Role::Customer;
        let user =
            accounts::create_user(&state.db, &email, &display_name, hash, role, Utc::now()).await?;
        Ok(SignupResponse::Created(Json(sign_in(state, user).await?)))
    }

    /// Sign in
    ///
    /// A wrong password and an unknown email get the same answer. After repeated failures the
    /// account is locked for a while (429 with `Retry-After`).
    #[oai(path = "/login", method = "post")]
    async fn login(
        &self,
        Data(state): Data<&AppState>,
        req: &Request,
        body: Json<LoginRequest>,
    ) -> ApiResult<SignedIn> {
        limit_ip(state, req).await?;
        let email = EmailAddress::parse(&body.email).map_err(ApiError::bad_request)?;
        let password = Password::for_login(&body.password).map_err(ApiError::bad_request)?;
        let lockout = Lockout::of(state, &email);
        lockout.check().await?;
        let user = accounts::find_by_email(&state.db, &email).await?;
        let stored = user.as_ref().map(|u| u.password_hash.clone());
        let verified = state.passwords.verify(password.clone(), stored).await?;
        let Some(user) = user.filter(|_| verified.matches) else {
            lockout.failed().await;
            return Err(ApiError::new(
                poem::http::StatusCode::UNAUTHORIZED,
                ErrorCode::InvalidCredentials,
                "email or password is incorrect",
            ));
        };
        lockout.clear().await;
        if verified.needs_rehash {
            let hash = state.passwords.hash(password).await?;
            accounts::set_password_hash(&state.db, user.id, hash).await?;
        }
        Ok(SignedIn::Ok(Json(sign_in(state, user).await?)))
    }

    /// Exchange a refresh token
    ///
    /// Returns a new access token and a new refresh token; the old refresh token stops
    /// working. Presenting a refresh token that was already exchanged ends the whole session.
    #[oai(path = "/refresh", method = "post")]
    async fn refresh(
        &self,
        Data(state): Data<&AppState>,
        req: &Request,
        body: Json<RefreshRequest>,
    ) -> ApiResult<SignedIn> {
        limit_ip(state, req).await?;
        match accounts::refresh(&state.db, &body.refresh_token, Utc::now()).await? {
            Refreshed::Rotated {
                session,
                refresh_token,
            } => {
                let user = accounts::find_user(&state.db, session.user_id)
                    .await?
                    .ok_or_else(|| ApiError::unauthorized("this account no longer exists"))?;
                Ok(SignedIn::Ok(Json(tokens(
                    state,
                    user,
                    session.id,
                    refresh_token,
                )?)))
            }
            Refreshed::ReuseDetected => Err(ApiError::unauthorized(
                "this refresh token was already used; the session has been ended",
            )),
            Refreshed::Invalid => Err(ApiError::unauthorized("invalid or expired refresh token")),
        }
    }

    /// Sign out
    ///
    /// Ends the session: its access token and refresh token are refused from now on, by every
    /// api instance.
    #[oai(path = "/logout", method = "post")]
    async fn logout(&self, Data(state): Data<&AppState>, auth: BearerAuth) -> ApiResult<LoggedOut> {
        accounts::revoke(&state.db, auth.0.session_id, Utc::now()).await?;
        state.sessions.forget(auth.0.session_id);
        Ok(LoggedOut::NoContent)
    }

    /// The signed-in account
    #[oai(path = "/me", method = "get")]
    async fn me(&self, Data(state): Data<&AppState>, auth: BearerAuth) -> ApiResult<Json<User>> {
        let user = accounts::find_user(&state.db, auth.0.user_id)
            .await?
            .ok_or_else(|| ApiError::unauthorized("this account no longer exists"))?;
        Ok(Json(user.into()))
    }
}

async fn sign_in(state: &AppState, user: users::Model) -> ApiResult<AuthResponse> {
    let lifetime = state.settings.auth.refresh_token_ttl;
    let (session, refresh_token) =
        accounts::start_session(&state.db, user.id, lifetime, Utc::now()).await?;
    tokens(state, user, session.id, refresh_token)
}

fn tokens(
    state: &AppState,
    user: users::Model,
    session_id: i64,
    refresh_token: String,
) -> ApiResult<AuthResponse> {
    let access_token = state.jwt.issue(user.id, session_id, user.role)?;
    Ok(AuthResponse {
        user: user.into(),
        access_token,
        refresh_token,
        token_type: "Bearer".into(),
        expires_in: state.jwt.ttl().as_secs(),
    })
}

/// Auth endpoints are rate-limited per client address.
async fn limit_ip(state: &AppState, req: &Request) -> ApiResult<()> {
    let ip = req
        .remote_addr()
        .as_socket_addr()
        .map_or_else(|| "unknown".to_owned(), |a| a.ip().to_string());
    let window = state
        .limiter
        .hit(&format!("auth-ip:{ip}"), std::time::Duration::from_secs(60))
        .await;
    if window.count > state.settings.auth.rate_limit_per_minute {
        return Err(ApiError::too_many(
            ErrorCode::TooManyRequests,
            "too many requests from this address; slow down",
            window.resets_in.as_secs_f64().ceil() as u64,
        ));
    }
    Ok(())
}

/// Repeated failed sign-ins lock an account for `LOGIN_LOCKOUT_SECS`.
struct Lockout<'a> {
    state: &'a AppState,
    key: String,
}

impl<'a> Lockout<'a> {
    fn of(state: &'a AppState, email: &EmailAddress) -> Self {
        Self {
            state,
            key: format!("login-failures:{email}"),
        }
    }

    /// 429 `account_locked` while the account is locked.
    async fn check(&self) -> ApiResult<()> {
        let failures = self.state.limiter.peek(&self.key).await;
        if failures.count >= self.state.settings.auth.login_max_failures {
            return Err(ApiError::too_many(
                ErrorCode::AccountLocked,
                "too many failed sign-ins for this account; try again later",
                failures.resets_in.as_secs_f64().ceil() as u64,
            ));
        }
        Ok(())
    }

    async fn failed(&self) {
        let lockout = self.state.settings.auth.login_lockout;
        self.state.limiter.hit(&self.key, lockout).await;
    }

    async fn clear(&self) {
        self.state.limiter.reset(&self.key).await;
    }
}
