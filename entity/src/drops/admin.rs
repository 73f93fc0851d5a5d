//! Creating and editing drops. Input is parsed into [`NewDrop`] and checked against the drop
//! it edits in [`update`], so a value of these types is a valid drop by construction.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter,
    sea_query::{Expr, ExprTrait},
};

use crate::{
    Error,
    currency::Currency,
    db::begin_write,
    error::Result,
    error::Violation,
    models::drops::{self, DropMode},
    text,
};

/// The most units one drop may have.
pub const MAX_STOCK: i32 = 1_000_000;
/// The most characters of a drop's name.
const MAX_NAME: usize = 200;
/// The most characters of a drop's description (the API's schema says the same: every body
/// it allows fits under the default `MAX_BODY_BYTES`).
const MAX_DESCRIPTION: usize = 5_000;

/// A drop as an administrator describes it, before it is checked.
#[derive(Clone, Debug, Default)]
pub struct DropInput {
    pub name: String,
    pub description: Option<String>,
    pub price_cents: i64,
    /// `USD` when left out.
    pub currency: Option<String>,
    pub total_stock: i32,
    /// Opens at once when left out.
    pub starts_at: Option<DateTime<Utc>>,
    /// Open-ended when left out.
    pub ends_at: Option<DateTime<Utc>>,
    /// 1 when left out.
    pub max_per_user: Option<i32>,
    /// First come, first served when left out.
    pub mode: Option<DropMode>,
    /// A draw's close of entries: required for a draw, refused otherwise.
    pub entries_close_at: Option<DateTime<Utc>>,
    /// How long the drop's waitlist offers and a draw's winning holds last; the store's hold
    /// TTL when left out, [`DRAW_OFFER_TTL_SECS`] for a draw.
    pub offer_ttl_secs: Option<i32>,
    /// Only verified accounts may buy; when left out, on for a draw and off otherwise.
    pub require_verified: Option<bool>,
    /// Reserving takes a solved proof-of-work challenge; off when left out.
    pub require_challenge: Option<bool>,
}

/// How long a draw's winners have to buy, unless the drop says otherwise: they learn of
/// their win by email, so a minute would not do.
pub const DRAW_OFFER_TTL_SECS: i32 = 15 * 60;
/// Bounds of a drop's own offer TTL: ten seconds to a week.
const OFFER_TTL_SECS: std::ops::RangeInclusive<i32> = 10..=7 * 24 * 3600;

/// How a drop is sold, checked.
#[derive(Clone, Debug)]
enum Sale {
    FirstCome,
    /// A draw at `entries_close_at`, committed to a seed.
    Draw {
        entries_close_at: DateTime<Utc>,
        seed: String,
        seed_hash: String,
    },
}

/// A drop that can be created.
#[derive(Clone, Debug)]
pub struct NewDrop {
    name: String,
    description: String,
    price_cents: i64,
    currency: Currency,
    total_stock: i32,
    starts_at: DateTime<Utc>,
    ends_at: Option<DateTime<Utc>>,
    max_per_user: i32,
    sale: Sale,
    offer_ttl_secs: Option<i32>,
    require_verified: bool,
    require_challenge: bool,
}

impl NewDrop {
    /// # Errors
    /// `Invalid`, saying what is wrong.
    pub fn parse(input: DropInput, now: DateTime<Utc>) -> Result<Self> {
        let starts_at = input.starts_at.unwrap_or(now);
        check_window(starts_at, input.ends_at)?;
        if !(0..=MAX_STOCK).contains(&input.total_stock) {
            return Err(Violation::OutOfRange {
                field: "totalStock",
                min: 0,
                max: i64::from(MAX_STOCK),
            }
            .into());
        }
        Ok(Self {
            name: parse_name(&input.name)?,
            description: parse_description(input.description.as_deref().unwrap_or_default())?,
            price_cents: parse_price(input.price_cents)?,
            currency: Currency::parse(input.currency.as_deref())?,
            total_stock: input.total_stock,
            starts_at,
            ends_at: input.ends_at,
            max_per_user: parse_max_per_user(input.max_per_user.unwrap_or(1))?,
            sale: parse_sale(&input, starts_at, now)?,
            offer_ttl_secs: parse_offer_ttl(&input)?,
            require_verified: input
                .require_verified
                .unwrap_or(input.mode == Some(DropMode::Draw)),
            require_challenge: input.require_challenge.unwrap_or(false),
        })
    }
}

