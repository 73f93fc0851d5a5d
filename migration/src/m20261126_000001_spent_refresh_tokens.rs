//! Every refresh token a session has rotated away is remembered, not just the last one, so
//! presenting *any* earlier token of a family is recognised as reuse and ends the family
//! (as Auth0's rotation does). Replaces `sessions.previous_token_hash`.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(SpentRefreshTokens::Table)
                    .col(string(SpentRefreshTokens::TokenHash).primary_key())
                    .col(big_integer(SpentRefreshTokens::SessionId))
                    .col(timestamp_with_time_zone(SpentRefreshTokens::SpentAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(SpentRefreshTokens::Table, SpentRefreshTokens::SessionId)
                            .to(Sessions::Table, Sessions::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_spent_refresh_tokens_session_id")
                    .table(SpentRefreshTokens::Table)
                    .col(SpentRefreshTokens::SessionId)
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        db.execute_unprepared(
            "INSERT INTO spent_refresh_tokens (token_hash, session_id, spent_at) \
             SELECT previous_token_hash, id, last_used_at FROM sessions \
             WHERE previous_token_hash IS NOT NULL",
        )
        .await?;
        manager
            .drop_index(
                Index::drop()
                    .name("idx_sessions_previous_token_hash")
                    .table(Sessions::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Sessions::Table)
                    .drop_column(Sessions::PreviousTokenHash)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Sessions::Table)
                    .add_column(string_null(Sessions::PreviousTokenHash))
                    .to_owned(),
            )
            .await?;
        manager
            .get_connection()
            .execute_unprepared(
                "UPDATE sessions SET previous_token_hash = (\
                 SELECT token_hash FROM spent_refresh_tokens s \
                 WHERE s.session_id = sessions.id ORDER BY spent_at DESC LIMIT 1)",
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_sessions_previous_token_hash")
                    .table(Sessions::Table)
                    .col(Sessions::PreviousTokenHash)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_table(Table::drop().table(SpentRefreshTokens::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum SpentRefreshTokens {
    Table,
    TokenHash,
    SessionId,
    SpentAt,
}

#[derive(DeriveIden)]
enum Sessions {
    Table,
    Id,
    PreviousTokenHash,
}
