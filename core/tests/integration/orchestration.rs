//! Whole workflows through the Rust core: create, enqueue, work, decide,
//! finalize, with exact results, states and transition history.

use crate::common;

use std::time::Duration;

use crate::common::Running;
use serde_json::json;
use tasker_core::{CreateTask, OrchestratorHandle, StepFailure, TaskerClient, WorkerHandle};

async fn harness(namespace: &str, templates: Vec<tasker_core::TaskTemplate>) -> Running {
    let ctx = common::context().await;
    for t in templates {
        ctx.register_template(t).await.expect("register template");
    }
    common::start(ctx, namespace, 4).await
}

fn request(namespace: &str, name: &str) -> CreateTask {
    CreateTask::new(namespace, name, "1.0.0", json!({"n": 6}))
}

async fn run_to_completion(h: &Running, namespace: &str, name: &str) -> uuid::Uuid {
    let task = h.client.create_task(&request(namespace, name)).await.expect("create task");
    assert_eq!(task.status, "in_progress");
    let done = h.client.wait_for_task(task.task_uuid, Duration::from_secs(30)).await.expect("task finishes");
    assert_eq!(done.status, "complete");
    assert!(done.completed_at.is_some());
    task.task_uuid
}

fn states(transitions: &[(String, String)]) -> Vec<(&str, &str)> {
    transitions.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linear_workflow_squares_four_times() {
    let ns = common::unique_namespace("linear");
    let h = harness(&ns, vec![common::linear_template(&ns)]).await;
    let task_uuid = run_to_completion(&h, &ns, "linear").await;

    let steps = h.client.steps(task_uuid).await.unwrap();
    let got: Vec<_> =
        steps.iter().map(|s| (s.name.as_str(), s.status.as_str(), s.results.clone(), s.attempts)).collect();
    assert_eq!(
        got,
        vec![
            ("step_one", "complete", Some(json!(36)), 1),
            ("step_two", "complete", Some(json!(1296)), 1),
            ("step_three", "complete", Some(json!(1_679_616)), 1),
            ("step_four", "complete", Some(json!(2_821_109_907_456_i64)), 1),
        ]
    );

    let task_history: Vec<_> =
        h.client.task_transitions(task_uuid).await.unwrap().into_iter().map(|t| (t.from_state, t.to_state)).collect();
    assert_eq!(states(&task_history), vec![("", "pending"), ("pending", "in_progress"), ("in_progress", "complete")]);

    let step_history = h.client.step_transitions(task_uuid).await.unwrap();
    assert_eq!(step_history.len(), 4 + 3 * 3);
    for step in &steps {
        let mine: Vec<_> = step_history
            .iter()
            .filter(|t| t.step_uuid == step.step_uuid)
            .map(|t| (t.from_state.clone(), t.to_state.clone()))
            .collect();
        // The first step is enqueued with the task; each later one is
        // claimed eagerly by the worker that finished the one before.
        let expected: &[(&str, &str)] = if step.position == 0 {
            &[("", "pending"), ("pending", "enqueued"), ("enqueued", "in_progress"), ("in_progress", "complete")]
        } else {
            &[("", "pending"), ("pending", "in_progress"), ("in_progress", "complete")]
        };
        assert_eq!(states(&mine), expected, "history of {}", step.name);
        let keys: Vec<_> = step_history.iter().filter(|t| t.step_uuid == step.step_uuid).map(|t| t.sort_key).collect();
        assert_eq!(keys, (1..=i32::try_from(expected.len()).unwrap()).collect::<Vec<_>>());
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diamond_workflow_joins_both_branches() {
    let ns = common::unique_namespace("diamond");
    let h = harness(&ns, vec![common::diamond_template(&ns)]).await;
    let task_uuid = run_to_completion(&h, &ns, "diamond").await;
    let steps = h.client.steps(task_uuid).await.unwrap();
    let got: Vec<_> = steps.iter().map(|s| (s.name.as_str(), s.status.as_str(), s.results.clone())).collect();
    assert_eq!(
        got,
        vec![
            ("start", "complete", Some(json!(36))),
            ("left", "complete", Some(json!(1296))),
            ("right", "complete", Some(json!(1296))),
            ("finish", "complete", Some(json!(2_821_109_907_456_i64))),
        ]
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tasks_share_one_orchestrator_and_worker() {
    let ns = common::unique_namespace("many");
    let h = harness(&ns, vec![common::linear_template(&ns), common::diamond_template(&ns)]).await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let name = if i % 2 == 0 { "linear" } else { "diamond" };
        tasks.push(h.client.create_task(&request(&ns, name)).await.unwrap().task_uuid);
    }
    for task_uuid in tasks {
        let done = h.client.wait_for_task(task_uuid, Duration::from_secs(60)).await.unwrap();
        assert_eq!(done.status, "complete");
        let last = h.client.steps(task_uuid).await.unwrap().pop().unwrap();
        assert_eq!(last.results, Some(json!(2_821_109_907_456_i64)));
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_key_makes_creation_idempotent() {
    let ns = common::unique_namespace("ident");
    let ctx = common::context().await;
    ctx.register_template(common::linear_template(&ns)).await.unwrap();
    let client = TaskerClient::new(ctx.clone());
    let mut req = request(&ns, "linear");
    req.identity_key = Some(format!("order-{ns}"));
    let first = client.create_task(&req).await.unwrap();
    let second = client.create_task(&req).await.unwrap();
    assert_eq!(first.task_uuid, second.task_uuid);
    // Only the first step was enqueued, once.
    let stats = ctx.messaging().stats(&ctx.router().step_queue(&ns)).await.unwrap();
    assert_eq!(stats.total_sent, Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_template_is_named() {
    let ctx = common::context().await;
    let client = TaskerClient::new(ctx);
    let err = client.create_task(&request("nowhere", "nothing")).await.unwrap_err();
    assert_eq!(err.kind(), tasker_core::ErrorKind::NotFound);
    assert!(err.to_string().contains("no task template nowhere/nothing@1.0.0 is registered"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_failure_ends_the_task_in_error_and_blocks_descendants() {
    let ns = common::unique_namespace("fail");
    let ctx = common::context().await;
    ctx.register_template(common::diamond_template(&ns)).await.unwrap();
    let client = TaskerClient::new(ctx.clone());
    let orchestrator = OrchestratorHandle::start(ctx.clone()).await.unwrap();
    let worker = WorkerHandle::start(ctx, std::slice::from_ref(&ns), 2).await.unwrap();
    let task = client.create_task(&request(&ns, "diamond")).await.unwrap();

    let job = worker.next_job(Duration::from_secs(10)).await.unwrap().expect("start is enqueued");
    assert_eq!((job.step_name.as_str(), job.attempt, job.handler_callable.as_str()), ("start", 1, "Squares::Start"));
    let failure = StepFailure {
        error_class: "ArgumentError".into(),
        message: "bad input".into(),
        backtrace: vec!["handler.rb:1".into()],
        retryable: false,
        retry_after_seconds: None,
    };
    assert_eq!(worker.fail(job.step_uuid, failure).await.unwrap(), "error");

    let done = client.wait_for_task(task.task_uuid, Duration::from_secs(30)).await.unwrap();
    assert_eq!(done.status, "error");
    let steps = client.steps(task.task_uuid).await.unwrap();
    let got: Vec<_> = steps.iter().map(|s| (s.name.as_str(), s.status.as_str())).collect();
    assert_eq!(got, vec![("start", "error"), ("left", "pending"), ("right", "pending"), ("finish", "pending")]);
    let error = steps[0].last_error.clone().unwrap();
    assert_eq!(error["class"], "ArgumentError");
    assert_eq!(error["message"], "bad input");
    assert_eq!(error["backtrace"], json!(["handler.rb:1"]));
    let last = client.task_transitions(task.task_uuid).await.unwrap().pop().unwrap();
    assert_eq!((last.to_state.as_str(), last.metadata.clone()), ("error", json!({"failed_steps": ["start"]})));
    worker.shutdown(Duration::from_secs(5)).await.unwrap();
    orchestrator.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retryable_failure_runs_again_after_backoff() {
    let ns = common::unique_namespace("retry");
    let yaml = format!(
        "namespace: {ns}\nname: once\nversion: 1.0.0\nsteps:\n\
         \x20 - {{name: only, handler: {{callable: Flaky}}, retry: {{max_attempts: 3, backoff_base_ms: 50, max_backoff_ms: 100}}}}\n"
    );
    let ctx = common::context().await;
    ctx.register_template(tasker_core::TaskTemplate::from_yaml(&yaml, "once.yml").unwrap()).await.unwrap();
    let client = TaskerClient::new(ctx.clone());
    // No orchestrator: the failure's outcome schedules the retry itself,
    // as a message that becomes visible after the backoff.
    let worker = WorkerHandle::start(ctx, std::slice::from_ref(&ns), 1).await.unwrap();
    let task = client.create_task(&request(&ns, "once")).await.unwrap();

    let first = worker.next_job(Duration::from_secs(10)).await.unwrap().unwrap();
    let failure = StepFailure {
        error_class: "Timeout::Error".into(),
        message: "slow".into(),
        backtrace: vec![],
        retryable: true,
        retry_after_seconds: None,
    };
    assert_eq!(worker.fail(first.step_uuid, failure).await.unwrap(), "waiting_for_retry");
    let second = worker.next_job(Duration::from_secs(10)).await.unwrap().expect("retried after backoff");
    assert_eq!((second.step_uuid, second.attempt), (first.step_uuid, 2));
    worker.complete(second.step_uuid, json!("ok")).await.unwrap();
    let done = client.wait_for_task(task.task_uuid, Duration::from_secs(30)).await.unwrap();
    assert_eq!(done.status, "complete");
    let history: Vec<_> = client
        .step_transitions(task.task_uuid)
        .await
        .unwrap()
        .into_iter()
        .map(|t| (t.from_state, t.to_state))
        .collect();
    assert_eq!(
        states(&history),
        vec![
            ("", "pending"),
            ("pending", "enqueued"),
            ("enqueued", "in_progress"),
            ("in_progress", "waiting_for_retry"),
            ("waiting_for_retry", "in_progress"),
            ("in_progress", "complete"),
        ]
    );
    worker.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linear_and_diamond_run_the_same_on_rabbitmq() {
    let ns = common::unique_namespace("rabbit");
    let ctx = common::context_with(common::rabbitmq_overrides()).await;
    assert_eq!(ctx.messaging().provider_name(), "rabbitmq");
    for t in [common::linear_template(&ns), common::diamond_template(&ns)] {
        ctx.register_template(t).await.unwrap();
    }
    let h = common::start(ctx, &ns, 4).await;
    for name in ["linear", "diamond"] {
        let task_uuid = run_to_completion(&h, &ns, name).await;
        let steps = h.client.steps(task_uuid).await.unwrap();
        assert!(steps.iter().all(|s| s.status == "complete" && s.attempts == 1), "{steps:?}");
        assert_eq!(steps.last().unwrap().results, Some(json!(2_821_109_907_456_i64)));
    }
    h.stop().await;
}

/// Two deployments, each with its own queue prefix, share one database:
/// a task request on one's queue is served only by its own orchestrator,
/// and a task created without its first messages (as `TaskerCore.create_task`
/// does on RabbitMQ) is published only by its own deployment's orchestrator.
async fn deployments_with_their_own_queue_prefix_share_no_queue(overrides: serde_json::Value) {
    let ns = common::unique_namespace("apart");
    let ours = common::context_with(common::one_deployment(overrides.clone())).await;
    let theirs = common::context_with(common::one_deployment(overrides)).await;
    assert_ne!(ours.router().prefix(), theirs.router().prefix());
    ours.register_template(common::linear_template(&ns)).await.unwrap();
    let queue_name: String = sqlx::query_scalar("SELECT queue_name FROM tasker_namespaces WHERE name = $1")
        .bind(&ns)
        .fetch_one(ours.pool())
        .await
        .unwrap();
    assert_eq!(queue_name, format!("{}{ns}_queue", ours.router().prefix()));

    let client = TaskerClient::new(ours.clone());
    let their_orchestrator = OrchestratorHandle::start(theirs.clone()).await.unwrap();
    let our_worker =
        std::sync::Arc::new(WorkerHandle::start(ours.clone(), std::slice::from_ref(&ns), 2).await.unwrap());
    let runner = tokio::spawn(common::run_square_worker(our_worker.clone(), client.clone()));
    let requests = ours.router().task_requests();
    assert_eq!(requests, format!("{}orchestration_task_requests", ours.router().prefix()));
    ours.messaging().create_queue(&requests).await.unwrap();
    let key = format!("request-{ns}");
    let request =
        json!({"namespace": ns, "name": "linear", "version": "1.0.0", "context": {"n": 6}, "identity_key": key});
    ours.messaging().send(&requests, &request).await.unwrap();
    let sent_by_sql: uuid::Uuid =
        sqlx::query_scalar("SELECT task_uuid FROM tasker_create_task($1, 'linear', '1.0.0', '{\"n\": 6}', NULL, $2)")
            .bind(&ns)
            .bind(ours.messaging().queues_in_database())
            .fetch_one(ours.pool())
            .await
            .unwrap();

    tokio::time::sleep(Duration::from_millis(800)).await;
    let requested: i64 = sqlx::query_scalar("SELECT count(*) FROM tasker_tasks WHERE identity_key = $1")
        .bind(&key)
        .fetch_one(ours.pool())
        .await
        .unwrap();
    assert_eq!(requested, 0, "their orchestrator left our request alone");
    assert_eq!(ours.messaging().stats(&requests).await.unwrap().visible, 1);
    let first_step = client.steps(sent_by_sql).await.unwrap()[0].status.clone();
    if ours.messaging().queues_in_database() {
        // PGMQ: the first message was sent in the creating transaction.
        assert_eq!(client.wait_for_task(sent_by_sql, Duration::from_secs(10)).await.unwrap().status, "complete");
    } else {
        assert_eq!(first_step, "enqueued", "their orchestrator did not publish our task");
    }

    let our_orchestrator = OrchestratorHandle::start(ours.clone()).await.unwrap();
    let done = client.wait_for_task(sent_by_sql, Duration::from_secs(30)).await.unwrap();
    common::assert_linear_six_completed_once(&client, &done).await;
    let requested = loop {
        let found: Option<uuid::Uuid> =
            sqlx::query_scalar("SELECT task_uuid FROM tasker_tasks WHERE identity_key = $1")
                .bind(&key)
                .fetch_optional(ours.pool())
                .await
                .unwrap();
        if let Some(task_uuid) = found {
            break task_uuid;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let done = client.wait_for_task(requested, Duration::from_secs(30)).await.unwrap();
    common::assert_linear_six_completed_once(&client, &done).await;
    assert_eq!(ours.messaging().stats(&requests).await.unwrap().depth, 0);

    our_worker.shutdown(Duration::from_secs(5)).await.unwrap();
    runner.await.unwrap();
    our_orchestrator.shutdown(Duration::from_secs(5)).await.unwrap();
    their_orchestrator.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgmq_deployments_with_their_own_queue_prefix_share_no_queue() {
    deployments_with_their_own_queue_prefix_share_no_queue(json!({})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_deployments_with_their_own_queue_prefix_share_no_queue() {
    deployments_with_their_own_queue_prefix_share_no_queue(common::rabbitmq_overrides()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rust_request_with_run_at_waits_pending_and_then_runs() {
    let ns = common::unique_namespace("later");
    let h = harness(&ns, vec![common::linear_template(&ns)]).await;
    let run_at = chrono::Utc::now() + chrono::Duration::milliseconds(1200);
    let request = CreateTask { run_at: Some(run_at), ..request(&ns, "linear") };
    let task = h.client.create_task(&request).await.expect("create task");
    assert_eq!(task.status, "pending");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let steps = h.client.steps(task.task_uuid).await.unwrap();
    assert!(steps.iter().all(|s| s.status == "pending" && s.attempts == 0), "{steps:?}");

    let done = h.client.wait_for_task(task.task_uuid, Duration::from_secs(30)).await.expect("task finishes");
    assert_eq!(done.status, "complete");
    let history = h.client.task_transitions(task.task_uuid).await.unwrap();
    assert_eq!(
        history.iter().map(|t| (t.from_state.as_str(), t.to_state.as_str())).collect::<Vec<_>>(),
        vec![("", "pending"), ("pending", "in_progress"), ("in_progress", "complete")]
    );
    assert_eq!(history[1].metadata["reason"], "run_at");
    let recorded: chrono::DateTime<chrono::Utc> =
        history[1].metadata["run_at"].as_str().expect("run_at in the metadata").parse().expect("a timestamp");
    assert!((recorded - run_at).num_microseconds().expect("small").abs() <= 1, "{recorded} vs {run_at}");
    h.stop().await;
}
