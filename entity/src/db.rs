//! Connection helpers shared by every operation.

use std::time::Duration;

use sea_orm::{
    ConnectOptions, Database, DatabaseConnection, DatabaseTransaction, DbErr, SqlErr,
    TransactionOptions, TransactionTrait,
    sqlx::{postgres::PgConnectOptions, sqlite::SqliteConnectOptions},
};

/// Opens the pool. SQLite gets WAL, foreign keys, a busy timeout and a few connections (it has
/// one writer anyway); Postgres gets up to `max_connections`.
///
/// # Errors
/// The database cannot be reached.
pub async fn connect(url: &str, max_connections: u32) -> Result<DatabaseConnection, DbErr> {
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .sqlx_logging(false)
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(10));
    if url.starts_with("sqlite:") {
        options
            .max_connections(4)
            .map_sqlx_sqlite_opts(|o: SqliteConnectOptions| {
                o.foreign_keys(true)
                    .journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                    .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_secs(10))
            });
    } else {
        options.max_connections(max_connections).min_connections(1);
    }
    Database::connect(options).await
}

/// A Postgres pool whose commits do not wait for the WAL to reach disk
/// (`synchronous_commit = off`), for taking holds only. A hold is a 60-second promise, and on a
/// single hot row the flush is what limits a flash sale. A Postgres crash can forget holds
/// acknowledged in its last few hundred milliseconds; a hold's decrement and its row commit
/// together, so stock stays consistent, and any durable commit after them (a purchase)
/// flushes them first. Everything else commits durably through [`connect`]'s pool.
///
/// # Errors
/// The database cannot be reached.
pub async fn connect_for_holds(
    url: &str,
    max_connections: u32,
) -> Result<DatabaseConnection, DbErr> {
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .sqlx_logging(false)
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(10))
        .max_connections(max_connections)
        .min_connections(1)
        .map_sqlx_postgres_opts(|o: PgConnectOptions| o.options([("synchronous_commit", "off")]));
    Database::connect(options).await
}

/// Begins a transaction that writes. On SQLite it takes the write lock at `BEGIN`
/// (`IMMEDIATE`), so a transaction that reads before it writes waits its turn instead of
/// failing with `SQLITE_BUSY` on upgrade; on Postgres it is a plain `BEGIN`.
///
/// # Errors
/// The database refused to begin.
pub async fn begin_write(db: &DatabaseConnection) -> Result<DatabaseTransaction, DbErr> {
    db.begin_with_options(TransactionOptions {
        sqlite_transaction_mode: Some(sea_orm::SqliteTransactionMode::Immediate),
        ..TransactionOptions::default()
    })
    .await
}

pub fn is_unique_violation(err: &DbErr) -> bool {
    matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_)))
}

pub fn is_foreign_key_violation(err: &DbErr) -> bool {
    matches!(
        err.sql_err(),
        Some(SqlErr::ForeignKeyConstraintViolation(_))
    )
}
