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
    /// The request broke a rule of the domain (400 `validation_failed`, with its message).
    #[error("{0}")]
    Invalid(#[from] Violation),
    /// Our own machinery failed (hashing a password, serialising a payload): not the
    /// request's fault, so never a 4xx.
    #[error("{0}")]
    Internal(String),
    #[error("database error")]
    Database(#[from] DbErr),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A rule of the domain that input broke: each names the field (as the API spells it) and
/// reads as the message a client is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    #[error("{0} must not be blank")]
    Blank(&'static str),
    #[error("{field} must be at most {max} characters")]
    TooLong { field: &'static str, max: usize },
    #[error("{0} must not contain control characters")]
    ControlCharacters(&'static str),
    #[error("{0} must not contain control characters other than tabs and line breaks")]
    ControlCharactersBesideLineBreaks(&'static str),
    #[error("{0} must not contain bidi-override or zero-width characters")]
    InvisibleCharacters(&'static str),
    #[error("{field} must be between the years {earliest} and {latest}")]
    YearOutOfRange {
        field: &'static str,
        earliest: i32,
        latest: i32,
    },
    #[error("{0} must be an https: URL (http: only for localhost)")]
    NotAWebUrl(&'static str),
    #[error("currency must be a three-letter ISO 4217 code")]
    Currency,
    #[error("{field} must be {min} to {max}")]
    OutOfRange {
        field: &'static str,
        min: i64,
        max: i64,
    },
    #[error("{0} must not be negative")]
    Negative(&'static str),
    #[error("addStock must be positive and total stock at most {max}")]
    StockToAdd { max: i64 },
    #[error("{later} must be after {earlier}")]
    NotAfter {
        later: &'static str,
        earlier: &'static str,
    },
    #[error("{0} must be in the future")]
    NotInTheFuture(&'static str),
    #[error("entriesCloseAt is for draw drops: set mode to \"draw\" or leave it out")]
    EntriesCloseOnFirstCome,
    #[error("a draw drop needs entriesCloseAt")]
    DrawWithoutEntriesClose,
    #[error("entriesCloseAt is for draw drops")]
    NotADraw,
    #[error("the draw is done: its entries are closed for good")]
    DrawDone,
}

impl From<Violation> for String {
    fn from(violation: Violation) -> Self {
        violation.to_string()
    }
}

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
