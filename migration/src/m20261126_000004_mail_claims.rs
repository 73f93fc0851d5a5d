//! The mail pump claims queued rows in batches straight from the ledger: a partial index on
//! the queued rows keeps that claim a short index walk however many sent rows are kept, and
//! `lapsed_claims` counts the claims of a row that ended without an outcome recorded (the
//! worker died mid-send), so a message that may have gone out twice is counted.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(EmailMessages::Table)
                    .add_column(integer(EmailMessages::LapsedClaims).default(0))
                    .to_owned(),
            )
            .await?;
        // Partial indexes (the same text on Postgres and SQLite).
        let db = manager.get_connection();
        db.execute_unprepared(
            "CREATE INDEX idx_email_messages_queued ON email_messages (id) \
             WHERE status = 'queued'",
        )
        .await?;
        db.execute_unprepared(
            "CREATE INDEX idx_email_messages_lapsed ON email_messages (id) \
             WHERE lapsed_claims > 0",
        )
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared("DROP INDEX idx_email_messages_lapsed")
            .await?;
        db.execute_unprepared("DROP INDEX idx_email_messages_queued")
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(EmailMessages::Table)
                    .drop_column(EmailMessages::LapsedClaims)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum EmailMessages {
    Table,
    LapsedClaims,
}
