//! Connection helpers shared by every operation.

use std::{str::FromStr, sync::Arc, time::Duration};

use sea_orm::{
    ActiveModelTrait, ConnectOptions, ConnectionTrait, Database, DatabaseTransaction, DbErr,
    EntityTrait, IntoActiveModel, RuntimeErr, SqlErr, TransactionOptions,
    sqlx::{self, ConnectOptions as _, postgres::PgConnectOptions, sqlite::SqliteConnectOptions},
};

mod handle;

pub use handle::{Conn, Db};

/// How long a single connection attempt may take, in the pool and when explaining a failure.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long startup waits for the database (it may still be starting).
const STARTUP_PATIENCE: Duration = Duration::from_secs(10);

/// How the processes reach Postgres (`DATABASE_POOL_MODE`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PoolMode {
    /// Straight to Postgres, or through a pooler in session mode: each pooled connection is
    /// one server session for its whole life.
    #[default]
    Session,
    /// Through a pooler in transaction mode (PgBouncer's `pool_mode = transaction`), which
    /// lends a server connection only from `BEGIN` to `COMMIT`: see [`Db`].
    Transaction,
}

/// Opens the pool. SQLite gets WAL, foreign keys, a busy timeout and a few connections (it has
/// one writer anyway); Postgres gets up to `max_connections`. Once started, an operation waits
/// at most `acquire_timeout` for a connection: past that it fails as [overloaded](is_overload),
/// which the api answers with 503 rather than making a client wait.
///
/// # Errors
/// The database cannot be reached; the error names the real cause (connection refused,
/// authentication failed, unknown database), not only the pool's timeout.
pub async fn connect(
    url: &str,
    max_connections: u32,
    acquire_timeout: Duration,
    mode: PoolMode,
) -> Result<Db, DbErr> {
    let mut options = pool_options(url, acquire_timeout, mode);
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
    // The server may still be starting: keep trying for a while before saying why not.
    let started = std::time::Instant::now();
    loop {
        match Database::connect(options.clone()).await {
            Ok(db) => return Ok(Db::new(db, mode)),
            Err(error) if is_pool_timeout(&error) && !url.starts_with("sqlite:") => {
                if started.elapsed() < STARTUP_PATIENCE {
                    continue;
                }
                return Err(explain_postgres(url).await.unwrap_or(error));
            }
            Err(error) => return Err(error),
        }
    }
}

fn is_pool_timeout(error: &DbErr) -> bool {
    matches!(error, DbErr::Conn(RuntimeErr::SqlxError(e)) if matches!(**e, sqlx::Error::PoolTimedOut))
}

/// The pool retries a refused connection (as if the server were starting) until its acquire
/// timeout and then reports only "pool timed out", which hides a wrong host or port. One
/// direct connection attempt says why; `None` if it now succeeds.
async fn explain_postgres(url: &str) -> Option<DbErr> {
    let conn_err = |e: sqlx::Error| DbErr::Conn(RuntimeErr::SqlxError(Arc::new(e)));
    let options = match PgConnectOptions::from_str(url) {
        Ok(options) => options,
        Err(e) => return Some(conn_err(e)),
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, options.connect()).await {
        Ok(Ok(_connection)) => None,
        Ok(Err(e)) => Some(conn_err(e)),
        Err(_) => Some(DbErr::Conn(RuntimeErr::Internal(format!(
            "no answer from the database server within {}s",
            CONNECT_TIMEOUT.as_secs()
        )))),
    }
}

