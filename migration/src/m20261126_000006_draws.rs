//! Draw drops and demand figures. A drop is sold first come, first served (`first_come`) or
//! by a `draw`: buyers enter until `entries_close_at`, then winners are drawn from a seed the
//! drop committed to when it was created (`seed_hash`, revealed as `seed` after `drawn_at`).
//! A drop may give its holds and offers a TTL of its own (`offer_ttl_secs`). `sold_out_at`
//! and `reserve_attempts` feed the drop's stats. Each entry records its place in the draw's
//! order and whether it won, as published after the draw.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let columns = [
            string_len(Drops::Mode, 16)
                .default("first_come")
                .check(Expr::col(Drops::Mode).is_in(["first_come", "draw"]))
                .to_owned(),
            timestamp_with_time_zone_null(Drops::EntriesCloseAt),
            string_len_null(Drops::SeedHash, 64),
            string_len_null(Drops::Seed, 64),
            timestamp_with_time_zone_null(Drops::DrawnAt),
            integer_null(Drops::OfferTtlSecs),
            timestamp_with_time_zone_null(Drops::SoldOutAt),
            big_integer(Drops::ReserveAttempts).default(0).to_owned(),
        ];
        // SQLite adds one column per ALTER TABLE.
        for mut column in columns {
            manager
                .alter_table(
                    Table::alter()
                        .table(Drops::Table)
                        .add_column(&mut column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .create_table(
                Table::create()
                    .table(DrawEntries::Table)
                    .col(big_pk_auto(DrawEntries::Id))
                    .col(big_integer(DrawEntries::DropId))
                    .col(big_integer(DrawEntries::UserId))
                    .col(timestamp_with_time_zone(DrawEntries::CreatedAt))
                    .col(integer_null(DrawEntries::Position))
                    .col(boolean(DrawEntries::Won).default(false))
                    .foreign_key(
                        ForeignKey::create()
                            .from(DrawEntries::Table, DrawEntries::DropId)
                            .to(Drops::Table, Drops::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(DrawEntries::Table, DrawEntries::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("uq_draw_entries_drop_user")
                    .table(DrawEntries::Table)
                    .col(DrawEntries::DropId)
                    .col(DrawEntries::UserId)
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(DrawEntries::Table).to_owned())
            .await?;
        for column in [
            Drops::Mode,
            Drops::EntriesCloseAt,
            Drops::SeedHash,
            Drops::Seed,
            Drops::DrawnAt,
            Drops::OfferTtlSecs,
            Drops::SoldOutAt,
            Drops::ReserveAttempts,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Drops::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Drops {
    Table,
    Id,
    Mode,
    EntriesCloseAt,
    SeedHash,
    Seed,
    DrawnAt,
    OfferTtlSecs,
    SoldOutAt,
    ReserveAttempts,
}

#[derive(DeriveIden)]
enum DrawEntries {
    Table,
    Id,
    DropId,
    UserId,
    CreatedAt,
    Position,
    Won,
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
}
