//! PostgreSQL crashing under running workflows. With PGMQ, claims and the
//! orchestrator's advances commit asynchronously (migration 008), so an
//! immediate shutdown - no checkpoint, like a power cut - can lose the last
//! of them. In a test binary of its own: while the server is down, every
//! test in the same process would see it down too.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tasker_core::{OrchestratorHandle, TaskerClient, WorkerHandle};

/// Stops the server the tests use with `-m immediate` and starts it again.
async fn crash_and_restart_postgres(ctx: &tasker_core::Context) {
    let version: String =
        sqlx::query_scalar("SELECT current_setting('server_version_num')").fetch_one(ctx.pool()).await.unwrap();
    let major = (version.parse::<u32>().unwrap() / 10_000).to_string();
    for args in [vec![major.as_str(), "main", "stop", "-m", "immediate"], vec![major.as_str(), "main", "start"]] {
        let out = tokio::process::Command::new("pg_ctlcluster")
            .args(&args)
            .output()
            .await
            .expect("pg_ctlcluster runs (Debian's postgresql-common; bin/test installs PostgreSQL)");
        assert!(
            out.status.success(),
            "pg_ctlcluster {args:?} (run the tests as root or postgres): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Runs a step as a worker's runner would: its result, or a retryable
/// failure when the handler could not read what it needed (the database is
/// down). If even the report fails, the step runs again once its claim goes
/// stale.
async fn run_step(worker: &WorkerHandle, client: &TaskerClient, job: tasker_core::StepJob) -> tasker_core::Result<()> {
    tokio::time::sleep(Duration::from_millis(30)).await; // a handler doing some work
    match common::step_result(client, &job).await {
        Ok(square) => worker.complete(job.step_uuid, json!(square)).await,
        Err(e) => {
            let failure = tasker_core::StepFailure {
                error_class: "DatabaseUnavailable".to_owned(),
                message: e.to_string(),
                backtrace: Vec::new(),
                retryable: true,
                retry_after_seconds: Some(0.0),
            };
            worker.fail(job.step_uuid, failure).await.map(|_| ())
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflows_survive_a_database_crash() {
    let ns = common::unique_namespace("pgcrash");
    // Claims left by the crash go stale, and messages come back, after 2 s.
    let ctx = common::context_with(json!({"messaging": {"visibility_timeout_seconds": 2}})).await;
    ctx.register_template(common::linear_template(&ns)).await.unwrap();
    let client = TaskerClient::new(ctx.clone());
    let orchestrator = OrchestratorHandle::start(ctx.clone()).await.unwrap();
    let worker = Arc::new(WorkerHandle::start(ctx.clone(), std::slice::from_ref(&ns), 4).await.unwrap());
    let runner = {
        let (worker, client) = (worker.clone(), client.clone());
        tokio::spawn(async move {
            while worker.is_running() {
                let Ok(Some(job)) = worker.next_job(Duration::from_millis(200)).await else { continue };
                // A step that could not be recorded is run again once its
                // claim goes stale.
                if let Err(e) = run_step(&worker, &client, job).await {
                    eprintln!("step not recorded (the database is down?): {e}");
                }
            }
        })
    };
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let request = tasker_core::CreateTask::new(&ns, "linear", "1.0.0", json!({"n": 6}));
        tasks.push(client.create_task(&request).await.unwrap().task_uuid);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    crash_and_restart_postgres(&ctx).await;

    let deadline = Instant::now() + Duration::from_secs(120);
    for task_uuid in &tasks {
        // Connections broken by the crash fail once each; ask again.
        let done = loop {
            match client.wait_for_task(*task_uuid, Duration::from_secs(5)).await {
                Ok(done) => break done,
                Err(e) if Instant::now() < deadline => eprintln!("waiting for {task_uuid}: {e}"),
                Err(e) => panic!("task {task_uuid} did not finish after the crash: {e}"),
            }
        };
        common::assert_linear_six_completed_once(&client, &done).await;
    }
    worker.shutdown(Duration::from_secs(5)).await.unwrap();
    runner.await.unwrap();
    orchestrator.shutdown(Duration::from_secs(5)).await.unwrap();
}
