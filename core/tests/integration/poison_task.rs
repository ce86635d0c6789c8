//! One task whose outcome cannot be recorded holds up no other and loses
//! nothing. In a test binary of its own: it deletes a queue.

use crate::common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tasker_core::{CreateTask, TaskerClient, WorkerHandle};
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

/// Runs jobs until the worker stops; an outcome that cannot be recorded is
/// counted, not fatal (its step runs again once its claim goes stale).
async fn run_tolerant_worker(worker: Arc<WorkerHandle>, client: TaskerClient) -> usize {
    let mut unrecorded = 0;
    while worker.is_running() {
        let Some(job) = worker.next_job(Duration::from_millis(200)).await.expect("next job") else { continue };
        let result = common::step_result(&client, &job).await.expect("step inputs read");
        if worker.complete(job.step_uuid, json!(result)).await.is_err() {
            unrecorded += 1;
        }
    }
    unrecorded
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_whose_outcome_cannot_be_recorded_holds_up_no_other_and_loses_nothing() {
    // Redelivered every second while its outcome cannot be recorded; on a
    // slow machine that could pass max_receive_count before the queue is
    // back, and a dead-lettered message waits for a sweep this test does not
    // run.
    let ctx =
        common::context_with(json!({"messaging": {"visibility_timeout_seconds": 1, "max_receive_count": 1000}})).await;
    let (near, far) = (common::unique_namespace("near"), common::unique_namespace("far"));
    ctx.register_template(common::linear_template(&near)).await.unwrap();
    // The same chain, with step_two run by the far namespace's workers.
    let mut split = common::linear_template(&near);
    split.name = "split".to_owned();
    split.steps[1].namespace = Some(far.clone());
    ctx.register_template(split).await.unwrap();
    let client = TaskerClient::new(ctx.clone());

    // The far namespace's queue is gone: recording step_one of a split task,
    // which sends step_two there, fails; no orchestrator runs.
    ctx.messaging().delete_queue(&ctx.router().step_queue(&far)).await.unwrap();
    let near_worker = Arc::new(WorkerHandle::start(ctx.clone(), std::slice::from_ref(&near), 2).await.unwrap());
    let near_runner = tokio::spawn(run_tolerant_worker(near_worker.clone(), client.clone()));
    let request = |name: &str| CreateTask::new(&near, name, "1.0.0", json!({"n": 6}));
    let split_task: Uuid = client.create_task(&request("split")).await.unwrap().task_uuid;
    let linear_task = client.create_task(&request("linear")).await.unwrap().task_uuid;

    let done = client.wait_for_task(linear_task, Duration::from_secs(10)).await.unwrap();
    common::assert_linear_six_completed_once(&client, &done).await;
    let split_steps = client.steps(split_task).await.unwrap();
    assert_eq!(
        split_steps.iter().map(|s| s.status.as_str()).collect::<Vec<_>>(),
        ["in_progress", "pending", "pending", "pending"],
        "step_one's outcome is not recorded"
    );

    // Once the queue is back, step_one's claim goes stale, it runs again
    // and is recorded once; the far worker runs step_two.
    ctx.messaging().create_queue(&ctx.router().step_queue(&far)).await.unwrap();
    let far_worker = Arc::new(WorkerHandle::start(ctx.clone(), std::slice::from_ref(&far), 2).await.unwrap());
    let far_runner = tokio::spawn(run_tolerant_worker(far_worker.clone(), client.clone()));
    let done = client.wait_for_task(split_task, Duration::from_secs(30)).await.unwrap();
    common::assert_linear_six_completed_once(&client, &done).await;
    wait_until("step_one's takeover is in its history", || async {
        client.step_transitions(split_task).await.unwrap().iter().any(|t| t.metadata.get("recovered").is_some())
    })
    .await;
    let steps = client.steps(split_task).await.unwrap();
    assert!(steps[0].attempts >= 2, "step_one ran again: {steps:?}");

    near_worker.shutdown(Duration::from_secs(5)).await.unwrap();
    far_worker.shutdown(Duration::from_secs(5)).await.unwrap();
    assert!(near_runner.await.unwrap() >= 1, "the near worker saw an outcome it could not record");
    assert_eq!(far_runner.await.unwrap(), 0);
}
