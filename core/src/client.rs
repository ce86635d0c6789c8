use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;
use uuid::Uuid;

use crate::context::Context;
use crate::db::queries::{self, NewStep, NewTask};
use crate::error::{Error, ErrorKind, Result};
use crate::model::{StepTransition, Task, TaskTransition, WorkflowStep};
use crate::orchestration::step_enqueuer::advance_task;

/// A request to run a workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTask {
    pub namespace: String,
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub context: Value,
    /// Creating twice with the same key returns the first task.
    #[serde(default)]
    pub identity_key: Option<String>,
}

/// Creates tasks and reads their state.
#[derive(Debug, Clone)]
pub struct TaskerClient {
    ctx: Arc<Context>,
}

impl TaskerClient {
    pub fn new(ctx: Arc<Context>) -> Self {
        Self { ctx }
    }

    pub fn context(&self) -> &Arc<Context> {
        &self.ctx
    }

    /// Creates the task, its steps and edges, and enqueues its first steps,
    /// all in one transaction.
    pub async fn create_task(&self, request: &CreateTask) -> Result<Task> {
        let pool = self.ctx.pool();
        let registered = self.ctx.templates().get(pool, &request.namespace, &request.name, &request.version).await?;
        let template = &registered.template;
        let context =
            if request.context.is_null() { Value::Object(Default::default()) } else { request.context.clone() };
        if !context.is_object() {
            return Err(Error::new(
                ErrorKind::Validation,
                format!("the context of a {} task must be an object, got {context}", template.key()),
            ));
        }

        let uuids: HashMap<&str, Uuid> = template.steps.iter().map(|s| (s.name.as_str(), Uuid::now_v7())).collect();
        let mut steps = Vec::with_capacity(template.steps.len());
        let mut edges = Vec::new();
        for (position, step) in template.steps.iter().enumerate() {
            let named_step_id = *registered.named_step_ids.get(&step.name).ok_or_else(|| {
                Error::template(format!(
                    "template {}: step {:?} is not stored; register it again",
                    template.key(),
                    step.name
                ))
            })?;
            let step_uuid = uuids[step.name.as_str()];
            steps.push(NewStep {
                step_uuid,
                named_step_id,
                name: step.name.clone(),
                position: i32::try_from(position).unwrap_or(i32::MAX),
                max_attempts: i32::try_from(step.retry.max_attempts).unwrap_or(i32::MAX),
            });
            edges.extend(step.dependencies.iter().map(|dep| (uuids[dep.as_str()], step_uuid)));
        }
        let new_task = NewTask {
            task_uuid: Uuid::now_v7(),
            template_id: registered.template_id,
            template,
            context: &context,
            identity_key: request.identity_key.as_deref(),
            correlation_id: Uuid::now_v7(),
            steps,
            edges,
        };

        let mut tx = pool.begin().await.map_err(Error::db(format!("creating a {} task", template.key())))?;
        if !queries::insert_task(&mut tx, &new_task).await? {
            let key = request.identity_key.as_deref().unwrap_or_default();
            let existing = queries::task_by_identity(&mut tx, key)
                .await?
                .ok_or_else(|| Error::not_found(format!("task with identity key {key:?} vanished")))?;
            tx.rollback().await.map_err(Error::db("rolling back a duplicate task"))?;
            return self.task(existing).await;
        }
        queries::transition_task(&mut tx, new_task.task_uuid, &["pending"], "in_progress", &serde_json::json!({}))
            .await?;
        advance_task(&self.ctx, tx, new_task.task_uuid).await?;
        self.task(new_task.task_uuid).await
    }

    pub async fn task(&self, task_uuid: Uuid) -> Result<Task> {
        queries::get_task(self.ctx.pool(), task_uuid)
            .await?
            .ok_or_else(|| Error::not_found(format!("task {task_uuid} does not exist")))
    }

    /// The task's steps in template order.
    pub async fn steps(&self, task_uuid: Uuid) -> Result<Vec<WorkflowStep>> {
        queries::task_steps(self.ctx.pool(), task_uuid).await
    }

    pub async fn task_transitions(&self, task_uuid: Uuid) -> Result<Vec<TaskTransition>> {
        queries::task_transitions(self.ctx.pool(), task_uuid).await
    }

    /// Every step's transitions, grouped by step in template order.
    pub async fn step_transitions(&self, task_uuid: Uuid) -> Result<Vec<StepTransition>> {
        queries::step_transitions(self.ctx.pool(), task_uuid).await
    }

    /// The results of a step's direct dependencies, by step name.
    pub async fn dependency_results(&self, step_uuid: Uuid) -> Result<HashMap<String, Option<Value>>> {
        queries::dependency_results(self.ctx.pool(), step_uuid).await
    }

    /// Waits until the task is complete, error or cancelled, woken by the
    /// database's notification and checking every 250 ms regardless.
    pub async fn wait_for_task(&self, task_uuid: Uuid, timeout: Duration) -> Result<Task> {
        let deadline = Instant::now() + timeout;
        let mut finished = self.ctx.finished_tasks().await?;
        loop {
            let status = queries::task_status(self.ctx.pool(), task_uuid)
                .await?
                .ok_or_else(|| Error::not_found(format!("task {task_uuid} does not exist")))?;
            if matches!(status.as_str(), "complete" | "error" | "cancelled") {
                return self.task(task_uuid).await;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!("task {task_uuid} is still {status} after {timeout:?}"),
                ));
            }
            let wait = async {
                loop {
                    match finished.recv().await {
                        Ok(uuid) if uuid == task_uuid => break,
                        Ok(_) => {}
                        Err(RecvError::Lagged(_)) => break,
                        Err(RecvError::Closed) => std::future::pending::<()>().await,
                    }
                }
            };
            let _ = tokio::time::timeout(left.min(Duration::from_millis(250)), wait).await;
        }
    }
}
