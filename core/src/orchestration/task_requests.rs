use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::client::{CreateTask, TaskerClient};
use crate::context::Context;
use crate::error::{Error, ErrorKind, Result};
use crate::messaging::dead_letters::drop_overdelivered;
use crate::messaging::{decode_or_dead_letter, ReceivedMessage, Wakeups};
use crate::resilience::LoopRetry;

/// How long a request that could not be served for a passing reason (the
/// database is unreachable) waits before it is delivered again.
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// Creates the tasks asked for on `<queue_prefix>orchestration_task_requests`: each
/// message is a [`CreateTask`] as JSON (`namespace`, `name`, `version`,
/// `context`, and optionally `identity_key` or `derive_identity_key`, which
/// make a redelivered request create one task). A request that can never
/// succeed (malformed, an unknown template, a context its schema refuses)
/// is logged with the reason and moved to the dead-letter store.
pub(crate) struct TaskRequests {
    client: TaskerClient,
    queue: String,
    wakeups: Wakeups,
}

impl TaskRequests {
    pub(crate) async fn new(ctx: Arc<Context>) -> Result<Self> {
        let queue = ctx.router().task_requests();
        let wakeups = ctx.messaging().wakeups(std::slice::from_ref(&queue)).await?;
        Ok(Self { client: TaskerClient::new(ctx), queue, wakeups })
    }

    pub(crate) async fn run(self, mut stop: watch::Receiver<bool>) {
        let ctx = self.client.context().clone();
        let config = ctx.config();
        let poll = Duration::from_millis(config.orchestration.poll_interval_ms);
        let visibility = Duration::from_secs(u64::from(config.messaging.visibility_timeout_seconds));
        let mut retry = LoopRetry::new("task_requests", Some(ctx.breakers().clone()));
        while !*stop.borrow() {
            let asked = config.orchestration.batch_size;
            let mut outage_wait = None;
            match ctx.messaging().receive(&self.queue, asked, visibility).await {
                Ok(messages) if !messages.is_empty() => {
                    retry.succeeded();
                    let full = messages.len() >= usize::try_from(asked).unwrap_or(usize::MAX);
                    let max = config.messaging.max_receive_count;
                    for message in drop_overdelivered(ctx.messaging().as_ref(), max, messages).await {
                        if let Some(e) = self.serve(message).await {
                            outage_wait = retry.failed(&e);
                            if outage_wait.is_some() {
                                break;
                            }
                        }
                    }
                    if outage_wait.is_none() && (full || !self.wakeups.pushed()) {
                        continue;
                    }
                }
                Ok(_) => retry.succeeded(),
                Err(e) => {
                    outage_wait = retry.failed(&e);
                    if outage_wait.is_none() {
                        tracing::warn!(error = %e, "reading task requests failed; retrying");
                    }
                }
            }
            if let Some(wait) = outage_wait {
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
            tokio::select! {
                () = self.wakeups.wait(poll) => {}
                _ = stop.changed() => {}
            }
        }
    }

    /// Returns the error of a creation that failed for an outage (the
    /// request is delivered again).
    async fn serve(&self, message: ReceivedMessage) -> Option<Error> {
        let messaging = self.client.context().messaging().clone();
        let request = decode_or_dead_letter::<CreateTask>(messaging.as_ref(), &message).await?;
        let template = format!("{}/{}@{}", request.namespace, request.name, request.version);
        match self.client.create_task(&request).await {
            Ok(task) => {
                tracing::info!(task_uuid = %task.task_uuid, template, "created a task on request");
                if let Err(e) = messaging.ack(&message.queue, message.receipt).await {
                    // Delivered again: an identity key makes that harmless.
                    tracing::warn!(error = %e, "acking a served task request failed");
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::Validation | ErrorKind::Template) => {
                tracing::error!(template, receipt = message.receipt, error = %e,
                                "a task request that can never be served moved to the dead-letter store");
                crate::telemetry::metrics::dead_lettered(
                    &message.queue,
                    crate::telemetry::metrics::DeadLetterReason::Rejected,
                );
                let reason = format!("rejected: {e}");
                if let Err(e) = messaging.dead_letter_because(&message.queue, message.receipt, &reason).await {
                    tracing::error!(error = %e, "dead-lettering a task request failed");
                }
            }
            Err(e) => {
                let _ = messaging.nack(&message.queue, message.receipt, RETRY_DELAY).await;
                if crate::resilience::outage(&e).is_some() {
                    return Some(e);
                }
                tracing::warn!(template, error = %e, "creating a requested task failed; it is delivered again");
            }
        }
        None
    }
}
