//! Runs orchestration without Ruby: reads the configuration from the
//! environment (`DATABASE_URL`, `TASKER_*`), migrates, and processes step
//! results until SIGTERM or SIGINT. With `TASKER_METRICS_PORT` set it also
//! serves `/metrics`, `/health/live` and `/health/ready` on that port
//! (`TASKER_METRICS_HOST`, default 127.0.0.1).

use std::process::ExitCode;
use std::time::Duration;

use tasker_core::{Config, Context, Error, ErrorKind, OpsServer, OrchestratorHandle};

#[tokio::main]
async fn main() -> ExitCode {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let filter = std::env::var("TASKER_LOG").unwrap_or_else(|_| "info".to_owned());
    let logs =
        tracing_subscriber::fmt::layer().with_target(false).with_filter(tracing_subscriber::EnvFilter::new(filter));
    // Spans go to the OTLP exporter when OTEL_EXPORTER_OTLP_ENDPOINT is set.
    let traces = match tasker_core::otlp_layer() {
        Ok(layer) => layer,
        Err(e) => {
            eprintln!("tasker-orchestrator: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing_subscriber::registry().with(logs).with(traces).init();
    let code = match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tasker-orchestrator: {e}");
            ExitCode::FAILURE
        }
    };
    tasker_core::flush_traces();
    code
}

async fn run() -> tasker_core::Result<()> {
    let config = Config::resolve(serde_json::Value::Null, serde_json::Value::Null)?;
    tracing::info!(database = config.redacted_database_url(), "starting orchestrator");
    let ctx = Context::connect(config).await?;
    ctx.migrate().await?;
    let _ops = match ops_address()? {
        Some(addr) => Some(OpsServer::start(ctx.clone(), addr).await?),
        None => None,
    };
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

/// Where to serve the operations endpoints, if anywhere.
fn ops_address() -> tasker_core::Result<Option<std::net::SocketAddr>> {
    let Some(port) = std::env::var("TASKER_METRICS_PORT").ok().filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    let host = std::env::var("TASKER_METRICS_HOST").unwrap_or_else(|_| "127.0.0.1".to_owned());
    let bad = |what: &str, value: &str| Error::new(ErrorKind::Config, format!("{what} {value:?} is not valid"));
    let port: u16 = port.parse().map_err(|_| bad("TASKER_METRICS_PORT", &port))?;
    let ip: std::net::IpAddr = host.parse().map_err(|_| bad("TASKER_METRICS_HOST", &host))?;
    Ok(Some(std::net::SocketAddr::new(ip, port)))
}
