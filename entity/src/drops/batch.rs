//! Group commit for reserves on Postgres: the buyers who asked for one drop while the
//! previous statement for it ran are served by one statement — one lock of the drop's row,
//! one decrement by up to *k*, *k* holds inserted — instead of *k* statements queueing on
//! that row. One statement per buyer is what capped a drop at Postgres's single-row
//! ceiling; this goes past it.
//!
//! The statement serves only buyers it can serve exactly as alone: open drop, a unit left,
//! under the purchase limit (the rule of `check_purchase_limit`), no active hold. The rest
//! get no unit here and are answered by [`super::reserve`], which says why with the same
//! code as ever (and may take over a due hold).

use chrono::{DateTime, Duration, Utc};
use sea_orm::{DbBackend, FromQueryResult, Statement};

use super::{ReservationStatus, Stock};
use crate::{
    error::Result,
    models::{drops::DropMode, reservations},
};

/// What one batched statement did.
#[derive(Debug, Default)]
pub struct Batch {
    /// The holds taken, one per served buyer, in the order asked.
    pub reserved: Vec<reservations::Model>,
    /// The drop's stock after the statement, when it took any unit.
    pub stock: Option<Stock>,
}

/// The batch, served in arrival order: $1 drop, $2 buyers, $3 now, $4 hold end, $5 `active`,
/// $6 `first_come`.
/// `d` locks the drop's row and reads its newest stock, so `LIMIT` never hands out more units
/// than exist (the CHECK on available_stock would refuse the statement anyway).
const BATCH_SQL: &str = r#"
    WITH asked AS (
        SELECT a.user_id, a.ord
          FROM unnest($2::text::bigint[]) WITH ORDINALITY AS a(user_id, ord)
    ), d AS (
        SELECT id, available_stock, max_per_user
          FROM drops
         WHERE id = $1
           AND available_stock > 0
           AND starts_at <= $3
           AND (ends_at IS NULL OR ends_at > $3)
           AND (mode = $6 OR drawn_at IS NOT NULL)
           FOR UPDATE
    ), served AS (
        SELECT a.user_id, a.ord
          FROM asked a CROSS JOIN d
         WHERE (SELECT count(*) FROM purchases p
                 WHERE p.drop_id = $1 AND p.user_id = a.user_id) < d.max_per_user
           AND NOT EXISTS (SELECT 1 FROM reservations r
                            WHERE r.drop_id = $1 AND r.user_id = a.user_id AND r.status = $5)
         ORDER BY a.ord
         LIMIT (SELECT available_stock FROM d)
    ), taken AS (
        UPDATE drops
           SET available_stock = available_stock - (SELECT count(*) FROM served),
               stock_version = stock_version + 1,
               updated_at = $3,
               sold_out_at = COALESCE(sold_out_at, CASE
                   WHEN available_stock = (SELECT count(*) FROM served) THEN $3::timestamptz
               END)
         WHERE id = $1 AND EXISTS (SELECT 1 FROM served)
     RETURNING id, available_stock, stock_version, price_cents, currency
    ), hold AS (
        INSERT INTO reservations
               (drop_id, user_id, status, expires_at, created_at, price_cents, currency)
        SELECT t.id, s.user_id, $5, $4, $3, t.price_cents, t.currency
          FROM served s CROSS JOIN taken t
         ORDER BY s.ord
     RETURNING id, drop_id, user_id, status, expires_at, created_at, ended_at, price_cents,
               currency
    )
    SELECT hold.id, hold.drop_id, hold.user_id, hold.status, hold.expires_at, hold.created_at,
           hold.ended_at, hold.price_cents, hold.currency, taken.available_stock,
           taken.stock_version
      FROM hold CROSS JOIN taken
     ORDER BY hold.id"#;

/// Takes one unit each for as many of `user_ids` (distinct, in arrival order) as can be
/// served, in one statement. Postgres only.
///
/// # Errors
/// Database failure, including a unique violation when a buyer's hold was taken elsewhere
/// while the statement ran (nothing was written; serve them one by one).
pub async fn reserve_batch(
    db: &impl crate::db::Conn,
    drop_id: i64,
    user_ids: &[i64],
    ttl: Duration,
    now: DateTime<Utc>,
) -> Result<Batch> {
    let statement = Statement::from_sql_and_values(
        DbBackend::Postgres,
        BATCH_SQL,
        [
            drop_id.into(),
            // An array literal (`{1,2,3}`): ids are integers, so nothing needs quoting.
            crate::db::postgres_array(user_ids).into(),
            now.into(),
            (now + ttl).into(),
            ReservationStatus::Active.into(),
            DropMode::FirstCome.into(),
        ],
    );
    let rows = db.query_all_raw(statement).await?;
    let mut batch = Batch::default();
    for row in rows {
        batch.stock = Some(Stock {
            drop_id,
            available_stock: row.try_get("", "available_stock")?,
            version: row.try_get("", "stock_version")?,
        });
        batch
            .reserved
            .push(reservations::Model::from_query_result(&row, "")?);
    }
    Ok(batch)
}
