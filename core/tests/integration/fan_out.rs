//! Dynamic fan-out in the engine: one outcome of a fan-out step makes
//! 10,000 children (steps, history, edges) in its own transaction, and the
//! task runs to completion with the join summing every child.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tasker_core::{CreateTask, OrchestratorHandle, TaskTemplate, TaskerClient, WorkerHandle};
use uuid::Uuid;

const CHILDREN: i64 = 10_000;

fn template(namespace: &str) -> TaskTemplate {
    let yaml = format!(
        "namespace: {namespace}\nname: wide\nversion: 1.0.0\nsteps:\n\
         \x20 - {{name: split, handler: {{callable: F::Split}}, \
                 fan_out: {{from: items, handler: {{callable: F::Double}}, join: summarize, \
                            retry: {{max_attempts: 2, backoff_base_ms: 10, max_backoff_ms: 10}}}}}}\n\
         \x20 - {{name: summarize, dependencies: [split], handler: {{callable: F::Sum}}}}\n"
    );
    TaskTemplate::from_yaml(&yaml, "wide.yml").expect("template is valid")
}

/// (steps, edges, step history rows) of the task, and its steps by status.
async fn counts(pool: &sqlx::PgPool, task_uuid: Uuid) -> (i64, i64, i64, Vec<(String, i64)>) {
    let (steps, edges, history): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM tasker_workflow_steps WHERE task_uuid = $1), \
                (SELECT count(*) FROM tasker_workflow_step_edges WHERE task_uuid = $1), \
                (SELECT count(*) FROM tasker_workflow_step_transitions h \
                   JOIN tasker_workflow_steps s USING (step_uuid) WHERE s.task_uuid = $1)",
    )
    .bind(task_uuid)
    .fetch_one(pool)
    .await
    .unwrap();
    let by_status = sqlx::query_as(
        "SELECT status, count(*) FROM tasker_workflow_steps WHERE task_uuid = $1 GROUP BY status ORDER BY status",
    )
    .bind(task_uuid)
    .fetch_all(pool)
    .await
    .unwrap();
    (steps, edges, history, by_status)
}

