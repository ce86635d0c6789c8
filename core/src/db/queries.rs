//! Every SQL statement the engine runs. State changes call the SQL functions
//! defined in the migrations, so each is one round trip.

use std::collections::HashMap;

use serde_json::value::RawValue;
use serde_json::Value;
use sqlx::{PgConnection, PgExecutor, PgPool, Row};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::messaging::{MessageRouter, Outbox, QueueStats};
use crate::model::{RowJson, StepTransition, Task, TaskTransition, WorkflowStep};
use crate::template::TaskTemplate;

/// The LISTEN channel woken by sends to `queue`.
pub(crate) fn queue_channel(queue: &str) -> String {
    format!("tasker_queue_{queue}")
}

/// The LISTEN channel told the uuid of every task that finishes.
pub(crate) const TASK_FINISHED_CHANNEL: &str = "tasker_task_finished";

/// The LISTEN channel told the uuid of every task created without sending
/// its first messages (queues outside PostgreSQL).
pub(crate) const TASK_CREATED_CHANNEL: &str = "tasker_task_created";

pub(crate) async fn install_queue(pool: &PgPool, queue: &str) -> Result<()> {
    sqlx::query("SELECT tasker_install_queue($1)")
        .bind(queue)
        .execute(pool)
        .await
        .map_err(Error::db(format!("installing the engine's trigger and functions on queue {queue}")))?;
    Ok(())
}

pub(crate) async fn uninstall_queue(pool: &PgPool, queue: &str) -> Result<()> {
    sqlx::query("SELECT tasker_uninstall_queue($1)")
        .bind(queue)
        .execute(pool)
        .await
        .map_err(Error::db(format!("dropping the engine's functions of queue {queue}")))?;
    Ok(())
}

pub(crate) async fn pgmq_queue_stats(pool: &PgPool, queue: &str) -> Result<QueueStats> {
    let row = sqlx::query("SELECT depth, visible, total_sent, oldest_age_seconds FROM tasker_queue_stats($1)")
        .bind(queue)
        .fetch_one(pool)
        .await
        .map_err(Error::db(format!("reading stats of queue {queue}")))?;
    Ok(QueueStats {
        queue: queue.to_owned(),
        depth: row.get(0),
        visible: row.get(1),
        total_sent: Some(row.get(2)),
        oldest_age_seconds: row.get::<Option<i32>, _>(3).map(i64::from),
    })
}

// ---- templates -------------------------------------------------------------

/// Announces (NOTIFY, on commit) the key of a template whose registration
/// changed it; every process caching templates drops its copy.
pub(crate) const TEMPLATE_CHANGED_CHANNEL: &str = "tasker_template_changed";

