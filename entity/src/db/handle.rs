//! The store's database handle: a pool that works the same straight to Postgres and through
//! a transaction-mode pooler.

use sea_orm::{
    AccessMode, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr,
    ExecResult, IsolationLevel, QueryResult, Statement, TransactionError, TransactionOptions,
    TransactionTrait,
};

use super::PoolMode;

/// What every operation runs on: the store's [`Db`], or a plain SeaORM connection (tests
/// and tools that talk to Postgres directly).
pub trait Conn:
    ConnectionTrait + TransactionTrait<Transaction = DatabaseTransaction> + Send + Sync
{
}

impl<T> Conn for T where
    T: ConnectionTrait + TransactionTrait<Transaction = DatabaseTransaction> + Send + Sync
{
}

/// A pool of connections, as SeaORM's, that also works behind a transaction-mode pooler
/// without protocol-level prepared statements (PgBouncer before 1.21,
/// `DATABASE_POOL_MODE=transaction`).
///
/// Such a pooler lends a server connection from `BEGIN` to `COMMIT` only, and outside a
/// transaction from one `Sync` to the next. sqlx sends a statement it has not prepared on
/// its connection in two exchanges — parse, then bind and run — so outside a transaction the
/// two may reach different servers (`prepared statement "sqlx_s_1" does not exist`). Here a
/// statement outside a transaction runs in one of its own, committed before it returns, as
/// Postgres would have committed it; transactions run as always.
#[derive(Clone, Debug)]
pub struct Db {
    pool: DatabaseConnection,
    mode: PoolMode,
}

impl Db {
    pub fn new(pool: DatabaseConnection, mode: PoolMode) -> Self {
        Self { pool, mode }
    }

    /// The SeaORM pool underneath, for what needs the pool itself (SQLite's job tables,
    /// opening connections ahead, closing).
    pub fn pool(&self) -> &DatabaseConnection {
        &self.pool
    }

    /// SQLite or Postgres (also [`ConnectionTrait`]'s, here without importing it).
    pub fn get_database_backend(&self) -> DbBackend {
        self.pool.get_database_backend()
    }

    /// Closes every connection of the pool.
    ///
    /// # Errors
    /// Closing failed.
    pub async fn close(self) -> Result<(), DbErr> {
        self.pool.close().await
    }
}

impl From<DatabaseConnection> for Db {
    /// A handle straight to the database.
    fn from(pool: DatabaseConnection) -> Self {
        Self::new(pool, PoolMode::Session)
    }
}

#[async_trait::async_trait]
impl ConnectionTrait for Db {
    fn get_database_backend(&self) -> DbBackend {
        self.pool.get_database_backend()
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        if self.mode == PoolMode::Session {
            return self.pool.execute_raw(stmt).await;
        }
        let txn = self.pool.begin().await?;
        let done = txn.execute_raw(stmt).await?;
        txn.commit().await?;
        Ok(done)
    }

    /// A statement without parameters goes out in one exchange (the simple protocol), so it
    /// needs no transaction of its own.
    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        self.pool.execute_unprepared(sql).await
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        if self.mode == PoolMode::Session {
            return self.pool.query_one_raw(stmt).await;
        }
        let txn = self.pool.begin().await?;
        let row = txn.query_one_raw(stmt).await?;
        txn.commit().await?;
        Ok(row)
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        if self.mode == PoolMode::Session {
            return self.pool.query_all_raw(stmt).await;
        }
        let txn = self.pool.begin().await?;
        let rows = txn.query_all_raw(stmt).await?;
        txn.commit().await?;
        Ok(rows)
    }
}

#[async_trait::async_trait]
impl TransactionTrait for Db {
    type Transaction = DatabaseTransaction;

    async fn begin(&self) -> Result<DatabaseTransaction, DbErr> {
        self.pool.begin().await
    }

    async fn begin_with_config(
        &self,
        isolation_level: Option<IsolationLevel>,
        access_mode: Option<AccessMode>,
    ) -> Result<DatabaseTransaction, DbErr> {
        self.pool
            .begin_with_config(isolation_level, access_mode)
            .await
    }

    async fn begin_with_options(
        &self,
        options: TransactionOptions,
    ) -> Result<DatabaseTransaction, DbErr> {
        self.pool.begin_with_options(options).await
    }

    async fn transaction<F, T, E>(&self, callback: F) -> Result<T, TransactionError<E>>
    where
        F: for<'c> FnOnce(
                &'c DatabaseTransaction,
            )
                -> std::pin::Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'c>>
            + Send,
        T: Send,
        E: std::fmt::Display + std::fmt::Debug + Send,
    {
        self.pool.transaction(callback).await
    }

    async fn transaction_with_config<F, T, E>(
        &self,
        callback: F,
        isolation_level: Option<IsolationLevel>,
        access_mode: Option<AccessMode>,
    ) -> Result<T, TransactionError<E>>
    where
        F: for<'c> FnOnce(
                &'c DatabaseTransaction,
            )
                -> std::pin::Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'c>>
            + Send,
        T: Send,
        E: std::fmt::Display + std::fmt::Debug + Send,
    {
        self.pool
            .transaction_with_config(callback, isolation_level, access_mode)
            .await
    }
}
