//! What every request handler can reach.

use std::{ops::Deref, sync::Arc};

use chrono::Utc;
use worker::{Infra, Settings, events::EventBus, queue::Queue};

use crate::{
    auth::{CurrentUser, Jwt, PasswordPool, SessionCache},
    error::ApiError,
    limiter::Limiter,
    stock_cache::SoldOutCache,
};

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub settings: Settings,
    pub db: sea_orm::DatabaseConnection,
    /// Where holds are taken: on Postgres a pool that commits without waiting for the WAL
    /// flush (see `entity::db::connect_for_holds`); on SQLite the same pool as `db`.
    pub holds_db: sea_orm::DatabaseConnection,
    pub queue: Queue,
    pub bus: EventBus,
    pub redis: Option<redis::aio::ConnectionManager>,
    pub jwt: Jwt,
    pub sessions: SessionCache,
    pub passwords: PasswordPool,
    pub limiter: Limiter,
    pub sold_out: SoldOutCache,
    pub metrics: crate::metrics::Metrics,
    pub drop_listing: crate::listing_cache::ListingCache,
    /// Every browser-facing event, serialised once for all sockets.
    pub frames: tokio::sync::broadcast::Sender<std::sync::Arc<crate::ws::Frame>>,
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// # Errors
    /// argon2 failed to initialise.
    pub async fn new(settings: Settings, infra: Infra) -> Result<Self, entity::Error> {
        let holds_db = match infra.db.get_database_backend() {
            sea_orm::DbBackend::Postgres => {
                entity::db::connect_for_holds(
                    settings.database_url.expose(),
                    settings.database_max_connections,
                )
                .await?
            }
            _ => infra.db.clone(),
        };
        Ok(Self(Arc::new(Inner {
            holds_db,
            jwt: Jwt::new(
                settings.jwt_access_secret.expose(),
                settings.access_token_ttl,
            ),
            limiter: Limiter::new(infra.redis.clone(), &settings.redis_prefix),
            sessions: SessionCache::new(),
            passwords: PasswordPool::new()?,
            sold_out: SoldOutCache::default(),
            metrics: crate::metrics::Metrics::default(),
            drop_listing: crate::listing_cache::ListingCache::default(),
            frames: tokio::sync::broadcast::channel(crate::ws::FRAME_BACKLOG).0,
            db: infra.db,
            queue: infra.queue,
            bus: infra.bus,
            redis: infra.redis,
            settings,
        })))
    }

    /// Announces a drop's new stock to every instance, and to this one's sold-out cache at
    /// once (so the next request here does not wait for the event's round trip).
    pub async fn publish_stock(&self, stock: entity::drops::Stock) {
        self.note_stock_change(stock);
        self.bus
            .publish_or_log(&worker::events::Event::StockUpdate(stock.into()))
            .await;
    }

    /// What this instance learns at once from a change it made itself.
    pub fn note_stock_change(&self, stock: entity::drops::Stock) {
        self.sold_out.observe(&stock.into());
        self.drop_listing.invalidate();
    }

    /// Turns an access token into the caller: a valid signature and claims, and a session
    /// that is still live (checked at most once a [`crate::auth::SESSION_RECHECK`] per instance).
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
        if !self.sessions.recently_live(claims.sid) {
            let live = entity::accounts::session_is_live(&self.db, claims.sid, Utc::now()).await?;
            if !live {
                return Err(ApiError::unauthorized(
                    "this session has ended; sign in again",
                ));
            }
            self.sessions.mark_live(claims.sid);
        }
        Ok(CurrentUser {
            user_id,
            session_id: claims.sid,
            is_admin: claims.role == entity::accounts::role::ADMIN,
        })
    }
}
