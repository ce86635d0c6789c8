//! Shared fixtures: a migrated test database, per-test namespaces and
//! per-context queue prefixes, so tests run in parallel and in any order
//! and no test's task is served by another test's orchestrator or worker.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tasker_core::{Config, Context, OrchestratorHandle, TaskTemplate, TaskerClient, WorkerHandle};
use uuid::Uuid;

pub const DEFAULT_TEST_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/tasker_test";

pub fn test_config() -> Config {
    test_config_with(Value::Null)
}

/// The test configuration with `overrides` on top. Unless `overrides` name
/// a `messaging.queue_prefix`, each call is a deployment of its own: a
/// fresh prefix, so its queues (the orchestration queue included) are its
/// own.
pub fn test_config_with(overrides: Value) -> Config {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_TEST_DATABASE_URL.to_owned());
    let file = json!({
        "database_url": url,
        "max_connections": 8,
        "messaging": {"queue_prefix": unique_prefix()},
        "orchestration": {"poll_interval_ms": 100, "sweep_interval_ms": 100},
        "worker": {"poll_interval_ms": 100},
    });
    Config::resolve(file, overrides).expect("test config is valid")
}

/// Databases migrated by this test process.
static MIGRATED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
static MIGRATING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Tests on RabbitMQ use a database of their own: one deployment uses one
/// provider, and an orchestrator sweeps every task in its database. It is
/// the test database's name + `_rabbitmq` (tasker_test_rabbitmq for
/// bin/test), so a checkout testing against its own databases stays on them.
pub fn rabbitmq_overrides() -> Value {
    let url = test_config().database_url;
    let database_url = match url.rsplit_once('/') {
        Some((base, name)) => format!("{base}/{}_rabbitmq", name.split('?').next().unwrap_or(name)),
        None => url,
    };
    json!({
        "database_url": database_url,
        "messaging": {"provider": "rabbitmq"},
        "orchestration": {"poll_interval_ms": 20},
        "worker": {"poll_interval_ms": 20},
    })
}

/// A context on the migrated test database. Panics with how to start
/// PostgreSQL when it cannot connect: a test never skips silently.
pub async fn context() -> Arc<Context> {
    context_with(Value::Null).await
}

pub async fn context_with(overrides: Value) -> Arc<Context> {
    let config = test_config_with(overrides);
    let ctx = match Context::connect(config).await {
        Ok(ctx) => ctx,
        Err(e) => panic!(
            "{e}\nThese tests need PostgreSQL: run bin/test (it starts and prepares it), or \
             `pg_ctlcluster 15 main start && createdb -h 127.0.0.1 -U postgres tasker_test`."
        ),
    };
    let url = ctx.config().database_url.clone();
    let _guard = MIGRATING.lock().await;
    if !MIGRATED.lock().unwrap().contains(&url) {
        ctx.migrate().await.expect("migrations run");
        MIGRATED.lock().unwrap().push(url);
    }
    ctx
}

/// The test database's URL with `application_name` set to `name`, so a
/// test can find its context's sessions in `pg_stat_activity`.
pub fn database_url_named(name: &str) -> String {
    let mut url = test_config().database_url;
    url.push_str(if url.contains('?') { "&" } else { "?" });
    url.push_str(&format!("application_name={name}"));
    url
}

/// A queue prefix no other test uses.
pub fn unique_prefix() -> String {
    format!("t{}_", &Uuid::now_v7().simple().to_string()[24..])
}

/// `overrides` with a fresh queue prefix, for a test whose contexts stand
/// for several processes of one deployment: pass the result to each.
pub fn one_deployment(mut overrides: Value) -> Value {
    if overrides.is_null() {
        overrides = json!({});
    }
    let messaging = overrides.as_object_mut().expect("overrides are an object").entry("messaging").or_insert(json!({}));
    messaging["queue_prefix"] = json!(unique_prefix());
    overrides
}

