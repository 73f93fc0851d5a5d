//! The waitlist of a sold-out drop: one entry per buyer, in joining order. A unit that comes
//! back while the line is not empty becomes a personal hold for the first in line (the entry
//! turns `offered` and points at it) instead of going back on sale.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(WaitlistEntries::Table)
                    .col(big_pk_auto(WaitlistEntries::Id))
                    .col(big_integer(WaitlistEntries::DropId))
                    .col(big_integer(WaitlistEntries::UserId))
                    .col(
                        string_len(WaitlistEntries::Status, 16).check(
                            Expr::col(WaitlistEntries::Status).is_in(["waiting", "offered"]),
                        ),
                    )
                    .col(big_integer_null(WaitlistEntries::ReservationId))
                    .col(timestamp_with_time_zone(WaitlistEntries::CreatedAt))
                    .col(timestamp_with_time_zone_null(WaitlistEntries::OfferedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(WaitlistEntries::Table, WaitlistEntries::DropId)
                            .to(Drops::Table, Drops::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(WaitlistEntries::Table, WaitlistEntries::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(WaitlistEntries::Table, WaitlistEntries::ReservationId)
                            .to(Reservations::Table, Reservations::Id)
                            .on_delete(ForeignKeyAction::SetNull),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("uq_waitlist_entries_drop_user")
                    .table(WaitlistEntries::Table)
                    .col(WaitlistEntries::DropId)
                    .col(WaitlistEntries::UserId)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_waitlist_entries_line")
                    .table(WaitlistEntries::Table)
                    .col(WaitlistEntries::DropId)
                    .col(WaitlistEntries::Status)
                    .col(WaitlistEntries::Id)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(WaitlistEntries::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum WaitlistEntries {
    Table,
    Id,
    DropId,
    UserId,
    Status,
    ReservationId,
    CreatedAt,
    OfferedAt,
}

#[derive(DeriveIden)]
enum Drops {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Reservations {
    Table,
    Id,
}