/// A Postgres pool of its own for taking holds, so a flash sale's reserve batches never queue
/// behind sign-ins, listings and the admin's reads for the main pool's connections. Its
/// commits are as durable as every other: a `201` hold survives a Postgres crash (group
/// commit already spreads the WAL flush over each batch of holds, so it costs no throughput).
///
/// Every connection is opened in the background at start and kept (`min_connections` =
/// `max_connections`): a drop's first batch must not wait for a connection to be opened on
/// a machine busy with the stampede itself — that wait was 100 ms of the flash sale's p99.
/// Opening them does not delay start-up ([`connect`]'s pool has shown the server answers).
///
/// # Errors
/// An unusable URL (the connections themselves open in the background).
pub async fn connect_for_holds(
    url: &str,
    max_connections: u32,
    acquire_timeout: Duration,
    mode: PoolMode,
) -> Result<Db, DbErr> {
    let mut options = pool_options(url, acquire_timeout, mode);
    options
        .max_connections(max_connections)
        .min_connections(max_connections)
        .connect_lazy(true);
    let db = Database::connect(options).await?;
    if db.get_database_backend() == sea_orm::DbBackend::Postgres {
        let pool = db.get_postgres_connection_pool().clone();
        tokio::spawn(async move {
            // Held together, so each is a connection of its own; then idle in the pool.
            // One that fails to open now opens on first use instead.
            let mut opening = tokio::task::JoinSet::new();
            for _ in 0..max_connections {
                let pool = pool.clone();
                opening.spawn(async move { pool.acquire().await });
            }
            drop(opening.join_all().await);
        });
    }
    Ok(Db::new(db, mode))
}

/// What every pool shares: no statement logging, bounded waits for a new connection and
/// for a pooled one, and a ping before a pooled connection is handed out (the default, set
/// here because recovery depends on it): one Postgres closed — a restart, a terminated
/// backend — is replaced then, not found by a failing request. A refused connection is
/// retried by the pool with a short backoff (10 ms doubling, at most a fifth of the acquire
/// timeout), so requests are served again within moments of the server's return.
fn pool_options(url: &str, acquire_timeout: Duration, mode: PoolMode) -> ConnectOptions {
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .sqlx_logging(false)
        .connect_timeout(CONNECT_TIMEOUT)
        .acquire_timeout(acquire_timeout)
        .test_before_acquire(true);
    if mode == PoolMode::Transaction && !url.starts_with("sqlite:") {
        transaction_pooled(&mut options);
    }
    options
}

/// The pool behind a transaction-mode pooler without protocol-level prepared statements
/// (PgBouncer before 1.21): no statement cache, since a statement prepared on one server
/// connection is unknown to the next one the pooler lends (sqlx still names each statement
/// and leaves it on the server, so the pooler must run `DEALLOCATE ALL` as it takes a server
/// back: `server_reset_query_always = 1`); and no ping before a checkout, which would reach
/// the pooler, not a server. [`Db`] does the rest.
fn transaction_pooled(options: &mut ConnectOptions) {
    options
        .test_before_acquire(false)
        .map_sqlx_postgres_opts(|o: PgConnectOptions| o.statement_cache_capacity(0));
}

/// Begins a transaction that writes. On SQLite it takes the write lock at `BEGIN`
/// (`IMMEDIATE`), so a transaction that reads before it writes waits its turn instead of
/// failing with `SQLITE_BUSY` on upgrade; on Postgres it is a plain `BEGIN`.
///
/// # Errors
/// The database refused to begin.
pub async fn begin_write(db: &impl Conn) -> Result<DatabaseTransaction, DbErr> {
    db.begin_with_options(TransactionOptions {
        sqlite_transaction_mode: Some(sea_orm::SqliteTransactionMode::Immediate),
        ..TransactionOptions::default()
    })
    .await
}

/// A read-only view of one instant, for figures read by several queries that must agree:
/// `REPEATABLE READ` on Postgres; a SQLite transaction is a snapshot already.
///
/// # Errors
/// The transaction cannot begin.
pub async fn begin_snapshot(db: &impl Conn) -> Result<DatabaseTransaction, DbErr> {
    let isolation = match db.get_database_backend() {
        sea_orm::DbBackend::Postgres => Some(sea_orm::IsolationLevel::RepeatableRead),
        _ => None,
    };
    db.begin_with_config(isolation, None).await
}

/// Inserts `row` and returns it; `taken` when a unique index already holds its key (one
/// entry per buyer, one account per address, ...).
///
/// # Errors
/// `taken`, or database failure.
pub async fn insert_unique<A>(
    db: &impl ConnectionTrait,
    row: A,
    taken: crate::Error,
) -> crate::error::Result<<A::Entity as EntityTrait>::Model>
where
    A: ActiveModelTrait + Send,
    <A::Entity as EntityTrait>::Model: IntoActiveModel<A>,
{
    match A::Entity::insert(row).exec_with_returning(db).await {
        Ok(model) => Ok(model),
        Err(e) if is_unique_violation(&e) => Err(taken),
        // Every caller inserts a row of the signed-in account's under a parent it has read in
        // the same transaction: a broken foreign key means the account was deleted meanwhile.
        Err(e) if is_foreign_key_violation(&e) => Err(crate::Error::AccountGone),
        Err(e) => Err(e.into()),
    }
}

