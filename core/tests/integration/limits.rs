//! Concurrency limits in SQL: the slot count is exact however many
//! transactions take slots at once, waiters start in order as holders end,
//! a step held by a dead worker keeps nothing stuck, and a template's limit
//! holds tasks pending until a task of their key ends; with RabbitMQ, the
//! worker whose outcome frees a slot sends its waiter's messages. A step
//! waiting for its rate limit's token is not taken for a stuck one.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tasker_core::{CreateTask, OrchestratorHandle, TaskTemplate, TaskerClient, WorkerHandle};
use uuid::Uuid;

/// One root step `charge` (limited per customer to `max`) then `notify`.
fn step_limited(namespace: &str, max: u32) -> TaskTemplate {
    let yaml = format!(
        "namespace: {namespace}\nname: billing\nversion: 1.0.0\nsteps:\n\
         \x20 - {{name: charge, handler: {{callable: Squares::Charge}}, \
                  concurrency: {{key: context.customer, max: {max}}}}}\n\
         \x20 - {{name: notify, dependencies: [charge], handler: {{callable: Squares::Notify}}}}\n"
    );
    TaskTemplate::from_yaml(&yaml, "billing.yml").expect("template is valid")
}

fn task_limited(namespace: &str, max: u32) -> TaskTemplate {
    let yaml = format!(
        "namespace: {namespace}\nname: export\nversion: 1.0.0\n\
         concurrency: {{key: context.account.id, max: {max}}}\nsteps:\n\
         \x20 - {{name: dump, handler: {{callable: Squares::Dump}}}}\n"
    );
    TaskTemplate::from_yaml(&yaml, "export.yml").expect("template is valid")
}

fn billing(namespace: &str, customer: &str, n: i64) -> CreateTask {
    CreateTask::new(namespace, "billing", "1.0.0", json!({"customer": customer, "n": n}))
}

