//! Runs orchestration without Ruby: reads the configuration from the
//! environment (`DATABASE_URL`, `TASKER_*`), migrates, and processes step
//! results until SIGTERM or SIGINT.

use std::process::ExitCode;
use std::time::Duration;

use tasker_core::{Config, Context, OrchestratorHandle};

#[tokio::main]
async fn main() -> ExitCode {
    let filter = std::env::var("TASKER_LOG").unwrap_or_else(|_| "info".to_owned());
    tracing_subscriber::fmt().with_env_filter(filter).with_target(false).init();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tasker-orchestrator: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> tasker_core::Result<()> {
    let config = Config::resolve(serde_json::Value::Null, serde_json::Value::Null)?;
    tracing::info!(database = config.redacted_database_url(), "starting orchestrator");
    let ctx = Context::connect(config).await?;
    ctx.migrate().await?;
    let orchestrator = OrchestratorHandle::start(ctx).await?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("stopping orchestrator");
    orchestrator.shutdown(Duration::from_secs(10)).await
}