/// A namespace no other test uses.
pub fn unique_namespace(prefix: &str) -> String {
    format!("{prefix}_{}", &Uuid::now_v7().simple().to_string()[20..])
}

pub fn linear_template(namespace: &str) -> TaskTemplate {
    let yaml = format!(
        "namespace: {namespace}\nname: linear\nversion: 1.0.0\nsteps:\n\
         \x20 - {{name: step_one, handler: {{callable: Squares::StepOne}}}}\n\
         \x20 - {{name: step_two, dependencies: [step_one], handler: {{callable: Squares::StepTwo}}}}\n\
         \x20 - {{name: step_three, dependencies: [step_two], handler: {{callable: Squares::StepThree}}}}\n\
         \x20 - {{name: step_four, dependencies: [step_three], handler: {{callable: Squares::StepFour}}}}\n"
    );
    TaskTemplate::from_yaml(&yaml, "linear.yml").expect("linear template is valid")
}

pub fn diamond_template(namespace: &str) -> TaskTemplate {
    let yaml = format!(
        "namespace: {namespace}\nname: diamond\nversion: 1.0.0\nsteps:\n\
         \x20 - {{name: start, handler: {{callable: Squares::Start}}}}\n\
         \x20 - {{name: left, dependencies: [start], handler: {{callable: Squares::Left}}}}\n\
         \x20 - {{name: right, dependencies: [start], handler: {{callable: Squares::Right}}}}\n\
         \x20 - {{name: finish, dependencies: [left, right], handler: {{callable: Squares::Finish}}}}\n"
    );
    TaskTemplate::from_yaml(&yaml, "diamond.yml").expect("diamond template is valid")
}

/// A template from `(step, dependencies)` pairs; every handler is
/// `<handler_prefix>::Step`.
pub fn template(namespace: &str, name: &str, handler_prefix: &str, steps: &[(&str, &[&str])]) -> TaskTemplate {
    let mut yaml = format!("namespace: {namespace}\nname: {name}\nversion: 1.0.0\nsteps:\n");
    for (step, deps) in steps {
        yaml.push_str(&format!(
            "  - {{name: {step}, dependencies: [{}], handler: {{callable: {handler_prefix}::Step}}}}\n",
            deps.join(", ")
        ));
    }
    TaskTemplate::from_yaml(&yaml, name).expect("template is valid")
}

/// Runs one job: `Squares::*` squares its input (the task's `n` for a root
/// step, else the product of its dependencies' results); `Sum::*` returns
/// one plus the sum of its dependencies' results (1 for a root).
/// What the test handlers compute for a step: `Sum::` steps add one to the
/// sum of their parents' results; the others square the product of their
/// parents' results (a root squares the context's `n`).
pub async fn step_result(client: &TaskerClient, job: &tasker_core::StepJob) -> tasker_core::Result<i64> {
    let deps = client.dependency_results(job.step_uuid).await?;
    let values = deps.values().map(|v| v.as_ref().and_then(Value::as_i64).expect("integer result"));
    Ok(if job.handler_callable.starts_with("Sum::") {
        1 + values.sum::<i64>()
    } else {
        let input: i64 = if deps.is_empty() {
            let task = client.task(job.task_uuid).await?;
            task.context["n"].as_i64().expect("n in context")
        } else {
            values.product()
        };
        input * input
    })
}

pub async fn run_job(worker: &WorkerHandle, client: &TaskerClient, job: tasker_core::StepJob) {
    let result = step_result(client, &job).await.expect("step inputs read");
    worker.complete(job.step_uuid, json!(result)).await.expect("complete");
}

/// Runs jobs until the worker stops.
pub async fn run_square_worker(worker: Arc<WorkerHandle>, client: TaskerClient) {
    while worker.is_running() {
        let Some(job) = worker.next_job(Duration::from_millis(200)).await.expect("next job") else { continue };
        run_job(&worker, &client, job).await;
    }
}

