use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch;
use uuid::Uuid;

use crate::context::Context;
use crate::db::queries;
use crate::error::{Error, Result};
use crate::messaging::{MessageRouter, StepMessage};

use super::step_enqueuer::{advance_task, Commit};

/// Most tasks advanced, and most steps recovered, per sweep; the rest wait
/// for the next sweep.
const SWEEP_LIMIT: i32 = 500;

/// Runs every `sweep_interval_ms`:
/// - advances tasks with a step whose retry backoff has elapsed;
/// - advances tasks in progress with nothing in flight and no change for a
///   visibility timeout (their last result message was lost);
/// - recovers steps whose worker is gone (in progress with no heartbeat for
///   a visibility timeout) or whose message may be lost (enqueued for
///   longer than `stuck_enqueued_seconds`): they are enqueued and sent
///   again, and the claim's compare-and-swap makes a duplicate harmless.
pub(crate) struct Sweeper {
    ctx: Arc<Context>,
}

impl Sweeper {
    pub(crate) fn new(ctx: Arc<Context>) -> Self {
        Self { ctx }
    }

    pub(crate) async fn run(self, mut stop: watch::Receiver<bool>) {
        let interval = Duration::from_millis(self.ctx.config().orchestration.sweep_interval_ms);
        while !*stop.borrow() {
            if let Err(e) = self.advance_due_retries().await {
                tracing::warn!(error = %e, "retry sweep failed; trying again next interval");
            }
            if let Err(e) = self.recover_stuck_steps().await {
                tracing::warn!(error = %e, "recovery sweep failed; trying again next interval");
            }
            if let Err(e) = self.advance_stalled_tasks().await {
                tracing::warn!(error = %e, "stalled-task sweep failed; trying again next interval");
            }
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                _ = stop.changed() => {}
            }
        }
    }

    async fn advance_due_retries(&self) -> Result<()> {
        for task_uuid in queries::tasks_with_due_retries(self.ctx.pool(), i64::from(SWEEP_LIMIT)).await? {
            let tx = self.ctx.pool().begin().await.map_err(Error::db("sweeping retries"))?;
            advance_task(&self.ctx, tx, task_uuid, Commit::Deferrable).await?;
        }
        Ok(())
    }

    async fn advance_stalled_tasks(&self) -> Result<()> {
        let quiet_for = Duration::from_secs(u64::from(self.ctx.config().messaging.visibility_timeout_seconds));
        for task_uuid in queries::stalled_tasks(self.ctx.pool(), quiet_for, i64::from(SWEEP_LIMIT)).await? {
            tracing::warn!(%task_uuid, "advancing a task nobody advanced (a result message was lost)");
            let tx = self.ctx.pool().begin().await.map_err(Error::db("sweeping stalled tasks"))?;
            advance_task(&self.ctx, tx, task_uuid, Commit::Deferrable).await?;
        }
        Ok(())
    }

    pub(crate) async fn recover_stuck_steps(&self) -> Result<usize> {
        let config = self.ctx.config();
        let stale_after = Duration::from_secs(u64::from(config.messaging.visibility_timeout_seconds));
        let enqueued_after = Duration::from_secs(config.orchestration.stuck_enqueued_seconds);
        let mut tx = self.ctx.pool().begin().await.map_err(Error::db("recovering stuck steps"))?;
        let recovered = queries::recover_stuck_steps(&mut tx, stale_after, enqueued_after, SWEEP_LIMIT).await?;
        let mut by_task: BTreeMap<Uuid, Vec<Uuid>> = BTreeMap::new();
        for (task_uuid, step_uuid, was) in &recovered {
            tracing::warn!(%task_uuid, %step_uuid, was, "recovering a stuck step: enqueuing it again");
            by_task.entry(*task_uuid).or_default().push(*step_uuid);
        }
        let in_database = self.ctx.messaging().queues_in_database();
        if in_database {
            for (task_uuid, steps) in &by_task {
                queries::send_step_messages(&mut tx, *task_uuid, steps).await?;
            }
        }
        tx.commit().await.map_err(Error::db("recovering stuck steps"))?;
        if !in_database {
            for (task_uuid, steps) in by_task {
                let Some(task) = queries::get_task(self.ctx.pool(), task_uuid).await? else { continue };
                let payloads: Vec<Value> = steps
                    .into_iter()
                    .map(|step_uuid| {
                        serde_json::to_value(StepMessage { task_uuid, step_uuid, correlation_id: task.correlation_id })
                            .expect("messages serialize")
                    })
                    .collect();
                self.ctx.send_after_commit(&MessageRouter::step_queue(&task.namespace), payloads).await;
            }
        }
        Ok(recovered.len())
    }
}
