//! The data flow of one hop per step at most: workers advance their own
//! tasks in their outcome transactions, so workflows and retries finish
//! with no orchestrator running; a dependent in a namespace the finishing
//! worker serves runs next on that worker with no queue hop, one in another
//! namespace goes through that namespace's queue; and a worker that dies
//! between claiming a dependent eagerly and running it loses nothing.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use serde_json::{json, Value};
use tasker_core::{CreateTask, StepFailure, TaskerClient, WorkerHandle};
use uuid::Uuid;

fn request(namespace: &str, name: &str, n: i64) -> CreateTask {
    CreateTask::new(namespace, name, "1.0.0", json!({"n": n}))
}

/// A step's history: (from, to, the worker named), oldest first.
async fn history(client: &TaskerClient, task: Uuid, step: &str) -> Vec<(String, String, Value)> {
    let rows = common::step_history(client, task, step).await.into_iter();
    rows.map(|(from, to, meta)| (from, to, meta.get("worker").cloned().unwrap_or(Value::Null))).collect()
}

fn row(from: &str, to: &str, worker: Option<&str>) -> (String, String, Value) {
    (from.to_owned(), to.to_owned(), worker.map_or(Value::Null, |w| json!(w)))
}

/// A worker running [`common::run_job`] until it stops.
async fn worker(
    ctx: &Arc<tasker_core::Context>,
    namespaces: &[String],
) -> (Arc<WorkerHandle>, tokio::task::JoinHandle<()>) {
    let worker = Arc::new(WorkerHandle::start(ctx.clone(), namespaces, 4).await.unwrap());
    let runner = tokio::spawn(common::run_square_worker(worker.clone(), TaskerClient::new(ctx.clone())));
    (worker, runner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflows_and_retries_finish_with_no_orchestrator_running() {
    let ns = common::unique_namespace("alone");
    let ctx = common::context().await;
    let tree = common::template(
        &ns,
        "tree",
        "Squares",
        &[("root", &[]), ("left", &["root"]), ("right", &["root"]), ("leaf", &["left", "right"])],
    );
    let mixed = common::template(
        &ns,
        "mixed",
        "Sum",
        &[("a", &[]), ("b", &["a"]), ("c", &["a"]), ("d", &["b", "c"]), ("e", &["c"])],
    );
    for t in [common::linear_template(&ns), common::diamond_template(&ns), tree, mixed] {
        ctx.register_template(t).await.unwrap();
    }
    let client = TaskerClient::new(ctx.clone());
    let (worker, runner) = worker(&ctx, std::slice::from_ref(&ns)).await;

    let expected: [(&str, i64, Value); 4] = [
        ("linear", 6, json!(2_821_109_907_456_i64)),
        ("diamond", 6, json!(2_821_109_907_456_i64)),
        ("tree", 2, json!(65536)),
        ("mixed", 0, json!(5)),
    ];
    let mut tasks = Vec::new();
    for (name, n, _) in &expected {
        tasks.push(client.create_task(&request(&ns, name, *n)).await.unwrap().task_uuid);
    }
    for (task, (name, _, last)) in tasks.iter().zip(&expected) {
        let done = client.wait_for_task(*task, Duration::from_secs(30)).await.unwrap();
        assert_eq!(done.status, "complete", "{name}");
        let steps = client.steps(*task).await.unwrap();
        assert!(steps.iter().all(|s| s.status == "complete" && s.attempts == 1), "{name}: {steps:?}");
        let final_step = if *name == "mixed" { &steps[3] } else { steps.last().unwrap() };
        assert_eq!(final_step.results.as_ref(), Some(last), "{name}");
    }
    worker.shutdown(Duration::from_secs(5)).await.unwrap();
    runner.await.unwrap();

    // A retryable failure schedules its own next attempt; a permanent one
    // ends the task in error, naming the step.
    let worker = WorkerHandle::start(ctx.clone(), std::slice::from_ref(&ns), 1).await.unwrap();
    let task = client.create_task(&request(&ns, "linear", 6)).await.unwrap().task_uuid;
    let busy = StepFailure {
        error_class: "Busy".into(),
        message: "try later".into(),
        backtrace: vec![],
        retryable: true,
        retry_after_seconds: Some(0.2),
    };
    let first = worker.next_job(Duration::from_secs(10)).await.unwrap().unwrap();
    assert_eq!(worker.fail(first.step_uuid, busy).await.unwrap(), "waiting_for_retry");
    let again = worker.next_job(Duration::from_secs(10)).await.unwrap().expect("retried with no orchestrator");
    assert_eq!((again.step_name.as_str(), again.attempt), ("step_one", 2));
    let fatal = StepFailure { retryable: false, error_class: "Fatal".into(), ..first_failure() };
    assert_eq!(worker.fail(again.step_uuid, fatal).await.unwrap(), "error");
    let done = client.wait_for_task(task, Duration::from_secs(10)).await.unwrap();
    assert_eq!(done.status, "error");
    let last = client.task_transitions(task).await.unwrap().pop().unwrap();
    assert_eq!(last.metadata, json!({"failed_steps": ["step_one"]}));
    worker.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// Outcomes look at a task's steps only where the task may have ended: a
/// branch that fails for good while its sibling runs leaves the task in
/// progress; the sibling's result, whose dependent can no longer run, ends
/// it in error, naming the failed branch; the join never runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_ends_in_error_when_the_last_running_branch_completes_after_another_failed() {
    let ns = common::unique_namespace("branches");
    let ctx = common::context().await;
    ctx.register_template(common::diamond_template(&ns)).await.unwrap();
    let client = TaskerClient::new(ctx.clone());
    let worker = WorkerHandle::start(ctx.clone(), std::slice::from_ref(&ns), 2).await.unwrap();
    let task = client.create_task(&request(&ns, "diamond", 2)).await.unwrap().task_uuid;

    let start = worker.next_job(Duration::from_secs(10)).await.unwrap().unwrap();
    worker.complete(start.step_uuid, json!(4)).await.unwrap();
    let mut branches = Vec::new();
    for _ in 0..2 {
        branches.push(worker.next_job(Duration::from_secs(10)).await.unwrap().expect("both branches run"));
    }
    branches.sort_by(|a, b| a.step_name.cmp(&b.step_name));
    let (left, right) = (&branches[0], &branches[1]);
    assert_eq!((left.step_name.as_str(), right.step_name.as_str()), ("left", "right"));

    let fatal = StepFailure { retryable: false, error_class: "Fatal".into(), ..first_failure() };
    assert_eq!(worker.fail(left.step_uuid, fatal).await.unwrap(), "error");
    assert_eq!(client.task(task).await.unwrap().status, "in_progress", "right is still running");
    worker.complete(right.step_uuid, json!(16)).await.unwrap();

    let done = client.wait_for_task(task, Duration::from_secs(10)).await.unwrap();
    assert_eq!(done.status, "error");
    let last = client.task_transitions(task).await.unwrap().pop().unwrap();
    assert_eq!(last.metadata, json!({"failed_steps": ["left"]}));
    let states: Vec<(String, String)> =
        client.steps(task).await.unwrap().into_iter().map(|s| (s.name, s.status)).collect();
    let expected = [("start", "complete"), ("left", "error"), ("right", "complete"), ("finish", "pending")];
    assert_eq!(states, expected.map(|(n, s)| (n.to_owned(), s.to_owned())));
    assert!(worker.next_job(Duration::from_millis(300)).await.unwrap().is_none(), "the join never runs");
    worker.shutdown(Duration::from_secs(5)).await.unwrap();
}

fn first_failure() -> StepFailure {
    StepFailure {
        error_class: String::new(),
        message: "bad input".into(),
        backtrace: vec![],
        retryable: true,
        retry_after_seconds: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dependent_runs_eagerly_where_its_namespace_is_served_and_through_its_queue_where_not() {
    let (near, far) = (common::unique_namespace("near"), common::unique_namespace("far"));
    let ctx = common::context().await;
    // step_two runs in the far namespace; the others in the near one.
    let mut split = common::linear_template(&near);
    split.steps[1].namespace = Some(far.clone());
    ctx.register_template(split).await.unwrap();
    let client = TaskerClient::new(ctx.clone());
    let (near_worker, near_runner) = worker(&ctx, std::slice::from_ref(&near)).await;
    let (far_worker, far_runner) = worker(&ctx, std::slice::from_ref(&far)).await;

    let task = client.create_task(&request(&near, "linear", 6)).await.unwrap().task_uuid;
    let done = client.wait_for_task(task, Duration::from_secs(30)).await.unwrap();
    common::assert_linear_six_completed_once(&client, &done).await;
    let (n, f) = (Some(near_worker.id()), Some(far_worker.id()));
    // Queued at creation, claimed from the near queue.
    assert_eq!(
        history(&client, task, "step_one").await,
        [
            row("", "pending", None),
            row("pending", "enqueued", None),
            row("enqueued", "in_progress", n),
            row("in_progress", "complete", n)
        ]
    );
    // Not the near worker's namespace: through the far queue.
    assert_eq!(
        history(&client, task, "step_two").await,
        [
            row("", "pending", None),
            row("pending", "enqueued", None),
            row("enqueued", "in_progress", f),
            row("in_progress", "complete", f)
        ]
    );
    // Back in the near namespace, which the far worker does not serve.
    assert_eq!(
        history(&client, task, "step_three").await,
        [
            row("", "pending", None),
            row("pending", "enqueued", None),
            row("enqueued", "in_progress", n),
            row("in_progress", "complete", n)
        ]
    );
    // Finished by the near worker, which runs its dependent eagerly.
    assert_eq!(
        history(&client, task, "step_four").await,
        [row("", "pending", None), row("pending", "in_progress", n), row("in_progress", "complete", n)]
    );
    near_worker.shutdown(Duration::from_secs(5)).await.unwrap();
    far_worker.shutdown(Duration::from_secs(5)).await.unwrap();
    near_runner.await.unwrap();
    far_runner.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_dies_after_claiming_a_dependent_eagerly_loses_nothing() {
    let ns = common::unique_namespace("eagerdead");
    let overrides = common::one_deployment(
        json!({"messaging": {"visibility_timeout_seconds": 1}, "orchestration": {"sweep_interval_ms": 200}}),
    );
    let ctx = common::context_with(overrides.clone()).await;
    ctx.register_template(common::linear_template(&ns)).await.unwrap();
    let client = TaskerClient::new(ctx.clone());
    let task = client.create_task(&request(&ns, "linear", 6)).await.unwrap().task_uuid;

    // A worker in its own runtime runs step_one, whose outcome claims
    // step_two for it; then the runtime is torn down without cleanup: the
    // process died before running step_two.
    let doomed_ns = ns.clone();
    let eager = tokio::task::spawn_blocking(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let ctx = common::context_with(overrides).await;
            let client = TaskerClient::new(ctx.clone());
            let doomed = WorkerHandle::start(ctx, &[doomed_ns], 1).await.unwrap();
            let first = doomed.next_job(Duration::from_secs(10)).await.unwrap().expect("step_one");
            common::run_job(&doomed, &client, first).await;
            let eager = doomed.next_job(Duration::from_secs(10)).await.unwrap().expect("step_two, claimed eagerly");
            std::mem::forget(doomed);
            eager
        })
    })
    .await
    .unwrap();
    assert_eq!((eager.step_name.as_str(), eager.attempt), ("step_two", 1));

    // The orchestrator's sweep finds the claim with no heartbeat and sends
    // the step again; a live worker runs it once more.
    let run = common::start(ctx, &ns, 2).await;
    let done = run.client.wait_for_task(task, Duration::from_secs(30)).await.unwrap();
    common::assert_linear_six_completed_once(&run.client, &done).await;
    let steps = run.client.steps(task).await.unwrap();
    assert_eq!(steps.iter().map(|s| s.attempts).collect::<Vec<_>>(), [1, 2, 1, 1]);
    let step_two: Vec<(String, String)> =
        history(&run.client, task, "step_two").await.into_iter().map(|(a, b, _)| (a, b)).collect();
    let pairs: Vec<(&str, &str)> = step_two.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    assert_eq!(
        pairs,
        [
            ("", "pending"),
            ("pending", "in_progress"),
            ("in_progress", "enqueued"),
            ("enqueued", "in_progress"),
            ("in_progress", "complete")
        ]
    );
    run.stop().await;
}

/// The engine's sessions plan for lookups by key (sequential scans are a
/// last resort) and never JIT-compile: a statement that can only scan is
/// costed past `jit_above_cost` under those settings.
#[tokio::test]
async fn the_engines_connections_plan_for_lookups_by_key_and_never_jit_compile() {
    let ctx = common::context().await;
    let settings: Vec<(String, String)> = sqlx::query_as(
        "SELECT name, setting FROM pg_settings \
         WHERE name IN ('enable_seqscan', 'enable_bitmapscan', 'plan_cache_mode', 'jit') ORDER BY name",
    )
    .fetch_all(ctx.pool())
    .await
    .unwrap();
    let expected = [
        ("enable_bitmapscan", "off"),
        ("enable_seqscan", "off"),
        ("jit", "off"),
        ("plan_cache_mode", "force_generic_plan"),
    ];
    assert_eq!(settings, expected.map(|(n, v)| (n.to_owned(), v.to_owned())));
    let plan: Vec<String> = sqlx::query_scalar("EXPLAIN SELECT name, version FROM pgmq.__pgmq_migrations")
        .fetch_all(ctx.pool())
        .await
        .unwrap();
    assert!(plan[0].contains("cost=10000000000"), "a scan the settings disable: {plan:?}");
    assert!(!plan.iter().any(|line| line.contains("JIT")), "{plan:?}");
}

/// Each statement of a task's flow reads a bounded number of rows,
/// whatever the size of the tables when the session planned it. A session
/// keeps one generic plan per statement for its whole life, and a worker's
/// sessions begin on a young deployment's small tables: with about 400
/// steps in the table, the query for a finished step's dependents was
/// planned as a hash join that walked the steps table's whole primary key,
/// so each outcome from then on read every step in the table (in the idle
/// bench, a median 0.39 ms once 1,600 steps existed; 0.05 by key). On a
/// database of its own, with a new connection (new plans) at each size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tasks_statements_read_a_bounded_number_of_rows_whatever_the_table_size_at_planning() {
    let admin = common::context().await;
    let database = format!("tasker_test_plans_{}", &Uuid::now_v7().simple().to_string()[20..]);
    sqlx::query(&format!("CREATE DATABASE {database}")).execute(admin.pool()).await.unwrap();
    let base = admin.config().database_url.rsplit_once('/').expect("a database url names its database").0.to_owned();
    let ctx = common::context_with(json!({"database_url": format!("{base}/{database}")})).await;
    let ns = common::unique_namespace("planned");
    ctx.register_template(common::linear_template(&ns)).await.unwrap();

    // The database goes even when an assertion fails.
    let checked = std::panic::AssertUnwindSafe(async {
        let mut made = 0;
        for tasks in [0, 100, 400, 2_000] {
            sqlx::query(
                "SELECT tasker_create_task($1, 'linear', '1.0.0', '{}', NULL, false) FROM generate_series(1, $2)",
            )
            .bind(&ns)
            .bind(tasks - made)
            .execute(ctx.pool())
            .await
            .unwrap();
            made = tasks;
            let mut conn = ctx.pool().acquire().await.unwrap().detach();
            for (statement, rows) in linear_task_reads(&mut conn, &ns).await {
                assert!(rows <= 20, "planned with {tasks} tasks in the table, {statement} read {rows} rows");
            }
        }
    })
    .catch_unwind()
    .await;
    drop(ctx);
    sqlx::query(&format!("DROP DATABASE {database} WITH (FORCE)")).execute(admin.pool()).await.unwrap();
    if let Err(panic) = checked {
        std::panic::resume_unwind(panic);
    }
}

/// Runs a new linear task on `conn` as a worker would (created, its root
/// claimed, each outcome recorded, which claims the next step eagerly, the
/// last ending the task), in one transaction; returns how many rows each
/// statement read (by index or sequential scan, every table).
async fn linear_task_reads(conn: &mut sqlx::PgConnection, ns: &str) -> Vec<(String, i64)> {
    // The transaction's running count: each statement's reads are the
    // difference across it.
    async fn reads(conn: &mut sqlx::PgConnection) -> i64 {
        sqlx::query_scalar(
            "SELECT coalesce(sum(coalesce(idx_tup_fetch, 0) + seq_tup_read), 0)::bigint FROM pg_stat_xact_user_tables",
        )
        .fetch_one(&mut *conn)
        .await
        .unwrap()
    }
    let mut counted = Vec::new();
    sqlx::query("BEGIN").execute(&mut *conn).await.unwrap();
    let mut before = reads(conn).await;
    let task: Uuid = sqlx::query_scalar(
        "SELECT task_uuid FROM tasker_create_task($1, 'linear', '1.0.0', '{\"n\": 1}', NULL, false)",
    )
    .bind(ns)
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    let after = reads(conn).await;
    counted.push(("tasker_create_task".to_owned(), after - before));
    let claimed: Vec<Uuid> = sqlx::query_scalar(
        "SELECT step_uuid FROM tasker_claim_steps(ARRAY(SELECT step_uuid FROM tasker_workflow_steps \
                                                       WHERE task_uuid = $1 AND name = 'step_one'), \
                                                 'w', ARRAY[$2], interval '60 s', false)",
    )
    .bind(task)
    .bind(ns)
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    before = reads(conn).await;
    counted.push(("tasker_claim_steps (and finding the root)".to_owned(), before - after));
    assert_eq!(claimed.len(), 1, "the root is claimed");

    let mut step = claimed[0];
    for name in ["step_one", "step_two", "step_three", "step_four"] {
        let rows: Vec<(String, Option<Uuid>, Option<String>)> = sqlx::query_as(
            "SELECT kind, step_uuid, state FROM tasker_record_outcomes(ARRAY[$1], ARRAY[1], ARRAY[true], \
               ARRAY['{}'::jsonb], ARRAY[false], ARRAY[0::bigint], ARRAY[NULL::jsonb], 'w', ARRAY[$2], 1, false, \
               ARRAY[NULL::text], ARRAY[NULL::bigint])",
        )
        .bind(step)
        .bind(ns)
        .fetch_all(&mut *conn)
        .await
        .unwrap();
        let after = reads(conn).await;
        counted.push((format!("the outcome of {name}"), after - before));
        before = after;
        assert!(rows.contains(&("outcome".to_owned(), Some(step), Some("complete".to_owned()))), "{rows:?}");
        match rows.iter().find(|(kind, ..)| kind == "claimed") {
            Some((_, Some(next), _)) => step = *next,
            _ => assert_eq!(
                rows.iter().find(|(kind, ..)| kind == "finished").map(|r| r.2.clone()),
                Some(Some("complete".to_owned())),
                "{rows:?}"
            ),
        }
    }
    sqlx::query("COMMIT").execute(&mut *conn).await.unwrap();
    counted
}
