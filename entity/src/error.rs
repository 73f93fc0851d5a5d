use sea_orm::DbErr;

/// Everything a domain operation can refuse, plus the database failing underneath it.
/// The api maps each variant to a status and a stable code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no drop with that id")]
    DropNotFound,
    #[error("this drop is sold out")]
    SoldOut,
    #[error("you already hold an item of this drop")]
    AlreadyReserved,
    #[error("you have bought as many of this drop as allowed")]
    PurchaseLimitReached,
    #[error("this drop is not open right now")]
    DropNotActive,
    #[error("this drop has stock: reserve instead of joining its waitlist")]
    DropNotSoldOut,
    #[error("you are already on this drop's waitlist")]
    AlreadyWaiting,
    #[error("you are not on this drop's waitlist")]
    NotWaiting,
    #[error("this drop's units go to the winners of its draw: enter the draw instead")]
    DrawPending,
    #[error("this drop is not sold by a draw")]
    NotADraw,
    #[error("this draw takes no more entries")]
    EntriesClosed,
    #[error("you have already entered this draw")]
    AlreadyEntered,
    #[error("you have not entered this draw")]
    NotEntered,
    #[error("no reservation with that id")]
    ReservationNotFound,
    #[error("this reservation has expired")]
    ReservationExpired,
    #[error("this reservation was released")]
    ReservationReleased,
    #[error("this reservation was already purchased")]
    AlreadyPurchased,
    #[error("an account with that email already exists")]
    EmailTaken,
    #[error("no product with that id or slug")]
    ProductNotFound,
    #[error("a product with that slug already exists")]
    SlugTaken,
    #[error("this product is in stock")]
    ProductInStock,
    #[error("that link is invalid or has been used")]
    InvalidToken,
    /// The signed-in account (or its session) was deleted after its token was issued.
    #[error("this account no longer exists; sign in again")]
    AccountGone,
    /// The request broke a rule of the domain (400 `validation_failed`, with this message).
    #[error("{0}")]
    Invalid(String),
    /// Our own machinery failed (hashing a password, serialising a payload): not the
    /// request's fault, so never a 4xx.
    #[error("{0}")]
    Internal(String),
    #[error("database error")]
    Database(#[from] DbErr),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error and every cause under it, `outer: inner: root`, for one log line.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut chain = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        chain.push_str(": ");
        chain.push_str(&cause.to_string());
        source = cause.source();
    }
    chain
}
