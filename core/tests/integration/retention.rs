//! Retention: finished tasks older than `retention.finished_tasks_days` go
//! with everything they own, in batches; tasks in flight and recent ones
//! are never touched, however old; PGMQ archive rows older than
//! `retention.archive_days` go too.

use crate::common;

use std::time::Duration;

use serde_json::json;
use tasker_core::{CreateTask, TaskerClient};
use uuid::Uuid;

/// Rows a task owns: (task, steps, edges, task history, step history).
async fn rows_of(pool: &sqlx::PgPool, task: Uuid) -> (i64, i64, i64, i64, i64) {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM tasker_tasks WHERE task_uuid = $1), \
                (SELECT count(*) FROM tasker_workflow_steps WHERE task_uuid = $1), \
                (SELECT count(*) FROM tasker_workflow_step_edges WHERE task_uuid = $1), \
                (SELECT count(*) FROM tasker_task_transitions WHERE task_uuid = $1), \
                (SELECT count(*) FROM tasker_workflow_step_transitions h JOIN tasker_workflow_steps s \
                    ON s.step_uuid = h.step_uuid WHERE s.task_uuid = $1)",
    )
    .bind(task)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Rows left without the task or step they belong to, in the whole
/// database: (steps, edges, task history, step history). A task's rows
/// name it without foreign keys and go with it through a trigger, so any
/// deletion that missed one would show here.
async fn orphans(pool: &sqlx::PgPool) -> (i64, i64, i64, i64) {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM tasker_workflow_steps s \
                  WHERE NOT EXISTS (SELECT 1 FROM tasker_tasks t WHERE t.task_uuid = s.task_uuid)), \
                (SELECT count(*) FROM tasker_workflow_step_edges e \
                  WHERE NOT EXISTS (SELECT 1 FROM tasker_workflow_steps s WHERE s.step_uuid = e.from_step_uuid) \
                     OR NOT EXISTS (SELECT 1 FROM tasker_workflow_steps s WHERE s.step_uuid = e.to_step_uuid) \
                     OR NOT EXISTS (SELECT 1 FROM tasker_tasks t WHERE t.task_uuid = e.task_uuid)), \
                (SELECT count(*) FROM tasker_task_transitions h \
                  WHERE NOT EXISTS (SELECT 1 FROM tasker_tasks t WHERE t.task_uuid = h.task_uuid)), \
                (SELECT count(*) FROM tasker_workflow_step_transitions h \
                  WHERE NOT EXISTS (SELECT 1 FROM tasker_workflow_steps s WHERE s.step_uuid = h.step_uuid))",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

fn request(namespace: &str, n: i64) -> CreateTask {
    CreateTask::new(namespace, "two", "1.0.0", json!({ "n": n }))
}

#[tokio::test]
async fn prune_removes_old_finished_tasks_in_batches_and_never_touches_running_or_recent_ones() {
    // Batches of one task; no orchestrator of this test prunes on its own.
    let ctx = common::context_with(json!({"retention": {"batch_size": 1, "interval_seconds": 0}})).await;
    let (done_ns, idle_ns) = (common::unique_namespace("keep"), common::unique_namespace("idle"));
    for ns in [&done_ns, &idle_ns] {
        ctx.register_template(common::template(ns, "two", "Sum", &[("a", &[]), ("b", &["a"])])).await.unwrap();
    }
    let client = TaskerClient::new(ctx.clone());
    let running = common::start(ctx.clone(), &done_ns, 2).await;
    let mut finished = Vec::new();
    for n in 0..3 {
        let task = client.create_task(&request(&done_ns, n)).await.unwrap();
        assert_eq!(client.wait_for_task(task.task_uuid, Duration::from_secs(15)).await.unwrap().status, "complete");
        finished.push(task.task_uuid);
    }
    // A task whose steps nobody runs: in flight, and made to look ancient.
    let in_flight = client.create_task(&request(&idle_ns, 9)).await.unwrap().task_uuid;
    running.stop().await;
    let (old_a, old_b, recent) = (finished[0], finished[1], finished[2]);
    sqlx::query(
        "UPDATE tasker_tasks SET completed_at = now() - interval '40 days', created_at = now() - interval '41 days' \
          WHERE task_uuid = ANY ($1)",
    )
    .bind(vec![old_a, old_b])
    .execute(ctx.pool())
    .await
    .unwrap();
    sqlx::query("UPDATE tasker_tasks SET created_at = now() - interval '400 days' WHERE task_uuid = $1")
        .bind(in_flight)
        .execute(ctx.pool())
        .await
        .unwrap();
    let before_recent = rows_of(ctx.pool(), recent).await;
    let before_in_flight = rows_of(ctx.pool(), in_flight).await;
    assert_eq!(before_recent.0, 1);
    assert_eq!(before_recent.2, 1, "one edge: a -> b");

    let report = tasker_core::prune(&ctx).await.unwrap();
    // Other tests' orchestrators prune with the default ages too, so this
    // pass may have found fewer; what matters is what is left.
    assert!(report.batches >= 1, "{report:?}");
    for old in [old_a, old_b] {
        assert_eq!(rows_of(ctx.pool(), old).await, (0, 0, 0, 0, 0), "task {old} is gone with all it owned");
    }
    assert_eq!(orphans(ctx.pool()).await, (0, 0, 0, 0), "nothing a pruned task owned is left behind");
    assert_eq!(rows_of(ctx.pool(), recent).await, before_recent, "a recent finished task is kept whole");
    assert_eq!(rows_of(ctx.pool(), in_flight).await, before_in_flight, "a task in flight is kept whole");
    let status: String = sqlx::query_scalar("SELECT status FROM tasker_tasks WHERE task_uuid = $1")
        .bind(in_flight)
        .fetch_one(ctx.pool())
        .await
        .unwrap();
    assert!(status == "pending" || status == "in_progress", "{status}");
    assert_eq!(tasker_core::prune(&ctx).await.unwrap().tasks, 0, "nothing older is left");
    client.cancel_task(in_flight, "test over").await.unwrap();
}