/// Runs children (their input doubled) and the join (the sum of its
/// parents' results, the fan-out step's own left out) until stopped.
async fn run_children(worker: Arc<WorkerHandle>, client: TaskerClient) {
    while worker.is_running() {
        let Some(job) = worker.next_job(Duration::from_millis(200)).await.expect("next job") else { continue };
        let result = match job.handler_callable.as_str() {
            "F::Double" => json!(job.step.to_value()["input"].as_i64().expect("an integer input") * 2),
            "F::Sum" => {
                let parents = client.dependency_results(job.step_uuid).await.expect("dependency results");
                let sum: i64 = parents
                    .iter()
                    .filter(|(name, _)| name.as_str() != "split")
                    .map(|(_, v)| v.as_ref().and_then(Value::as_i64).expect("an integer result"))
                    .sum();
                json!({"sum": sum, "parents": parents.len()})
            }
            other => panic!("unexpected job {other}"),
        };
        worker.complete(job.step_uuid, result).await.expect("complete");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_outcome_makes_ten_thousand_children_and_the_join_sums_them_all() {
    let ns = common::unique_namespace("fan");
    let ctx = common::context().await;
    ctx.register_template(template(&ns)).await.unwrap();
    let client = TaskerClient::new(ctx.clone());
    let orchestrator = OrchestratorHandle::start(ctx.clone()).await.expect("orchestrator starts");
    let worker = Arc::new(WorkerHandle::start(ctx.clone(), std::slice::from_ref(&ns), 8).await.expect("worker starts"));

    let task = client.create_task(&CreateTask::new(&ns, "wide", "1.0.0", json!({}))).await.unwrap();
    // The fan-out step's registration made no child at creation.
    assert_eq!(counts(ctx.pool(), task.task_uuid).await.0, 2);

    let split = worker.next_job(Duration::from_secs(10)).await.unwrap().expect("the split step is claimed");
    assert_eq!(split.step_name, "split");
    let items: Vec<i64> = (0..CHILDREN).collect();
    worker.complete(split.step_uuid, json!({"items": items})).await.unwrap();

    // That outcome made every child: 10,002 steps; the template's edge, one
    // from split to each child and one from each child to the join; each
    // child's '' -> pending and its move on (enqueued, or claimed eagerly by
    // this worker). (The worker may claim enqueued children from their
    // messages meanwhile: their third rows are left out.)
    let (steps, edges, _, by_status) = counts(ctx.pool(), task.task_uuid).await;
    assert_eq!((steps, edges), (CHILDREN + 2, 1 + 2 * CHILDREN));
    let made: Vec<(i32, String, String, i64)> = sqlx::query_as(
        "SELECT h.sort_key, h.from_state, h.to_state, count(*) FROM tasker_workflow_step_transitions h \
           JOIN tasker_workflow_steps s USING (step_uuid) \
          WHERE s.task_uuid = $1 AND s.fan_out_index IS NOT NULL AND h.sort_key <= 2 \
            AND (h.sort_key = 2 OR h.metadata = jsonb_build_object('fan_out_of', 'split', 'index', s.fan_out_index)) \
          GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
    )
    .bind(task.task_uuid)
    .fetch_all(ctx.pool())
    .await
    .unwrap();
    assert_eq!(made.len(), 3, "{made:?}");
    assert_eq!((made[0].0, made[0].1.as_str(), made[0].2.as_str(), made[0].3), (1, "", "pending", CHILDREN));
    assert_eq!(made[1..].iter().map(|m| (m.0, m.1.as_str())).collect::<Vec<_>>(), vec![(2, "pending"), (2, "pending")]);
    assert_eq!((made[1].2.as_str(), made[2].2.as_str()), ("enqueued", "in_progress"));
    assert_eq!(made[1].3 + made[2].3, CHILDREN);
    let in_flight: i64 = by_status.iter().filter(|(s, _)| s == "enqueued" || s == "in_progress").map(|(_, n)| n).sum();
    assert_eq!(in_flight, CHILDREN, "{by_status:?}");
    assert!(by_status.contains(&("pending".to_owned(), 1)), "only the join waits: {by_status:?}");

    let runner = tokio::spawn(run_children(worker.clone(), client.clone()));
    let state = client.wait_for_status(task.task_uuid, Duration::from_secs(600)).await.unwrap();
    assert_eq!(state, "complete");

    let steps = client.steps(task.task_uuid).await.unwrap();
    assert_eq!(steps.len() as i64, CHILDREN + 2);
    assert_eq!(steps[0].name, "split");
    for (i, child) in steps[1..=CHILDREN as usize].iter().enumerate() {
        assert_eq!(
            (child.name.as_str(), child.status.as_str(), child.fan_out_index, &child.input, &child.results),
            (format!("split[{i}]").as_str(), "complete", Some(i as i32), &Some(json!(i)), &Some(json!(2 * i))),
        );
    }
    let join = steps.last().unwrap();
    assert_eq!(
        (join.name.as_str(), join.status.as_str(), join.attempts, &join.results),
        ("summarize", "complete", 1, &Some(json!({"sum": CHILDREN * (CHILDREN - 1), "parents": CHILDREN + 1})))
    );
    // Each child went '' -> pending -> (enqueued ->) in_progress -> complete.
    let (_, _, history, by_status) = counts(ctx.pool(), task.task_uuid).await;
    assert_eq!(by_status, vec![("complete".to_owned(), CHILDREN + 2)]);
    let eager: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM tasker_workflow_step_transitions h JOIN tasker_workflow_steps s USING (step_uuid) \
         WHERE s.task_uuid = $1 AND s.fan_out_index IS NOT NULL AND h.from_state = 'pending' \
           AND h.to_state = 'in_progress'",
    )
    .bind(task.task_uuid)
    .fetch_one(ctx.pool())
    .await
    .unwrap();
    let join_history = if client
        .step_transitions(task.task_uuid)
        .await
        .unwrap()
        .iter()
        .any(|t| t.step_uuid == join.step_uuid && t.from_state == "pending" && t.to_state == "in_progress")
    {
        3
    } else {
        4
    };
    assert_eq!(history, 4 * CHILDREN - eager + 4 + join_history);

    worker.shutdown(Duration::from_secs(5)).await.expect("worker stops cleanly");
    runner.await.expect("runner did not panic");
    orchestrator.shutdown(Duration::from_secs(5)).await.expect("orchestrator stops cleanly");
}
