use std::sync::atomic::Ordering::Relaxed;

use chrono::{DateTime, Utc};
use entity::{
    drops::{self, DropView, ReserveOutcome},
    models::{drops as drop_rows, purchases, reservations},
};
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    param::{Header, Path},
    payload::Json,
};

use super::ApiTags;
use crate::{
    abuse::fairness::{self, Taking},
    auth::BearerAuth,
    http::error::ApiResult,
    http::idempotent,
    state::AppState,
};

pub struct DropsApi {
    pub state: AppState,
}

/// How far ahead `GET /api/drops` shows drops that have not opened yet.
const UPCOMING_WINDOW_HOURS: i64 = 24;

/// What every view of a drop shows.
#[derive(Object)]
#[oai(rename_all = "camelCase", skip_serializing_if_is_none)]
pub struct DropFields {
    id: i64,
    name: String,
    description: String,
    /// Price in the currency's minor unit (cents).
    price_cents: i64,
    /// ISO 4217 code.
    currency: String,
    total_stock: i32,
    available_stock: i32,
    /// Grows with every stock change; matches `version` in `stock_update` frames.
    version: i64,
    starts_at: DateTime<Utc>,
    /// Open-ended when absent.
    ends_at: Option<DateTime<Utc>>,
    /// How many one buyer may purchase.
    max_per_user: i32,
    /// `first_come` (reserve from `startsAt`) or `draw` (enter until `entriesCloseAt`; the
    /// units go to the draw's winners, see `GET /api/drops/{dropId}/draw`).
    mode: SaleMode,
    /// A draw's close of entries, when its winners are drawn.
    entries_close_at: Option<DateTime<Utc>>,
    /// A draw's commitment: SHA-256 (hex) of the seed its winners are drawn with.
    seed_hash: Option<String>,
    /// When the draw was done.
    drawn_at: Option<DateTime<Utc>>,
    /// How long the drop's waitlist offers (and a draw's winning holds) last, when it sets
    /// its own; the store's hold TTL otherwise.
    offer_ttl_seconds: Option<i32>,
    /// Only accounts with a verified email may reserve, join the waitlist or enter the draw.
    require_verified: bool,
    /// Reserving takes a solved proof-of-work challenge: `GET /api/challenge`, solve it, and
    /// send the solution in `X-Altcha`.
    require_challenge: bool,
}

/// How a drop's units find buyers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, poem_openapi::Enum)]
#[oai(rename_all = "snake_case")]
pub enum SaleMode {
    FirstCome,
    Draw,
}

impl From<drop_rows::DropMode> for SaleMode {
    fn from(mode: drop_rows::DropMode) -> Self {
        match mode {
            drop_rows::DropMode::FirstCome => Self::FirstCome,
            drop_rows::DropMode::Draw => Self::Draw,
        }
    }
}

impl From<SaleMode> for drop_rows::DropMode {
    fn from(mode: SaleMode) -> Self {
        match mode {
            SaleMode::FirstCome => Self::FirstCome,
            SaleMode::Draw => Self::Draw,
        }
    }
}

impl From<drop_rows::Model> for DropFields {
    fn from(d: drop_rows::Model) -> Self {
        Self {
            id: d.id,
            name: d.name,
            description: d.description,
            price_cents: d.price_cents,
            currency: d.currency,
            total_stock: d.total_stock,
            available_stock: d.available_stock,
            version: d.stock_version,
            starts_at: d.starts_at,
            ends_at: d.ends_at,
            max_per_user: d.max_per_user,
            mode: d.mode.into(),
            entries_close_at: d.entries_close_at,
            seed_hash: d.seed_hash,
            drawn_at: d.drawn_at,
            offer_ttl_seconds: d.offer_ttl_secs,
            require_verified: d.require_verified,
            require_challenge: d.require_challenge,
        }
    }
}

/// Whether a drop can be taken now.
#[derive(poem_openapi::Enum, Clone, Copy, Debug, PartialEq, Eq)]
#[oai(rename_all = "snake_case")]
pub enum DropStatus {
    /// Reservable now.
    Live,
    /// Opens within 24 hours.
    Upcoming,
    /// A draw taking entries: enter with `POST /api/drops/{dropId}/entries`.
    EntriesOpen,
}

wire_enum! {
    /// Where a hold stands.
    HoldStatus from entity::models::reservations::ReservationStatus {
        /// Running: buy before `expiresAt`.
        Active,
        /// Bought.
        Purchased,
        /// Its time ran out; the unit went back on sale.
        Expired,
        /// Let go before its time (an admin closed the drop, or it was handed on).
        Released,
    }
}

