use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgListener, PgNotification};
use tokio::sync::watch;
use uuid::Uuid;

use crate::context::Context;
use crate::db::queries;
use crate::error::{Error, Result};
use crate::resilience::{listen, Heard, LoopRetry};

/// For queues outside PostgreSQL: sends the first messages of tasks created
/// without them, as soon as the creating transaction commits (announced by
/// `tasker_create_task` with NOTIFY, which is delivered only on commit).
/// The announcements that arrived while one batch was being sent are sent
/// together: one read, one statement and one publish per batch. One at a
/// time, the round trips of each task capped a deployment at about 300 new
/// tasks a second, however many workers it had.
pub(crate) struct CreationPublisher {
    ctx: Arc<Context>,
    listener: PgListener,
}

impl CreationPublisher {
    pub(crate) async fn new(ctx: Arc<Context>) -> Result<Self> {
        let mut listener =
            PgListener::connect_with(ctx.pool()).await.map_err(Error::db("connecting a LISTEN session"))?;
        listener.listen(queries::TASK_CREATED_CHANNEL).await.map_err(Error::db("listening for created tasks"))?;
        // Catch up on tasks announced while no orchestrator listened: now
        // that we listen, anything committed later is announced to us, and
        // anything before is in this query. A message another orchestrator
        // already sent is duplicated, which the claim makes harmless.
        let window = Duration::from_secs(ctx.config().orchestration.stuck_enqueued_seconds);
        for tasks in queries::tasks_with_enqueued_steps_since(ctx.pool(), window).await?.chunks(MAX_TASKS) {
            publish_enqueued(&ctx, tasks).await?;
        }
        Ok(Self { ctx, listener })
    }

    pub(crate) async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut retry = LoopRetry::new("creation_publisher", Some(self.ctx.breakers().clone()));
        while !*stop.borrow() {
            tokio::select! {
                // Announcements missed while the session was lost: the sweep
                // sends their steps' messages.
                heard = listen(&mut self.listener, &mut retry, "listening for created tasks") => match heard {
                    Heard::Notification(first) => {
                        let tasks = announced(&mut self.listener, first).await;
                        if tasks.is_empty() {
                            continue;
                        }
                        if let Err(e) = publish_enqueued(&self.ctx, &tasks).await {
                            if self.ctx.breakers().observe(&e).is_none() {
                                tracing::warn!(tasks = tasks.len(), error = %e, "reading new tasks' enqueued steps \
                                               failed; the sweep resends them");
                            }
                        }
                    }
                    Heard::Reconnected => {}
                },
                _ = stop.changed() => {}
            }
        }
    }
}

/// Most tasks whose messages are sent together.
const MAX_TASKS: usize = 500;

/// The tasks announced by `first` and by the notifications that have
/// already arrived after it (read without waiting: a read that would wait
/// ends the batch), up to `MAX_TASKS`.
async fn announced(listener: &mut PgListener, first: PgNotification) -> Vec<Uuid> {
    let mut tasks = Vec::new();
    let mut next = Some(first);
    while let Some(n) = next.take() {
        match n.payload().parse::<Uuid>() {
            Ok(task_uuid) => tasks.push(task_uuid),
            Err(_) => tracing::warn!(payload = n.payload(), "ignoring a malformed task announcement"),
        }
        if tasks.len() < MAX_TASKS {
            // A lost session or an error is met again by the next listen.
            if let Ok(Ok(Some(n))) = tokio::time::timeout(Duration::ZERO, listener.try_recv()).await {
                next = Some(n);
            }
        }
    }
    tasks
}

/// Sends a message for every enqueued step of the tasks that goes to one of
/// this deployment's queues (those with its queue prefix): another
/// deployment sharing the database publishes its own.
async fn publish_enqueued(ctx: &Context, tasks: &[Uuid]) -> Result<()> {
    let steps = queries::enqueued_steps(ctx.pool(), tasks).await?;
    if steps.is_empty() {
        return Ok(());
    }
    let mut conn = ctx.pool().acquire().await.map_err(Error::db("sending step messages"))?;
    let mut outbox = queries::dispatch_messages(&mut conn, &steps, false).await?;
    drop(conn);
    outbox.retain(|m| m.queue.starts_with(ctx.router().prefix()));
    ctx.send_outbox(outbox).await;
    Ok(())
}
