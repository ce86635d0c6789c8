use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;
use tracing::Instrument;
use uuid::Uuid;

use crate::context::Context;
use crate::db::queries;
use crate::error::{Error, ErrorKind, Result};
use crate::model::{StepTransition, Task, TaskTransition, WorkflowStep};
use crate::orchestration::step_enqueuer::{advance_task, Commit};

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
    /// Without an `identity_key`, derive one from the template and the
    /// context, so the same request creates one task.
    #[serde(default)]
    pub derive_identity_key: bool,
    /// The caller's W3C traceparent: stored with the task, and every
    /// step's span continues its trace.
    #[serde(default)]
    pub traceparent: Option<String>,
    /// A delayed task: created now, `pending`, started at this time.
    #[serde(default)]
    pub run_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The task's deadline in seconds from its start (else the template's).
    #[serde(default)]
    pub timeout_seconds: Option<u32>,
    /// -5..5, higher runs first (else the template's `priority`, else 0).
    #[serde(default)]
    pub priority: Option<i32>,
}

impl CreateTask {
    pub fn new(namespace: &str, name: &str, version: &str, context: Value) -> Self {
        Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            version: version.to_owned(),
            context,
            identity_key: None,
            derive_identity_key: false,
            traceparent: None,
            run_at: None,
            timeout_seconds: None,
            priority: None,
        }
    }
}

