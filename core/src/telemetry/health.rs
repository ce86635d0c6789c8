//! `health`: is this process able to work? The database and the broker
//! are probed (each with a short timeout, so a probe never hangs), the
//! queues' stats read, and this process's components listed. Ready means
//! the database and the broker answered; nothing is cached, so readiness
//! comes back by itself once they do.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::context::Context;
use crate::messaging::QueueStats;
use crate::resilience::{BreakerHealth, LoopHealth};

use super::registry::{self, ComponentHealth};

/// How long one probe may take before it counts as a failure.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// One dependency's answer.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Check {
    pub ok: bool,
    pub latency_ms: f64,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BrokerCheck {
    pub provider: &'static str,
    #[serde(flatten)]
    pub check: Check,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Health {
    /// The database and the broker both answered, no circuit breaker is
    /// open and no loop of this process is backing off from an outage.
    pub ready: bool,
    pub database: Check,
    pub broker: BrokerCheck,
    /// This deployment's queues (read only when the broker answered).
    pub queues: Vec<QueueStats>,
    pub components: Vec<ComponentHealth>,
    /// This process's long-running loops: each is unhealthy while the
    /// database or the broker it needs is unreachable (it backs off).
    pub loops: Vec<LoopHealth>,
    /// The circuit breakers: open while callers fail fast.
    pub circuit_breakers: Vec<BreakerHealth>,
    /// The latest heartbeat of this process's workers (RFC 3339).
    pub last_heartbeat_at: Option<String>,
    pub checked_at: String,
}

async fn probe<T, E: std::fmt::Display>(what: impl std::future::Future<Output = Result<T, E>>) -> (Check, Option<T>) {
    let started = Instant::now();
    let answer = tokio::time::timeout(PROBE_TIMEOUT, what).await;
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    match answer {
        Ok(Ok(value)) => (Check { ok: true, latency_ms, error: None }, Some(value)),
        Ok(Err(e)) => (Check { ok: false, latency_ms, error: Some(e.to_string()) }, None),
        Err(_) => (
            Check { ok: false, latency_ms, error: Some(format!("no answer within {} s", PROBE_TIMEOUT.as_secs())) },
            None,
        ),
    }
}

/// Probes the database and the broker now.
pub async fn health(ctx: &Context) -> Health {
    let (database, _) = probe(sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(ctx.pool())).await;
    // The task-request queue exists in every deployment: its stats need the
    // broker (PGMQ: its schema in the database; RabbitMQ: a connection,
    // re-established here if it was lost).
    let messaging = ctx.messaging();
    let (broker, _) = probe(messaging.stats(&ctx.router().task_requests())).await;
    let mut queues = Vec::new();
    if broker.ok && database.ok {
        if let (_, Some(names)) = probe(super::queues::deployment_queues(ctx)).await {
            for queue in names {
                if let (_, Some(stats)) = probe(messaging.stats(&queue)).await {
                    queues.push(stats);
                }
            }
        }
    }
    let components = registry::components();
    let last_heartbeat_at = components.iter().filter_map(|c| c.last_heartbeat_at.clone()).max();
    let loops = crate::resilience::loops();
    let circuit_breakers = ctx.breakers().states();
    let recovered = loops.iter().all(|l| l.healthy) && circuit_breakers.iter().all(|b| !b.open);
    Health {
        ready: database.ok && broker.ok && recovered,
        loops,
        circuit_breakers,
        database,
        broker: BrokerCheck { provider: messaging.provider_name(), check: broker },
        queues,
        components,
        last_heartbeat_at,
        checked_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    }
}