/// Stores a template and its steps; returns whether that changed what the
/// database held (a new template or version, or new content), in which
/// case the change is announced on [`TEMPLATE_CHANGED_CHANNEL`].
/// Each namespace's queue (where the SQL functions send its steps) becomes
/// the registering deployment's, with its queue prefix: a namespace belongs
/// to one deployment, as its templates do.
pub(crate) async fn upsert_template(
    conn: &mut PgConnection,
    router: &MessageRouter,
    template: &TaskTemplate,
) -> Result<bool> {
    let key = template.key();
    let definition = serde_json::to_value(template).expect("templates serialize");
    let stored: Option<Value> = sqlx::query_scalar(
        "SELECT definition FROM tasker_task_templates WHERE namespace = $1 AND name = $2 AND version = $3 FOR UPDATE",
    )
    .bind(&template.namespace)
    .bind(&template.name)
    .bind(&template.version)
    .fetch_optional(&mut *conn)
    .await
    .map_err(Error::db(format!("reading template {key}")))?;
    let changed = stored.as_ref() != Some(&definition);
    for namespace in template.step_namespaces() {
        sqlx::query(
            "INSERT INTO tasker_namespaces (name, queue_name) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET queue_name = EXCLUDED.queue_name \
             WHERE tasker_namespaces.queue_name <> EXCLUDED.queue_name",
        )
        .bind(namespace)
        .bind(router.step_queue(namespace))
        .execute(&mut *conn)
        .await
        .map_err(Error::db(format!("registering namespace {namespace}")))?;
    }
    let template_id: i64 = sqlx::query_scalar(
        "INSERT INTO tasker_task_templates (namespace, name, version, description, definition) \
         VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (namespace, name, version) DO UPDATE \
           SET description = EXCLUDED.description, definition = EXCLUDED.definition, updated_at = now() \
         RETURNING template_id",
    )
    .bind(&template.namespace)
    .bind(&template.name)
    .bind(&template.version)
    .bind(&template.description)
    .bind(&definition)
    .fetch_one(&mut *conn)
    .await
    .map_err(Error::db(format!("registering template {key}")))?;

    // Each step, and for a fan-out step the named step its children run as
    // (`<step>[]`, after it in position; see FanOutSpec).
    struct NamedStepRow<'a> {
        position: usize,
        name: String,
        handler: &'a crate::template::HandlerSpec,
        retry: &'a crate::template::RetryPolicy,
        timeout_seconds: Option<u32>,
        namespace: &'a str,
        dependencies: Vec<String>,
        fan_out: Option<Value>,
        decision: bool,
        concurrency: Option<Value>,
        rate_limit: Option<Value>,
    }
    let mut rows: Vec<NamedStepRow<'_>> = Vec::new();
    for (position, step) in template.steps.iter().enumerate() {
        let namespace = step.namespace.as_deref().unwrap_or(&template.namespace);
        let fan_out = step.fan_out.as_ref().and_then(|f| Some((f, f.handler.as_ref()?)));
        let child = crate::template::FanOutSpec::child_step_name(&step.name);
        rows.push(NamedStepRow {
            position,
            name: step.name.clone(),
            handler: &step.handler,
            retry: &step.retry,
            timeout_seconds: step.timeout_seconds,
            namespace,
            dependencies: step.dependencies.clone(),
            fan_out: fan_out.map(|(f, _)| serde_json::json!({"from": f.from, "join": f.join, "child": child})),
            decision: step.decision,
            concurrency: step
                .concurrency
                .as_ref()
                .map(|limit| limit.to_row(format!("step:{}/{}/{}", template.namespace, template.name, step.name))),
            rate_limit: step
                .rate_limit
                .as_ref()
                .map(|limit| limit.to_row(format!("rate:{}/{}/{}", template.namespace, template.name, step.name))),
        });
        if let Some((f, handler)) = fan_out {
            rows.push(NamedStepRow {
                position,
                name: child,
                handler,
                retry: &f.retry,
                timeout_seconds: f.timeout_seconds,
                namespace,
                dependencies: vec![step.name.clone()],
                fan_out: Some(serde_json::json!({"child_of": step.name})),
                decision: false,
                concurrency: None,
                rate_limit: None,
            });
        }
    }
    for row in &rows {
        let NamedStepRow {
            position,
            name,
            handler,
            retry,
            timeout_seconds,
            namespace,
            dependencies,
            fan_out,
            decision,
            concurrency,
            rate_limit,
        } = row;
        sqlx::query(
            "INSERT INTO tasker_named_steps (template_id, name, position, handler_callable, handler_config, \
               retryable, max_attempts, backoff_base_ms, max_backoff_ms, timeout_seconds, namespace, dependencies, \
               fan_out, decision, concurrency, rate_limit) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
             ON CONFLICT (template_id, name) DO UPDATE SET position = EXCLUDED.position, \
               namespace = EXCLUDED.namespace, dependencies = EXCLUDED.dependencies, \
               handler_callable = EXCLUDED.handler_callable, handler_config = EXCLUDED.handler_config, \
               retryable = EXCLUDED.retryable, max_attempts = EXCLUDED.max_attempts, \
               backoff_base_ms = EXCLUDED.backoff_base_ms, max_backoff_ms = EXCLUDED.max_backoff_ms, \
               timeout_seconds = EXCLUDED.timeout_seconds, fan_out = EXCLUDED.fan_out, active = true, \
               decision = EXCLUDED.decision, concurrency = EXCLUDED.concurrency, rate_limit = EXCLUDED.rate_limit",
        )
        .bind(template_id)
        .bind(name)
        .bind(i32::try_from(*position).unwrap_or(i32::MAX))
        .bind(&handler.callable)
        .bind(if handler.initialization.is_null() { serde_json::json!({}) } else { handler.initialization.clone() })
        .bind(retry.retryable)
        .bind(i32::try_from(retry.max_attempts).unwrap_or(i32::MAX))
        .bind(i32::try_from(retry.backoff_base_ms).unwrap_or(i32::MAX))
        .bind(i32::try_from(retry.max_backoff_ms).unwrap_or(i32::MAX))
        .bind(timeout_seconds.map(|t| i32::try_from(t).unwrap_or(i32::MAX)))
        .bind(*namespace)
        .bind(dependencies)
        .bind(fan_out)
        .bind(decision)
        .bind(concurrency)
        .bind(rate_limit)
        .execute(&mut *conn)
        .await
        .map_err(Error::db(format!("registering step {name:?} of template {key}")))?;
    }
    let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    sqlx::query("UPDATE tasker_named_steps SET active = false WHERE template_id = $1 AND name <> ALL($2)")
        .bind(template_id)
        .bind(&names)
        .execute(&mut *conn)
        .await
        .map_err(Error::db(format!("retiring removed steps of template {key}")))?;
    if changed {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(TEMPLATE_CHANGED_CHANNEL)
            .bind(&key)
            .execute(&mut *conn)
            .await
            .map_err(Error::db(format!("announcing the change of template {key}")))?;
    }
    Ok(changed)
}