/// `sha256:<hex>` of the template key and the context (serde_json writes
/// object keys sorted, so equal contexts hash alike).
fn derived_identity_key(template_key: &str, context: &Value) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{template_key}\n{context}").as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
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

    /// Checks a request without creating anything: the template exists and
    /// the context fits its `input_schema`. Returns the context to store and
    /// the identity key to use (derived when asked for).
    pub async fn validate_request(&self, request: &CreateTask) -> Result<(Value, Option<String>)> {
        let template =
            self.ctx.templates().get(self.ctx.pool(), &request.namespace, &request.name, &request.version).await?;
        let context =
            if request.context.is_null() { Value::Object(Default::default()) } else { request.context.clone() };
        if !context.is_object() {
            return Err(Error::new(
                ErrorKind::Validation,
                format!("the context of a {} task must be an object, got {context}", template.key()),
            ));
        }
        template.validate_context(&context)?;
        if let Some(traceparent) = &request.traceparent {
            crate::telemetry::traces::check_traceparent(traceparent)?;
        }
        if let Some(t) = request.timeout_seconds.filter(|t| *t == 0 || *t > i32::MAX as u32) {
            return Err(Error::new(
                ErrorKind::Validation,
                format!("timeout_seconds of a {} task must be 1 to {}, got {t}", template.key(), i32::MAX),
            ));
        }
        if let Some(problem) = request.priority.and_then(|p| {
            crate::priority::problem(&format!("the priority given for a {} task,", template.key()), p.into())
        }) {
            return Err(Error::new(ErrorKind::Validation, problem));
        }
        if request.identity_key.as_deref().is_some_and(|k| k.trim().is_empty()) {
            return Err(Error::new(ErrorKind::Validation, "identity_key must not be blank"));
        }
        let identity_key = match (&request.identity_key, request.derive_identity_key) {
            (Some(key), _) => Some(key.clone()),
            (None, true) => Some(derived_identity_key(&template.key(), &context)),
            (None, false) => None,
        };
        Ok((context, identity_key))
    }

    /// Creates the task, its steps and edges, and enqueues its first steps,
    /// all in one transaction (one SQL function: `tasker_create_task`).
    /// Fails at once with [`ErrorKind::Unavailable`] while the database's
    /// circuit breaker is open.
    pub async fn create_task(&self, request: &CreateTask) -> Result<Task> {
        self.ctx.breakers().check_database()?;
        let span = tracing::trace_span!("create_task", namespace = %request.namespace, name = %request.name,
                                        version = %request.version, task_uuid = tracing::field::Empty,
                                        correlation_id = tracing::field::Empty);
        if let Some(traceparent) = request.traceparent.as_deref().filter(|_| !span.is_disabled()) {
            crate::telemetry::traces::continue_trace(&span, traceparent);
        }
        let created = self.create_task_now(request, &span).instrument(span.clone()).await;
        if let Ok(task) = &created {
            span.record("task_uuid", tracing::field::display(task.task_uuid));
            span.record("correlation_id", tracing::field::display(task.correlation_id));
        }
        self.ctx.breakers().watch(created)
    }

    async fn create_task_now(&self, request: &CreateTask, span: &tracing::Span) -> Result<Task> {
        let (context, identity_key) = self.validate_request(request).await?;
        let request = CreateTask { identity_key, ..request.clone() };
        let key = format!("{}/{}@{}", request.namespace, request.name, request.version);
        let send_in_database = self.ctx.messaging().queues_in_database();
        // The caller's trace, or when it gave none, this creation's.
        let traceparent = request.traceparent.clone().or_else(|| crate::telemetry::traces::traceparent_of(span));
        let (task_uuid, created) =
            queries::create_task(self.ctx.pool(), &key, &request, &context, send_in_database, traceparent.as_deref())
                .await?;
        if created {
            tracing::debug!(%task_uuid, template = key, "created task");
        }
        self.task(task_uuid).await
    }

    /// Cancels the task and its unfinished steps; nothing further is
    /// enqueued. Returns false when the task had already finished.
    pub async fn cancel_task(&self, task_uuid: Uuid, reason: &str) -> Result<bool> {
        queries::cancel_task(self.ctx.pool(), task_uuid, reason).await
    }

    /// Gives a failed step a fresh set of attempts and resumes its task.
    /// Returns false when the step is not in error.
    pub async fn retry_step(&self, step_uuid: Uuid, reason: &str) -> Result<bool> {
        let (task_uuid, mut tx) = self.begin_on_step(step_uuid).await?;
        if !queries::retry_step(&mut tx, step_uuid, reason).await? {
            return Ok(false);
        }
        advance_task(&self.ctx, tx, task_uuid, Commit::Durable).await?;
        Ok(true)
    }

    /// Marks a step done by hand with `results`, so its dependents run, and
    /// resumes its task. Returns false when the step had already finished.
    pub async fn resolve_step_manually(&self, step_uuid: Uuid, results: &Value, reason: &str) -> Result<bool> {
        let (task_uuid, mut tx) = self.begin_on_step(step_uuid).await?;
        if !queries::resolve_step_manually(&mut tx, step_uuid, results, reason).await? {
            return Ok(false);
        }
        advance_task(&self.ctx, tx, task_uuid, Commit::Durable).await?;
        Ok(true)
    }

    /// The step's task, and a transaction in which to change the step and
    /// then advance the task (dropping it rolls back).
    async fn begin_on_step(&self, step_uuid: Uuid) -> Result<(Uuid, sqlx::Transaction<'static, sqlx::Postgres>)> {
        let task_uuid = queries::step_task(self.ctx.pool(), step_uuid)
            .await?
            .ok_or_else(|| Error::not_found(format!("step {step_uuid} does not exist")))?;
        let tx = self.ctx.pool().begin().await.map_err(Error::db(format!("changing step {step_uuid}")))?;
        Ok((task_uuid, tx))
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

    /// `(template, step, handler)` for every step of the namespaces'
    /// templates, so a worker can check its handlers before it starts: the
    /// templates this process registered, or, when it registered none, every
    /// one stored in the database.
    pub async fn handlers(&self, namespaces: &[String]) -> Result<Vec<(String, String, String)>> {
        let registered = self.ctx.templates().registered();
        if registered.is_empty() {
            return queries::handlers(self.ctx.pool(), namespaces).await;
        }
        let mut handlers = Vec::new();
        for (namespace, name, version) in registered.iter().filter(|(ns, ..)| namespaces.contains(ns)) {
            let template = self.ctx.templates().get(self.ctx.pool(), namespace, name, version).await?;
            handlers
                .extend(template.steps.iter().map(|s| (template.key(), s.name.clone(), s.handler.callable.clone())));
        }
        handlers.sort();
        Ok(handlers)
    }

    /// A step's `handler.initialization` settings in its template (an empty
    /// object when it has none), from the template cache.
    pub async fn handler_config(&self, namespace: &str, name: &str, version: &str, step: &str) -> Result<Value> {
        let template = self.ctx.templates().get(self.ctx.pool(), namespace, name, version).await?;
        // A fan-out's children run as `<step>[]` (see FanOutSpec).
        let handler = template.steps.iter().find_map(|s| {
            if s.name == step {
                Some(&s.handler)
            } else {
                let fan_out = s.fan_out.as_ref().filter(|_| crate::FanOutSpec::child_step_name(&s.name) == step)?;
                fan_out.handler.as_ref()
            }
        });
        let Some(handler) = handler else {
            return Err(Error::not_found(format!("template {} has no step {step:?}", template.key())));
        };
        Ok(if handler.initialization.is_null() {
            Value::Object(serde_json::Map::new())
        } else {
            handler.initialization.clone()
        })
    }

    /// The results of a step's direct dependencies, by step name.
    pub async fn dependency_results(&self, step_uuid: Uuid) -> Result<HashMap<String, Option<Value>>> {
        queries::dependency_results(self.ctx.pool(), step_uuid).await
    }

    /// Waits until the task is complete, error or cancelled, then reads it.
    pub async fn wait_for_task(&self, task_uuid: Uuid, timeout: Duration) -> Result<Task> {
        self.wait_for_status(task_uuid, timeout).await?;
        self.task(task_uuid).await
    }

    /// Waits until the task is complete, error or cancelled and returns
    /// that state (see `wait_for_end`).
    pub async fn wait_for_status(&self, task_uuid: Uuid, timeout: Duration) -> Result<String> {
        Ok(self.wait_for_end(task_uuid, timeout).await?.0)
    }

    /// Waits until the task is complete, error or cancelled; returns that
    /// state and, when the end was heard as it happened, the task's row as
    /// JSON (the notification of a task's end carries both, so an end seen
    /// that way costs no read). The state is read when the wait starts (the
    /// task may have ended before this process listened) and every 250 ms
    /// regardless; an end found by reading comes without the row.
    pub async fn wait_for_end(&self, task_uuid: Uuid, timeout: Duration) -> Result<(String, Option<Arc<str>>)> {
        let deadline = Instant::now() + timeout;
        let mut finished = self.ctx.finished_tasks().await?;
        loop {
            let status = queries::task_status(self.ctx.pool(), task_uuid)
                .await?
                .ok_or_else(|| Error::not_found(format!("task {task_uuid} does not exist")))?;
            if is_finished(&status) {
                return Ok((status, None));
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
                        Ok(end) if end.task_uuid == task_uuid => break Some(end),
                        Ok(_) => {}
                        Err(RecvError::Lagged(_)) => break None,
                        Err(RecvError::Closed) => std::future::pending::<()>().await,
                    }
                }
            };
            if let Ok(Some(end)) = tokio::time::timeout(left.min(Duration::from_millis(250)), wait).await {
                if is_finished(&end.status) {
                    return Ok((end.status, end.row));
                }
            }
        }
    }
}

fn is_finished(status: &str) -> bool {
    matches!(status, "complete" | "error" | "cancelled")
}