async fn slot(client: &TaskerClient, slot: &str) -> (i32, i64) {
    let pool = client.context().pool();
    let in_use: i32 = sqlx::query_scalar("SELECT in_use FROM tasker_concurrency_slots WHERE slot = $1")
        .bind(slot)
        .fetch_one(pool)
        .await
        .unwrap();
    let waiting: i64 = sqlx::query_scalar("SELECT count(*) FROM tasker_concurrency_waiters WHERE slot = $1")
        .bind(slot)
        .fetch_one(pool)
        .await
        .unwrap();
    (in_use, waiting)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slots_are_counted_exactly_under_concurrent_creation_and_handed_to_the_oldest_waiter() {
    let ns = common::unique_namespace("slots");
    let ctx = common::context().await;
    ctx.register_template(step_limited(&ns, 2)).await.unwrap();
    let client = TaskerClient::new(ctx.clone());
    let a = format!("step:{ns}/billing/charge=a");
    let b = format!("step:{ns}/billing/charge=b");

    // Twelve creations at once for customer a (each its own transaction on
    // its own connection), one for b.
    let creations = (0..12).map(|i| {
        let client = client.clone();
        let ns = ns.clone();
        tokio::spawn(async move { client.create_task(&billing(&ns, "a", i)).await.unwrap().task_uuid })
    });
    let mut tasks = Vec::new();
    for creation in creations {
        tasks.push(creation.await.unwrap());
    }
    let task_b = client.create_task(&billing(&ns, "b", 1)).await.unwrap().task_uuid;
    assert_eq!(slot(&client, &a).await, (2, 10));
    assert_eq!(slot(&client, &b).await, (1, 0));
    let mut statuses = Vec::new();
    for task in &tasks {
        statuses.push(common::step_named(&client, *task, "charge").await.status);
    }
    assert_eq!(statuses.iter().filter(|s| *s == "enqueued").count(), 2);
    assert_eq!(statuses.iter().filter(|s| *s == "pending").count(), 10);
    assert_eq!(common::step_named(&client, task_b, "charge").await.status, "enqueued");
    // A waiting step's history says what it waits for, once.
    let waiting = tasks.iter().zip(&statuses).find(|(_, s)| *s == "pending").map(|(t, _)| *t).unwrap();
    let history = common::step_history(&client, waiting, "charge").await;
    assert_eq!(history.len(), 2, "{history:?}");
    assert_eq!((history[1].0.as_str(), history[1].1.as_str()), ("pending", "pending"));
    assert_eq!(history[1].2, json!({"waiting_for": "concurrency", "slot": a, "max": 2}));

    // One worker slot: each charge that completes hands its slot to the
    // oldest waiter, so the count stays exact all the way down.
    let worker = WorkerHandle::start(ctx.clone(), std::slice::from_ref(&ns), 1).await.unwrap();
    let mut charges = Vec::new();
    for _ in 0..26 {
        let job = worker.next_job(Duration::from_secs(10)).await.unwrap().expect("a step is ready");
        if job.step_name == "charge" && job.task_uuid != task_b {
            // Whatever has run so far: 2 in use while anyone waits.
            let (in_use, waiting) = slot(&client, &a).await;
            assert!(in_use == 2 || (in_use < 2 && waiting == 0), "{in_use} in use, {waiting} waiting");
            charges.push(job.task_uuid);
        }
        common::run_job(&worker, &client, job).await;
    }
    // After the two that went at once, customer a's charges ran in the
    // order they started waiting: each freed slot went to the oldest.
    let waited: Vec<Uuid> = sqlx::query_scalar(
        "SELECT s.task_uuid FROM tasker_workflow_steps s \
           JOIN tasker_workflow_step_transitions h ON h.step_uuid = s.step_uuid \
          WHERE s.task_uuid = ANY ($1) AND s.name = 'charge' AND h.from_state = 'pending' AND h.to_state = 'pending' \
          ORDER BY h.created_at",
    )
    .bind(&tasks)
    .fetch_all(client.context().pool())
    .await
    .unwrap();
    assert_eq!(charges.len(), 12);
    assert_eq!(charges[2..], waited[..]);
    for task in tasks.iter().chain([&task_b]) {
        let done = client.wait_for_task(*task, Duration::from_secs(10)).await.unwrap();
        assert_eq!(done.status, "complete");
    }
    assert_eq!(slot(&client, &a).await, (0, 0));
    assert_eq!(slot(&client, &b).await, (0, 0));
    // The waiters were handed their slots oldest first: pending -> pending
    // (waiting) -> enqueued.
    let history = common::step_history(&client, waiting, "charge").await;
    let states: Vec<(&str, &str)> = history.iter().map(|(f, t, _)| (f.as_str(), t.as_str())).collect();
    assert_eq!(
        states,
        vec![
            ("", "pending"),
            ("pending", "pending"),
            ("pending", "enqueued"),
            ("enqueued", "in_progress"),
            ("in_progress", "complete")
        ]
    );
    worker.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_held_by_a_dead_workers_step_comes_back_when_the_sweep_recovers_it() {
    let ns = common::unique_namespace("slotdead");
    let (overrides, ctx) = common::quickly_recovering_deployment().await;
    ctx.register_template(step_limited(&ns, 1)).await.unwrap();
    let client = TaskerClient::new(ctx.clone());
    let first = client.create_task(&billing(&ns, "c", 2)).await.unwrap().task_uuid;
    let second = client.create_task(&billing(&ns, "c", 3)).await.unwrap().task_uuid;
    let c = format!("step:{ns}/billing/charge=c");
    assert_eq!(slot(&client, &c).await, (1, 1));

    // A worker claims the first charge and dies mid-step.
    let claimed = common::claim_and_die(overrides, &ns).await;
    assert_eq!(claimed.task_uuid, first);
    assert_eq!(slot(&client, &c).await, (1, 1));

    // The sweep recovers the dead worker's step; it runs again and ends,
    // which hands the slot on: nothing is left held or waiting.
    let run = common::start(ctx, &ns, 2).await;
    for task in [first, second] {
        assert_eq!(run.client.wait_for_task(task, Duration::from_secs(30)).await.unwrap().status, "complete");
    }
    assert_eq!(slot(&client, &c).await, (0, 0));
    let states: Vec<(String, String)> =
        common::step_history(&client, first, "charge").await.into_iter().map(|(f, t, _)| (f, t)).collect();
    assert!(states.contains(&("in_progress".to_owned(), "enqueued".to_owned())), "{states:?}");
    assert_eq!(common::step_named(&client, second, "charge").await.results, Some(json!(9)));
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_limit_keeps_tasks_pending_until_a_task_of_their_key_ends() {
    let ns = common::unique_namespace("tasklim");
    let ctx = common::context().await;
    ctx.register_template(task_limited(&ns, 1)).await.unwrap();
    let client = TaskerClient::new(ctx.clone());
    let create = |id: i64, n: i64| CreateTask::new(&ns, "export", "1.0.0", json!({"account": {"id": id}, "n": n}));
    let first = client.create_task(&create(7, 2)).await.unwrap();
    let second = client.create_task(&create(7, 3)).await.unwrap();
    let other = client.create_task(&create(8, 4)).await.unwrap();
    assert_eq!(
        (first.status.as_str(), second.status.as_str(), other.status.as_str()),
        ("in_progress", "pending", "in_progress")
    );
    assert_eq!(common::step_named(&client, second.task_uuid, "dump").await.status, "pending");
    let seven = format!("task:{ns}/export=7");
    assert_eq!(slot(&client, &seven).await, (1, 1));

    let run = common::start(ctx, &ns, 1).await;
    for task in [&first, &second, &other] {
        assert_eq!(run.client.wait_for_task(task.task_uuid, Duration::from_secs(30)).await.unwrap().status, "complete");
    }
    assert_eq!(slot(&client, &seven).await, (0, 0));
    let history = client.task_transitions(second.task_uuid).await.unwrap();
    let started = history.iter().find(|t| t.to_state == "in_progress").unwrap();
    assert_eq!(started.metadata, json!({"reason": "concurrency", "slot": seven}));
    // It started only after the first ended.
    let started_after: bool = sqlx::query_scalar(
        "SELECT s.created_at >= f.completed_at FROM tasker_task_transitions s, tasker_tasks f \
          WHERE s.task_uuid = $1 AND s.to_state = 'in_progress' AND f.task_uuid = $2",
    )
    .bind(second.task_uuid)
    .bind(first.task_uuid)
    .fetch_one(client.context().pool())
    .await
    .unwrap();
    assert!(started_after);
    run.stop().await;
}

/// Seconds from the first of `times` to each.
fn offsets(times: &[chrono::DateTime<chrono::Utc>]) -> Vec<i64> {
    times.iter().map(|t| (*t - times[0]).num_milliseconds()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_bucket_gives_burst_tokens_at_once_and_each_back_burst_over_rate_later() {
    let ctx = common::context().await;
    let take = |bucket: String, per_second: f64, burst: i32| {
        let pool = ctx.pool().clone();
        async move {
            let mut times = Vec::new();
            for _ in 0..7 {
                let at: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT tasker_take_token($1, $2, $3)")
                    .bind(&bucket)
                    .bind(per_second)
                    .bind(burst)
                    .fetch_one(&pool)
                    .await
                    .unwrap();
                times.push(at);
            }
            times
        }
    };
    // 3 a second, burst 3: three at once (now, as each is taken); a token
    // comes back 1 s after it was used, and those that wait are spaced 1/3 s
    // apart.
    let times = take(format!("rate:test/{}", Uuid::now_v7()), 3.0, 3).await;
    let now = chrono::Utc::now();
    assert!(times[..3].iter().all(|t| (now - *t).num_milliseconds() < 5_000));
    let micros: Vec<i64> = times.iter().map(|t| (*t - times[0]).num_microseconds().unwrap()).collect();
    for (got, want) in micros[3..].iter().zip([1_000_000, 1_333_333, 1_666_667, 2_000_000]) {
        assert!((got - want).abs() <= 1, "{micros:?}");
    }
    // 2 a second, burst 1: one every 500 ms.
    let times = take(format!("rate:test/{}", Uuid::now_v7()), 2.0, 1).await;
    assert_eq!(offsets(&times), vec![0, 500, 1_000, 1_500, 2_000, 2_500, 3_000]);
    // Half a token a second: one every 2 s.
    let times = take(format!("rate:test/{}", Uuid::now_v7()), 0.5, 1).await;
    assert_eq!(offsets(&times), vec![0, 2_000, 4_000, 6_000, 8_000, 10_000, 12_000]);
    // A burst lowered by a new registration keeps the latest tokens.
    let bucket = format!("rate:test/{}", Uuid::now_v7());
    let before = take(bucket.clone(), 1.0, 3).await;
    let after: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT tasker_take_token($1, 1, 1)").bind(&bucket).fetch_one(ctx.pool()).await.unwrap();
    // Seven taken with 3 tokens of 3 s: at 0, 0, 0, 3, 4, 5, 6; the tokens
    // are back at 9, 7 and 8; the one kept is 9, next free at that time.
    assert_eq!((after - before[0]).num_milliseconds(), 9_000);
}

/// A step waiting for its rate limit's token is enqueued with a delayed
/// message (retry_at: when the token comes due). It has waited in its queue
/// only since then: however long ago it was enqueued, the sweep does not
/// send its message again, and status does not count it stuck, until it is
/// `stuck_enqueued_seconds` past its token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_waiting_for_its_rate_limits_token_is_stuck_only_once_long_past_the_token() {
    let ns = common::unique_namespace("tokenwait");
    let ctx = common::context().await;
    ctx.register_template(common::template(&ns, "one", "Squares", &[("work", &[])])).await.unwrap();
    let client = TaskerClient::new(ctx.clone());
    let task = client.create_task(&CreateTask::new(&ns, "one", "1.0.0", json!({"n": 2}))).await.unwrap().task_uuid;
    let step = client.steps(task).await.unwrap()[0].step_uuid;
    let set = |sql: &'static str| {
        let ctx = ctx.clone();
        async move { sqlx::query(sql).bind(step).execute(ctx.pool()).await.unwrap() }
    };
    let recovered = || {
        let ctx = ctx.clone();
        async move {
            sqlx::query_as::<_, (Uuid, String)>(
                "SELECT step_uuid, was FROM tasker_recover_stuck_steps($1, interval '1 hour', interval '10 minutes', 100)",
            )
            .bind(vec![task])
            .fetch_all(ctx.pool())
            .await
            .unwrap()
        }
    };
    let stuck_enqueued = || {
        let ctx = ctx.clone();
        let ns = ns.clone();
        async move {
            let status = tasker_core::status(&ctx).await.unwrap();
            let counts = status.namespaces.into_iter().find(|n| n.namespace == ns).expect("the namespace is in flight");
            (counts.steps_stuck_enqueued, counts.steps_waiting_for_rate_limit)
        }
    };
    let config_stuck = ctx.config().orchestration.stuck_enqueued_seconds;
    assert_eq!(config_stuck, 600, "the test ages the step against the default");

    // Enqueued 20 minutes ago, its token due in 5: waiting, not stuck.
    set("UPDATE tasker_workflow_steps SET enqueued_at = clock_timestamp() - interval '20 minutes', \
                                          retry_at = clock_timestamp() + interval '5 minutes' WHERE step_uuid = $1")
    .await;
    assert_eq!(recovered().await, []);
    assert_eq!(stuck_enqueued().await, (0, 1));

    // Its token came due 9 minutes ago: not yet past the 10.
    set("UPDATE tasker_workflow_steps SET retry_at = clock_timestamp() - interval '9 minutes' WHERE step_uuid = $1")
        .await;
    assert_eq!(recovered().await, []);
    assert_eq!(stuck_enqueued().await, (0, 0));

    // 11 minutes: its message may be lost, and is sent again (by this call,
    // or by the sweep of another test's orchestrator on this database:
    // either way its enqueued_at starts again).
    set("UPDATE tasker_workflow_steps SET retry_at = clock_timestamp() - interval '11 minutes' WHERE step_uuid = $1")
        .await;
    let recovered = recovered().await;
    assert!(recovered.is_empty() || recovered == [(step, "enqueued".to_owned())], "{recovered:?}");
    let sent_again: bool = sqlx::query_scalar(
        "SELECT enqueued_at > clock_timestamp() - interval '1 minute' FROM tasker_workflow_steps WHERE step_uuid = $1",
    )
    .bind(step)
    .fetch_one(ctx.pool())
    .await
    .unwrap();
    assert!(sent_again);
}

/// With RabbitMQ, the worker whose outcome transaction frees a slot (a step
/// ending, a task ending) sends the messages of the waiter it is handed
/// to. An orchestrator sends the new tasks' first messages (RabbitMQ's
/// creation needs one) and is stopped before any slot is freed: every task
/// of a step limit and of a template limit still completes, in turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_the_worker_that_frees_a_slot_sends_its_waiters_messages() {
    let ns = common::unique_namespace("slothand");
    let ctx = common::context_with(common::rabbitmq_overrides()).await;
    ctx.register_template(step_limited(&ns, 1)).await.unwrap();
    ctx.register_template(task_limited(&ns, 1)).await.unwrap();
    let client = TaskerClient::new(ctx.clone());
    let orchestrator = OrchestratorHandle::start(ctx.clone()).await.unwrap();
    let mut tasks = Vec::new();
    for n in 2..5 {
        tasks.push(client.create_task(&billing(&ns, "c", n)).await.unwrap().task_uuid);
    }
    for n in 2..4 {
        let export = CreateTask::new(&ns, "export", "1.0.0", json!({"account": {"id": 7}, "n": n}));
        tasks.push(client.create_task(&export).await.unwrap().task_uuid);
    }
    assert_eq!(slot(&client, &format!("step:{ns}/billing/charge=c")).await, (1, 2));
    assert_eq!(slot(&client, &format!("task:{ns}/export=7")).await, (1, 1));
    // The first charge's and the first export's messages are out.
    let queue = ctx.router().step_queue(&ns);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while ctx.messaging().stats(&queue).await.unwrap().depth < 2 {
        assert!(tokio::time::Instant::now() < deadline, "the orchestrator sent the first messages");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    orchestrator.shutdown(Duration::from_secs(5)).await.unwrap();

    let worker = Arc::new(WorkerHandle::start(ctx.clone(), std::slice::from_ref(&ns), 2).await.unwrap());
    let runner = tokio::spawn(common::run_square_worker(worker.clone(), client.clone()));
    for task in &tasks {
        assert_eq!(client.wait_for_task(*task, Duration::from_secs(20)).await.unwrap().status, "complete");
    }
    assert_eq!(slot(&client, &format!("step:{ns}/billing/charge=c")).await, (0, 0));
    assert_eq!(slot(&client, &format!("task:{ns}/export=7")).await, (0, 0));
    assert_eq!(step_results(&client, &tasks[..3], "charge").await, [json!(4), json!(9), json!(16)]);
    worker.shutdown(Duration::from_secs(5)).await.unwrap();
    runner.await.unwrap();
}

/// Each task's `step` result, in order.
async fn step_results(client: &TaskerClient, tasks: &[Uuid], step: &str) -> Vec<Value> {
    let mut results = Vec::new();
    for task in tasks {
        results.push(common::step_named(client, *task, step).await.results.unwrap_or(Value::Null));
    }
    results
}

/// With RabbitMQ, status's oldest enqueued step of a queue (its
/// `oldest_age_seconds`, the metric `tasker_queue_oldest_message_age_seconds`)
/// counts a step waiting for its rate limit's token from when the token came
/// due, as the sweep does: a step enqueued 20 minutes ago whose token is due
/// in 5 has waited 0 s; once the token came due 9 minutes ago, 540 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_a_step_waiting_for_its_token_is_not_the_oldest_in_its_queue_before_the_token() {
    let ns = common::unique_namespace("tokenage");
    let ctx = common::context_with(common::one_deployment(common::rabbitmq_overrides())).await;
    ctx.register_template(common::template(&ns, "one", "Squares", &[("work", &[])])).await.unwrap();
    let client = TaskerClient::new(ctx.clone());
    let task = client.create_task(&CreateTask::new(&ns, "one", "1.0.0", json!({"n": 2}))).await.unwrap().task_uuid;
    let step = client.steps(task).await.unwrap()[0].step_uuid;
    let queue = ctx.router().step_queue(&ns);
    let oldest_age = || {
        let (ctx, queue) = (ctx.clone(), queue.clone());
        async move {
            let status = tasker_core::status(&ctx).await.unwrap();
            status
                .queues
                .into_iter()
                .find(|q| q.queue == queue)
                .expect("the queue is the deployment's")
                .oldest_age_seconds
        }
    };
    let set = |sql: &'static str| {
        let ctx = ctx.clone();
        async move { sqlx::query(sql).bind(step).execute(ctx.pool()).await.unwrap() }
    };

    set("UPDATE tasker_workflow_steps SET enqueued_at = clock_timestamp() - interval '20 minutes', \
                                          retry_at = clock_timestamp() + interval '5 minutes' WHERE step_uuid = $1")
    .await;
    assert_eq!(oldest_age().await, Some(0.0));

    set("UPDATE tasker_workflow_steps SET retry_at = clock_timestamp() - interval '9 minutes' WHERE step_uuid = $1")
        .await;
    let age = oldest_age().await.expect("an enqueued step");
    assert!((540.0..560.0).contains(&age), "waited {age} s since its token came due 9 minutes ago");
    client.cancel_task(task, "test over").await.unwrap();
}
