use api::Application;
use api::settings::Settings;
use worker::telemetry;

/// The `api` binary (`cargo run`): the whole store in embedded mode, or the api tier in
/// distributed mode.
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    telemetry::init(settings.log_format);
    let app = Application::build(settings).await?;
    app.run_until_stopped(telemetry::signal()).await
}
