//! Retention: finished tasks (with their steps, edges and history) and PGMQ
//! archive rows (dead letters) older than the configured ages are deleted
//! in small batches, each its own short transaction, by an orchestrator
//! every `retention.interval_seconds` and by `rake tasker:prune`. Tasks in
//! flight are never touched (see `tasker_prune_finished_tasks`). RabbitMQ's
//! `<queue>.dlq` is the broker's: give it a message TTL by policy.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;

use crate::context::Context;
use crate::error::{Error, Result};

/// What one pass deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PruneReport {
    pub tasks: u64,
    pub archived_messages: u64,
    /// Transactions it took.
    pub batches: u64,
}

fn cutoff(days: u32) -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now() - chrono::Duration::days(i64::from(days))
}

/// Prunes what is older than the configured ages, batch after batch until
/// none is left.
pub async fn prune(ctx: &Context) -> Result<PruneReport> {
    let retention = &ctx.config().retention;
    let batch = i64::from(retention.batch_size.max(1));
    let mut report = PruneReport::default();
    if retention.finished_tasks_days > 0 {
        let before = cutoff(retention.finished_tasks_days);
        loop {
            let pruned: i32 = sqlx::query_scalar("SELECT tasker_prune_finished_tasks($1, $2)")
                .bind(before)
                .bind(i32::try_from(batch).unwrap_or(i32::MAX))
                .fetch_one(ctx.pool())
                .await
                .map_err(Error::db("pruning finished tasks"))?;
            let pruned = u64::try_from(pruned).unwrap_or(0);
            report.tasks += pruned;
            report.batches += 1;
            metrics::counter!("tasker_pruned_tasks_total").increment(pruned);
            if pruned < batch.unsigned_abs() {
                break;
            }
            tokio::task::yield_now().await;
        }
    }
    if retention.archive_days > 0 && ctx.messaging().queues_in_database() {
        let before = cutoff(retention.archive_days);
        for queue in crate::telemetry::deployment_queues(ctx).await? {
            loop {
                let pruned = crate::messaging::prune_archive(ctx.pool(), &queue, before, batch).await?;
                report.archived_messages += pruned;
                report.batches += 1;
                metrics::counter!("tasker_pruned_archive_messages_total").increment(pruned);
                if pruned < batch.unsigned_abs() {
                    break;
                }
                tokio::task::yield_now().await;
            }
        }
    }
    Ok(report)
}

/// The orchestrator's pruning component: a pass at start and every
/// `retention.interval_seconds` after.
pub(crate) async fn run(ctx: Arc<Context>, mut stop: watch::Receiver<bool>) {
    let every = Duration::from_secs(ctx.config().retention.interval_seconds);
    let mut retry = crate::resilience::LoopRetry::new("pruner", Some(ctx.breakers().clone()));
    while !*stop.borrow() {
        // After an outage the pass is tried again with backoff (at most
        // the interval), not a whole interval later.
        let mut wait = every;
        match prune(&ctx).await {
            Ok(report) => {
                retry.succeeded();
                if report.tasks + report.archived_messages > 0 {
                    tracing::info!(
                        tasks = report.tasks,
                        archived_messages = report.archived_messages,
                        "pruned old work"
                    );
                }
            }
            Err(e) => match retry.failed(&e) {
                Some(backoff) => wait = backoff.min(every),
                None => tracing::warn!(error = %e, "pruning failed; trying again next interval"),
            },
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = stop.changed() => {}
        }
    }
}
