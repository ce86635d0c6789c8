//! The engine's guarantees: DAG shapes with exact results, operator
//! actions, recovery from a dead worker, input validation, and wake-ups by
//! notification alone or by polling alone.

use crate::common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tasker_core::{
    CreateTask, ErrorKind, OrchestratorHandle, StepFailure, StepState, TaskState, TaskerClient, WorkerHandle,
};

use crate::common::start;

fn request(namespace: &str, name: &str, n: i64) -> CreateTask {
    CreateTask::new(namespace, name, "1.0.0", json!({"n": n}))
}

async fn results(client: &TaskerClient, task_uuid: uuid::Uuid) -> HashMap<String, (String, Value)> {
    client
        .steps(task_uuid)
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.name, (s.status, s.results.unwrap_or(Value::Null))))
        .collect()
}

fn expect_all(got: &HashMap<String, (String, Value)>, expected: &[(&str, Value)]) {
    assert_eq!(got.len(), expected.len(), "{got:?}");
    for (name, value) in expected {
        assert_eq!(got[*name], ("complete".to_owned(), value.clone()), "step {name}");
    }
}

async fn history(client: &TaskerClient, task_uuid: uuid::Uuid, step: &str) -> Vec<(String, String)> {
    let step_uuid = client.steps(task_uuid).await.unwrap().into_iter().find(|s| s.name == step).unwrap().step_uuid;
    client
        .step_transitions(task_uuid)
        .await
        .unwrap()
        .into_iter()
        .filter(|t| t.step_uuid == step_uuid)
        .map(|t| (t.from_state, t.to_state))
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect()
}