fn parse_sale(input: &DropInput, starts_at: DateTime<Utc>, now: DateTime<Utc>) -> Result<Sale> {
    match (
        input.mode.unwrap_or(DropMode::FirstCome),
        input.entries_close_at,
    ) {
        (DropMode::FirstCome, None) => Ok(Sale::FirstCome),
        (DropMode::FirstCome, Some(_)) => Err(Violation::EntriesCloseOnFirstCome.into()),
        (DropMode::Draw, None) => Err(Violation::DrawWithoutEntriesClose.into()),
        (DropMode::Draw, Some(close)) => {
            text::instant("entriesCloseAt", close)?;
            check_draw_window(starts_at, close, input.ends_at)?;
            if close <= now {
                return Err(Violation::NotInTheFuture("entriesCloseAt").into());
            }
            let (seed, seed_hash) = super::draw::new_seed();
            Ok(Sale::Draw {
                entries_close_at: close,
                seed,
                seed_hash,
            })
        }
    }
}

fn parse_offer_ttl(input: &DropInput) -> Result<Option<i32>> {
    let draw_default = (input.mode == Some(DropMode::Draw)).then_some(DRAW_OFFER_TTL_SECS);
    match input.offer_ttl_secs.or(draw_default) {
        Some(secs) if !OFFER_TTL_SECS.contains(&secs) => Err(Violation::OutOfRange {
            field: "offerTtlSeconds",
            min: i64::from(*OFFER_TTL_SECS.start()),
            max: i64::from(*OFFER_TTL_SECS.end()),
        }
        .into()),
        ttl => Ok(ttl),
    }
}

/// A draw takes entries from `startsAt` until `entriesCloseAt`, and sells until `endsAt`.
fn check_draw_window(
    starts_at: DateTime<Utc>,
    entries_close_at: DateTime<Utc>,
    ends_at: Option<DateTime<Utc>>,
) -> Result<()> {
    if entries_close_at <= starts_at {
        return Err(Violation::NotAfter {
            later: "entriesCloseAt",
            earlier: "startsAt",
        }
        .into());
    }
    if ends_at.is_some_and(|end| end <= entries_close_at) {
        return Err(Violation::NotAfter {
            later: "endsAt",
            earlier: "entriesCloseAt",
        }
        .into());
    }
    Ok(())
}

/// An edit; `None` leaves a field as it is.
#[derive(Clone, Debug, Default)]
pub struct DropPatch {
    pub name: Option<String>,
    pub description: Option<String>,
    pub price_cents: Option<i64>,
    pub starts_at: Option<DateTime<Utc>>,
    /// A new closing time, to extend or shorten the drop.
    pub ends_at: Option<DateTime<Utc>>,
    pub max_per_user: Option<i32>,
    /// Units to add to both total and available stock; they go on sale at once.
    pub add_stock: Option<i32>,
    /// A new close of a draw's entries, to extend them or close them sooner; only before the
    /// draw.
    pub entries_close_at: Option<DateTime<Utc>>,
    pub require_verified: Option<bool>,
    pub require_challenge: Option<bool>,
}

fn parse_name(raw: &str) -> Result<String> {
    Ok(text::single_line("name", raw, MAX_NAME)?)
}

fn parse_description(raw: &str) -> Result<String> {
    Ok(text::multi_line("description", raw, MAX_DESCRIPTION)?)
}