/// A stored template's definition.
pub(crate) async fn load_template(pool: &PgPool, namespace: &str, name: &str, version: &str) -> Result<Option<Value>> {
    sqlx::query_scalar(
        "SELECT definition FROM tasker_task_templates WHERE namespace = $1 AND name = $2 AND version = $3",
    )
    .bind(namespace)
    .bind(name)
    .bind(version)
    .fetch_optional(pool)
    .await
    .map_err(Error::db(format!("loading template {namespace}/{name}@{version}")))
}

// ---- tasks -----------------------------------------------------------------

/// Creates a task of a registered template in one statement (see
/// `tasker_create_task`); returns its uuid and whether it is new (false:
/// the identity key already named a task).
pub(crate) async fn create_task<'e>(
    executor: impl PgExecutor<'e>,
    key: &str,
    request: &crate::CreateTask,
    context: &Value,
    send_messages: bool,
    traceparent: Option<&str>,
) -> Result<(Uuid, bool)> {
    // The aging step for the messages' keys is the session's (see
    // db::connect), hence no p_priority_aging_ms.
    sqlx::query_as("SELECT task_uuid, created FROM tasker_create_task($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)")
        .bind(&request.namespace)
        .bind(&request.name)
        .bind(&request.version)
        .bind(context)
        .bind(&request.identity_key)
        .bind(send_messages)
        .bind(traceparent)
        .bind(request.run_at)
        .bind(request.timeout_seconds.map(|t| i32::try_from(t).unwrap_or(i32::MAX)))
        .bind(request.priority)
        .fetch_one(executor)
        .await
        .map_err(Error::db(format!("creating a {key} task")))
}

/// What a worker needs to run a step it claimed.
#[derive(Debug, Clone, sqlx::FromRow, serde::Deserialize)]
pub(crate) struct ClaimedStep {
    pub(crate) task_uuid: Uuid,
    pub(crate) correlation_id: Uuid,
    pub(crate) namespace: String,
    pub(crate) step_name: String,
    pub(crate) handler_callable: String,
    /// The handler's settings (the template's `handler.initialization`, an
    /// empty object when it has none).
    pub(crate) handler_config: Value,
    /// The template declares the step a decision point.
    pub(crate) decision: bool,
    pub(crate) attempts: i32,
    pub(crate) retryable: bool,
    pub(crate) max_attempts: i32,
    pub(crate) backoff_base_ms: i32,
    pub(crate) max_backoff_ms: i32,
    pub(crate) timeout_seconds: Option<i32>,
    /// The task's and the step's rows after the claim, as JSON text.
    #[sqlx(try_from = "sqlx::types::Json<Box<RawValue>>")]
    pub(crate) task_row: RowJson,
    #[sqlx(try_from = "sqlx::types::Json<Box<RawValue>>")]
    pub(crate) step_row: RowJson,
    /// The claim took the step over from one gone stale (its worker died).
    /// An eager claim never does.
    #[sqlx(default)]
    #[serde(default)]
    pub(crate) taken_over: bool,
}

/// A step whose message a claim left out (off the hot path: only
/// duplicates, strays and steps whose claim is not stale yet get here).
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct UnclaimedStep {
    pub(crate) step_uuid: Uuid,
    pub(crate) namespace: String,
    /// For a step in progress: the seconds until its claim goes stale
    /// (`stale_after` without a heartbeat), 0 when it is already.
    pub(crate) stale_in_seconds: Option<f64>,
}

