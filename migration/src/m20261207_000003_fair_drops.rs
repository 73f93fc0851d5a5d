//! Fair against bots: accounts carry when their email was verified; a drop may require
//! verified buyers and a solved proof-of-work challenge to reserve; spent challenges are kept
//! until they expire, so a solution is not replayed; a draw entry records the verified
//! mailbox it was made with, one entry per mailbox and draw.

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
                    .table(Users::Table)
                    .add_column(timestamp_with_time_zone_null(Users::EmailVerifiedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Drops::Table)
                    .add_column(boolean(Drops::RequireVerified).default(false))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Drops::Table)
                    .add_column(boolean(Drops::RequireChallenge).default(false))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(DrawEntries::Table)
                    .add_column(string_len_null(DrawEntries::Mailbox, 320))
                    .to_owned(),
            )
            .await?;
        // NULLs are distinct: entries made without a verified mailbox never collide.
        manager
            .create_index(
                Index::create()
                    .name("idx_draw_entries_drop_mailbox")
                    .table(DrawEntries::Table)
                    .col(DrawEntries::DropId)
                    .col(DrawEntries::Mailbox)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(SpentChallenges::Table)
                    .col(string_len(SpentChallenges::Signature, 200).primary_key())
                    .col(timestamp_with_time_zone(SpentChallenges::ExpiresAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_spent_challenges_expires_at")
                    .table(SpentChallenges::Table)
                    .col(SpentChallenges::ExpiresAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(SpentChallenges::Table).to_owned())
            .await?;
        manager
            .drop_index(
                Index::drop()
                    .name("idx_draw_entries_drop_mailbox")
                    .table(DrawEntries::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(DrawEntries::Table)
                    .drop_column(DrawEntries::Mailbox)
                    .to_owned(),
            )
            .await?;
        for column in [Drops::RequireChallenge, Drops::RequireVerified] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Drops::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(Users::Table)
                    .drop_column(Users::EmailVerifiedAt)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum Users {
    Table,
    EmailVerifiedAt,
}

#[derive(DeriveIden)]
enum Drops {
    Table,
    RequireVerified,
    RequireChallenge,
}

#[derive(DeriveIden)]
enum DrawEntries {
    Table,
    DropId,
    Mailbox,
}

#[derive(DeriveIden)]
enum SpentChallenges {
    Table,
    Signature,
    ExpiresAt,
}
