//! How many confirmation emails each mailbox was sent in its current day-long window, so
//! "notify me" cannot be used to mail-bomb one inbox (issue 28): one row per canonical
//! mailbox (`ann+x@example.com` and `ANN@example.com` are `ann@example.com`).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(MailQuotas::Table)
                    .col(string(MailQuotas::Mailbox).primary_key())
                    .col(timestamp_with_time_zone(MailQuotas::WindowStart))
                    .col(integer(MailQuotas::Sent))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(MailQuotas::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum MailQuotas {
    Table,
    Mailbox,
    WindowStart,
    Sent,
}