/// Each of `steps` that exists (see [`UnclaimedStep`]).
pub(crate) async fn unclaimed_steps(
    pool: &PgPool,
    steps: &[Uuid],
    stale_after: std::time::Duration,
) -> Result<HashMap<Uuid, UnclaimedStep>> {
    let rows: Vec<UnclaimedStep> = sqlx::query_as(
        "SELECT s.step_uuid, ns.namespace, \
                CASE WHEN s.status = 'in_progress' THEN greatest(0, extract(epoch FROM \
                       coalesce(s.heartbeat_at, s.started_at) + make_interval(secs => $2) - clock_timestamp()))::float8 \
                END AS stale_in_seconds \
           FROM tasker_workflow_steps s \
           JOIN tasker_named_steps ns ON ns.named_step_id = s.named_step_id WHERE s.step_uuid = ANY ($1)",
    )
    .bind(steps)
    .bind(stale_after.as_secs_f64())
    .fetch_all(pool)
    .await
    .map_err(Error::db("reading the unclaimed steps"))?;
    Ok(rows.into_iter().map(|r| (r.step_uuid, r)).collect())
}

/// Claims the steps of `step_uuids` (see `tasker_claim_steps`) in one
/// statement; a step that is not claimable, or not in one of `namespaces`,
/// is left out of the answer. `async_commit`: the caller's commit need not
/// wait for the disk (see `tasker_claim_steps` for when that is safe).
pub(crate) async fn claim_steps(
    conn: &mut sqlx::PgConnection,
    step_uuids: &[Uuid],
    worker_id: &str,
    namespaces: &[String],
    stale_after: std::time::Duration,
    async_commit: bool,
) -> Result<HashMap<Uuid, ClaimedStep>> {
    #[derive(sqlx::FromRow)]
    struct Row {
        step_uuid: Uuid,
        #[sqlx(flatten)]
        claim: ClaimedStep,
    }
    let rows: Vec<Row> = sqlx::query_as("SELECT * FROM tasker_claim_steps($1, $2, $3, make_interval(secs => $4), $5)")
        .bind(step_uuids)
        .bind(worker_id)
        .bind(namespaces)
        .bind(stale_after.as_secs_f64())
        .bind(async_commit)
        .fetch_all(conn)
        .await
        .map_err(Error::db(format!("claiming {} steps", step_uuids.len())))?;
    Ok(rows.into_iter().map(|r| (r.step_uuid, r.claim)).collect())
}

/// A task after [`advance_tasks`].
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct AdvancedTask {
    pub(crate) task_uuid: Uuid,
    pub(crate) status_before: String,
    pub(crate) status: String,
    /// Messages to send after commit (queues outside PostgreSQL).
    pub(crate) unsent: sqlx::types::Json<Vec<Outbox>>,
}

/// Locks each task, enqueues its ready steps and finalizes it, in one
/// statement; a task that does not exist is left out of the answer.
pub(crate) async fn advance_tasks(
    conn: &mut PgConnection,
    task_uuids: &[Uuid],
    async_commit: bool,
    send: bool,
) -> Result<Vec<AdvancedTask>> {
    sqlx::query_as("SELECT * FROM tasker_advance_tasks($1, $2, $3)")
        .bind(task_uuids)
        .bind(async_commit)
        .bind(send)
        .fetch_all(conn)
        .await
        .map_err(Error::db(format!("advancing {} tasks", task_uuids.len())))
}

/// The outcomes of a batch of steps, as `tasker_record_outcomes` takes them
/// (one entry per step, distinct).
#[derive(Debug, Default)]
pub(crate) struct Outcomes<'a> {
    pub(crate) steps: Vec<Uuid>,
    pub(crate) attempts: Vec<i32>,
    pub(crate) completed: Vec<bool>,
    /// The result, or the error.
    pub(crate) payloads: Vec<&'a Value>,
    pub(crate) retryable: Vec<bool>,
    pub(crate) delays_ms: Vec<i64>,
    pub(crate) metadata: Vec<Value>,
    /// Each step's message, acked in the same transaction if its outcome
    /// applies (PGMQ; None for a step claimed eagerly, or outside PGMQ).
    pub(crate) ack_queues: Vec<Option<&'a str>>,
    pub(crate) ack_receipts: Vec<Option<i64>>,
}

