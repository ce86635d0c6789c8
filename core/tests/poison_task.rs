//! One task that cannot be advanced holds up no other and loses nothing.
//! In a test binary of its own, so that the only orchestrator reading the
//! results queue is this test's: both results must arrive in one batch.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tasker_core::{CreateTask, MessageRouter, OrchestratorHandle, TaskerClient, WorkerHandle};
use uuid::Uuid;

async fn wait_until<F, Fut>(what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn step_states(client: &TaskerClient, task: Uuid) -> Vec<String> {
    client.steps(task).await.unwrap().into_iter().map(|s| s.status).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_cannot_be_advanced_holds_up_no_other_and_loses_nothing() {
    let ctx = common::context().await;
    let (good, bad) = (common::unique_namespace("good"), common::unique_namespace("bad"));
    for ns in [&good, &bad] {
        ctx.register_template(common::linear_template(ns)).await.unwrap();
    }
    let client = TaskerClient::new(ctx.clone());
    // Workers first, no orchestrator: both tasks' first steps finish and
    // their results wait in the queue.
    let worker = Arc::new(WorkerHandle::start(ctx.clone(), &[good.clone(), bad.clone()], 2).await.unwrap());
    let runner = tokio::spawn(common::run_square_worker(worker.clone(), client.clone()));
    let request = |ns: &str| CreateTask::new(ns, "linear", "1.0.0", json!({"n": 6}));
    let good_task = client.create_task(&request(&good)).await.unwrap().task_uuid;
    let bad_task = client.create_task(&request(&bad)).await.unwrap().task_uuid;
    for task in [good_task, bad_task] {
        wait_until("both first steps are complete", || async {
            step_states(&client, task).await == ["complete", "pending", "pending", "pending"]
        })
        .await;
    }
    // The bad namespace's queue is gone: advancing its task fails.
    ctx.messaging().delete_queue(&MessageRouter::step_queue(&bad)).await.unwrap();

    let orchestrator = OrchestratorHandle::start(ctx.clone()).await.unwrap();
    // Well inside the visibility timeout (30 s), after which the sweep
    // would advance a stalled task on its own anyway.
    let done = client.wait_for_task(good_task, Duration::from_secs(10)).await.unwrap();
    common::assert_linear_six_completed_once(&client, &done).await;
    assert_eq!(step_states(&client, bad_task).await, ["complete", "pending", "pending", "pending"]);
    let kept: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pgmq.q_orchestration_step_results WHERE message ->> 'task_uuid' = $1")
            .bind(bad_task.to_string())
            .fetch_one(ctx.pool())
            .await
            .unwrap();
    assert_eq!(kept, 1, "the result that could not be processed is still queued");

    // Once the queue is back, the kept result advances the task.
    ctx.messaging().create_queue(&MessageRouter::step_queue(&bad)).await.unwrap();
    let done = client.wait_for_task(bad_task, Duration::from_secs(30)).await.unwrap();
    common::assert_linear_six_completed_once(&client, &done).await;

    worker.shutdown(Duration::from_secs(5)).await.unwrap();
    runner.await.unwrap();
    orchestrator.shutdown(Duration::from_secs(5)).await.unwrap();
}
