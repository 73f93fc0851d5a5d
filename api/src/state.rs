//! What every request handler can reach.

use std::{ops::Deref, sync::Arc};

use worker::{Effects, Infra, bus::EventBus, queue::Queue};

use crate::settings::Settings;

use crate::{
    abuse::limiter::Limiter,
    auth::{Authenticator, Jwt, PasswordPool},
    cache::stock::StockCaches,
};

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub settings: Settings,
    pub db: entity::db::Db,
    /// Where holds are taken: on Postgres a pool of their own, opened at start, so reserves
    /// never wait behind other queries for a connection (see `entity::db::connect_for_holds`);
    /// on SQLite the same pool as `db`.
    pub holds_db: entity::db::Db,
    pub queue: Queue,
    pub bus: EventBus,
    /// What a committed change implies; every handler that commits one calls it.
    pub effects: Effects,
    pub redis: Option<redis::aio::ConnectionManager>,
    /// Access tokens and the sessions they belong to.
    pub auth: Authenticator,
    pub passwords: PasswordPool,
    pub limiter: Limiter,
    /// What each drop asks of its buyers (a verified email, a solved challenge).
    pub drop_rules: crate::cache::drop_rules::DropRules,
    /// Accounts known to have verified their email.
    pub verified: crate::cache::drop_rules::VerifiedAccounts,
    /// Concurrent reserves of one drop, combined into one statement.
    pub reserves: crate::reserve::batch::ReserveBatcher,
    /// The sold-out cache and the drop listing, told of every stock change at once.
    pub caches: Arc<StockCaches>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Reserve requests per drop, added to the drops' rows every second.
    pub reserve_attempts: crate::reserve::demand::ReserveAttempts,
    /// Every browser-facing event, serialised once for all sockets.
    pub frames: tokio::sync::broadcast::Sender<Arc<crate::cache::frames::Frame>>,
    /// Room for live sockets (`/ws` and Socket.IO together), per process and per address.
    pub live: Arc<crate::abuse::live_gate::LiveGate>,
    /// Fires when the process begins to shut down: sockets say goodbye (close 1001) so their
    /// clients reconnect to another instance at once.
    pub closing: worker::platform::shutdown::Shutdown,
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// What the fairness checks read (a drop's rules, the per-address limits).
    pub fn admission(&self) -> crate::abuse::fairness::Admission<'_> {
        crate::abuse::fairness::Admission {
            abuse: &self.settings.abuse,
            db: &self.db,
            limiter: &self.limiter,
            rules: &self.drop_rules,
            verified: &self.verified,
        }
    }

    /// # Errors
    /// argon2 failed to initialise.
    pub async fn new(settings: Settings, infra: Infra) -> Result<Self, entity::Error> {
        let holds_db = match infra.db.get_database_backend() {
            sea_orm::DbBackend::Postgres => {
                entity::db::connect_for_holds(
                    settings.database.url.expose(),
                    settings.database.holds_connections,
                    settings.database.acquire_timeout,
                    settings.database.pool_mode,
                )
                .await?
            }
            _ => infra.db.clone(),
        };
        let prefix = settings.redis.as_ref().map_or("", |r| r.prefix.as_str());
        let caches = Arc::new(StockCaches::default());
        let effects = Effects::of(&infra).observed_by(caches.clone());
        let metrics = Arc::new(crate::metrics::Metrics::default());
        let reserves = crate::reserve::batch::ReserveBatcher::new(
            holds_db.clone(),
            settings.drops.reservation_ttl,
            effects.clone(),
            metrics.clone(),
        );
        Ok(Self(Arc::new(Inner {
            holds_db,
            auth: Authenticator::new(
                Jwt::new(
                    settings.auth.jwt_access_secret.expose(),
                    settings.sessions.access_token_ttl,
                )
                .with_leeway(settings.sessions.jwt_leeway),
                infra.db.clone(),
                metrics.clone(),
            ),
            limiter: Limiter::new(infra.redis.clone(), prefix),
            drop_rules: crate::cache::drop_rules::DropRules::default(),
            verified: crate::cache::drop_rules::VerifiedAccounts::default(),
            reserves,
            passwords: PasswordPool::new()?,
            metrics,
            reserve_attempts: crate::reserve::demand::ReserveAttempts::default(),
            frames: tokio::sync::broadcast::channel(crate::cache::frames::FRAME_BACKLOG).0,
            closing: worker::platform::shutdown::Shutdown::new(),
            live: crate::abuse::live_gate::LiveGate::new(settings.live.clone()),
            effects,
            caches,
            db: infra.db,
            queue: infra.queue,
            bus: infra.bus,
            redis: infra.redis,
            settings,
        })))
    }
}