/// A step claimed for this worker by its outcome transaction.
#[derive(Debug)]
pub(crate) struct EagerClaim {
    pub(crate) step_uuid: Uuid,
    pub(crate) claim: ClaimedStep,
}

/// A task an outcome transaction ended.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct FinishedTask {
    #[serde(skip)]
    pub(crate) task_uuid: Uuid,
    #[serde(skip)]
    pub(crate) status: String,
    pub(crate) namespace: String,
    pub(crate) correlation_id: Uuid,
}

/// Steps a decision recorded by an outcome transaction skipped, of one
/// step namespace and template.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct SkippedSteps {
    pub(crate) namespace: String,
    pub(crate) template: String,
    pub(crate) count: u64,
}

/// What [`record_outcomes`] did.
#[derive(Debug, Default)]
pub(crate) struct Recorded {
    /// Each step's new state, None when its outcome was not applied.
    pub(crate) states: HashMap<Uuid, Option<String>>,
    pub(crate) claimed: Vec<EagerClaim>,
    pub(crate) unsent: Vec<Outbox>,
    /// Tasks that ended.
    pub(crate) finished: Vec<FinishedTask>,
    /// Steps the decisions recorded skipped (empty without a decision).
    pub(crate) skipped: Vec<SkippedSteps>,
}

/// A worker's outcome transaction for a batch, in one statement (see
/// `tasker_record_outcomes`): outcomes recorded, messages acked, ready
/// dependents claimed for this worker (at most `eager_slots`, in
/// `namespaces`) or enqueued, tasks with nothing left finalized.
pub(crate) async fn record_outcomes(
    conn: &mut sqlx::PgConnection,
    outcomes: &Outcomes<'_>,
    worker_id: &str,
    namespaces: &[String],
    eager_slots: usize,
    send: bool,
) -> Result<Recorded> {
    #[derive(sqlx::FromRow)]
    struct Row {
        kind: String,
        step_uuid: Option<Uuid>,
        task_uuid: Option<Uuid>,
        state: Option<String>,
        detail: Option<sqlx::types::Json<Box<RawValue>>>,
    }
    let rows: Vec<Row> =
        sqlx::query_as("SELECT * FROM tasker_record_outcomes($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)")
            .bind(&outcomes.steps)
            .bind(&outcomes.attempts)
            .bind(&outcomes.completed)
            .bind(&outcomes.payloads)
            .bind(&outcomes.retryable)
            .bind(&outcomes.delays_ms)
            .bind(&outcomes.metadata)
            .bind(worker_id)
            .bind(namespaces)
            .bind(i32::try_from(eager_slots).unwrap_or(i32::MAX))
            .bind(send)
            .bind(&outcomes.ack_queues)
            .bind(&outcomes.ack_receipts)
            .fetch_all(&mut *conn)
            .await
            .map_err(Error::db(format!("recording the outcomes of {} steps", outcomes.steps.len())))?;
    let malformed = |what: String| Error::new(crate::ErrorKind::Database, format!("tasker_record_outcomes: {what}"));
    let mut recorded = Recorded::default();
    for row in rows {
        // Each detail is read from its text straight into its type: an
        // eager claim's rows stay text (see RowJson).
        let detail = row.detail.as_ref().map(|d| d.get());
        match (row.kind.as_str(), row.step_uuid, row.task_uuid, detail) {
            ("outcome", Some(step), _, _) => {
                recorded.states.insert(step, row.state);
            }
            ("claimed", Some(step_uuid), Some(_), Some(detail)) => {
                let claim: ClaimedStep = serde_json::from_str(detail)
                    .map_err(|e| malformed(format!("claim of step {step_uuid} is malformed: {e}")))?;
                recorded.claimed.push(EagerClaim { step_uuid, claim });
            }
            ("unsent", _, _, Some(detail)) => recorded
                .unsent
                .push(serde_json::from_str(detail).map_err(|e| malformed(format!("a message is malformed: {e}")))?),
            ("finished", _, Some(task_uuid), Some(detail)) => {
                let finished: FinishedTask = serde_json::from_str(detail)
                    .map_err(|e| malformed(format!("finished task {task_uuid} is malformed: {e}")))?;
                recorded.finished.push(FinishedTask { task_uuid, status: row.state.unwrap_or_default(), ..finished });
            }
            ("skipped", _, _, Some(detail)) => recorded.skipped.push(
                serde_json::from_str(detail).map_err(|e| malformed(format!("a skipped count is malformed: {e}")))?,
            ),
            (kind, ..) => return Err(malformed(format!("an unexpected {kind:?} row"))),
        }
    }
    Ok(recorded)
}

