use serde_json::Value;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::context::Context;
use crate::db::queries;
use crate::error::{Error, Result};
use crate::messaging::{MessageRouter, StepMessage};

/// Moves a task forward inside `tx`, then commits: ready steps become
/// `enqueued` and their messages are sent (in the same transaction where
/// the provider allows, else right after commit), and the task is
/// finalized if nothing is left to run. Returns the task's status.
pub(crate) async fn advance_task(
    ctx: &Context,
    mut tx: Transaction<'static, Postgres>,
    task_uuid: Uuid,
) -> Result<String> {
    let Some((status, namespace, correlation_id)) = queries::lock_task(&mut tx, task_uuid).await? else {
        return Err(Error::not_found(format!("task {task_uuid} does not exist")));
    };
    if status != "in_progress" {
        tx.commit().await.map_err(Error::db(format!("advancing task {task_uuid}")))?;
        return Ok(status);
    }
    let ready = queries::enqueue_ready_steps(&mut tx, task_uuid, ctx.config().orchestration.enqueue_batch_size).await?;
    let queue = MessageRouter::step_queue(&namespace);
    let payloads: Vec<Value> = ready
        .iter()
        .map(|&step_uuid| {
            serde_json::to_value(StepMessage { task_uuid, step_uuid, correlation_id }).expect("messages serialize")
        })
        .collect();
    let sent_in_tx = if payloads.is_empty() {
        true
    } else {
        ctx.messaging().send_batch_in_transaction(&mut tx, &queue, &payloads).await?.is_some()
    };
    let finalized = queries::finalize_task(&mut tx, task_uuid).await?;
    tx.commit().await.map_err(Error::db(format!("advancing task {task_uuid}")))?;
    if let Some(finished) = finalized.as_ref().filter(|s| *s != &status) {
        tracing::info!(%task_uuid, %correlation_id, namespace, status = %finished, "task finished");
    }
    let status = finalized.unwrap_or(status);
    if !sent_in_tx {
        // Only for providers outside PostgreSQL: the message goes out after
        // the state that promises it is committed.
        ctx.send_after_commit(&queue, payloads).await;
    }
    if !ready.is_empty() {
        tracing::debug!(%task_uuid, %correlation_id, steps = ready.len(), queue, "enqueued ready steps");
    }
    Ok(status)
}
