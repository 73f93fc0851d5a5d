//! The email ledger learns when a row may next be tried: a send claims its row by pushing
//! this past a lease, and a transient failure pushes it to the backoff deadline. Without it a
//! row being sent looks exactly like one whose job was lost.

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
                    .add_column(timestamp_with_time_zone_null(EmailMessages::NextAttemptAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(EmailMessages::Table)
                    .drop_column(EmailMessages::NextAttemptAt)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum EmailMessages {
    Table,
    NextAttemptAt,
}