#[tokio::test]
async fn prune_takes_a_batch_at_a_time_and_removes_old_archive_rows() {
    let ctx = common::context_with(json!({"retention": {"batch_size": 2, "interval_seconds": 0}})).await;
    let messaging = ctx.messaging().clone();
    let queue = ctx.router().step_queue(&common::unique_namespace("arch"));
    messaging.create_queue(&queue).await.unwrap();
    // The queue must be one of the deployment's: register a namespace on it.
    let ns = ctx.router().namespace_of(&queue).unwrap().to_owned();
    ctx.register_template(common::template(&ns, "two", "Sum", &[("a", &[]), ("b", &["a"])])).await.unwrap();
    for n in 0..5 {
        messaging.send(&queue, &json!({ "n": n })).await.unwrap();
    }
    let mut received = Vec::new();
    while received.len() < 5 {
        received.extend(messaging.receive(&queue, 5, Duration::from_secs(30)).await.unwrap());
    }
    for message in &received {
        messaging.dead_letter_because(&queue, message.receipt, "test").await.unwrap();
    }
    let table = format!("pgmq.\"a_{queue}\"");
    sqlx::query(&format!("UPDATE {table} SET archived_at = now() - interval '20 days' WHERE (message->>'n')::int < 4"))
        .execute(ctx.pool())
        .await
        .unwrap();

    let report = tasker_core::prune(&ctx).await.unwrap();
    assert_eq!(report.archived_messages, 4, "{report:?}");
    let left = messaging.dead_letters(&queue, 10).await.unwrap();
    assert_eq!(left.iter().map(|l| l.payload.clone()).collect::<Vec<_>>(), [json!({"n": 4})]);
    messaging.delete_queue(&queue).await.unwrap();
}

#[tokio::test]
async fn deleting_a_task_by_hand_deletes_everything_it_owned_and_nothing_else() {
    let ctx = common::context().await;
    let ns = common::unique_namespace("delete");
    ctx.register_template(common::template(&ns, "two", "Sum", &[("a", &[]), ("b", &["a"])])).await.unwrap();
    let client = TaskerClient::new(ctx.clone());
    let (gone, kept) = (
        client.create_task(&request(&ns, 1)).await.unwrap().task_uuid,
        client.create_task(&request(&ns, 2)).await.unwrap().task_uuid,
    );
    let kept_rows = rows_of(ctx.pool(), kept).await;
    assert_eq!(kept_rows, (1, 2, 1, 2, 3), "task, steps a and b, edge a -> b, two task and three step transitions");
    let steps: Vec<Uuid> = sqlx::query_scalar("SELECT step_uuid FROM tasker_workflow_steps WHERE task_uuid = $1")
        .bind(gone)
        .fetch_all(ctx.pool())
        .await
        .unwrap();
    assert_eq!(steps.len(), 2);

    // As an operator would, in SQL: no engine function is involved.
    sqlx::query("DELETE FROM tasker_tasks WHERE task_uuid = $1").bind(gone).execute(ctx.pool()).await.unwrap();

    let left: (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM tasker_workflow_steps WHERE step_uuid = ANY ($1)), \
                (SELECT count(*) FROM tasker_workflow_step_edges \
                  WHERE from_step_uuid = ANY ($1) OR to_step_uuid = ANY ($1)), \
                (SELECT count(*) FROM tasker_workflow_step_transitions WHERE step_uuid = ANY ($1))",
    )
    .bind(&steps)
    .fetch_one(ctx.pool())
    .await
    .unwrap();
    assert_eq!(left, (0, 0, 0), "the deleted task's steps, edges and step history are gone");
    assert_eq!(rows_of(ctx.pool(), gone).await, (0, 0, 0, 0, 0));
    assert_eq!(rows_of(ctx.pool(), kept).await, kept_rows, "the other task is untouched");
    client.cancel_task(kept, "test over").await.unwrap();
}
