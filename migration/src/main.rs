use sea_orm_migration::prelude::*;

/// `migration up|down|status|fresh`, against `DATABASE_URL`.
#[tokio::main]
async fn main() {
    let _ = dotenvy::dotenv();
    if let Err(refusal) = check_mode() {
        eprintln!("Error: {refusal}");
        std::process::exit(1);
    }
    cli::run_cli(migration::Migrator).await;
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