/// An orchestrator, a worker and a task running jobs with [`run_job`].
pub struct Running {
    pub client: TaskerClient,
    pub orchestrator: OrchestratorHandle,
    pub worker: Arc<WorkerHandle>,
    runner: tokio::task::JoinHandle<()>,
}

pub async fn start(ctx: Arc<Context>, namespace: &str, concurrency: usize) -> Running {
    let client = TaskerClient::new(ctx.clone());
    let orchestrator = OrchestratorHandle::start(ctx.clone()).await.expect("orchestrator starts");
    let worker = Arc::new(WorkerHandle::start(ctx, &[namespace.to_owned()], concurrency).await.expect("worker starts"));
    let runner = tokio::spawn(run_square_worker(worker.clone(), client.clone()));
    Running { client, orchestrator, worker, runner }
}

impl Running {
    /// Stops everything and checks it all stopped without a panic.
    pub async fn stop(self) {
        self.worker.shutdown(Duration::from_secs(5)).await.expect("worker stops cleanly");
        self.runner.await.expect("runner did not panic");
        self.orchestrator.shutdown(Duration::from_secs(5)).await.expect("orchestrator stops cleanly");
        assert!(!self.orchestrator.is_running() && !self.worker.is_running());
    }
}

/// A linear task of [`linear_template`] with `{"n": 6}` finished: complete,
/// the last step's result exact, and each step's result recorded once.
pub async fn assert_linear_six_completed_once(client: &TaskerClient, task: &tasker_core::Task) {
    assert_eq!(task.status, "complete");
    let steps = client.steps(task.task_uuid).await.unwrap();
    assert_eq!(steps.last().unwrap().results, Some(json!(2_821_109_907_456_i64)));
    let completions =
        client.step_transitions(task.task_uuid).await.unwrap().into_iter().filter(|t| t.to_state == "complete").count();
    assert_eq!(completions, 4, "each step's result recorded exactly once");
}

/// The step of `task` named `name`.
pub async fn step_named(client: &TaskerClient, task: Uuid, name: &str) -> tasker_core::WorkflowStep {
    client.steps(task).await.unwrap().into_iter().find(|s| s.name == name).unwrap()
}

/// The history of `task`'s step `name`, oldest first: (from, to, metadata).
pub async fn step_history(client: &TaskerClient, task: Uuid, name: &str) -> Vec<(String, String, Value)> {
    let step_uuid = step_named(client, task, name).await.step_uuid;
    client
        .step_transitions(task)
        .await
        .unwrap()
        .into_iter()
        .filter(|t| t.step_uuid == step_uuid)
        .map(|t| (t.from_state, t.to_state, t.metadata))
        .collect()
}

/// A deployment whose claims go stale after a second without a heartbeat
/// (a dead worker's step is recovered soon): its overrides, for the other
/// processes of the deployment, and a context on it.
pub async fn quickly_recovering_deployment() -> (Value, Arc<Context>) {
    let overrides = one_deployment(json!({"messaging": {"visibility_timeout_seconds": 1}}));
    let ctx = context_with(overrides.clone()).await;
    (overrides, ctx)
}

/// A worker in a runtime of its own claims one step of `namespace`, then
/// the runtime is torn down without any cleanup: the process died
/// mid-step (no heartbeat, no outcome, no ack). Returns the claimed job.
pub async fn claim_and_die(overrides: Value, namespace: &str) -> tasker_core::StepJob {
    let namespace = namespace.to_owned();
    tokio::task::spawn_blocking(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let ctx = context_with(overrides).await;
            let doomed = WorkerHandle::start(ctx, &[namespace], 1).await.unwrap();
            let job = doomed.next_job(Duration::from_secs(10)).await.unwrap().expect("a step to claim");
            std::mem::forget(doomed);
            job
        })
        // Dropping the runtime here kills its tasks: no heartbeat, no ack.
    })
    .await
    .unwrap()
}