/// Tasks in progress with nothing in flight or waiting for a retry, and no
/// step changed for `quiet_for`: a result message was lost (its sender died
/// between commit and send), so nobody will advance them unless asked.
pub(crate) async fn stalled_tasks(pool: &PgPool, quiet_for: std::time::Duration, limit: i64) -> Result<Vec<Uuid>> {
    sqlx::query_scalar(
        "SELECT t.task_uuid FROM tasker_tasks t WHERE t.status = 'in_progress' \
         AND t.updated_at < clock_timestamp() - $1 \
         AND NOT EXISTS (SELECT 1 FROM tasker_workflow_steps s WHERE s.task_uuid = t.task_uuid \
           AND (s.status IN ('enqueued', 'in_progress', 'waiting_for_retry') \
                OR s.updated_at > clock_timestamp() - $1)) \
         LIMIT $2",
    )
    .bind(quiet_for)
    .bind(limit)
    .fetch_all(pool)
    .await
    .map_err(Error::db("looking for stalled tasks"))
}

// ---- reads -----------------------------------------------------------------

const TASK_COLUMNS: &str =
    "task_uuid, namespace, name, version, context, status, identity_key, correlation_id, traceparent, created_at, \
     completed_at, priority";

pub(crate) async fn task_status(pool: &PgPool, task_uuid: Uuid) -> Result<Option<String>> {
    sqlx::query_scalar("SELECT status FROM tasker_tasks WHERE task_uuid = $1")
        .bind(task_uuid)
        .fetch_optional(pool)
        .await
        .map_err(Error::db(format!("reading the state of task {task_uuid}")))
}

pub(crate) async fn get_task<'e>(executor: impl PgExecutor<'e>, task_uuid: Uuid) -> Result<Option<Task>> {
    sqlx::query_as(&format!("SELECT {TASK_COLUMNS} FROM tasker_tasks WHERE task_uuid = $1"))
        .bind(task_uuid)
        .fetch_optional(executor)
        .await
        .map_err(Error::db(format!("reading task {task_uuid}")))
}

pub(crate) async fn task_steps(pool: &PgPool, task_uuid: Uuid) -> Result<Vec<WorkflowStep>> {
    sqlx::query_as(
        "SELECT step_uuid, task_uuid, name, position, status, attempts, max_attempts, results, last_error, retry_at, \
           input, fan_out_index \
         FROM tasker_workflow_steps WHERE task_uuid = $1 ORDER BY position, fan_out_index NULLS FIRST",
    )
    .bind(task_uuid)
    .fetch_all(pool)
    .await
    .map_err(Error::db(format!("reading the steps of task {task_uuid}")))
}

pub(crate) async fn task_transitions(pool: &PgPool, task_uuid: Uuid) -> Result<Vec<TaskTransition>> {
    sqlx::query_as(
        "SELECT task_uuid, from_state, to_state, metadata, sort_key \
         FROM tasker_task_transitions WHERE task_uuid = $1 ORDER BY sort_key",
    )
    .bind(task_uuid)
    .fetch_all(pool)
    .await
    .map_err(Error::db(format!("reading the transitions of task {task_uuid}")))
}

/// Every step transition of a task, grouped by step in template order.
pub(crate) async fn step_transitions(pool: &PgPool, task_uuid: Uuid) -> Result<Vec<StepTransition>> {
    sqlx::query_as(
        "SELECT t.step_uuid, t.from_state, t.to_state, t.metadata, t.sort_key \
         FROM tasker_workflow_step_transitions t JOIN tasker_workflow_steps s USING (step_uuid) \
         WHERE s.task_uuid = $1 ORDER BY s.position, s.fan_out_index NULLS FIRST, t.sort_key",
    )
    .bind(task_uuid)
    .fetch_all(pool)
    .await
    .map_err(Error::db(format!("reading the step transitions of task {task_uuid}")))
}

