//! A hold carries the price the buyer was shown when it was taken, so an admin changing a
//! drop's price while holds are open does not change what their owners pay.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite adds one column per ALTER TABLE.
        manager
            .alter_table(
                Table::alter()
                    .table(Reservations::Table)
                    .add_column(big_integer(Reservations::PriceCents).default(0))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Reservations::Table)
                    .add_column(string_len(Reservations::Currency, 3).default("USD"))
                    .to_owned(),
            )
            .await?;
        manager
            .get_connection()
            .execute_unprepared(
                "UPDATE reservations SET \
                 price_cents = (SELECT price_cents FROM drops WHERE drops.id = reservations.drop_id), \
                 currency = (SELECT currency FROM drops WHERE drops.id = reservations.drop_id)",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Reservations::Table)
                    .drop_column(Reservations::Currency)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Reservations::Table)
                    .drop_column(Reservations::PriceCents)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum Reservations {
    Table,
    PriceCents,
    Currency,
}