/// A drop as buyers see it.
#[derive(Object)]
#[oai(rename_all = "camelCase")]
pub struct Drop {
    #[oai(flatten)]
    drop: DropFields,
    status: DropStatus,
    /// Holds that are running now.
    active_reservations: Vec<Holder>,
    /// The last 10 purchases, newest first.
    recent_buyers: Vec<Buyer>,
}

#[derive(Object)]
#[oai(rename_all = "camelCase")]
struct Holder {
    reservation_id: i64,
    display_name: String,
    expires_at: DateTime<Utc>,
}

#[derive(Object)]
#[oai(rename_all = "camelCase")]
struct Buyer {
    display_name: String,
    purchased_at: DateTime<Utc>,
}

impl Drop {
    pub fn from_view(view: DropView, now: DateTime<Utc>) -> Self {
        let drawing = view.drop.mode == drop_rows::DropMode::Draw && view.drop.drawn_at.is_none();
        let status = match (drops::is_open(&view.drop, now), drawing) {
            (false, _) => DropStatus::Upcoming,
            (true, true) => DropStatus::EntriesOpen,
            (true, false) => DropStatus::Live,
        };
        Self {
            status,
            drop: view.drop.into(),
            active_reservations: view
                .active_reservations
                .into_iter()
                .map(|h| Holder {
                    reservation_id: h.reservation_id,
                    display_name: h.display_name,
                    expires_at: h.expires_at,
                })
                .collect(),
            recent_buyers: view
                .recent_buyers
                .into_iter()
                .map(|b| Buyer {
                    display_name: b.display_name,
                    purchased_at: b.purchased_at,
                })
                .collect(),
        }
    }
}

/// A hold on one unit of a drop.
#[derive(Object)]
#[oai(rename_all = "camelCase")]
pub struct Reservation {
    id: i64,
    drop_id: i64,
    status: HoldStatus,
    /// Buy before this instant; at it, the unit goes back on sale.
    expires_at: DateTime<Utc>,
    created_at: DateTime<Utc>,
    /// The price when the hold was taken, in minor units: what buying it costs, whatever
    /// the drop's price is changed to meanwhile.
    price_cents: i64,
    /// ISO 4217 code of `priceCents`.
    currency: String,
}

impl From<reservations::Model> for Reservation {
    fn from(r: reservations::Model) -> Self {
        Self {
            id: r.id,
            drop_id: r.drop_id,
            status: r.status.into(),
            expires_at: r.expires_at,
            created_at: r.created_at,
            price_cents: r.price_cents,
            currency: r.currency,
        }
    }
}

#[derive(Object)]
#[oai(rename_all = "camelCase")]
pub struct Purchase {
    id: i64,
    reservation_id: i64,
    drop_id: i64,
    amount_cents: i64,
    currency: String,
    purchased_at: DateTime<Utc>,
}

impl From<purchases::Model> for Purchase {
    fn from(p: purchases::Model) -> Self {
        Self {
            id: p.id,
            reservation_id: p.reservation_id,
            drop_id: p.drop_id,
            amount_cents: p.amount_cents,
            currency: p.currency,
            purchased_at: p.created_at,
        }
    }
}

#[derive(ApiResponse)]
enum Reserved {
    /// The unit is yours until `expiresAt`.
    #[oai(status = 201)]
    Created(Json<Reservation>),
}

#[derive(ApiResponse)]
enum Purchased {
    /// Bought.
    #[oai(status = 201)]
    Created(Json<Purchase>),
}

#[OpenApi(prefix_path = "/api/drops", tag = "ApiTags::Drops")]
impl DropsApi {
    /// Drops on sale now and opening soon
    ///
    /// Live drops and those opening within 24 hours, with who holds units right now and the
    /// latest buyers.
    #[oai(path = "/", method = "get", operation_id = "listDrops")]
    async fn list(&self) -> ApiResult<Json<Vec<Drop>>> {
        let soon = chrono::Duration::hours(UPCOMING_WINDOW_HOURS);
        let views = self
            .state
            .caches
            .listing
            .get_or_load(|| drops::list_public(&self.state.db, Utc::now(), soon))
            .await?;
        let now = Utc::now();
        Ok(Json(
            views
                .iter()
                .cloned()
                .map(|v| Drop::from_view(v, now))
                .collect(),
        ))
    }

    /// One drop
    ///
    /// Any drop by id, live or not, with its stock and state. 404 `drop_not_found` for an
    /// unknown id.
    #[oai(path = "/:dropId", method = "get", operation_id = "getDrop")]
    async fn get(&self, #[oai(name = "dropId")] drop_id: Path<i64>) -> ApiResult<Json<Drop>> {
        let now = Utc::now();
        Ok(Json(Drop::from_view(
            drops::view(&self.state.db, drop_id.0, now).await?,
            now,
        )))
    }

