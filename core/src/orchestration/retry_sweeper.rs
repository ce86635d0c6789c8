use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::context::Context;
use crate::db::queries;
use crate::error::Error;

use super::step_enqueuer::advance_task;

/// Tasks per sweep; the rest wait for the next one.
const SWEEP_LIMIT: i64 = 500;

/// Periodically advances tasks with a step whose retry backoff elapsed.
pub(crate) struct RetrySweeper {
    ctx: Arc<Context>,
}

impl RetrySweeper {
    pub(crate) fn new(ctx: Arc<Context>) -> Self {
        Self { ctx }
    }

    pub(crate) async fn run(self, mut stop: watch::Receiver<bool>) {
        let interval = Duration::from_millis(self.ctx.config().orchestration.sweep_interval_ms);
        while !*stop.borrow() {
            if let Err(e) = self.sweep().await {
                tracing::warn!(error = %e, "retry sweep failed; trying again next interval");
            }
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                _ = stop.changed() => {}
            }
        }
    }

    async fn sweep(&self) -> Result<(), Error> {
        for task_uuid in queries::tasks_with_due_retries(self.ctx.pool(), SWEEP_LIMIT).await? {
            let tx = self.ctx.pool().begin().await.map_err(Error::db("sweeping retries"))?;
            advance_task(&self.ctx, tx, task_uuid).await?;
        }
        Ok(())
    }
}