/// The results of a step's direct dependencies, by step name.
pub(crate) async fn dependency_results(pool: &PgPool, step_uuid: Uuid) -> Result<HashMap<String, Option<Value>>> {
    let rows: Vec<(String, Option<Value>)> = sqlx::query_as(
        "SELECT p.name, p.results FROM tasker_workflow_step_edges e \
         JOIN tasker_workflow_steps p ON p.step_uuid = e.from_step_uuid WHERE e.to_step_uuid = $1",
    )
    .bind(step_uuid)
    .fetch_all(pool)
    .await
    .map_err(Error::db(format!("reading the dependency results of step {step_uuid}")))?;
    Ok(rows.into_iter().collect())
}

/// The messages of the given steps, each to its step's namespace queue:
/// inserted inside the transaction when `send` (queues in the database),
/// else returned for the caller to send after commit.
pub(crate) async fn dispatch_messages(conn: &mut PgConnection, steps: &[Uuid], send: bool) -> Result<Vec<Outbox>> {
    let rows: Vec<(String, Value, i64)> = sqlx::query_as("SELECT * FROM tasker_dispatch_messages($1, NULL, $2)")
        .bind(steps)
        .bind(send)
        .fetch_all(conn)
        .await
        .map_err(Error::db(format!("sending the messages of {} steps", steps.len())))?;
    Ok(rows.into_iter().map(|(queue, message, delay_ms)| Outbox { queue, message, delay_ms }).collect())
}

/// Queues outside PostgreSQL: the steps of `tasks` whose message waited
/// past their priority's aging bound, sent again at the top priority (see
/// `tasker_raise_priorities`); their messages, to send after commit.
pub(crate) async fn raise_priorities(
    conn: &mut PgConnection,
    tasks: &[Uuid],
    aging: std::time::Duration,
    limit: i32,
) -> Result<Vec<Outbox>> {
    let rows: Vec<(String, Value, i64)> = sqlx::query_as("SELECT * FROM tasker_raise_priorities($1, $2, $3)")
        .bind(tasks)
        .bind(i64::try_from(aging.as_millis()).unwrap_or(i64::MAX))
        .bind(limit)
        .fetch_all(conn)
        .await
        .map_err(Error::db("raising the priority of waiting steps"))?;
    Ok(rows.into_iter().map(|(queue, message, delay_ms)| Outbox { queue, message, delay_ms }).collect())
}

/// in_progress -> enqueued for a step this worker claimed at `attempt` and
/// will not finish (it is shutting down).
pub(crate) async fn release_step(pool: &PgPool, step_uuid: Uuid, attempt: i32, reason: &str) -> Result<bool> {
    sqlx::query_scalar("SELECT tasker_release_step($1, $2, $3)")
        .bind(step_uuid)
        .bind(attempt)
        .bind(reason)
        .fetch_one(pool)
        .await
        .map_err(Error::db(format!("releasing step {step_uuid}")))
}

/// Refreshes the heartbeat of steps this worker is running; returns how
/// many were still its own.
pub(crate) async fn heartbeat_steps(pool: &PgPool, steps: &[Uuid], attempts: &[i32]) -> Result<i32> {
    sqlx::query_scalar("SELECT tasker_heartbeat_steps($1, $2)")
        .bind(steps)
        .bind(attempts)
        .fetch_one(pool)
        .await
        .map_err(Error::db("refreshing step heartbeats"))
}

/// Re-enqueues steps whose worker is gone or whose message may be lost;
/// returns (task, step, state it was in).
/// Up to `limit` tasks in progress created after `after` (the oldest
/// first): the slice of them one sweep pass looks at.
pub(crate) async fn tasks_in_progress_after(
    conn: &mut PgConnection,
    after: Option<Uuid>,
    limit: i32,
) -> Result<Vec<Uuid>> {
    sqlx::query_scalar(
        "SELECT task_uuid FROM tasker_tasks WHERE status = 'in_progress' AND task_uuid > $1 \
         ORDER BY task_uuid LIMIT $2",
    )
    .bind(after.unwrap_or(Uuid::nil()))
    .bind(i64::from(limit))
    .fetch_all(conn)
    .await
    .map_err(Error::db("listing the tasks in progress"))
}

