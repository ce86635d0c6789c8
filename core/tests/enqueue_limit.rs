//! The per-task limit of one advance (`orchestration.enqueue_batch_size`).
//! In a test binary of its own: any orchestrator running against the
//! database may advance the task, and orchestrators of tests running
//! alongside would have the default limit.

mod common;

use std::time::Duration;

use serde_json::{json, Value};
use tasker_core::{CreateTask, OrchestratorHandle, TaskerClient, WorkerHandle};

/// At most `enqueue_batch_size` of a task's ready steps are enqueued by one
/// advance; the rest follow as results come in, and every step runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_advance_enqueues_at_most_the_batch_size_per_task() {
    let ns = common::unique_namespace("limit");
    let ctx = common::context_with(json!({"orchestration": {"enqueue_batch_size": 2}})).await;
    let steps: &[(&str, &[&str])] =
        &[("root", &[]), ("a", &["root"]), ("b", &["root"]), ("c", &["root"]), ("d", &["root"]), ("e", &["root"])];
    ctx.register_template(common::template(&ns, "wide", "Sum", steps)).await.unwrap();
    let client = TaskerClient::new(ctx.clone());
    let orchestrator = OrchestratorHandle::start(ctx.clone()).await.unwrap();
    let worker = WorkerHandle::start(ctx.clone(), std::slice::from_ref(&ns), 10).await.unwrap();
    let task = client.create_task(&CreateTask::new(&ns, "wide", "1.0.0", json!({}))).await.unwrap();
    common::run_job(&worker, &client, worker.next_job(Duration::from_secs(10)).await.unwrap().unwrap()).await;

    let first: Vec<_> = [
        worker.next_job(Duration::from_secs(10)).await.unwrap().unwrap(),
        worker.next_job(Duration::from_secs(10)).await.unwrap().unwrap(),
    ]
    .into();
    let mut names: Vec<&str> = first.iter().map(|j| j.step_name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, vec!["a", "b"], "the first two by position");
    assert!(worker.next_job(Duration::from_millis(500)).await.unwrap().is_none(), "only two were enqueued");
    let mut statuses: Vec<(String, String)> =
        client.steps(task.task_uuid).await.unwrap().into_iter().map(|s| (s.name, s.status)).collect();
    statuses.sort();
    let expected: Vec<(String, String)> = [
        ("a", "in_progress"),
        ("b", "in_progress"),
        ("c", "pending"),
        ("d", "pending"),
        ("e", "pending"),
        ("root", "complete"),
    ]
    .iter()
    .map(|(n, s)| ((*n).to_owned(), (*s).to_owned()))
    .collect();
    assert_eq!(statuses, expected);

    for job in first {
        common::run_job(&worker, &client, job).await;
    }
    let mut rest = Vec::new();
    while rest.len() < 3 {
        let job = worker.next_job(Duration::from_secs(10)).await.unwrap().expect("c, d and e follow");
        rest.push(job.step_name.clone());
        common::run_job(&worker, &client, job).await;
    }
    rest.sort();
    assert_eq!(rest, vec!["c", "d", "e"]);
    let done = client.wait_for_task(task.task_uuid, Duration::from_secs(10)).await.unwrap();
    assert_eq!(done.status, "complete");
    let results: Vec<(String, Value)> = client
        .steps(task.task_uuid)
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.name, s.results.unwrap_or(Value::Null)))
        .collect();
    assert_eq!(results.len(), 6);
    for (name, result) in results {
        assert_eq!(result, json!(if name == "root" { 1 } else { 2 }), "step {name}");
    }
    worker.shutdown(Duration::from_secs(5)).await.unwrap();
    orchestrator.shutdown(Duration::from_secs(5)).await.unwrap();
}