fn parse_price(cents: i64) -> Result<i64> {
    if cents < 0 {
        return Err(Violation::Negative("priceCents").into());
    }
    Ok(cents)
}

fn parse_max_per_user(limit: i32) -> Result<i32> {
    if !(1..=1000).contains(&limit) {
        return Err(Violation::OutOfRange {
            field: "maxPerUser",
            min: 1,
            max: 1000,
        }
        .into());
    }
    Ok(limit)
}

fn check_window(starts_at: DateTime<Utc>, ends_at: Option<DateTime<Utc>>) -> Result<()> {
    text::instant("startsAt", starts_at)?;
    if let Some(end) = ends_at {
        text::instant("endsAt", end)?;
    }
    if ends_at.is_some_and(|end| end <= starts_at) {
        return Err(Violation::NotAfter {
            later: "endsAt",
            earlier: "startsAt",
        }
        .into());
    }
    Ok(())
}

/// A draw's entries may be closed at another time until it is drawn, never in the past.
fn check_new_close(current: &drops::Model, close: DateTime<Utc>, now: DateTime<Utc>) -> Result<()> {
    text::instant("entriesCloseAt", close)?;
    if current.mode != DropMode::Draw {
        return Err(Violation::NotADraw.into());
    }
    if current.drawn_at.is_some() {
        return Err(Violation::DrawDone.into());
    }
    if close <= now {
        return Err(Violation::NotInTheFuture("entriesCloseAt").into());
    }
    Ok(())
}

/// # Errors
/// Database failure.
pub async fn create(
    db: &impl ConnectionTrait,
    new: NewDrop,
    now: DateTime<Utc>,
) -> Result<drops::Model> {
    let (mode, entries_close_at, seed, seed_hash) = match new.sale {
        Sale::FirstCome => (DropMode::FirstCome, None, None, None),
        Sale::Draw {
            entries_close_at,
            seed,
            seed_hash,
        } => (
            DropMode::Draw,
            Some(entries_close_at),
            Some(seed),
            Some(seed_hash),
        ),
    };
    let model = drops::ActiveModel {
        name: Set(new.name),
        description: Set(new.description),
        price_cents: Set(new.price_cents),
        currency: Set(new.currency.into_string()),
        total_stock: Set(new.total_stock),
        available_stock: Set(new.total_stock),
        stock_version: Set(0),
        starts_at: Set(new.starts_at),
        ends_at: Set(new.ends_at),
        max_per_user: Set(new.max_per_user),
        created_at: Set(now),
        updated_at: Set(now),
        mode: Set(mode),
        entries_close_at: Set(entries_close_at),
        seed_hash: Set(seed_hash),
        seed: Set(seed),
        drawn_at: Set(None),
        offer_ttl_secs: Set(new.offer_ttl_secs),
        sold_out_at: Set(None),
        reserve_attempts: Set(0),
        require_verified: Set(new.require_verified),
        require_challenge: Set(new.require_challenge),
        ..Default::default()
    };
    Ok(drops::Entity::insert(model).exec_with_returning(db).await?)
}

/// Edits a drop; added stock becomes available at once and bumps the version.
///
/// # Errors
/// `DropNotFound`, `Invalid` (the edit would make an invalid drop), or database failure.
pub async fn update(
    db: &impl crate::db::Conn,
    id: i64,
    patch: DropPatch,
    offer_ttl: chrono::Duration,
    now: DateTime<Utc>,
) -> Result<Updated> {
    let txn = begin_write(db).await?;
    let current = drops::Entity::find_by_id(id)
        .one(&txn)
        .await?
        .ok_or(Error::DropNotFound)?;
    check_patch(&current, &patch, now)?;
    let update = patch_statement(id, &patch, now)?;
    let mut drop = update
        .exec_with_returning(&txn)
        .await?
        .into_iter()
        .next()
        .ok_or(Error::DropNotFound)?;
    // Added units go to the waitlist first.
    let mut offers = Vec::new();
    if patch.add_stock.is_some() {
        let (offered, stock) = super::waitlist::settle_units(&txn, id, 0, offer_ttl, now).await?;
        drop.available_stock = stock.available_stock;
        drop.stock_version = stock.version;
        offers = offered;
    }
    txn.commit().await?;
    Ok(Updated {
        drop,
        offers,
        stock_added: patch.add_stock.is_some(),
        close_moved: patch.entries_close_at.is_some(),
    })
}

