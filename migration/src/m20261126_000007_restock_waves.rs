//! Restock alerts in waves sized to the stock. A restock records how many waves it opened,
//! how many alerts its waves allow so far (`alert_limit`; `NULL`: everyone at once), how many
//! it wrote, and when the next wave may open. Each alert row records its wave.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let columns = [
            integer(RestockEvents::Waves).default(0).to_owned(),
            integer_null(RestockEvents::AlertLimit),
            integer(RestockEvents::Alerted).default(0).to_owned(),
            timestamp_with_time_zone_null(RestockEvents::NextWaveAt),
        ];
        // SQLite adds one column per ALTER TABLE.
        for mut column in columns {
            manager
                .alter_table(
                    Table::alter()
                        .table(RestockEvents::Table)
                        .add_column(&mut column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(EmailMessages::Table)
                    .add_column(integer_null(EmailMessages::Wave))
                    .to_owned(),
            )
            .await?;
        // Restocks from before waves alerted everyone at once: mark them so.
        manager
            .get_connection()
            .execute_unprepared("UPDATE restock_events SET waves = 1")
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(EmailMessages::Table)
                    .drop_column(EmailMessages::Wave)
                    .to_owned(),
            )
            .await?;
        for column in [
            RestockEvents::Waves,
            RestockEvents::AlertLimit,
            RestockEvents::Alerted,
            RestockEvents::NextWaveAt,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(RestockEvents::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum RestockEvents {
    Table,
    Waves,
    AlertLimit,
    Alerted,
    NextWaveAt,
}

#[derive(DeriveIden)]
enum EmailMessages {
    Table,
    Wave,
}
