use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::context::Context;
use crate::db::queries::{self, AdvancedTask};
use crate::error::{Error, Result};
use tracing::Instrument;

/// Whether the commit of an advance must reach the disk before it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Commit {
    /// Someone is answered by it (an operator's retry or resolution).
    Durable,
    /// Losing it in a database crash only means the advance is done again
    /// (the sweep): the commit does not wait for the disk when the queues
    /// are in the same database. A task reaching its end is always durable.
    Deferrable,
}

/// Moves one task forward inside `tx`, then commits; see [`advance_tasks`].
/// Returns the task's status.
pub(crate) async fn advance_task(
    ctx: &Context,
    tx: Transaction<'static, Postgres>,
    task_uuid: Uuid,
    commit: Commit,
) -> Result<String> {
    let advanced = advance_tasks(ctx, tx, &[task_uuid], commit).await?;
    match advanced.into_iter().next() {
        Some(task) => Ok(task.status),
        None => Err(Error::not_found(format!("task {task_uuid} does not exist"))),
    }
}

/// Moves tasks forward inside `tx`, then commits: each task's ready steps
/// become `enqueued` and their messages are sent (in the same transaction
/// where the provider allows, else right after commit), and a task with
/// nothing left to run is finalized. One statement and one commit, however
/// many tasks. Tasks that do not exist are left out. Workers advance their
/// own tasks as they record outcomes; this is for operator actions and the
/// sweep.
pub(crate) async fn advance_tasks(
    ctx: &Context,
    mut tx: Transaction<'static, Postgres>,
    task_uuids: &[Uuid],
    commit: Commit,
) -> Result<Vec<AdvancedTask>> {
    let what = || match task_uuids {
        [one] => format!("advancing task {one}"),
        many => format!("advancing {} tasks", many.len()),
    };
    let in_database = ctx.messaging().queues_in_database();
    let async_commit = commit == Commit::Deferrable && in_database;
    let span = tracing::trace_span!("advance", tasks = task_uuids.len(), task_uuid = tracing::field::Empty);
    if let [task_uuid] = task_uuids {
        span.record("task_uuid", tracing::field::display(task_uuid));
    }
    let mut advanced = async {
        let advanced = queries::advance_tasks(&mut tx, task_uuids, async_commit, in_database).await?;
        tx.commit().await.map_err(Error::db(what()))?;
        Ok::<_, Error>(advanced)
    }
    .instrument(span)
    .await?;
    for task in &mut advanced {
        if task.status != task.status_before {
            tracing::info!(task_uuid = %task.task_uuid, status = task.status, "task finished");
        }
        // Only for providers outside PostgreSQL: the messages go out after
        // the state that promises them is committed.
        ctx.send_outbox(std::mem::take(&mut task.unsent.0)).await;
    }
    Ok(advanced)
}
