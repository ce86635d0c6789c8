//! Which queues belong to this deployment, for metrics, health and status.

use std::collections::{BTreeSet, HashMap};

use crate::context::Context;
use crate::db::ops_queries;
use crate::error::Result;

/// The task-request queue, every namespace queue registered with this
/// deployment's prefix, and the queues this process's workers read; sorted.
pub async fn deployment_queues(ctx: &Context) -> Result<Vec<String>> {
    let router = ctx.router();
    let mut queues: BTreeSet<String> = ops_queries::namespace_queues(ctx.pool())
        .await?
        .into_iter()
        .filter(|q| router.namespace_of(q).is_some())
        .collect();
    queues.extend(super::registry::worker_queues().into_iter().filter(|q| router.namespace_of(q).is_some()));
    queues.insert(router.task_requests());
    Ok(queues.into_iter().collect())
}

/// RabbitMQ cannot tell a message's age: the age of the oldest step
/// enqueued for each queue stands in for it.
pub(crate) async fn oldest_enqueued_ages(ctx: &Context) -> Result<HashMap<String, f64>> {
    ops_queries::oldest_enqueued_ages(ctx.pool()).await
}
