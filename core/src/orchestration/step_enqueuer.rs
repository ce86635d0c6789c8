use std::collections::BTreeMap;

use serde_json::Value;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::context::Context;
use crate::db::queries::{self, AdvancedTask};
use crate::error::{Error, Result};
use crate::messaging::{MessageRouter, StepMessage};

/// Whether the commit of an advance must reach the disk before it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Commit {
    /// Someone is answered by it (an operator's retry or resolution).
    Durable,
    /// Losing it in a database crash only means the advance is done again:
    /// the commit does not wait for the disk when the queues are in the
    /// same database (see migration 008). A task reaching its end is always
    /// durable.
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
/// nothing left to run is finalized. One statement, one send per queue and
/// one commit, however many tasks. Tasks that do not exist are left out.
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
    let async_commit = commit == Commit::Deferrable && ctx.messaging().queues_in_database();
    let limit = ctx.config().orchestration.enqueue_batch_size;
    let advanced = queries::advance_tasks(&mut tx, task_uuids, limit, async_commit).await?;
    let mut by_queue: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for task in advanced.iter().filter(|t| !t.ready.is_empty()) {
        let payloads = by_queue.entry(MessageRouter::step_queue(&task.namespace)).or_default();
        payloads.extend(task.ready.iter().map(|&step_uuid| {
            let message = StepMessage { task_uuid: task.task_uuid, step_uuid, correlation_id: task.correlation_id };
            serde_json::to_value(message).expect("messages serialize")
        }));
    }
    let mut after_commit = Vec::new();
    for (queue, payloads) in by_queue {
        if ctx.messaging().send_batch_in_transaction(&mut tx, &queue, &payloads).await?.is_none() {
            after_commit.push((queue, payloads));
        }
    }
    tx.commit().await.map_err(Error::db(what()))?;
    // Only for providers outside PostgreSQL: the messages go out after the
    // state that promises them is committed.
    for (queue, payloads) in after_commit {
        ctx.send_after_commit(&queue, payloads).await;
    }
    for task in &advanced {
        let (task_uuid, correlation_id) = (task.task_uuid, task.correlation_id);
        if task.status != task.status_before {
            tracing::info!(%task_uuid, %correlation_id, namespace = task.namespace, status = task.status,
                           "task finished");
        }
        if !task.ready.is_empty() {
            tracing::debug!(%task_uuid, %correlation_id, steps = task.ready.len(), "enqueued ready steps");
        }
    }
    Ok(advanced)
}
