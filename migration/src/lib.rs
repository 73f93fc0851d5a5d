//! Schema history for Honeydrop. Migrations never import `entity`: they describe
//! the schema as it was when each one was written.

pub use sea_orm_migration::prelude::*;

mod m20261121_000001_accounts;
mod m20261121_000002_catalog;
mod m20261121_000003_drops;
mod m20261122_000001_email_next_attempt;
mod m20261126_000001_spent_refresh_tokens;
mod m20261126_000002_hold_price;
mod m20261126_000003_sessions_revoked_at;
mod m20261126_000004_mail_claims;
mod m20261126_000005_waitlist;
mod m20261126_000006_draws;
mod m20261126_000007_restock_waves;
mod m20261207_000001_operations;
mod m20261207_000002_mail_quotas;
mod m20261207_000003_fair_drops;
mod m20261207_000004_ended_sessions;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261121_000001_accounts::Migration),
            Box::new(m20261121_000002_catalog::Migration),
            Box::new(m20261121_000003_drops::Migration),
            Box::new(m20261122_000001_email_next_attempt::Migration),
            Box::new(m20261126_000001_spent_refresh_tokens::Migration),
            Box::new(m20261126_000002_hold_price::Migration),
            Box::new(m20261126_000003_sessions_revoked_at::Migration),
            Box::new(m20261126_000004_mail_claims::Migration),
            Box::new(m20261126_000005_waitlist::Migration),
            Box::new(m20261126_000006_draws::Migration),
            Box::new(m20261126_000007_restock_waves::Migration),
            Box::new(m20261207_000001_operations::Migration),
            Box::new(m20261207_000002_mail_quotas::Migration),
            Box::new(m20261207_000003_fair_drops::Migration),
            Box::new(m20261207_000004_ended_sessions::Migration),
        ]
    }
}