/// Whether `patch` leaves `current` a valid drop.
fn check_patch(current: &drops::Model, patch: &DropPatch, now: DateTime<Utc>) -> Result<()> {
    let starts_at = patch.starts_at.unwrap_or(current.starts_at);
    let ends_at = patch.ends_at.or(current.ends_at);
    check_window(starts_at, ends_at)?;
    if let Some(close) = patch.entries_close_at {
        check_new_close(current, close, now)?;
    }
    if let Some(close) = patch.entries_close_at.or(current.entries_close_at) {
        check_draw_window(starts_at, close, ends_at)?;
    }
    if let Some(add) = patch.add_stock
        && (add < 1 || current.total_stock.saturating_add(add) > MAX_STOCK)
    {
        return Err(Violation::StockToAdd {
            max: i64::from(MAX_STOCK),
        }
        .into());
    }
    Ok(())
}

/// The `UPDATE` that writes `patch`'s fields (parsed) to drop `id`; added stock is added to
/// the total and to what is on sale, and bumps the stock version.
fn patch_statement(
    id: i64,
    patch: &DropPatch,
    now: DateTime<Utc>,
) -> Result<sea_orm::UpdateMany<drops::Entity>> {
    let mut update = drops::Entity::update_many()
        .col_expr(drops::Column::UpdatedAt, Expr::value(now))
        .filter(drops::Column::Id.eq(id));
    let name = patch.name.as_deref().map(parse_name).transpose()?;
    let description = patch
        .description
        .as_deref()
        .map(parse_description)
        .transpose()?;
    let price_cents = patch.price_cents.map(parse_price).transpose()?;
    let max_per_user = patch.max_per_user.map(parse_max_per_user).transpose()?;
    let edits: [(drops::Column, Option<sea_orm::Value>); 9] = [
        (
            drops::Column::RequireVerified,
            patch.require_verified.map(Into::into),
        ),
        (
            drops::Column::RequireChallenge,
            patch.require_challenge.map(Into::into),
        ),
        (drops::Column::Name, name.map(Into::into)),
        (drops::Column::Description, description.map(Into::into)),
        (drops::Column::PriceCents, price_cents.map(Into::into)),
        (drops::Column::StartsAt, patch.starts_at.map(Into::into)),
        (drops::Column::EndsAt, patch.ends_at.map(Into::into)),
        (drops::Column::MaxPerUser, max_per_user.map(Into::into)),
        (
            drops::Column::EntriesCloseAt,
            patch.entries_close_at.map(Into::into),
        ),
    ];
    for (column, value) in edits {
        if let Some(value) = value {
            update = update.col_expr(column, Expr::value(value));
        }
    }
    if let Some(n) = patch.add_stock {
        update = update
            .col_expr(
                drops::Column::TotalStock,
                Expr::col(drops::Column::TotalStock).add(n),
            )
            .col_expr(
                drops::Column::AvailableStock,
                Expr::col(drops::Column::AvailableStock).add(n),
            )
            .col_expr(
                drops::Column::StockVersion,
                Expr::col(drops::Column::StockVersion).add(1),
            );
    }
    Ok(update)
}

/// A drop after an admin's edit, what of it changed that others must hear of, and the offers
/// its added units made to the waitlist.
#[derive(Clone, Debug)]
pub struct Updated {
    pub drop: drops::Model,
    pub offers: Vec<super::waitlist::Offer>,
    pub stock_added: bool,
    /// A draw's close of entries moved: its draw follows it.
    pub close_moved: bool,
}
