use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use uuid::Uuid;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::messaging::{decode_or_dead_letter, MessageRouter, ReceivedMessage, StepResultMessage, Wakeups};

use super::step_enqueuer::{advance_tasks, Commit};

/// How long a result that could not be processed waits before it is
/// delivered again.
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// Reads step results and advances each result's task.
pub(crate) struct ResultProcessor {
    ctx: Arc<Context>,
    wakeups: Wakeups,
}

impl ResultProcessor {
    pub(crate) async fn new(ctx: Arc<Context>) -> Result<Self> {
        let wakeups = ctx.messaging().wakeups(&[MessageRouter::STEP_RESULTS.to_owned()]).await?;
        Ok(Self { ctx, wakeups })
    }

    pub(crate) async fn run(self, mut stop: watch::Receiver<bool>) {
        let config = &self.ctx.config();
        let poll = Duration::from_millis(config.orchestration.poll_interval_ms);
        let visibility = Duration::from_secs(u64::from(config.messaging.visibility_timeout_seconds));
        while !*stop.borrow() {
            let received = self
                .ctx
                .messaging()
                .receive(MessageRouter::STEP_RESULTS, config.orchestration.batch_size, visibility)
                .await;
            match received {
                Ok(messages) if !messages.is_empty() => {
                    // Less than a full batch with pushed wake-ups: the queue
                    // is drained, and the next result wakes the wait below.
                    let asked = usize::try_from(config.orchestration.batch_size).unwrap_or(usize::MAX);
                    let drained = self.wakeups.pushed() && messages.len() < asked;
                    self.process(messages).await;
                    if !drained {
                        continue;
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "reading step results failed; retrying"),
            }
            tokio::select! {
                () = self.wakeups.wait(poll) => {}
                _ = stop.changed() => {}
            }
        }
    }

    /// Advances every task the batch has results for, in one transaction
    /// that also acks the results where the provider allows. If that fails,
    /// each task is advanced on its own, so one task that cannot be advanced
    /// holds up no other; its results are handed back for redelivery.
    async fn process(&self, messages: Vec<ReceivedMessage>) {
        let mut by_task: BTreeMap<Uuid, Vec<ReceivedMessage>> = BTreeMap::new();
        for message in messages {
            if let Some(result) =
                decode_or_dead_letter::<StepResultMessage>(self.ctx.messaging().as_ref(), &message).await
            {
                by_task.entry(result.task_uuid).or_default().push(message);
            }
        }
        if by_task.len() > 1 {
            let tasks: Vec<Uuid> = by_task.keys().copied().collect();
            let all: Vec<&ReceivedMessage> = by_task.values().flatten().collect();
            match self.advance(&tasks, &all).await {
                Ok(()) => return,
                Err(e) => tracing::warn!(tasks = tasks.len(), error = %e,
                                         "advancing a batch of tasks failed; advancing each on its own"),
            }
        }
        for (task_uuid, messages) in by_task {
            let messages: Vec<&ReceivedMessage> = messages.iter().collect();
            if let Err(e) = self.advance(&[task_uuid], &messages).await {
                tracing::error!(%task_uuid, error = %e, "advancing a task failed; its results are redelivered");
                // Hand the messages back (RabbitMQ would otherwise hold
                // them for as long as this connection lives).
                for message in messages {
                    let _ = self.ctx.messaging().nack(&message.queue, message.receipt, RETRY_DELAY).await;
                }
            }
        }
    }

    async fn advance(&self, tasks: &[Uuid], messages: &[&ReceivedMessage]) -> Result<()> {
        let receipts: Vec<i64> = messages.iter().map(|m| m.receipt).collect();
        let mut tx = self.ctx.pool().begin().await.map_err(Error::db("advancing tasks"))?;
        // Acked in the commit that advances the tasks, where the provider
        // allows.
        let acked = self.ctx.messaging().ack_in_transaction(&mut tx, MessageRouter::STEP_RESULTS, &receipts).await?;
        let advanced = advance_tasks(&self.ctx, tx, tasks, Commit::Deferrable).await?;
        tracing::debug!(tasks = advanced.len(), results = messages.len(), "processed step results");
        if !acked {
            for message in messages {
                if let Err(e) = self.ctx.messaging().ack(&message.queue, message.receipt).await {
                    tracing::warn!(error = %e, "acking a step result failed; it will be redelivered");
                }
            }
        }
        Ok(())
    }
}