    /// Hold one unit
    ///
    /// Holds one unit for you for `RESERVATION_TTL_SECS` (60 s by default). Buy it with
    /// `POST /api/drops/{reservationId}/purchase` before `expiresAt`; after that it goes back
    /// on sale. One active hold per drop per buyer. A drop with `requireVerified` takes only
    /// verified accounts (403 `email_unverified`); one with `requireChallenge` takes a solved
    /// challenge in `X-Altcha` (403 `challenge_required` / `challenge_failed`, see
    /// `GET /api/challenge`). One address takes at most `HOLDS_PER_DROP_PER_ADDRESS` holds of
    /// a drop (429 `address_limit_reached`).
    #[oai(
        path = "/:dropId/reserve",
        method = "post",
        operation_id = "reserveDrop"
    )]
    async fn reserve(
        &self,
        req: &poem::Request,
        auth: BearerAuth,
        #[oai(name = "dropId")] drop_id: Path<i64>,
        #[oai(name = "X-Altcha", validator(max_length = 4096))] altcha: Header<Option<String>>,
    ) -> ApiResult<Reserved> {
        let (now, drop_id) = (Utc::now(), drop_id.0);
        self.state.reserve_attempts.count(drop_id);
        if self.state.caches.sold_out.refuses(drop_id, now) {
            let metrics = &self.state.metrics;
            metrics.reservations_sold_out_cached.fetch_add(1, Relaxed);
            return Err(entity::Error::SoldOut.into());
        }
        let user_id = auth.0.user_id;
        let taking = Taking::Hold;
        let slot = fairness::admit(
            self.state.admission(),
            req,
            user_id,
            drop_id,
            taking,
            altcha.as_deref(),
        );
        let slot = slot.await?;
        let outcome = self.state.reserves.reserve(drop_id, user_id).await;
        answer_reserve(&self.state, drop_id, slot, outcome, now).await
    }

    /// Buy a held unit
    ///
    /// The path id is the reservation's (as in the original sneaker-drop API). The price is
    /// the one locked into the hold when it was taken (`priceCents` of the reservation), not
    /// the drop's current price. A hold is honoured until its own `expiresAt`, even when the
    /// drop closes (`endsAt`) in the meantime; at `expiresAt` it is 410
    /// `reservation_expired`. Send an `Idempotency-Key` header to make retries safe: a retry
    /// with the same key returns the first answer; the same key for another request is
    /// refused with 422.
    #[oai(
        path = "/:reserveId/purchase",
        method = "post",
        operation_id = "purchaseReservation"
    )]
    async fn purchase(
        &self,
        auth: BearerAuth,
        #[oai(name = "reserveId")] reservation_id: Path<i64>,
        #[oai(
            name = "Idempotency-Key",
            validator(min_length = 1, max_length = 255, pattern = r"^[!-~]+$")
        )]
        idempotency_key: Header<Option<String>>,
    ) -> ApiResult<Purchased> {
        let user_id = auth.0.user_id;
        let request = format!("POST /api/drops/{}/purchase", reservation_id.0);
        let purchase = idempotent::once(
            &self.state.db,
            user_id,
            idempotency_key.as_deref(),
            &request,
            || async {
                let bought =
                    drops::purchase(&self.state.db, reservation_id.0, user_id, Utc::now()).await?;
                self.state.metrics.purchases.fetch_add(1, Relaxed);
                Ok(Purchase::from(bought))
            },
        )
        .await?;
        Ok(Purchased::Created(Json(purchase)))
    }
}

/// What a reserve's outcome tells the buyer, the sold-out cache and the address's slot (given
/// back unless a hold was taken).
async fn answer_reserve(
    state: &AppState,
    drop_id: i64,
    slot: fairness::AddressSlot<'_>,
    outcome: entity::error::Result<ReserveOutcome>,
    now: DateTime<Utc>,
) -> ApiResult<Reserved> {
    let metrics = &state.metrics;
    match outcome {
        Ok(ReserveOutcome::Reserved(reserved)) => {
            state.caches.sold_out.rechecked(drop_id);
            metrics.reservations_created.fetch_add(1, Relaxed);
            Ok(Reserved::Created(Json(reserved.reservation.into())))
        }
        Ok(ReserveOutcome::SoldOut(sold_out)) => {
            slot.give_back().await;
            state.caches.sold_out.record(drop_id, sold_out, now);
            metrics.reservations_sold_out.fetch_add(1, Relaxed);
            Err(entity::Error::SoldOut.into())
        }
        Err(error) => {
            state.caches.sold_out.rechecked(drop_id);
            slot.give_back().await;
            Err(error.into())
        }
    }
}
