use sea_orm_migration::{
    prelude::*,
    sea_orm::{ConnectOptions, Database},
};

/// `migration up|down|status|fresh`, against `DATABASE_MIGRATION_URL` when set (Postgres
/// itself, where `DATABASE_URL` is a transaction-mode pooler: the CLI sets the session's
/// `search_path`), else `DATABASE_URL`.
#[tokio::main]
async fn main() {
    let _ = dotenvy::dotenv();
    if let Err(refusal) = check_mode() {
        eprintln!("Error: {refusal}");
        std::process::exit(1);
    }
    let direct = std::env::var("DATABASE_MIGRATION_URL")
        .ok()
        .filter(|url| !url.trim().is_empty());
    cli::run_cli_with_connection(migration::Migrator, |options| async move {
        match direct {
            Some(url) => {
                let schema = std::env::var("DATABASE_SCHEMA").unwrap_or_else(|_| "public".into());
                let mut direct = ConnectOptions::new(url);
                direct.set_schema_search_path(schema);
                Database::connect(direct).await
            }
            None => Database::connect(options).await,
        }
    })
    .await;
}

/// The api and workers refuse distributed mode (`REDIS_URL` set) on anything but Postgres;
/// so does the release step, rather than migrate a database no process will use.
fn check_mode() -> Result<(), &'static str> {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    let url = std::env::var("DATABASE_URL").unwrap_or_default();
    let postgres = url.starts_with("postgres://") || url.starts_with("postgresql://");
    if set("REDIS_URL") && !postgres {
        return Err(
            "DATABASE_URL must be a postgres:// or postgresql:// URL in distributed mode (REDIS_URL is set): every process shares one Postgres",
        );
    }
    Ok(())
}
