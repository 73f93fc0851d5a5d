//! The operations console's own state: which queues are paused (for the whole cluster), the
//! worker processes that report in (heartbeats, what they hold, whether an operator quieted
//! them), and the audit trail of every operator action. Kept in the database, not in Redis,
//! so a pause or a quiet outlives a Redis restart and reads the same on both backends.
//! Two partial indexes let the console count the mail ledger's failed rows and recent sends
//! without reading its history.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(OpsPauses::Table)
                    .col(string_len(OpsPauses::Queue, 64).primary_key())
                    .col(string_len(OpsPauses::PausedBy, 320))
                    .col(timestamp_with_time_zone(OpsPauses::PausedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(OpsWorkers::Table)
                    .col(string_len(OpsWorkers::Name, 200).primary_key())
                    .col(string_len(OpsWorkers::Host, 200))
                    .col(big_integer(OpsWorkers::Pid))
                    .col(string_len(OpsWorkers::Version, 64))
                    .col(timestamp_with_time_zone(OpsWorkers::StartedAt))
                    .col(timestamp_with_time_zone(OpsWorkers::LastHeartbeat))
                    .col(json(OpsWorkers::InFlight))
                    .col(integer(OpsWorkers::SmtpBusy).default(0))
                    .col(big_integer(OpsWorkers::RssBytes).default(0))
                    .col(json(OpsWorkers::Throughput))
                    .col(boolean(OpsWorkers::Quiet).default(false))
                    .col(boolean(OpsWorkers::Stopped).default(false))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(OpsAudit::Table)
                    .col(big_pk_auto(OpsAudit::Id))
                    .col(timestamp_with_time_zone(OpsAudit::At))
                    .col(string_len(OpsAudit::Actor, 320))
                    .col(string_len(OpsAudit::Action, 64))
                    .col(string_len(OpsAudit::Target, 200))
                    .col(string_len_null(OpsAudit::Item, 200))
                    .col(big_integer(OpsAudit::Affected).default(0))
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        db.execute_unprepared(
            "CREATE INDEX idx_email_messages_failed ON email_messages (id) \
             WHERE status = 'failed'",
        )
        .await?;
        db.execute_unprepared(
            "CREATE INDEX idx_email_messages_sent_at ON email_messages (sent_at) \
             WHERE status = 'sent'",
        )
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared("DROP INDEX idx_email_messages_sent_at")
            .await?;
        db.execute_unprepared("DROP INDEX idx_email_messages_failed")
            .await?;
        for table in [
            OpsAudit::Table.into_iden(),
            OpsWorkers::Table.into_iden(),
            OpsPauses::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum OpsPauses {
    Table,
    Queue,
    PausedBy,
    PausedAt,
}

#[derive(DeriveIden)]
enum OpsWorkers {
    Table,
    Name,
    Host,
    Pid,
    Version,
    StartedAt,
    LastHeartbeat,
    InFlight,
    SmtpBusy,
    RssBytes,
    Throughput,
    Quiet,
    Stopped,
}

#[derive(DeriveIden)]
enum OpsAudit {
    Table,
    Id,
    At,
    Actor,
    Action,
    Target,
    Item,
    Affected,
}
