use sea_orm_migration::{prelude::*, schema::*};

use crate::m20261121_000001_accounts::Users;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Drops::Table)
                    .col(big_pk_auto(Drops::Id))
                    .col(string(Drops::Name))
                    .col(text(Drops::Description).default(""))
                    .col(big_integer(Drops::PriceCents).check(Expr::col(Drops::PriceCents).gte(0)))
                    .col(string_len(Drops::Currency, 3))
                    .col(integer(Drops::TotalStock).check(Expr::col(Drops::TotalStock).gte(0)))
                    // The oversell guard of last resort: no code path can take stock below zero.
                    .col(
                        integer(Drops::AvailableStock)
                            .check(Expr::col(Drops::AvailableStock).gte(0)),
                    )
                    .col(big_integer(Drops::StockVersion).default(0))
                    .col(timestamp_with_time_zone(Drops::StartsAt))
                    .col(timestamp_with_time_zone_null(Drops::EndsAt))
                    .col(
                        integer(Drops::MaxPerUser)
                            .default(1)
                            .check(Expr::col(Drops::MaxPerUser).gte(1)),
                    )
                    .col(timestamp_with_time_zone(Drops::CreatedAt))
                    .col(timestamp_with_time_zone(Drops::UpdatedAt))
                    .check(Expr::col(Drops::AvailableStock).lte(Expr::col(Drops::TotalStock)))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Reservations::Table)
                    .col(big_pk_auto(Reservations::Id))
                    .col(big_integer(Reservations::DropId))
                    .col(big_integer(Reservations::UserId))
                    .col(string_len(Reservations::Status, 16).check(
                        Expr::col(Reservations::Status).is_in([
                            "active",
                            "purchased",
                            "expired",
                            "released",
                        ]),
                    ))
                    .col(timestamp_with_time_zone(Reservations::ExpiresAt))
                    .col(timestamp_with_time_zone(Reservations::CreatedAt))
                    .col(timestamp_with_time_zone_null(Reservations::EndedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(Reservations::Table, Reservations::DropId)
                            .to(Drops::Table, Drops::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(Reservations::Table, Reservations::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // One active hold per user per drop, enforced where no race can get past it.
        // Partial indexes are spelled the same on SQLite and Postgres.
        let db = manager.get_connection();
        db.execute_unprepared(
            "CREATE UNIQUE INDEX uq_reservations_one_active_hold \
             ON reservations (drop_id, user_id) WHERE status = 'active'",
        )
        .await?;
        db.execute_unprepared(
            "CREATE INDEX idx_reservations_active_expiry \
             ON reservations (expires_at, drop_id) WHERE status = 'active'",
        )
        .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_reservations_user")
                    .table(Reservations::Table)
                    .col(Reservations::UserId)
                    .col(Reservations::DropId)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Purchases::Table)
                    .col(big_pk_auto(Purchases::Id))
                    .col(big_integer_uniq(Purchases::ReservationId))
                    .col(big_integer(Purchases::UserId))
                    .col(big_integer(Purchases::DropId))
                    .col(big_integer(Purchases::AmountCents))
                    .col(string_len(Purchases::Currency, 3))
                    .col(timestamp_with_time_zone(Purchases::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(Purchases::Table, Purchases::ReservationId)
                            .to(Reservations::Table, Reservations::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(Purchases::Table, Purchases::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(Purchases::Table, Purchases::DropId)
                            .to(Drops::Table, Drops::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_purchases_drop_created")
                    .table(Purchases::Table)
                    .col(Purchases::DropId)
                    .col(Purchases::CreatedAt)
                    .to_owned(),
            )
            .await?;

        // Serves the per-buyer limit check on every reserve.
        manager
            .create_index(
                Index::create()
                    .name("idx_purchases_user_drop")
                    .table(Purchases::Table)
                    .col(Purchases::UserId)
                    .col(Purchases::DropId)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(IdempotencyKeys::Table)
                    .col(big_pk_auto(IdempotencyKeys::Id))
                    .col(big_integer(IdempotencyKeys::UserId))
                    .col(string_len(IdempotencyKeys::Key, 255))
                    .col(string(IdempotencyKeys::RequestHash))
                    .col(integer_null(IdempotencyKeys::ResponseStatus))
                    .col(text_null(IdempotencyKeys::ResponseBody))
                    .col(timestamp_with_time_zone(IdempotencyKeys::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(IdempotencyKeys::Table, IdempotencyKeys::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("uq_idempotency_keys_user_key")
                    .table(IdempotencyKeys::Table)
                    .col(IdempotencyKeys::UserId)
                    .col(IdempotencyKeys::Key)
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            IdempotencyKeys::Table.into_iden(),
            Purchases::Table.into_iden(),
            Reservations::Table.into_iden(),
            Drops::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Drops {
    Table,
    Id,
    Name,
    Description,
    PriceCents,
    Currency,
    TotalStock,
    AvailableStock,
    StockVersion,
    StartsAt,
    EndsAt,
    MaxPerUser,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Reservations {
    Table,
    Id,
    DropId,
    UserId,
    Status,
    ExpiresAt,
    CreatedAt,
    EndedAt,
}

#[derive(DeriveIden)]
enum Purchases {
    Table,
    Id,
    ReservationId,
    UserId,
    DropId,
    AmountCents,
    Currency,
    CreatedAt,
}

#[derive(DeriveIden)]
enum IdempotencyKeys {
    Table,
    Id,
    UserId,
    Key,
    RequestHash,
    ResponseStatus,
    ResponseBody,
    CreatedAt,
}
