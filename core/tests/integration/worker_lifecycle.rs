//! Components that must stop, and messages that must never wedge a worker:
//! a dropped worker gives its steps back, shutdown is not held up by jobs
//! waiting in the hand-over channel, stray step messages are archived with
//! a reason, and a sweep goes on past a task it cannot advance. And what a
//! worker claims: queued steps only for idle runners, eager dependents
//! beyond them, and outcomes reported without waiting still committed
//! before shutdown returns.

use crate::common;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tasker_core::{CreateTask, OrchestratorHandle, StepMessage, TaskerClient, WorkerHandle};
use uuid::Uuid;

async fn step_status(client: &TaskerClient, task_uuid: Uuid) -> String {
    client.steps(task_uuid).await.unwrap().remove(0).status
}

/// Polls until the task's only step reaches `status`, for up to `within`.
async fn wait_for_step(client: &TaskerClient, task_uuid: Uuid, status: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let now = step_status(client, task_uuid).await;
        if now == status {
            return;
        }
        assert!(Instant::now() < deadline, "step of task {task_uuid} is {now}, not {status}, after {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn one_step_namespace(ctx: &tasker_core::Context, prefix: &str) -> String {
    let ns = common::unique_namespace(prefix);
    ctx.register_template(common::template(&ns, "one", "Sum", &[("only", &[])])).await.unwrap();
    ns
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_worker_gives_back_the_steps_it_claimed() {
    let ctx = common::context().await;
    let ns = one_step_namespace(&ctx, "dropped").await;
    let client = TaskerClient::new(ctx.clone());
    let worker = WorkerHandle::start(ctx.clone(), std::slice::from_ref(&ns), 1).await.unwrap();
    let task = client.create_task(&CreateTask::new(&ns, "one", "1.0.0", json!({}))).await.unwrap().task_uuid;
    let job = worker.next_job(Duration::from_secs(10)).await.unwrap().expect("the step is claimed");
    assert_eq!(job.task_uuid, task);

    // No shutdown: the handle is simply dropped (a runner that crashed).
    drop(worker);
    wait_for_step(&client, task, "enqueued", Duration::from_secs(5)).await;
    let history: Vec<(String, String)> =
        client.step_transitions(task).await.unwrap().into_iter().map(|t| (t.from_state, t.to_state)).collect();
    let expected = [("", "pending"), ("pending", "enqueued"), ("enqueued", "in_progress"), ("in_progress", "enqueued")];
    assert_eq!(history, expected.map(|(a, b)| (a.to_owned(), b.to_owned())));

    // Another worker runs it at once: nothing waits for a visibility timeout.
    let running = common::start(ctx, &ns, 1).await;
    let done = client.wait_for_task(task, Duration::from_secs(10)).await.unwrap();
    assert_eq!(done.status, "complete");
    // A release gives the attempt back: the step never ran to an outcome.
    assert_eq!(client.steps(task).await.unwrap()[0].attempts, 1);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_releases_buffered_jobs_at_once_and_is_not_held_by_a_waiting_runner() {
    let ctx = common::context().await;
    let ns = one_step_namespace(&ctx, "buffered").await;
    let client = TaskerClient::new(ctx.clone());
    let worker = std::sync::Arc::new(WorkerHandle::start(ctx.clone(), std::slice::from_ref(&ns), 2).await.unwrap());
    let mut tasks = Vec::new();
    for _ in 0..2 {
        tasks.push(client.create_task(&CreateTask::new(&ns, "one", "1.0.0", json!({}))).await.unwrap().task_uuid);
    }
    // Both claimed and waiting in the channel: nobody takes them.
    for task in &tasks {
        wait_for_step(&client, *task, "in_progress", Duration::from_secs(10)).await;
    }
    let started = Instant::now();
    worker.shutdown(Duration::from_secs(20)).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(2), "shutdown took {:?}", started.elapsed());
    for task in &tasks {
        assert_eq!(step_status(&client, *task).await, "enqueued");
    }

    // A runner waiting a minute for its next job does not hold shutdown up.
    let worker =
        std::sync::Arc::new(WorkerHandle::start(ctx.clone(), &[common::unique_namespace("idle")], 1).await.unwrap());
    let waiting = {
        let worker = worker.clone();
        tokio::spawn(async move { worker.next_job(Duration::from_secs(60)).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    worker.shutdown(Duration::from_secs(20)).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(2), "shutdown took {:?}", started.elapsed());
    assert_eq!(waiting.await.unwrap().unwrap(), None);
    assert!(!worker.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_messages_a_worker_can_never_run_are_archived_not_run() {
    let ctx = common::context().await;
    let served = one_step_namespace(&ctx, "served").await;
    let foreign = one_step_namespace(&ctx, "foreign").await;
    let client = TaskerClient::new(ctx.clone());
    // A real step of another namespace, and a step that does not exist, in
    // the served namespace's queue.
    let other = client.create_task(&CreateTask::new(&foreign, "one", "1.0.0", json!({}))).await.unwrap();
    let other_step = client.steps(other.task_uuid).await.unwrap()[0].step_uuid;
    let queue = ctx.router().step_queue(&served);
    let strays = [
        StepMessage {
            task_uuid: other.task_uuid,
            step_uuid: other_step,
            correlation_id: other.correlation_id,
            priority: 0,
        },
        StepMessage {
            task_uuid: Uuid::now_v7(),
            step_uuid: Uuid::now_v7(),
            correlation_id: Uuid::now_v7(),
            priority: 0,
        },
    ];
    for stray in &strays {
        ctx.messaging().send(&queue, &serde_json::to_value(stray).unwrap()).await.unwrap();
    }

    let running = common::start(ctx.clone(), &served, 2).await;
    let archive = format!("SELECT message->>'step_uuid' FROM pgmq.a_{queue} ORDER BY msg_id");
    let deadline = Instant::now() + Duration::from_secs(10);
    let archived: Vec<String> = loop {
        let rows: Vec<String> = sqlx::query_scalar(&archive).fetch_all(ctx.pool()).await.unwrap();
        if rows.len() == 2 || Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    running.stop().await;

    assert_eq!(archived, strays.iter().map(|s| s.step_uuid.to_string()).collect::<Vec<_>>());
    assert_eq!(ctx.messaging().stats(&queue).await.unwrap().depth, 0);
    // The foreign step was never claimed here: it waits for its own workers.
    assert_eq!(step_status(&client, other.task_uuid).await, "enqueued");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_goes_on_past_a_task_it_cannot_advance() {
    let ctx = common::context_with(json!({"messaging": {"visibility_timeout_seconds": 1}})).await;
    let ns = one_step_namespace(&ctx, "sweeppast").await;
    let client = TaskerClient::new(ctx.clone());
    let mut tasks = Vec::new();
    for _ in 0..2 {
        tasks.push(client.create_task(&CreateTask::new(&ns, "one", "1.0.0", json!({}))).await.unwrap().task_uuid);
    }
    let (stuck, fine) = (tasks[0], tasks[1]);
    // Both left as a crash would leave them: every step done an hour ago,
    // the task never advanced.
    for sql in [
        "UPDATE tasker_workflow_steps SET status = 'complete', results = '1', \
         updated_at = clock_timestamp() - interval '1 hour' WHERE task_uuid = ANY ($1)",
        "UPDATE tasker_tasks SET status = 'in_progress', updated_at = clock_timestamp() - interval '1 hour' \
         WHERE task_uuid = ANY ($1)",
    ] {
        sqlx::query(sql).bind(&tasks).execute(ctx.pool()).await.unwrap();
    }
    let refuse = format!("tasker_test_refuse_{}", stuck.simple());
    sqlx::raw_sql(&format!(
        "CREATE FUNCTION {refuse}() RETURNS trigger LANGUAGE plpgsql AS \
           $$ BEGIN RAISE EXCEPTION 'task % cannot be advanced (test)', OLD.task_uuid; END $$; \
         CREATE TRIGGER {refuse} BEFORE UPDATE ON tasker_tasks FOR EACH ROW \
           WHEN (OLD.task_uuid = '{stuck}') EXECUTE FUNCTION {refuse}();"
    ))
    .execute(ctx.pool())
    .await
    .unwrap();

    let orchestrator = OrchestratorHandle::start(ctx.clone()).await.unwrap();
    let done = client.wait_for_task(fine, Duration::from_secs(15)).await;
    let stuck_status = client.task(stuck).await.unwrap().status;
    sqlx::raw_sql(&format!("DROP TRIGGER {refuse} ON tasker_tasks; DROP FUNCTION {refuse}();"))
        .execute(ctx.pool())
        .await
        .unwrap();
    assert_eq!(done.unwrap().status, "complete");
    assert_eq!(stuck_status, "in_progress");
    // Once it can be advanced, a later pass finishes it too.
    assert_eq!(client.wait_for_task(stuck, Duration::from_secs(15)).await.unwrap().status, "complete");
    orchestrator.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// A worker claims a queued step only for a runner that would otherwise
/// wait: while its one runner holds a step, the next stays in its queue for
/// any other worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_claims_queued_steps_only_for_idle_runners() {
    let ctx = common::context().await;
    let ns = one_step_namespace(&ctx, "idle_runners").await;
    let client = TaskerClient::new(ctx.clone());
    let worker = WorkerHandle::start(ctx.clone(), std::slice::from_ref(&ns), 1).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..2 {
        tasks.push(client.create_task(&CreateTask::new(&ns, "one", "1.0.0", json!({}))).await.unwrap().task_uuid);
    }
    let first = worker.next_job(Duration::from_secs(10)).await.unwrap().expect("a step is claimed");
    let other = *tasks.iter().find(|t| **t != first.task_uuid).expect("two tasks");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(step_status(&client, other).await, "enqueued", "claimed while the only runner was busy");

    worker.complete(first.step_uuid, json!(1)).await.unwrap();
    let second = worker.next_job(Duration::from_secs(10)).await.unwrap().expect("the other step is claimed");
    assert_eq!(second.task_uuid, other);
    worker.complete(second.step_uuid, json!(2)).await.unwrap();
    for task in &tasks {
        assert_eq!(client.wait_for_task(*task, Duration::from_secs(10)).await.unwrap().status, "complete");
    }
    worker.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// A runner that reports without waiting for the commit goes on at once;
/// the dependents its outcome makes ready are claimed eagerly beyond the
/// number of runners (both branches of a diamond for one runner), and
/// shutdown returns only once the outcomes handed over are committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_reported_without_waiting_are_committed_before_shutdown_returns() {
    let ctx = common::context().await;
    let ns = common::unique_namespace("detached");
    ctx.register_template(common::diamond_template(&ns)).await.unwrap();
    let client = TaskerClient::new(ctx.clone());
    let worker = WorkerHandle::start(ctx.clone(), std::slice::from_ref(&ns), 1).await.unwrap();
    let task = client.create_task(&CreateTask::new(&ns, "diamond", "1.0.0", json!({}))).await.unwrap().task_uuid;

    let start = worker.next_job(Duration::from_secs(10)).await.unwrap().expect("the root is claimed");
    worker.complete_detached(start.step_uuid, json!(1)).await.unwrap();
    let mut branches = Vec::new();
    for _ in 0..2 {
        branches.push(worker.next_job(Duration::from_secs(10)).await.unwrap().expect("both branches are claimed"));
    }
    let transitions = client.step_transitions(task).await.unwrap();
    for branch in &branches {
        let claim = transitions
            .iter()
            .find(|t| t.step_uuid == branch.step_uuid && t.to_state == "in_progress")
            .expect("the branch's claim is in its history");
        assert_eq!((claim.from_state.as_str(), &claim.metadata["eager"]), ("pending", &json!(true)));
    }
    for (i, branch) in branches.iter().enumerate() {
        worker.complete_detached(branch.step_uuid, json!(i + 2)).await.unwrap();
    }
    let finish = worker.next_job(Duration::from_secs(10)).await.unwrap().expect("the join is claimed");
    assert_eq!(finish.step_name, "finish");
    worker.complete_detached(finish.step_uuid, json!(4)).await.unwrap();
    // No wait for the task: shutdown itself waits for the last outcome.
    worker.shutdown(Duration::from_secs(10)).await.unwrap();
    assert_eq!(client.task(task).await.unwrap().status, "complete");
    let mut results: Vec<(String, Value)> =
        client.steps(task).await.unwrap().into_iter().map(|s| (s.name, s.results.unwrap_or(Value::Null))).collect();
    results.sort_by(|a, b| a.0.cmp(&b.0));
    let mut expected = vec![("finish".to_owned(), json!(4)), ("start".to_owned(), json!(1))];
    let names: Vec<&str> = branches.iter().map(|b| b.step_name.as_str()).collect();
    for (i, name) in names.iter().enumerate() {
        expected.push(((*name).to_owned(), json!(i + 2)));
    }
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(results, expected);
}
