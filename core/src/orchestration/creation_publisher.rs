use std::sync::Arc;

use sqlx::postgres::PgListener;
use tokio::sync::watch;
use uuid::Uuid;

use crate::context::Context;
use crate::db::queries;
use crate::error::{Error, Result};
use crate::resilience::{listen, Heard, LoopRetry};

/// For queues outside PostgreSQL: sends the first messages of tasks created
/// without them, as soon as the creating transaction commits (announced by
/// `tasker_create_task` with NOTIFY, which is delivered only on commit).
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
        let window = std::time::Duration::from_secs(ctx.config().orchestration.stuck_enqueued_seconds);
        for task_uuid in queries::tasks_with_enqueued_steps_since(ctx.pool(), window).await? {
            publish_enqueued(&ctx, task_uuid).await?;
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
                    Heard::Notification(n) => match n.payload().parse::<Uuid>() {
                        Ok(task_uuid) => {
                            if let Err(e) = publish_enqueued(&self.ctx, task_uuid).await {
                                if self.ctx.breakers().observe(&e).is_none() {
                                    tracing::warn!(%task_uuid, error = %e, "reading a new task's enqueued steps \
                                                   failed; the sweep resends them");
                                }
                            }
                        }
                        Err(_) => tracing::warn!(payload = n.payload(), "ignoring a malformed task announcement"),
                    },
                    Heard::Reconnected => {}
                },
                _ = stop.changed() => {}
            }
        }
    }
}

/// Sends a message for every enqueued step of the task that goes to one of
/// this deployment's queues (those with its queue prefix): another
/// deployment sharing the database publishes its own.
async fn publish_enqueued(ctx: &Context, task_uuid: Uuid) -> Result<()> {
    let steps = queries::enqueued_steps(ctx.pool(), task_uuid).await?;
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
