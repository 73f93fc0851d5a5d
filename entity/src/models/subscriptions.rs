//! `subscriptions` table.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "subscriptions")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub product_id: i64,
    pub email: String,
    pub status: SubscriptionStatus,
    pub confirm_token_hash: String,
    pub unsubscribe_token_hash: String,
    pub confirmation_sent_at: Option<DateTimeUtc>,
    pub confirmed_at: Option<DateTimeUtc>,
    pub notified_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "Text", rename_all = "snake_case")]
pub enum SubscriptionStatus {
    /// Signed up, confirmation email sent, link not yet followed.
    Pending,
    /// Will be alerted at the next restock.
    Confirmed,
    /// Alerted; signing up again re-arms the subscription.
    Notified,
    Unsubscribed,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
