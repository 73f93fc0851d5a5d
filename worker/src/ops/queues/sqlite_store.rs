//! apalis-sqlite's `Jobs` table, read with indexed `LIMIT` queries and changed with one
//! statement per action.

use chrono::{DateTime, Utc};
use entity::ops::ItemState;
use sea_orm::{ConnectionTrait, DbBackend, FromQueryResult, Statement, Value};

use super::{Affected, Counts, InspectError, Item, Page, Result, at, encode};

/// A `Jobs` row, as the console reads it.
#[derive(FromQueryResult)]
struct Row {
    id: String,
    job: Vec<u8>,
    status: String,
    attempts: i64,
    max_attempts: i64,
    run_at: i64,
    last_result: Option<String>,
    lock_by: Option<String>,
    done_at: Option<i64>,
}

const COLUMNS: &str =
    "id, job, status, attempts, max_attempts, run_at, last_result, lock_by, done_at";

/// apalis-sqlite's statuses for each state (a failed row is retried until its attempts
/// run out; a killed one never).
fn condition(state: ItemState) -> &'static str {
    match state {
        ItemState::Ready => "status = 'Pending' AND run_at <= ?",
        ItemState::Scheduled => "status = 'Pending' AND run_at > ?",
        ItemState::InFlight => "status IN ('Queued', 'Running') AND ? IS NOT NULL",
        ItemState::Retrying => "status = 'Failed' AND attempts < max_attempts AND ? IS NOT NULL",
        ItemState::Failed => {
            "(status = 'Killed' OR (status = 'Failed' AND attempts >= max_attempts)) AND ? IS NOT NULL"
        }
        ItemState::Done => "status = 'Done' AND ? IS NOT NULL",
    }
}

fn statement(sql: &str, values: Vec<Value>) -> Statement {
    Statement::from_sql_and_values(DbBackend::Sqlite, sql, values)
}

pub async fn counts(db: &entity::db::Db, name: &str, now: DateTime<Utc>) -> Result<Counts> {
    let mut counts = Counts::default();
    for state in [
        ItemState::Ready,
        ItemState::Scheduled,
        ItemState::InFlight,
        ItemState::Retrying,
        ItemState::Failed,
    ] {
        let sql = format!(
            "SELECT COUNT(*) AS n FROM Jobs WHERE job_type = ? AND {}",
            condition(state)
        );
        let n = db
            .query_one_raw(statement(&sql, vec![name.into(), now.timestamp().into()]))
            .await?
            .and_then(|row| row.try_get::<i64>("", "n").ok())
            .unwrap_or(0);
        let n = u64::try_from(n).unwrap_or(0);
        match state {
            ItemState::Ready => counts.ready = n,
            ItemState::Scheduled => counts.scheduled = n,
            ItemState::InFlight => counts.in_flight = n,
            ItemState::Retrying => counts.retrying = n,
            _ => counts.failed = n,
        }
    }
    let oldest = format!(
        "SELECT MIN(run_at) AS at FROM Jobs WHERE job_type = ? AND {}",
        condition(ItemState::Ready)
    );
    counts.oldest_ready_at = db
        .query_one_raw(statement(
            &oldest,
            vec![name.into(), now.timestamp().into()],
        ))
        .await?
        .and_then(|row| row.try_get::<Option<i64>>("", "at").ok().flatten())
        .and_then(at);
    Ok(counts)
}

fn to_item(row: Row, now: DateTime<Utc>) -> Item {
    let state = match row.status.as_str() {
        "Done" => ItemState::Done,
        "Killed" => ItemState::Failed,
        "Failed" if row.attempts >= row.max_attempts => ItemState::Failed,
        "Failed" => ItemState::Retrying,
        "Queued" | "Running" => ItemState::InFlight,
        _ if row.run_at > now.timestamp() => ItemState::Scheduled,
        _ => ItemState::Ready,
    };
    Item {
        payload: serde_json::from_slice(&row.job).unwrap_or(serde_json::Value::Null),
        state,
        attempts: row.attempts,
        last_error: row.last_result.filter(|r| !r.is_empty() && r != "null"),
        due_at: at(row.run_at),
        finished_at: row.done_at.and_then(at),
        worker: row.lock_by,
        id: row.id,
    }
}

