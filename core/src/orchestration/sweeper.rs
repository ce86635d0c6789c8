use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use uuid::Uuid;

use crate::context::Context;
use crate::db::queries;
use crate::error::{Error, Result};
use crate::resilience::LoopRetry;

use super::step_enqueuer::{advance_task, Commit};

/// Most tasks advanced, and most steps recovered, per sweep; the rest wait
/// for the next sweep.
const SWEEP_LIMIT: i32 = 500;

/// Tasks in progress whose steps one pass looks at: passes walk the tasks
/// in progress a slice at a time, oldest first, and start again from the
/// oldest after the newest, so a pass costs the same however many tasks
/// run (with more than this many running, a step is looked at every few
/// passes).
const SWEEP_TASKS: i32 = 2_000;

/// Runs every `sweep_interval_ms`; none of it is on the path of a workflow
/// that meets no crash:
/// - recovers steps whose worker is gone (in progress with no heartbeat for
///   a visibility timeout) or whose message may be lost (enqueued, or past
///   its retry time, for longer than `stuck_enqueued_seconds`): they are
///   enqueued and sent again, and the claim's compare-and-swap makes a
///   duplicate harmless;
/// - advances tasks in progress with nothing in flight and no change for a
///   visibility timeout (an operator's change or a crash left them so);
/// - with queues outside PostgreSQL (RabbitMQ, whose priorities are
///   strict), sends the message of a step that waited past its priority's
///   aging bound again at the top priority (`tasker_raise_priorities`).
///   PGMQ's queues age priorities by themselves.
pub(crate) struct Sweeper {
    ctx: Arc<Context>,
    /// The last task the previous recovery pass looked at.
    cursor: std::sync::Mutex<Option<Uuid>>,
}

impl Sweeper {
    pub(crate) fn new(ctx: Arc<Context>) -> Self {
        Self { ctx, cursor: std::sync::Mutex::new(None) }
    }

    pub(crate) async fn run(self, mut stop: watch::Receiver<bool>) {
        let interval = Duration::from_millis(self.ctx.config().orchestration.sweep_interval_ms);
        let mut retry = LoopRetry::new("sweeper", Some(self.ctx.breakers().clone()));
        while !*stop.borrow() {
            // While the database is down, the next pass waits for the
            // backoff (at least the interval), and nothing more is logged.
            let mut wait = interval;
            let passes = [
                (self.recover_stuck_steps().await.map(|_| ()), "recovery sweep failed; trying again next interval"),
                (self.advance_stalled_tasks().await, "stalled-task sweep failed; trying again next interval"),
            ];
            if passes.iter().all(|(pass, _)| pass.is_ok()) {
                retry.succeeded();
            }
            for (pass, failed) in passes {
                if let Err(e) = pass {
                    match retry.failed(&e) {
                        Some(backoff) => wait = wait.max(backoff),
                        None => tracing::warn!(error = %e, "{failed}"),
                    }
                }
            }
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = stop.changed() => {}
            }
        }
    }

    /// A task that cannot be advanced is reported and skipped: the rest of
    /// the pass goes on, and the next pass tries it again.
    async fn advance_stalled_tasks(&self) -> Result<()> {
        let quiet_for = Duration::from_secs(u64::from(self.ctx.config().messaging.visibility_timeout_seconds));
        for task_uuid in queries::stalled_tasks(self.ctx.pool(), quiet_for, i64::from(SWEEP_LIMIT)).await? {
            tracing::warn!(%task_uuid, "advancing a task nobody advanced");
            let advanced = match self.ctx.pool().begin().await.map_err(Error::db("sweeping stalled tasks")) {
                Ok(tx) => advance_task(&self.ctx, tx, task_uuid, Commit::Deferrable).await,
                Err(e) => Err(e),
            };
            if advanced.is_ok() {
                crate::telemetry::metrics::sweep_advanced();
            }
            if let Err(e) = advanced {
                tracing::error!(%task_uuid, error = %e, "advancing a stalled task failed; the sweep goes on and \
                                                        tries it again next pass");
            }
        }
        Ok(())
    }

    pub(crate) async fn recover_stuck_steps(&self) -> Result<usize> {
        let config = self.ctx.config();
        let stale_after = Duration::from_secs(u64::from(config.messaging.visibility_timeout_seconds));
        let enqueued_after = Duration::from_secs(config.orchestration.stuck_enqueued_seconds);
        let mut tx = self.ctx.pool().begin().await.map_err(Error::db("recovering stuck steps"))?;
        let after = *self.cursor.lock().expect("sweep cursor lock");
        let tasks = queries::tasks_in_progress_after(&mut tx, after, SWEEP_TASKS).await?;
        let next =
            if tasks.len() < usize::try_from(SWEEP_TASKS).unwrap_or(usize::MAX) { None } else { tasks.last().copied() };
        let recovered = queries::recover_stuck_steps(&mut tx, &tasks, stale_after, enqueued_after, SWEEP_LIMIT).await?;
        for (task_uuid, step_uuid, was) in &recovered {
            tracing::warn!(%task_uuid, %step_uuid, was, "recovering a stuck step: enqueuing it again");
        }
        let steps: Vec<Uuid> = recovered.iter().map(|(_, step, _)| *step).collect();
        let in_database = self.ctx.messaging().queues_in_database();
        let mut outbox = queries::dispatch_messages(&mut tx, &steps, in_database).await?;
        let raised = if in_database {
            Vec::new()
        } else {
            let aging = Duration::from_millis(config.messaging.priority_aging_ms);
            queries::raise_priorities(&mut tx, &tasks, aging, SWEEP_LIMIT).await?
        };
        for message in &raised {
            tracing::debug!(queue = message.queue, message = %message.message,
                            "a step waited past its priority's aging bound: sending it again at the top priority");
        }
        crate::telemetry::metrics::priorities_raised(raised.len());
        outbox.extend(raised);
        tx.commit().await.map_err(Error::db("recovering stuck steps"))?;
        *self.cursor.lock().expect("sweep cursor lock") = next;
        self.ctx.send_outbox(outbox).await;
        crate::telemetry::metrics::sweep_recovered(recovered.iter().map(|(_, _, was)| was.as_str()));
        Ok(recovered.len())
    }
}
