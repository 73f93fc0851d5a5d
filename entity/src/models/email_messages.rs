//! `email_messages` table.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "email_messages")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub kind: MessageKind,
    pub recipient: String,
    pub subscription_id: Option<i64>,
    pub dedupe_key: String,
    pub payload: Json,
    pub status: MessageStatus,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub sent_at: Option<DateTimeUtc>,
    /// Earliest instant the next send may start: a lease while a send runs, the backoff
    /// deadline after a transient failure.
    pub next_attempt_at: Option<DateTimeUtc>,
    /// Claims of this row that ended with no outcome recorded (the sending worker died): each
    /// may have sent the message once more than the ledger says.
    pub lapsed_claims: i32,
    /// The restock wave a restock alert went out in.
    pub wave: Option<i32>,
}

/// What an email is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "Text", rename_all = "snake_case")]
pub enum MessageKind {
    /// Double opt-in: "confirm that you want to hear when X is back".
    SubscriptionConfirmation,
    /// "X is back in stock".
    RestockAlert,
    /// "A unit of drop X is held for you until T": the waitlist's offer.
    HoldOffer,
    /// "The draw of drop X is done; you are number N on its waitlist".
    DrawWaitlisted,
    /// "Verify your email": the link that marks a new account's address as its own.
    AccountVerification,
}

/// Where a ledger row is: `queued` until sent, or failed for good.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "Text", rename_all = "snake_case")]
pub enum MessageStatus {
    Queued,
    Sent,
    Failed,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
