use tokio::sync::watch;
use worker::{Infra, Settings, runtime, telemetry};

/// The `worker` binary: run as many as you like beside the api (distributed mode).
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    telemetry::init(settings.log_format);
    if settings.redis.is_none() {
        anyhow::bail!(
            "REDIS_URL is required for a separate worker; in embedded mode the api runs its own"
        );
    }
    settings.require_mail_transport()?;
    let infra = Infra::connect(&settings).await?;
    let (stop, shutdown) = watch::channel(false);
    tokio::spawn(async move {
        telemetry::signal().await;
        let _ = stop.send(true);
    });
    runtime::run(settings, infra, runtime::unique_name("worker"), shutdown).await
}
