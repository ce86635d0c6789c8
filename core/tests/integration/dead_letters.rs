//! Dead letters under both providers: a message delivered more than
//! `messaging.max_receive_count` times goes to the queue's dead-letter store
//! with the reason (and is counted in the metrics) instead of being run;
//! replaying it runs the step; discarding removes it.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tasker_core::{Context, CreateTask, MessagingService, OrchestratorHandle, TaskerClient, WorkerHandle};

async fn wait_for<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Receives the queue's one message and gives it back, `times` times, so
/// that its next delivery is its `times + 1`th.
async fn bounce(messaging: &dyn MessagingService, queue: &str, times: u32) {
    for n in 1..=times {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let message = loop {
            let got = messaging.receive(queue, 1, Duration::from_secs(30)).await.expect("receive");
            if let Some(message) = got.into_iter().next() {
                break message;
            }
            assert!(tokio::time::Instant::now() < deadline, "the message did not come back");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(message.delivery_count, n, "{message:?}");
        // RabbitMQ: a delayed nack republishes through <queue>.delay,
        // carrying the count on.
        messaging.nack(queue, message.receipt, Duration::from_millis(5)).await.expect("nack");
    }
}

async fn over_delivered_message_is_dead_lettered_and_replay_runs_the_step(overrides: Value) {
    let mut overrides = common::one_deployment(overrides);
    overrides["messaging"]["max_receive_count"] = json!(2);
    let ctx: Arc<Context> = common::context_with(overrides).await;
    let namespace = common::unique_namespace("dlq");
    ctx.register_template(common::template(&namespace, "one", "Sum", &[("only", &[])])).await.unwrap();
    let queue = ctx.router().step_queue(&namespace);
    let messaging = ctx.messaging().clone();
    messaging.create_queue(&queue).await.unwrap();
    let client = TaskerClient::new(ctx.clone());
    // RabbitMQ: an orchestrator sends a new task's first message.
    let orchestrator = OrchestratorHandle::start(ctx.clone()).await.unwrap();
    let request = CreateTask::new(&namespace, "one", "1.0.0", json!({}));
    let task = client.create_task(&request).await.unwrap();
    bounce(messaging.as_ref(), &queue, 2).await;

    let worker = Arc::new(WorkerHandle::start(ctx.clone(), std::slice::from_ref(&namespace), 2).await.unwrap());
    let runner = tokio::spawn(common::run_square_worker(worker.clone(), client.clone()));
    wait_for("the dead letter", Duration::from_secs(10), || async {
        messaging.dead_letter_count(&queue).await.unwrap() == 1
    })
    .await;
    let letters = messaging.dead_letters(&queue, 10).await.unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0];
    assert_eq!(letter.queue, queue);
    assert_eq!(
        letter.reason.as_deref(),
        Some("delivered 3 times, more than messaging.max_receive_count (2)"),
        "{letter:?}"
    );
    assert_eq!(letter.delivery_count, Some(3));
    assert!(letter.dead_lettered_at.is_some());
    assert_eq!(letter.payload["task_uuid"], json!(task.task_uuid));
    let steps = client.steps(task.task_uuid).await.unwrap();
    assert_eq!((steps[0].status.as_str(), steps[0].attempts), ("enqueued", 0), "the step never ran");
    let metrics = tasker_core::metrics_text(&ctx).await.unwrap();
    let counted = format!("tasker_dead_letters_total{{queue=\"{queue}\",reason=\"max_receives\"}} 1");
    assert!(metrics.contains(&counted), "{counted} not in\n{metrics}");
    assert!(metrics.contains(&format!("tasker_queue_dead_letters{{queue=\"{queue}\"}} 1")), "{metrics}");

    assert!(messaging.replay_dead_letter(&queue, &letter.id).await.unwrap());
    let done = client.wait_for_task(task.task_uuid, Duration::from_secs(15)).await.unwrap();
    assert_eq!(done.status, "complete");
    let steps = client.steps(task.task_uuid).await.unwrap();
    assert_eq!((steps[0].attempts, steps[0].results.clone()), (1, Some(json!(1))));
    assert_eq!(messaging.dead_letter_count(&queue).await.unwrap(), 0);
    assert!(!messaging.replay_dead_letter(&queue, &letter.id).await.unwrap(), "replayed once only");

    worker.shutdown(Duration::from_secs(5)).await.unwrap();
    runner.await.unwrap();
    orchestrator.shutdown(Duration::from_secs(5)).await.unwrap();
}

async fn a_dead_letter_is_kept_with_its_reason_and_discarded(overrides: Value) {
    let ctx = common::context_with(common::one_deployment(overrides)).await;
    let messaging = ctx.messaging().clone();
    let queue = ctx.router().step_queue(&common::unique_namespace("dlqd"));
    messaging.create_queue(&queue).await.unwrap();
    for n in 0..2 {
        messaging.send(&queue, &json!({"n": n})).await.unwrap();
    }
    let mut received = Vec::new();
    while received.len() < 2 {
        received.extend(messaging.receive(&queue, 2, Duration::from_secs(30)).await.unwrap());
    }
    for message in &received {
        messaging.dead_letter_because(&queue, message.receipt, &format!("bad {}", message.payload["n"])).await.unwrap();
    }
    let mut letters = messaging.dead_letters(&queue, 10).await.unwrap();
    letters.sort_by_key(|l| l.payload["n"].as_i64());
    let reasons: Vec<_> = letters.iter().map(|l| l.reason.clone().unwrap()).collect();
    assert_eq!(reasons, ["bad 0", "bad 1"]);
    assert_eq!(messaging.stats(&queue).await.unwrap().depth, 0);
    // Listing left them in the store.
    assert_eq!(messaging.dead_letter_count(&queue).await.unwrap(), 2);
    assert!(messaging.discard_dead_letter(&queue, &letters[0].id).await.unwrap());
    assert!(!messaging.discard_dead_letter(&queue, &letters[0].id).await.unwrap());
    let left = messaging.dead_letters(&queue, 10).await.unwrap();
    assert_eq!(left.iter().map(|l| l.payload.clone()).collect::<Vec<_>>(), [json!({"n": 1})]);
    messaging.delete_queue(&queue).await.unwrap();
}

#[tokio::test]
async fn pgmq_over_delivered_message_is_dead_lettered_and_replay_runs_the_step() {
    over_delivered_message_is_dead_lettered_and_replay_runs_the_step(json!({})).await;
}

#[tokio::test]
async fn rabbitmq_over_delivered_message_is_dead_lettered_and_replay_runs_the_step() {
    over_delivered_message_is_dead_lettered_and_replay_runs_the_step(common::rabbitmq_overrides()).await;
}

#[tokio::test]
async fn pgmq_dead_letters_keep_their_reason_and_can_be_discarded() {
    a_dead_letter_is_kept_with_its_reason_and_discarded(json!({})).await;
}

#[tokio::test]
async fn rabbitmq_dead_letters_keep_their_reason_and_can_be_discarded() {
    a_dead_letter_is_kept_with_its_reason_and_discarded(common::rabbitmq_overrides()).await;
}