pub async fn page(
    db: &entity::db::Db,
    name: &str,
    state: ItemState,
    position: Option<&str>,
    limit: u32,
    now: DateTime<Utc>,
) -> Result<Page> {
    // Position: the last row's (run_at, id); the index on (job_type, status, run_at)
    // serves the order.
    let after = match position {
        None => None,
        Some(p) => Some(
            p.split_once(':')
                .and_then(|(r, id)| Some((r.parse::<i64>().ok()?, id.to_owned())))
                .ok_or(InspectError::BadCursor)?,
        ),
    };
    let (run_at, id) = after.unwrap_or((i64::MIN, String::new()));
    let sql = format!(
        "SELECT {COLUMNS} FROM Jobs WHERE job_type = ? AND {} \
         AND (run_at > ? OR (run_at = ? AND id > ?)) ORDER BY run_at, id LIMIT ?",
        condition(state)
    );
    let rows = Row::find_by_statement(statement(
        &sql,
        vec![
            name.into(),
            now.timestamp().into(),
            run_at.into(),
            run_at.into(),
            id.into(),
            i64::from(limit).into(),
        ],
    ))
    .all(db)
    .await?;
    let next = (rows.len() == limit as usize)
        .then(|| {
            rows.last()
                .map(|r| encode(&format!("{}:{}", r.run_at, r.id)))
        })
        .flatten();
    Ok(Page {
        items: rows.into_iter().map(|r| to_item(r, now)).collect(),
        next,
    })
}

pub async fn item(
    db: &entity::db::Db,
    name: &str,
    id: &str,
    now: DateTime<Utc>,
) -> Result<Option<Item>> {
    let sql = format!("SELECT {COLUMNS} FROM Jobs WHERE job_type = ? AND id = ?");
    Ok(
        Row::find_by_statement(statement(&sql, vec![name.into(), id.into()]))
            .one(db)
            .await?
            .map(|r| to_item(r, now)),
    )
}

const FAILED: &str = "(status = 'Killed' OR (status = 'Failed' AND attempts >= max_attempts))";

pub async fn requeue(db: &entity::db::Db, name: &str, id: Option<&str>) -> Result<Affected> {
    let sql = format!(
        "UPDATE Jobs SET status = 'Pending', attempts = 0, last_result = NULL, \
         lock_by = NULL, lock_at = NULL, done_at = NULL, run_at = strftime('%s', 'now') \
         WHERE job_type = ? AND {FAILED} AND (? IS NULL OR id = ?)"
    );
    let id: Value = id.map(str::to_owned).into();
    Ok(db
        .execute_raw(statement(&sql, vec![name.into(), id.clone(), id]))
        .await?
        .rows_affected())
}

pub async fn discard(db: &entity::db::Db, name: &str, id: Option<&str>) -> Result<Affected> {
    let sql = format!("DELETE FROM Jobs WHERE job_type = ? AND {FAILED} AND (? IS NULL OR id = ?)");
    let id: Value = id.map(str::to_owned).into();
    Ok(db
        .execute_raw(statement(&sql, vec![name.into(), id.clone(), id]))
        .await?
        .rows_affected())
}

pub async fn run_now(
    db: &entity::db::Db,
    name: &str,
    id: &str,
    now: DateTime<Utc>,
) -> Result<Affected> {
    let sql = "UPDATE Jobs SET run_at = ? WHERE job_type = ? AND id = ? \
               AND status = 'Pending' AND run_at > ?";
    Ok(db
        .execute_raw(statement(
            sql,
            vec![
                now.timestamp().into(),
                name.into(),
                id.into(),
                now.timestamp().into(),
            ],
        ))
        .await?
        .rows_affected())
}

pub async fn remove_done(db: &entity::db::Db, name: &str) -> Result<u64> {
    Ok(db
        .execute_raw(statement(
            "DELETE FROM Jobs WHERE job_type = ? AND status = 'Done'",
            vec![name.into()],
        ))
        .await?
        .rows_affected())
}