pub fn is_unique_violation(err: &DbErr) -> bool {
    matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_)))
}

/// The database is there but cannot take more work now: no pooled connection came free
/// within the acquire timeout (Postgres refusing connections while it restarts ends the same
/// way: the pool retries them until then), Postgres refused a connection for want of slots
/// ("too many clients", class 53), or SQLite stayed locked past its busy timeout. A request
/// that meets this is answered 503 with `Retry-After`, not 500.
pub fn is_overload(err: &DbErr) -> bool {
    let sqlx_error = match err {
        DbErr::ConnectionAcquire(sea_orm::error::ConnAcquireErr::Timeout) => return true,
        DbErr::Conn(RuntimeErr::SqlxError(e))
        | DbErr::Exec(RuntimeErr::SqlxError(e))
        | DbErr::Query(RuntimeErr::SqlxError(e)) => e,
        _ => return false,
    };
    match &**sqlx_error {
        sqlx::Error::PoolTimedOut => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // SQLite's codes are numbers whose low byte is the primary code: 5 busy, 6 locked.
            match code.parse::<u32>() {
                Ok(sqlite) if code.len() < 5 => matches!(sqlite & 0xff, 5 | 6),
                _ => code.starts_with("53"),
            }
        }),
        _ => false,
    }
}

/// Ids as a Postgres array literal (`{1,2,3}`), bound as text and cast in the statement
/// (`$1::text::bigint[]`): one statement whatever the count, where an `IN` list of n
/// parameters is a new statement, parsed and planned anew, for every n. Ids are integers,
/// so nothing needs quoting.
pub fn postgres_array(ids: &[i64]) -> String {
    let items: Vec<String> = ids.iter().map(i64::to_string).collect();
    format!("{{{}}}", items.join(","))
}

/// An error of the same class as `error` (unavailable, or overloaded) for each caller that
/// waited on one shared statement which failed with it: `DbErr` is not `Clone`, and every
/// caller must hear the same answer (503 `database_unavailable`).
pub fn same_failure(error: &DbErr) -> DbErr {
    if is_unavailable(error) {
        DbErr::Conn(RuntimeErr::Internal(crate::error::chain(error)))
    } else {
        DbErr::ConnectionAcquire(sea_orm::error::ConnAcquireErr::Timeout)
    }
}

/// The database is not there right now: the connection broke or was refused (an I/O error,
/// SQLSTATE class 08), Postgres is shutting down, restarting or starting up (57P01, 57P02,
/// 57P03), or our backend was terminated by an administrator (57P01 again). Nothing more can
/// be done until it is back; a request that meets this is answered 503
/// `database_unavailable` with `Retry-After`, and a job is tried again later without
/// counting it as a failure. Whether a commit that met it took effect is unknown, which is
/// why every write is idempotent or re-checked.
pub fn is_unavailable(err: &DbErr) -> bool {
    let sqlx_error = match err {
        DbErr::ConnectionAcquire(sea_orm::error::ConnAcquireErr::ConnectionClosed) => return true,
        DbErr::Conn(RuntimeErr::SqlxError(e))
        | DbErr::Exec(RuntimeErr::SqlxError(e))
        | DbErr::Query(RuntimeErr::SqlxError(e)) => e,
        // sea-orm's own word for a connection it could not open or lost.
        DbErr::Conn(RuntimeErr::Internal(_)) => return true,
        _ => return false,
    };
    match &**sqlx_error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            code.len() == 5
                && (code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03"))
        }),
        _ => false,
    }
}

/// Postgres gave up on the transaction to break a deadlock (40P01) or a serialization
/// conflict (40001): nothing was written, and running it again is the documented answer.
pub fn is_retryable(err: &DbErr) -> bool {
    let (DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e))) = err
    else {
        return false;
    };
    matches!(&**e, sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("40P01" | "40001")))
}

pub fn is_foreign_key_violation(err: &DbErr) -> bool {
    matches!(
        err.sql_err(),
        Some(SqlErr::ForeignKeyConstraintViolation(_))
    )
}
