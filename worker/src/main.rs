use worker::{Infra, Settings, platform::shutdown::Shutdown, runtime, telemetry};

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
    let shutdown = Shutdown::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        telemetry::signal().await;
        stop.cancel();
    });
    runtime::run(settings, infra, runtime::unique_name("worker"), shutdown).await
}
