//! Connecting to what both tiers share: the database (migrated), the job queue and the bus.

use migration::MigratorTrait;
use sea_orm::{ConnectionTrait, DbBackend, TransactionTrait};

use super::{
    bus::{BusError, EventBus},
    queue::Queue,
    settings::Settings,
};

#[derive(Debug, thiserror::Error)]
pub enum InfraError {
    #[error("cannot connect to the database (DATABASE_URL)")]
    Database(#[source] sea_orm::DbErr),
    #[error("cannot connect to the database for migrations (DATABASE_MIGRATION_URL)")]
    MigrationDatabase(#[source] sea_orm::DbErr),
    #[error("cannot migrate the database")]
    Migrate(#[source] sea_orm::DbErr),
    #[error("cannot prepare the job tables")]
    JobTables(#[source] apalis_sqlite::SqlxError),
    #[error("cannot connect to redis (REDIS_URL, REDIS_SENTINELS)")]
    Redis(#[from] redis::RedisError),
    #[error("cannot start the event bus")]
    Bus(#[from] BusError),
}

/// Handles every process needs, cheap to clone.
#[derive(Clone, Debug)]
pub struct Infra {
    pub db: entity::db::Db,
    pub queue: Queue,
    pub bus: EventBus,
    /// Distributed mode only: for rate-limit counters and readiness checks.
    pub redis: Option<redis::aio::ConnectionManager>,
}

impl Infra {
    /// Connects, applies pending migrations, and wires the queue and bus for the mode.
    ///
    /// # Errors
    /// A backend is unreachable or a migration fails.
    pub async fn connect(settings: &Settings) -> Result<Self, InfraError> {
        let database = &settings.database;
        let db = entity::db::connect(
            database.url.expose(),
            database.max_connections,
            database.acquire_timeout,
            database.pool_mode,
        )
        .await
        .map_err(InfraError::Database)?;
        if database.migration_url == database.url {
            migrate(&db).await?;
        } else {
            // Migrations go to Postgres itself, past a transaction-mode pooler, over one
            // connection closed once they are done.
            let direct = entity::db::connect(
                database.migration_url.expose(),
                1,
                database.acquire_timeout,
                entity::db::PoolMode::Session,
            )
            .await
            .map_err(InfraError::MigrationDatabase)?;
            let migrated = migrate(&direct).await;
            let _ = direct.close().await;
            migrated?;
        }
        match &settings.redis {
            Some(redis) => {
                let client = match &redis.sentinel {
                    Some(sentinel) => {
                        super::sentinel::client(
                            redis.url.expose(),
                            &sentinel.sentinels,
                            &sentinel.master_name,
                        )
                        .await?
                    }
                    None => redis::Client::open(redis.url.expose())?,
                };
                let manager = super::redis_conn::manager(&client).await?;
                let queue = Queue::Redis {
                    conn: manager.clone(),
                    prefix: redis.prefix.clone(),
                };
                let bus = EventBus::redis(&client, &redis.prefix).await?;
                Ok(Self {
                    db,
                    queue,
                    bus,
                    redis: Some(manager),
                })
            }
            None => {
                if db.get_database_backend() != DbBackend::Sqlite {
                    // Embedded jobs live in SQLite; with Postgres and no Redis, keep them in a
                    // SQLite file beside the data.
                    return Err(InfraError::Database(sea_orm::DbErr::Custom(
                        "embedded mode (REDIS_URL unset) needs a sqlite: DATABASE_URL; set REDIS_URL to use Postgres"
                            .into(),
                    )));
                }
                let pool = db.pool().get_sqlite_connection_pool();
                apalis_sqlite::SqliteStorage::migrations()
                    .run(pool)
                    .await
                    .map_err(|e| InfraError::JobTables(e.into()))?;
                let queue = Queue::Sqlite(pool.clone());
                Ok(Self {
                    db,
                    queue,
                    bus: EventBus::in_process(),
                    redis: None,
                })
            }
        }
    }
}

/// Several processes may start at once against one Postgres: serialise their migrations with
/// an advisory lock held for the migrating transaction (Postgres DDL is transactional).
async fn migrate(db: &entity::db::Db) -> Result<(), InfraError> {
    if db.get_database_backend() == DbBackend::Postgres {
        let txn = db.begin().await.map_err(InfraError::Migrate)?;
        txn.execute_unprepared("SELECT pg_advisory_xact_lock(4863957206)")
            .await
            .map_err(InfraError::Migrate)?;
        migration::Migrator::up(&txn, None)
            .await
            .map_err(InfraError::Migrate)?;
        txn.commit().await.map_err(InfraError::Migrate)
    } else {
        migration::Migrator::up(db.pool(), None)
            .await
            .map_err(InfraError::Migrate)
    }
}