pub(crate) async fn recover_stuck_steps(
    conn: &mut PgConnection,
    tasks: &[Uuid],
    stale_after: std::time::Duration,
    enqueued_after: std::time::Duration,
    limit: i32,
) -> Result<Vec<(Uuid, Uuid, String)>> {
    sqlx::query_as(
        "SELECT task_uuid, step_uuid, was FROM tasker_recover_stuck_steps(\
         $1, make_interval(secs => $2), make_interval(secs => $3), $4)",
    )
    .bind(tasks)
    .bind(stale_after.as_secs_f64())
    .bind(enqueued_after.as_secs_f64())
    .bind(limit)
    .fetch_all(conn)
    .await
    .map_err(Error::db("recovering stuck steps"))
}

/// Operator actions: `tasker_cancel_task`, `tasker_retry_step`,
/// `tasker_resolve_step_manually`. Each returns whether it applied.
pub(crate) async fn cancel_task(pool: &PgPool, task_uuid: Uuid, reason: &str) -> Result<bool> {
    sqlx::query_scalar("SELECT tasker_cancel_task($1, $2)")
        .bind(task_uuid)
        .bind(reason)
        .fetch_one(pool)
        .await
        .map_err(Error::db(format!("cancelling task {task_uuid}")))
}

pub(crate) async fn retry_step(conn: &mut PgConnection, step_uuid: Uuid, reason: &str) -> Result<bool> {
    sqlx::query_scalar("SELECT tasker_retry_step($1, $2)")
        .bind(step_uuid)
        .bind(reason)
        .fetch_one(conn)
        .await
        .map_err(Error::db(format!("retrying step {step_uuid}")))
}

pub(crate) async fn resolve_step_manually(
    conn: &mut PgConnection,
    step_uuid: Uuid,
    results: &Value,
    reason: &str,
) -> Result<bool> {
    sqlx::query_scalar("SELECT tasker_resolve_step_manually($1, $2, $3)")
        .bind(step_uuid)
        .bind(results)
        .bind(reason)
        .fetch_one(conn)
        .await
        .map_err(Error::db(format!("resolving step {step_uuid}")))
}

/// The task a step belongs to.
pub(crate) async fn step_task(pool: &PgPool, step_uuid: Uuid) -> Result<Option<Uuid>> {
    sqlx::query_scalar("SELECT task_uuid FROM tasker_workflow_steps WHERE step_uuid = $1")
        .bind(step_uuid)
        .fetch_optional(pool)
        .await
        .map_err(Error::db(format!("reading step {step_uuid}")))
}

/// The tasks' steps that are enqueued (their messages are due).
pub(crate) async fn enqueued_steps(pool: &PgPool, tasks: &[Uuid]) -> Result<Vec<Uuid>> {
    sqlx::query_scalar(
        "SELECT step_uuid FROM tasker_workflow_steps WHERE task_uuid = ANY($1) AND status = 'enqueued' \
         ORDER BY task_uuid, position",
    )
    .bind(tasks)
    .fetch_all(pool)
    .await
    .map_err(Error::db(format!("reading the enqueued steps of {} new tasks", tasks.len())))
}

/// (template key, step name, handler callable) of every active step of the
/// namespaces' templates.
pub(crate) async fn handlers(pool: &PgPool, namespaces: &[String]) -> Result<Vec<(String, String, String)>> {
    sqlx::query_as(
        "SELECT t.namespace || '/' || t.name || '@' || t.version, ns.name, ns.handler_callable \
         FROM tasker_named_steps ns JOIN tasker_task_templates t USING (template_id) \
         WHERE t.namespace = ANY($1) AND ns.active ORDER BY 1, ns.position",
    )
    .bind(namespaces)
    .fetch_all(pool)
    .await
    .map_err(Error::db("reading the handlers of the registered templates"))
}

/// In-progress tasks with a step enqueued within the last `window`.
pub(crate) async fn tasks_with_enqueued_steps_since(pool: &PgPool, window: std::time::Duration) -> Result<Vec<Uuid>> {
    sqlx::query_scalar(
        "SELECT t.task_uuid FROM tasker_tasks t WHERE t.status = 'in_progress' \
         AND EXISTS (SELECT 1 FROM tasker_workflow_steps s WHERE s.task_uuid = t.task_uuid \
                     AND s.status = 'enqueued' AND s.enqueued_at > clock_timestamp() - make_interval(secs => $1))",
    )
    .bind(window.as_secs_f64())
    .fetch_all(pool)
    .await
    .map_err(Error::db("looking for tasks whose first messages may be unsent"))
}