/// The history of a root step whose first claim went stale and was taken
/// over (its takeover puts it back to enqueued first), then completed.
fn taken_over_once() -> Vec<(String, String)> {
    pairs(&[
        ("", "pending"),
        ("pending", "enqueued"),
        ("enqueued", "in_progress"),
        ("in_progress", "enqueued"),
        ("enqueued", "in_progress"),
        ("in_progress", "complete"),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tree_mixed_and_wide_fan_out_shapes_finish_with_exact_results() {
    let ns = common::unique_namespace("shapes");
    let ctx = common::context().await;
    let tree = common::template(
        &ns,
        "tree",
        "Squares",
        &[
            ("root", &[]),
            ("left", &["root"]),
            ("right", &["root"]),
            ("left_left", &["left"]),
            ("left_right", &["left"]),
            ("right_left", &["right"]),
            ("right_right", &["right"]),
            ("left_left_leaf", &["left_left"]),
        ],
    );
    let mixed = common::template(
        &ns,
        "mixed",
        "Sum",
        &[
            ("a", &[]),
            ("b", &["a"]),
            ("c", &["a"]),
            ("d", &["b", "c"]),
            ("e", &["c"]),
            ("f", &["d", "e"]),
            ("g", &["a"]),
        ],
    );
    let middle: Vec<String> = (0..100).map(|i| format!("m{i:03}")).collect();
    let mut fan_steps: Vec<(&str, Vec<&str>)> = vec![("source", vec![])];
    fan_steps.extend(middle.iter().map(|m| (m.as_str(), vec!["source"])));
    fan_steps.push(("sink", middle.iter().map(String::as_str).collect()));
    let fan_refs: Vec<(&str, &[&str])> = fan_steps.iter().map(|(n, d)| (*n, d.as_slice())).collect();
    let fan = common::template(&ns, "fan", "Sum", &fan_refs);
    for t in [tree, mixed, fan] {
        ctx.register_template(t).await.unwrap();
    }
    let run = start(ctx, &ns, 8).await;

    let tree_task = run.client.create_task(&request(&ns, "tree", 2)).await.unwrap();
    let mixed_task = run.client.create_task(&request(&ns, "mixed", 0)).await.unwrap();
    let fan_task = run.client.create_task(&request(&ns, "fan", 0)).await.unwrap();
    for task in [&tree_task, &mixed_task, &fan_task] {
        let done = run.client.wait_for_task(task.task_uuid, Duration::from_secs(60)).await.unwrap();
        assert_eq!(done.status, "complete", "{}", done.name);
    }

    expect_all(
        &results(&run.client, tree_task.task_uuid).await,
        &[
            ("root", json!(4)),
            ("left", json!(16)),
            ("right", json!(16)),
            ("left_left", json!(256)),
            ("left_right", json!(256)),
            ("right_left", json!(256)),
            ("right_right", json!(256)),
            ("left_left_leaf", json!(65536)),
        ],
    );
    expect_all(
        &results(&run.client, mixed_task.task_uuid).await,
        &[
            ("a", json!(1)),
            ("b", json!(2)),
            ("c", json!(2)),
            ("d", json!(5)),
            ("e", json!(3)),
            ("f", json!(9)),
            ("g", json!(2)),
        ],
    );
    let fan_results = results(&run.client, fan_task.task_uuid).await;
    assert_eq!(fan_results.len(), 102);
    assert_eq!(fan_results["source"], ("complete".to_owned(), json!(1)));
    assert!(middle.iter().all(|m| fan_results[m] == ("complete".to_owned(), json!(2))));
    assert_eq!(fan_results["sink"], ("complete".to_owned(), json!(201)));
    // Every step ran exactly once.
    assert!(run.client.steps(fan_task.task_uuid).await.unwrap().iter().all(|s| s.attempts == 1));
    run.stop().await;
}

/// A namespace with the diamond template, an orchestrator, and a worker
/// (two steps at once) whose jobs the test takes and reports by hand.
struct ByHand {
    ns: String,
    ctx: Arc<tasker_core::Context>,
    client: TaskerClient,
    orchestrator: OrchestratorHandle,
    worker: WorkerHandle,
}

async fn diamond_by_hand(prefix: &str) -> ByHand {
    let ns = common::unique_namespace(prefix);
    let ctx = common::context().await;
    ctx.register_template(common::diamond_template(&ns)).await.unwrap();
    let client = TaskerClient::new(ctx.clone());
    let orchestrator = OrchestratorHandle::start(ctx.clone()).await.unwrap();
    let worker = WorkerHandle::start(ctx.clone(), std::slice::from_ref(&ns), 2).await.unwrap();
    ByHand { ns, ctx, client, orchestrator, worker }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_stops_everything_and_a_late_result_changes_nothing() {
    let ByHand { ns, ctx, client, orchestrator, worker } = diamond_by_hand("cancel").await;

    let task = client.create_task(&request(&ns, "diamond", 6)).await.unwrap();
    let job = worker.next_job(Duration::from_secs(10)).await.unwrap().expect("start is enqueued");
    assert!(client.cancel_task(task.task_uuid, "customer withdrew").await.unwrap());
    assert!(!client.cancel_task(task.task_uuid, "again").await.unwrap(), "already cancelled");
    // The handler finishes after the cancel: its result is kept in the
    // history but changes nothing.
    worker.complete(job.step_uuid, json!(36)).await.unwrap();

    let done = client.wait_for_task(task.task_uuid, Duration::from_secs(5)).await.unwrap();
    assert_eq!(done.status, "cancelled");
    let steps = client.steps(task.task_uuid).await.unwrap();
    assert!(steps.iter().all(|s| s.status == "cancelled" && s.results.is_none()), "{steps:?}");
    let start_history = client.step_transitions(task.task_uuid).await.unwrap();
    let late = start_history.iter().rfind(|t| t.step_uuid == job.step_uuid).unwrap();
    assert_eq!((late.from_state.as_str(), late.to_state.as_str()), ("cancelled", "cancelled"));
    assert_eq!(late.metadata["late_result"], json!(36));
    // Nothing further was sent: only the first step's message ever existed.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stats = ctx.messaging().stats(&ctx.router().step_queue(&ns)).await.unwrap();
    assert_eq!((stats.total_sent, stats.depth), (Some(1), 0));
    worker.shutdown(Duration::from_secs(5)).await.unwrap();
    orchestrator.shutdown(Duration::from_secs(5)).await.unwrap();
}

async fn fail_start_for_good(worker: &WorkerHandle) -> uuid::Uuid {
    let job = worker.next_job(Duration::from_secs(10)).await.unwrap().expect("start is enqueued");
    let failure = StepFailure {
        error_class: "ArgumentError".into(),
        message: "bad".into(),
        backtrace: vec![],
        retryable: false,
        retry_after_seconds: None,
    };
    assert_eq!(worker.fail(job.step_uuid, failure).await.unwrap(), "error");
    job.step_uuid
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_retry_and_manual_resolution_resume_an_errored_task() {
    let ns = common::unique_namespace("operator");
    let ctx = common::context().await;
    ctx.register_template(common::diamond_template(&ns)).await.unwrap();
    let client = TaskerClient::new(ctx.clone());
    let orchestrator = OrchestratorHandle::start(ctx.clone()).await.unwrap();
    let worker = Arc::new(WorkerHandle::start(ctx, std::slice::from_ref(&ns), 2).await.unwrap());

    // Retry: the failed step gets fresh attempts and the task completes.
    let retried = client.create_task(&request(&ns, "diamond", 6)).await.unwrap();
    let start_step = fail_start_for_good(&worker).await;
    assert_eq!(client.wait_for_task(retried.task_uuid, Duration::from_secs(10)).await.unwrap().status, "error");
    assert!(client.retry_step(start_step, "fixed the input").await.unwrap());
    assert!(!client.retry_step(start_step, "twice").await.unwrap(), "no longer in error");
    let runner = tokio::spawn(common::run_square_worker(worker.clone(), client.clone()));
    let done = client.wait_for_task(retried.task_uuid, Duration::from_secs(30)).await.unwrap();
    assert_eq!(done.status, "complete");
    assert_eq!(results(&client, retried.task_uuid).await["finish"].1, json!(2_821_109_907_456_i64));
    let task_history: Vec<_> = client
        .task_transitions(retried.task_uuid)
        .await
        .unwrap()
        .into_iter()
        .map(|t| (t.from_state, t.to_state))
        .collect();
    assert_eq!(
        task_history,
        pairs(&[
            ("", "pending"),
            ("pending", "in_progress"),
            ("in_progress", "error"),
            ("error", "in_progress"),
            ("in_progress", "complete")
        ])
    );
    assert_eq!(
        history(&client, retried.task_uuid, "start").await,
        pairs(&[
            ("", "pending"),
            ("pending", "enqueued"),
            ("enqueued", "in_progress"),
            ("in_progress", "error"),
            ("error", "pending"),
            ("pending", "enqueued"),
            ("enqueued", "in_progress"),
            ("in_progress", "complete"),
        ])
    );
    worker.shutdown(Duration::from_secs(5)).await.unwrap();
    runner.await.unwrap();
    orchestrator.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolving_a_failed_step_by_hand_lets_its_dependents_run() {
    let ns = common::unique_namespace("resolve");
    let ctx = common::context().await;
    ctx.register_template(common::diamond_template(&ns)).await.unwrap();
    let client = TaskerClient::new(ctx.clone());
    let orchestrator = OrchestratorHandle::start(ctx.clone()).await.unwrap();
    let worker = Arc::new(WorkerHandle::start(ctx, std::slice::from_ref(&ns), 2).await.unwrap());

    let task = client.create_task(&request(&ns, "diamond", 6)).await.unwrap();
    let start_step = fail_start_for_good(&worker).await;
    assert_eq!(client.wait_for_task(task.task_uuid, Duration::from_secs(10)).await.unwrap().status, "error");
    assert!(client.resolve_step_manually(start_step, &json!(36), "computed by hand").await.unwrap());
    let runner = tokio::spawn(common::run_square_worker(worker.clone(), client.clone()));
    let done = client.wait_for_task(task.task_uuid, Duration::from_secs(30)).await.unwrap();
    assert_eq!(done.status, "complete");
    let got = results(&client, task.task_uuid).await;
    assert_eq!(got["start"], ("resolved_manually".to_owned(), json!(36)));
    assert_eq!(got["finish"], ("complete".to_owned(), json!(2_821_109_907_456_i64)));
    worker.shutdown(Duration::from_secs(5)).await.unwrap();
    runner.await.unwrap();
    orchestrator.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_held_by_a_dead_worker_is_taken_over_and_recorded_once() {
    let ns = common::unique_namespace("dead");
    let (overrides, ctx) = common::quickly_recovering_deployment().await;
    ctx.register_template(common::linear_template(&ns)).await.unwrap();
    let client = TaskerClient::new(ctx.clone());
    let task = client.create_task(&request(&ns, "linear", 6)).await.unwrap();

    // A worker claims step_one, then its process dies mid-step.
    let claimed = common::claim_and_die(overrides, &ns).await;
    assert_eq!((claimed.step_name.as_str(), claimed.attempt), ("step_one", 1));

    let run = start(ctx, &ns, 2).await;
    let done = run.client.wait_for_task(task.task_uuid, Duration::from_secs(30)).await.unwrap();
    assert_eq!(done.status, "complete");
    let steps = run.client.steps(task.task_uuid).await.unwrap();
    assert_eq!((steps[0].attempts, steps[3].results.clone()), (2, Some(json!(2_821_109_907_456_i64))));
    let step_one = history(&run.client, task.task_uuid, "step_one").await;
    assert_eq!(step_one, taken_over_once());
    run.stop().await;
}

/// A step's message can come back a moment before its claim goes stale:
/// its visibility timeout counts from the read, the claim's from just
/// after. The worker that reads it then gives it back until the claim
/// could be stale, and the step is taken over and recorded once, with no
/// orchestrator running to sweep it up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_back_before_its_claim_is_stale_is_kept_and_its_step_taken_over() {
    let ns = common::unique_namespace("early");
    let overrides = common::one_deployment(json!({"messaging": {"visibility_timeout_seconds": 2}}));
    let ctx = common::context_with(overrides.clone()).await;
    ctx.register_template(common::linear_template(&ns)).await.unwrap();
    let client = TaskerClient::new(ctx.clone());
    let task = client.create_task(&request(&ns, "linear", 6)).await.unwrap();
    let claimed = common::claim_and_die(overrides, &ns).await;
    assert_eq!(claimed.step_name, "step_one");
    // Its message is visible again while the claim is fresh.
    let queue = ctx.router().step_queue(&ns);
    let visible =
        sqlx::query(&format!("UPDATE pgmq.q_{queue} SET vt = clock_timestamp()")).execute(ctx.pool()).await.unwrap();
    assert_eq!(visible.rows_affected(), 1);

    let worker = Arc::new(WorkerHandle::start(ctx.clone(), std::slice::from_ref(&ns), 2).await.unwrap());
    let runner = tokio::spawn(common::run_square_worker(worker.clone(), client.clone()));
    let done = client.wait_for_task(task.task_uuid, Duration::from_secs(20)).await.unwrap();
    common::assert_linear_six_completed_once(&client, &done).await;
    assert_eq!(client.steps(task.task_uuid).await.unwrap()[0].attempts, 2);
    assert_eq!(history(&client, task.task_uuid, "step_one").await, taken_over_once());
    worker.shutdown(Duration::from_secs(5)).await.unwrap();
    runner.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_says_when_it_took_a_stale_step_over_and_the_worker_counts_it() {
    let ns = common::unique_namespace("takeover");
    let ctx = common::context_with(json!({"messaging": {"visibility_timeout_seconds": 5}})).await;
    ctx.register_template(common::linear_template(&ns)).await.unwrap();
    let client = TaskerClient::new(ctx.clone());
    let task = client.create_task(&request(&ns, "linear", 6)).await.unwrap();
    let step_one = client.steps(task.task_uuid).await.unwrap()[0].step_uuid;
    let claim = |worker: &'static str| {
        sqlx::query_scalar::<_, bool>(
            "SELECT taken_over FROM tasker_claim_steps($1, $2, $3, interval '5 seconds', false)",
        )
        .bind(vec![step_one])
        .bind(worker)
        .bind(vec![ns.clone()])
        .fetch_all(ctx.pool())
    };
    // A claim of an enqueued step takes nothing over; its message stays in
    // the queue, as if its worker died before acking or heartbeating.
    assert_eq!(claim("ghost").await.unwrap(), vec![false]);
    sqlx::query(
        "UPDATE tasker_workflow_steps SET started_at = clock_timestamp() - interval '10 seconds', \
                heartbeat_at = clock_timestamp() - interval '10 seconds' WHERE step_uuid = $1",
    )
    .bind(step_one)
    .execute(ctx.pool())
    .await
    .unwrap();

    // A worker reads the message and takes the stale claim over.
    let worker = WorkerHandle::start(ctx.clone(), std::slice::from_ref(&ns), 1).await.unwrap();
    let job = worker.next_job(Duration::from_secs(10)).await.unwrap().expect("step_one, taken over");
    assert_eq!((job.step_uuid, job.attempt), (step_one, 2));
    let metrics = tasker_core::metrics_text(&ctx).await.unwrap();
    let counted = format!("tasker_steps_taken_over_total{{namespace=\"{ns}\"}} 1");
    assert!(metrics.lines().any(|l| l == counted), "{counted} not in\n{metrics}");
    common::run_job(&worker, &client, job).await;
    worker.shutdown(Duration::from_secs(5)).await.unwrap();
    client.cancel_task(task.task_uuid, "test over").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_alone_and_polling_alone_each_drive_workflows() {
    for (label, overrides) in [
        (
            "notifications only",
            json!({"orchestration": {"poll_interval_ms": 60_000}, "worker": {"poll_interval_ms": 60_000}}),
        ),
        (
            "polling only",
            json!({"messaging": {"notifications": false},
                   "orchestration": {"poll_interval_ms": 20}, "worker": {"poll_interval_ms": 20}}),
        ),
    ] {
        let ns = common::unique_namespace("wake");
        let ctx = common::context_with(overrides).await;
        ctx.register_template(common::linear_template(&ns)).await.unwrap();
        let run = start(ctx, &ns, 2).await;
        // Let the loops reach their idle wait before any work exists.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let task = run.client.create_task(&request(&ns, "linear", 6)).await.unwrap();
        let done = run.client.wait_for_task(task.task_uuid, Duration::from_secs(20)).await;
        assert_eq!(done.map(|t| t.status).ok(), Some("complete".to_owned()), "{label}");
        run.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contexts_are_validated_and_identity_can_be_derived() {
    let ns = common::unique_namespace("schema");
    let yaml = format!(
        "namespace: {ns}\nname: typed\nversion: 1.0.0\n\
         input_schema: {{type: object, required: [n], properties: {{n: {{type: integer, minimum: 1}}}}}}\n\
         steps:\n  - {{name: only, handler: {{callable: Squares::Only}}}}\n"
    );
    let ctx = common::context().await;
    ctx.register_template(tasker_core::TaskTemplate::from_yaml(&yaml, "typed.yml").unwrap()).await.unwrap();
    let client = TaskerClient::new(ctx.clone());

    let err = client.create_task(&request(&ns, "typed", 0)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Validation);
    assert!(err.to_string().contains(&format!("the context of a {ns}/typed@1.0.0 task does not match")), "{err}");
    assert!(err.to_string().contains("/n: 0 is less than the minimum of 1"), "{err}");

    let mut derived = request(&ns, "typed", 3);
    derived.derive_identity_key = true;
    let first = client.create_task(&derived).await.unwrap();
    let second = client.create_task(&derived).await.unwrap();
    let other = client.create_task(&request(&ns, "typed", 3)).await.unwrap();
    assert_eq!(first.task_uuid, second.task_uuid);
    assert_ne!(first.task_uuid, other.task_uuid);
    assert!(first.identity_key.unwrap().starts_with("sha256:"));
}

/// Every (from, to) pair the database's CHECK constraints accept on the
/// history rows of `table` for the row `key`, tried one by one inside a
/// transaction that is rolled back.
async fn accepted_pairs(
    ctx: &tasker_core::Context,
    table: &str,
    key: uuid::Uuid,
    states: &[&str],
) -> Vec<(String, String)> {
    let column = if table == "tasker_task_transitions" { "task_uuid" } else { "step_uuid" };
    let mut accepted = Vec::new();
    let mut tx = ctx.pool().begin().await.unwrap();
    for (i, from) in std::iter::once("").chain(states.iter().copied()).enumerate() {
        for (j, to) in states.iter().enumerate() {
            sqlx::query("SAVEPOINT probe").execute(&mut *tx).await.unwrap();
            let sql = format!("INSERT INTO {table} ({column}, sort_key, from_state, to_state) VALUES ($1, $2, $3, $4)");
            let sort_key = i32::try_from(1000 + i * 100 + j).unwrap();
            match sqlx::query(&sql).bind(key).bind(sort_key).bind(from).bind(*to).execute(&mut *tx).await {
                Ok(_) => accepted.push((from.to_owned(), (*to).to_owned())),
                Err(e) => {
                    assert!(e.to_string().contains(&format!("{table}_allowed")), "{e}");
                    sqlx::query("ROLLBACK TO SAVEPOINT probe").execute(&mut *tx).await.unwrap();
                }
            }
        }
    }
    tx.rollback().await.unwrap();
    accepted.sort();
    accepted
}

#[tokio::test]
async fn the_database_allows_exactly_the_transitions_the_state_machines_allow() {
    let ctx = common::context().await;
    let ns = common::unique_namespace("refuse");
    ctx.register_template(common::linear_template(&ns)).await.unwrap();
    let client = TaskerClient::new(ctx.clone());
    let task = client.create_task(&request(&ns, "linear", 6)).await.unwrap();
    let step = client.steps(task.task_uuid).await.unwrap()[0].step_uuid;

    let step_states: Vec<&str> = StepState::ALL.iter().map(|s| s.as_str()).collect();
    let mut step_code = vec![(String::new(), "pending".to_owned())];
    for a in StepState::ALL {
        for b in StepState::ALL {
            if a.can_transition_to(*b) {
                step_code.push((a.to_string(), b.to_string()));
            }
        }
    }
    step_code.sort();
    assert_eq!(accepted_pairs(&ctx, "tasker_workflow_step_transitions", step, &step_states).await, step_code);

    let task_states: Vec<&str> = TaskState::ALL.iter().map(|s| s.as_str()).collect();
    let mut task_code = vec![(String::new(), "pending".to_owned())];
    for a in TaskState::ALL {
        for b in TaskState::ALL {
            if a.can_transition_to(*b) {
                task_code.push((a.to_string(), b.to_string()));
            }
        }
    }
    task_code.sort();
    assert_eq!(accepted_pairs(&ctx, "tasker_task_transitions", task.task_uuid, &task_states).await, task_code);

    // A state that does not exist is refused on the rows too.
    let refused = sqlx::query("UPDATE tasker_workflow_steps SET status = 'done' WHERE step_uuid = $1")
        .bind(step)
        .execute(ctx.pool())
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("tasker_workflow_steps_status_check"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_delivery_never_reruns_a_finished_step_and_a_poison_message_is_kept() {
    let ns = common::unique_namespace("dupes");
    let ctx = common::context().await;
    ctx.register_template(common::linear_template(&ns)).await.unwrap();
    let run = start(ctx.clone(), &ns, 2).await;
    let task = run.client.create_task(&request(&ns, "linear", 6)).await.unwrap();
    run.client.wait_for_task(task.task_uuid, Duration::from_secs(30)).await.unwrap();
    let before = run.client.step_transitions(task.task_uuid).await.unwrap();

    let queue = ctx.router().step_queue(&ns);
    let step_one = run.client.steps(task.task_uuid).await.unwrap()[0].clone();
    let duplicate = tasker_core::StepMessage {
        task_uuid: task.task_uuid,
        step_uuid: step_one.step_uuid,
        correlation_id: task.correlation_id,
        priority: 0,
    };
    ctx.messaging().send(&queue, &serde_json::to_value(duplicate).unwrap()).await.unwrap();
    ctx.messaging().send(&queue, &json!({"not": "a step message"})).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while ctx.messaging().stats(&queue).await.unwrap().depth > 0 {
        assert!(std::time::Instant::now() < deadline, "the worker never took both messages");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The duplicate was acked and skipped: nothing about the task changed.
    assert_eq!(run.client.step_transitions(task.task_uuid).await.unwrap(), before);
    assert_eq!(run.client.steps(task.task_uuid).await.unwrap()[0].attempts, 1);
    // The poison message left the queue for its archive, not for nowhere.
    let archived: Vec<Value> =
        sqlx::query_scalar(&format!("SELECT message FROM pgmq.a_{queue}")).fetch_all(ctx.pool()).await.unwrap();
    assert_eq!(archived, vec![json!({"not": "a step message"})]);
    run.stop().await;
}

/// PGMQ reads a batch and claims its steps in one statement. What that
/// statement leaves unclaimed in the same batch is settled as before: a
/// second message for a step it claimed goes back until that claim could
/// be stale, and is acked then (the step is done), a malformed message and
/// an over-delivered one go to the archive with their reasons, and each
/// claimed step runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgmq_a_batch_read_and_claimed_at_once_settles_every_other_message_as_before() {
    let ns = common::unique_namespace("batch");
    let ctx =
        common::context_with(json!({"messaging": {"max_receive_count": 3, "visibility_timeout_seconds": 2}})).await;
    ctx.register_template(common::template(&ns, "one", "Sum", &[("only", &[])])).await.unwrap();
    let client = TaskerClient::new(ctx.clone());
    let queue = ctx.router().step_queue(&ns);
    // No worker yet: three tasks wait, each with its root step's message.
    let mut tasks = Vec::new();
    for _ in 0..3 {
        tasks.push(client.create_task(&CreateTask::new(&ns, "one", "1.0.0", json!({}))).await.unwrap());
    }
    let mut steps = Vec::new();
    for task in &tasks {
        steps.push(client.steps(task.task_uuid).await.unwrap()[0].step_uuid);
    }
    let duplicate = tasker_core::StepMessage {
        task_uuid: tasks[0].task_uuid,
        step_uuid: steps[0],
        correlation_id: tasks[0].correlation_id,
        priority: 0,
    };
    ctx.messaging().send(&queue, &serde_json::to_value(duplicate).unwrap()).await.unwrap();
    let malformed = json!({"step_uuid": "not a uuid", "correlation_id": tasks[1].correlation_id});
    ctx.messaging().send(&queue, &malformed).await.unwrap();
    // The third task's message was delivered three times already: the next
    // delivery is one too many.
    sqlx::query(&format!("UPDATE pgmq.q_{queue} SET read_ct = 3 WHERE message ->> 'step_uuid' = $1"))
        .bind(steps[2].to_string())
        .execute(ctx.pool())
        .await
        .unwrap();

    // Room for all five at once: the worker's first read takes them.
    let worker = Arc::new(WorkerHandle::start(ctx.clone(), std::slice::from_ref(&ns), 8).await.unwrap());
    let runner = tokio::spawn(common::run_square_worker(worker.clone(), client.clone()));
    for task in &tasks[..2] {
        let done = client.wait_for_task(task.task_uuid, Duration::from_secs(15)).await.unwrap();
        assert_eq!(done.status, "complete");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while ctx.messaging().stats(&queue).await.unwrap().depth > 0 {
        assert!(std::time::Instant::now() < deadline, "the worker left messages in the queue");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    worker.shutdown(Duration::from_secs(5)).await.unwrap();
    runner.await.unwrap();

    for (task, step) in tasks[..2].iter().zip(&steps) {
        let history = client.step_transitions(task.task_uuid).await.unwrap();
        let states: Vec<(&str, &str)> = history.iter().map(|t| (t.from_state.as_str(), t.to_state.as_str())).collect();
        assert_eq!(
            states,
            [("", "pending"), ("pending", "enqueued"), ("enqueued", "in_progress"), ("in_progress", "complete")],
            "step {step} claimed and run once"
        );
        let ran = client.steps(task.task_uuid).await.unwrap().remove(0);
        assert_eq!((ran.attempts, ran.results), (1, Some(json!(1))));
    }
    // The over-delivered step was never claimed.
    let waiting = client.steps(tasks[2].task_uuid).await.unwrap().remove(0);
    assert_eq!((waiting.status.as_str(), waiting.attempts), ("enqueued", 0));
    let archived: Vec<(Value, String)> = sqlx::query_as(&format!(
        "SELECT message, headers ->> 'x-tasker-dead-letter-reason' FROM pgmq.a_{queue} ORDER BY msg_id"
    ))
    .fetch_all(ctx.pool())
    .await
    .unwrap();
    assert_eq!(archived.len(), 2, "{archived:?}");
    assert_eq!(archived[0].0["step_uuid"], json!(steps[2].to_string()));
    assert_eq!(archived[0].1, "delivered 4 times, more than messaging.max_receive_count (3)");
    assert_eq!(archived[1].0, malformed);
    assert!(archived[1].1.starts_with("malformed: "), "{}", archived[1].1);
}

/// Outcomes recorded together: one statement completes the steps still in
/// the attempt it claimed, and keeps a step resolved meanwhile as it is,
/// with the result in its history. The history is append-only: one row per
/// change, numbered in order, none ever rewritten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_recorded_together_apply_only_to_steps_still_in_progress() {
    let ByHand { ns, ctx, client, orchestrator, worker } = diamond_by_hand("together").await;
    let task = client.create_task(&request(&ns, "diamond", 3)).await.unwrap();
    common::run_job(&worker, &client, worker.next_job(Duration::from_secs(10)).await.unwrap().unwrap()).await;
    // Both branches are claimed by start's outcome when the worker's second
    // slot is free at that moment (the usual case).
    let mut jobs = Vec::new();
    while jobs.len() < 2 {
        jobs.push(worker.next_job(Duration::from_secs(10)).await.unwrap().expect("left and right are claimed"));
    }
    jobs.sort_by(|a, b| a.step_name.cmp(&b.step_name));
    let (left, right) = (&jobs[0], &jobs[1]);
    assert!(client.resolve_step_manually(right.step_uuid, &json!("by hand"), "operator").await.unwrap());

    let rows: Vec<(String, Option<uuid::Uuid>, Option<String>)> = sqlx::query_as(
        "SELECT kind, step_uuid, state FROM tasker_record_outcomes($1, $2, $3, $4, $5, $6, $7, 'w', $8, 0, true, \
         $9, $10) WHERE kind = 'outcome'",
    )
    .bind(vec![left.step_uuid, right.step_uuid])
    .bind(vec![1, 1])
    .bind(vec![true, true])
    .bind(vec![json!(9), json!(9)])
    .bind(vec![false, false])
    .bind(vec![0_i64, 0])
    .bind(vec![json!({"worker": "w"}), json!({"worker": "w"})])
    .bind(vec![ns.clone()])
    .bind(vec![None::<String>, None])
    .bind(vec![None::<i64>, None])
    .fetch_all(ctx.pool())
    .await
    .unwrap();
    assert_eq!(
        rows,
        vec![
            ("outcome".to_owned(), Some(left.step_uuid), Some("complete".to_owned())),
            ("outcome".to_owned(), Some(right.step_uuid), None),
        ]
    );

    let steps = results(&client, task.task_uuid).await;
    assert_eq!(steps["left"], ("complete".to_owned(), json!(9)));
    assert_eq!(steps["right"], ("resolved_manually".to_owned(), json!("by hand")));
    let transitions = client.step_transitions(task.task_uuid).await.unwrap();
    let of = |step: uuid::Uuid| -> Vec<(String, String, i32)> {
        transitions
            .iter()
            .filter(|t| t.step_uuid == step)
            .map(|t| (t.from_state.clone(), t.to_state.clone(), t.sort_key))
            .collect()
    };
    let row = |from: &str, to: &str, sort: i32| (from.to_owned(), to.to_owned(), sort);
    // Claimed eagerly by start's outcome, or through the queue when the
    // dispatcher held the free slot at that moment; numbered 1, 2, ... either way.
    let left_history = of(left.step_uuid);
    let eager = left_history.len() == 3;
    let claimed = if eager { row("pending", "in_progress", 2) } else { row("enqueued", "in_progress", 3) };
    assert!(left_history.contains(&claimed), "{left_history:?}");
    assert_eq!(left_history.first().unwrap(), &row("", "pending", 1));
    let last = i32::try_from(left_history.len()).unwrap();
    assert_eq!(left_history.last().unwrap(), &row("in_progress", "complete", last));
    let claim = transitions.iter().find(|t| t.step_uuid == left.step_uuid && t.to_state == "in_progress").unwrap();
    assert_eq!(claim.metadata["worker"], json!(worker.id()));
    assert_eq!(claim.metadata.get("eager").is_some(), eager);
    let right_history = of(right.step_uuid);
    let last = i32::try_from(right_history.len()).unwrap();
    assert_eq!(right_history.last().unwrap(), &row("resolved_manually", "resolved_manually", last));
    let late = transitions.iter().rfind(|t| t.step_uuid == right.step_uuid).unwrap();
    assert_eq!((late.metadata["late_result"].clone(), late.metadata["attempt"].clone()), (json!(9), json!(1)));
    // The worker still holds both claims: its reports now change nothing.
    for job in &jobs {
        worker.complete(job.step_uuid, json!(9)).await.unwrap();
    }
    assert_eq!(results(&client, task.task_uuid).await["left"], ("complete".to_owned(), json!(9)));
    worker.shutdown(Duration::from_secs(5)).await.unwrap();
    orchestrator.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// A pooled connection is checked before use only once it has been idle a
/// while (checking every use cost a round trip per statement): one the
/// server dropped while it sat idle is replaced, and the caller never sees
/// it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_pooled_connection_the_server_dropped_is_replaced_unseen() {
    common::context().await; // migrated (that takes two connections)
    let ctx = common::context_with(json!({"max_connections": 1})).await;
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(ctx.pool()).await.unwrap();
    let admin = common::context().await;
    let killed: bool =
        sqlx::query_scalar("SELECT pg_terminate_backend($1)").bind(pid).fetch_one(admin.pool()).await.unwrap();
    assert!(killed);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let again: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(ctx.pool()).await.unwrap();
    assert_ne!(again, pid, "a new connection serves the query");
}

/// A worker keeps a connection for its dispatcher and one for each
/// recorder (sqlx pings every connection it takes back into the pool, a
/// round trip per statement). When the server drops them, the statement on
/// each fails once, a fresh connection takes over, and no step runs twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_kept_connections_the_server_dropped_goes_on_and_runs_each_step_once() {
    let ns = common::unique_namespace("kept");
    let deployment = common::one_deployment(Value::Null);
    let mut worker_overrides = deployment.clone();
    worker_overrides["database_url"] = json!(common::database_url_named(&ns));
    let worker_ctx = common::context_with(worker_overrides).await;
    let ctx = common::context_with(deployment).await;
    ctx.register_template(common::linear_template(&ns)).await.unwrap();
    let client = TaskerClient::new(ctx.clone());
    let worker = Arc::new(WorkerHandle::start(worker_ctx, std::slice::from_ref(&ns), 2).await.unwrap());
    let runner = tokio::spawn(common::run_square_worker(worker.clone(), TaskerClient::new(ctx.clone())));
    let first = client.create_task(&request(&ns, "linear", 6)).await.unwrap();
    let done = client.wait_for_task(first.task_uuid, Duration::from_secs(30)).await.unwrap();
    common::assert_linear_six_completed_once(&client, &done).await;

    let killed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1) k",
    )
    .bind(&ns)
    .fetch_one(ctx.pool())
    .await
    .unwrap();
    assert!(killed >= 3, "the worker's kept connections among them (killed {killed})");
    let second = client.create_task(&request(&ns, "linear", 6)).await.unwrap();
    let done = client.wait_for_task(second.task_uuid, Duration::from_secs(30)).await.unwrap();
    common::assert_linear_six_completed_once(&client, &done).await;
    worker.shutdown(Duration::from_secs(5)).await.unwrap();
    runner.await.unwrap();
}

/// A process listens on one session for all it listens to (its worker's
/// queue, the tasks it waits for, its template cache's changes):
/// PostgreSQL wakes every listening session of a database for every NOTIFY
/// committed there. When the server drops that session, one session takes
/// its place, listening on every channel again, and work goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_listens_on_one_session_which_comes_back_on_every_channel() {
    let ns = common::unique_namespace("listen");
    let ctx = common::context_with(json!({"database_url": common::database_url_named(&ns)})).await;
    let admin = common::context().await;
    let listening = |admin: Arc<tasker_core::Context>, ns: String| async move {
        let sessions: Vec<(i32, String)> = sqlx::query_as(
            "SELECT pid, query FROM pg_stat_activity WHERE application_name = $1 AND query LIKE 'LISTEN%'",
        )
        .bind(ns)
        .fetch_all(admin.pool())
        .await
        .unwrap();
        sessions
    };
    ctx.register_template(common::linear_template(&ns)).await.unwrap();
    let client = TaskerClient::new(ctx.clone());
    let worker = Arc::new(WorkerHandle::start(ctx.clone(), std::slice::from_ref(&ns), 2).await.unwrap());
    let runner = tokio::spawn(common::run_square_worker(worker.clone(), client.clone()));
    let first = client.create_task(&request(&ns, "linear", 6)).await.unwrap();
    let done = client.wait_for_task(first.task_uuid, Duration::from_secs(30)).await.unwrap();
    common::assert_linear_six_completed_once(&client, &done).await;
    let sessions = listening(admin.clone(), ns.clone()).await;
    assert_eq!(sessions.len(), 1, "one LISTEN session: {sessions:?}");

    let dropped = sessions[0].0;
    let killed: bool =
        sqlx::query_scalar("SELECT pg_terminate_backend($1)").bind(dropped).fetch_one(admin.pool()).await.unwrap();
    assert!(killed);
    // The new session listens on every channel in one statement.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let again = loop {
        let sessions = listening(admin.clone(), ns.clone()).await;
        if let [(pid, query)] = sessions.as_slice() {
            if *pid != dropped {
                break query.clone();
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "no new LISTEN session alone: {sessions:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for channel in ["tasker_task_finished", "tasker_template_changed", ns.as_str()] {
        assert!(again.contains(channel), "{channel} in {again:?}");
    }
    let second = client.create_task(&request(&ns, "linear", 6)).await.unwrap();
    let done = client.wait_for_task(second.task_uuid, Duration::from_secs(30)).await.unwrap();
    common::assert_linear_six_completed_once(&client, &done).await;
    worker.shutdown(Duration::from_secs(5)).await.unwrap();
    runner.await.unwrap();
}

/// From a pool too small to keep connections in (fewer than eight), each
/// statement takes one and gives it back: a worker and its caller share
/// six connections (its LISTEN session among them) and every step runs
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_on_a_pool_of_six_connections_runs_every_step_once() {
    let ns = common::unique_namespace("sixconn");
    let ctx = common::context_with(json!({"max_connections": 6})).await;
    ctx.register_template(common::linear_template(&ns)).await.unwrap();
    let client = TaskerClient::new(ctx.clone());
    let worker = Arc::new(WorkerHandle::start(ctx.clone(), std::slice::from_ref(&ns), 4).await.unwrap());
    let runner = tokio::spawn(common::run_square_worker(worker.clone(), client.clone()));
    let mut tasks = Vec::new();
    for _ in 0..3 {
        tasks.push(client.create_task(&request(&ns, "linear", 6)).await.unwrap().task_uuid);
    }
    for task in tasks {
        let done = client.wait_for_task(task, Duration::from_secs(30)).await.unwrap();
        common::assert_linear_six_completed_once(&client, &done).await;
    }
    worker.shutdown(Duration::from_secs(5)).await.unwrap();
    runner.await.unwrap();
}
