use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Products::Table)
                    .col(big_pk_auto(Products::Id))
                    .col(string_null(Products::CmsEntryId).unique_key())
                    .col(big_integer_null(Products::CmsVersion))
                    .col(string_uniq(Products::Slug))
                    .col(string(Products::Name))
                    .col(text(Products::Description).default(""))
                    .col(
                        big_integer(Products::PriceCents)
                            .check(Expr::col(Products::PriceCents).gte(0)),
                    )
                    .col(string_len(Products::Currency, 3))
                    .col(string_null(Products::ImageUrl))
                    .col(boolean(Products::InStock))
                    .col(
                        integer_null(Products::StockQuantity)
                            .check(Expr::col(Products::StockQuantity).gte(0)),
                    )
                    .col(boolean(Products::Visible).default(true))
                    .col(timestamp_with_time_zone(Products::CreatedAt))
                    .col(timestamp_with_time_zone(Products::UpdatedAt))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(RestockEvents::Table)
                    .col(big_pk_auto(RestockEvents::Id))
                    .col(big_integer(RestockEvents::ProductId))
                    .col(big_integer_null(RestockEvents::CmsVersion))
                    .col(timestamp_with_time_zone(RestockEvents::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(RestockEvents::Table, RestockEvents::ProductId)
                            .to(Products::Table, Products::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Subscriptions::Table)
                    .col(big_pk_auto(Subscriptions::Id))
                    .col(big_integer(Subscriptions::ProductId))
                    .col(string(Subscriptions::Email))
                    .col(string_len(Subscriptions::Status, 16).check(
                        Expr::col(Subscriptions::Status).is_in([
                            "pending",
                            "confirmed",
                            "notified",
                            "unsubscribed",
                        ]),
                    ))
                    .col(string_uniq(Subscriptions::ConfirmTokenHash))
                    .col(string_uniq(Subscriptions::UnsubscribeTokenHash))
                    .col(timestamp_with_time_zone_null(
                        Subscriptions::ConfirmationSentAt,
                    ))
                    .col(timestamp_with_time_zone_null(Subscriptions::ConfirmedAt))
                    .col(timestamp_with_time_zone_null(Subscriptions::NotifiedAt))
                    .col(timestamp_with_time_zone(Subscriptions::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(Subscriptions::Table, Subscriptions::ProductId)
                            .to(Products::Table, Products::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("uq_subscriptions_product_email")
                    .table(Subscriptions::Table)
                    .col(Subscriptions::ProductId)
                    .col(Subscriptions::Email)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_subscriptions_product_status")
                    .table(Subscriptions::Table)
                    .col(Subscriptions::ProductId)
                    .col(Subscriptions::Status)
                    .col(Subscriptions::Id)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(EmailMessages::Table)
                    .col(big_pk_auto(EmailMessages::Id))
                    .col(string_len(EmailMessages::Kind, 32))
                    .col(string(EmailMessages::Recipient))
                    .col(big_integer_null(EmailMessages::SubscriptionId))
                    .col(string_uniq(EmailMessages::DedupeKey))
                    .col(json(EmailMessages::Payload))
                    .col(string_len(EmailMessages::Status, 16).check(
                        Expr::col(EmailMessages::Status).is_in(["queued", "sent", "failed"]),
                    ))
                    .col(integer(EmailMessages::Attempts).default(0))
                    .col(text_null(EmailMessages::LastError))
                    .col(timestamp_with_time_zone(EmailMessages::CreatedAt))
                    .col(timestamp_with_time_zone(EmailMessages::UpdatedAt))
                    .col(timestamp_with_time_zone_null(EmailMessages::SentAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(EmailMessages::Table, EmailMessages::SubscriptionId)
                            .to(Subscriptions::Table, Subscriptions::Id)
                            .on_delete(ForeignKeyAction::SetNull),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_email_messages_status_updated")
                    .table(EmailMessages::Table)
                    .col(EmailMessages::Status)
                    .col(EmailMessages::UpdatedAt)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(WebhookDeliveries::Table)
                    .col(big_pk_auto(WebhookDeliveries::Id))
                    .col(string_null(WebhookDeliveries::IdempotencyKey).unique_key())
                    .col(string(WebhookDeliveries::Topic))
                    .col(string_null(WebhookDeliveries::EntryId))
                    .col(big_integer_null(WebhookDeliveries::EntryVersion))
                    .col(string_len(WebhookDeliveries::Outcome, 32))
                    .col(text_null(WebhookDeliveries::Detail))
                    .col(timestamp_with_time_zone(WebhookDeliveries::ReceivedAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            WebhookDeliveries::Table.into_iden(),
            EmailMessages::Table.into_iden(),
            Subscriptions::Table.into_iden(),
            RestockEvents::Table.into_iden(),
            Products::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Products {
    Table,
    Id,
    CmsEntryId,
    CmsVersion,
    Slug,
    Name,
    Description,
    PriceCents,
    Currency,
    ImageUrl,
    InStock,
    StockQuantity,
    Visible,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum RestockEvents {
    Table,
    Id,
    ProductId,
    CmsVersion,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Subscriptions {
    Table,
    Id,
    ProductId,
    Email,
    Status,
    ConfirmTokenHash,
    UnsubscribeTokenHash,
    ConfirmationSentAt,
    ConfirmedAt,
    NotifiedAt,
    CreatedAt,
}

#[derive(DeriveIden)]
enum EmailMessages {
    Table,
    Id,
    Kind,
    Recipient,
    SubscriptionId,
    DedupeKey,
    Payload,
    Status,
    Attempts,
    LastError,
    CreatedAt,
    UpdatedAt,
    SentAt,
}

#[derive(DeriveIden)]
enum WebhookDeliveries {
    Table,
    Id,
    IdempotencyKey,
    Topic,
    EntryId,
    EntryVersion,
    Outcome,
    Detail,
    ReceivedAt,
}
