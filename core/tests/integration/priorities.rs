//! Task priorities in SQL and in the queues: where a task's priority comes
//! from and that every step message carries it; PGMQ's read order by the
//! aged key (higher priority first, a waiting message passed only within
//! the aging bound, a delayed message invisible until its time and then
//! keyed by its priority); RabbitMQ's priority queues, the replacement of a
//! queue declared without priorities, and the sweep's aging of RabbitMQ's
//! strict priorities (`tasker_raise_priorities`).

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use lapin::options::{BasicPublishOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use serde_json::{json, Value};
use tasker_core::{Context, CreateTask, ErrorKind, MessagingService, RabbitMqProvider, TaskTemplate, TaskerClient};
use uuid::Uuid;

const RABBITMQ_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

fn rabbitmq_url() -> String {
    std::env::var("RABBITMQ_URL").unwrap_or_else(|_| RABBITMQ_URL.to_owned())
}

/// One root step; the template's `priority:` when given.
fn one_step(namespace: &str, name: &str, priority: Option<i32>) -> TaskTemplate {
    let priority = priority.map(|p| format!("priority: {p}\n")).unwrap_or_default();
    let yaml = format!(
        "namespace: {namespace}\nname: {name}\nversion: 1.0.0\n{priority}steps:\n\
         \x20 - {{name: work, handler: {{callable: Squares::Work}}}}\n"
    );
    TaskTemplate::from_yaml(&yaml, "one_step.yml").expect("template is valid")
}

fn request(namespace: &str, name: &str, priority: Option<i32>) -> CreateTask {
    CreateTask { priority, ..CreateTask::new(namespace, name, "1.0.0", json!({"n": 1})) }
}

/// Sends one message through the queue's own send function, as the engine's
/// SQL does (keyed by its priority with this connection's aging step).
async fn send(ctx: &Context, queue: &str, message: Value, delay_ms: Option<i64>) {
    sqlx::query(&format!("SELECT pgmq.tasker_send_{queue}(ARRAY[$1::jsonb], ARRAY[$2::bigint])"))
        .bind(message)
        .bind(delay_ms)
        .execute(ctx.pool())
        .await
        .unwrap();
}

/// The next message a worker's read takes (one at a time), by its "n".
async fn next(ctx: &Context, queue: &str) -> Option<String> {
    let got = ctx.messaging().receive(queue, 1, Duration::from_secs(30)).await.unwrap();
    assert!(got.len() <= 1);
    got.first().map(|m| m.payload["n"].as_str().expect("n").to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_takes_its_priority_from_the_request_or_the_template_and_each_message_carries_it() {
    let ns = common::unique_namespace("prio");
    let ctx = common::context().await;
    ctx.register_template(one_step(&ns, "urgent", Some(3))).await.unwrap();
    ctx.register_template(one_step(&ns, "plain", None)).await.unwrap();
    let client = TaskerClient::new(ctx.clone());

    let mut created = Vec::new();
    for (name, priority, expected) in
        [("urgent", None, 3), ("urgent", Some(-2), -2), ("plain", None, 0), ("plain", Some(5), 5)]
    {
        let task = client.create_task(&request(&ns, name, priority)).await.unwrap();
        assert_eq!(task.priority, expected, "{name} {priority:?}");
        assert_eq!(serde_json::to_value(&task).unwrap()["priority"], json!(expected));
        created.push((task.task_uuid, expected));
    }
    let queue = ctx.router().step_queue(&ns);
    let messages: Vec<Value> = sqlx::query_scalar(&format!("SELECT message FROM pgmq.q_{queue} ORDER BY msg_id"))
        .fetch_all(ctx.pool())
        .await
        .unwrap();
    let carried: Vec<(Uuid, i64)> = messages
        .iter()
        .map(|m| (m["task_uuid"].as_str().unwrap().parse().unwrap(), m["priority"].as_i64().unwrap()))
        .collect();
    assert_eq!(carried, created.iter().map(|(t, p)| (*t, i64::from(*p))).collect::<Vec<_>>());
    let decoded: tasker_core::StepMessage = serde_json::from_value(messages[1].clone()).unwrap();
    assert_eq!(decoded.priority, -2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_priority_out_of_range_is_refused_naming_the_value_and_where_it_came_from() {
    let ns = common::unique_namespace("prio");
    let ctx = common::context().await;
    ctx.register_template(one_step(&ns, "plain", None)).await.unwrap();
    ctx.register_template(one_step(&ns, "tampered", Some(1))).await.unwrap();
    let client = TaskerClient::new(ctx.clone());

    let err = client.create_task(&request(&ns, "plain", Some(6))).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Validation);
    assert_eq!(
        err.to_string(),
        format!(
            "the priority given for a {ns}/plain@1.0.0 task, 6 is outside -5..5 (higher runs first; 0 is the default)"
        )
    );

    // The SQL function checks it too, whoever calls it (a psql session, a
    // template stored before the check).
    let sql = "SELECT task_uuid FROM tasker_create_task($1, $2, '1.0.0', '{}', NULL, true, NULL, NULL, NULL, $3)";
    let refused = |name: &'static str, priority: Option<i32>| {
        let (ctx, ns) = (ctx.clone(), ns.clone());
        async move {
            let e = sqlx::query(sql).bind(&ns).bind(name).bind(priority).execute(ctx.pool()).await.unwrap_err();
            e.as_database_error().expect("a database error").message().to_owned()
        }
    };
    assert_eq!(
        refused("plain", Some(-6)).await,
        format!("the priority of a {ns}/plain@1.0.0 task must be between -5 and 5 (higher runs first), got -6 (given to create_task)")
    );
    sqlx::query(
        "UPDATE tasker_task_templates SET definition = jsonb_set(definition, '{priority}', '7') \
         WHERE namespace = $1 AND name = 'tampered'",
    )
    .bind(&ns)
    .execute(ctx.pool())
    .await
    .unwrap();
    assert_eq!(
        refused("tampered", None).await,
        format!("the priority of a {ns}/tampered@1.0.0 task must be between -5 and 5 (higher runs first), got 7 (the template's priority)")
    );
    let tasks: i64 = sqlx::query_scalar("SELECT count(*) FROM tasker_tasks WHERE namespace = $1")
        .bind(&ns)
        .fetch_one(ctx.pool())
        .await
        .unwrap();
    assert_eq!(tasks, 0);
}

/// PGMQ keys a message sent at t with priority p as t - (p + 5) * aging.
/// With aging a = 200 ms and a second batch s = 1.5 s (7.5 a) after the
/// first, the keys are mid1 -5a, high1 s-10a = -2.5a, low1 0, mid2 s-5a =
/// 2.5a, low2 s = 7.5a: the high-priority message sent later passes the
/// waiting low one (within the bound of 10 a), the newer mid-priority one
/// does not (sent more than 5 a later).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgmq_reads_higher_priority_first_and_a_waiting_message_is_passed_only_within_the_aging_bound() {
    let ctx = common::context_with(json!({"messaging": {"priority_aging_ms": 200}})).await;
    let aging: String = sqlx::query_scalar("SHOW tasker.priority_aging_ms").fetch_one(ctx.pool()).await.unwrap();
    assert_eq!(aging, "200", "the engine's connections carry their aging step");
    let queue = common::unique_namespace("prio_q");
    ctx.messaging().create_queue(&queue).await.unwrap();

    send(&ctx, &queue, json!({"n": "low1", "priority": -5}), None).await;
    send(&ctx, &queue, json!({"n": "mid1", "priority": 0}), None).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    send(&ctx, &queue, json!({"n": "low2", "priority": -5}), None).await;
    send(&ctx, &queue, json!({"n": "mid2", "priority": 0}), None).await;
    send(&ctx, &queue, json!({"n": "high1", "priority": 5}), None).await;

    let mut order = Vec::new();
    while let Some(n) = next(&ctx, &queue).await {
        order.push(n);
    }
    assert_eq!(order, ["mid1", "high1", "low1", "mid2", "low2"]);
    ctx.messaging().delete_queue(&queue).await.unwrap();
}

/// A delayed message (a retry, a step waiting for its rate limit) is not
/// read before its time, though its key is earlier; then its priority
/// counts as for a message sent at that time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgmq_a_delayed_message_waits_for_its_time_and_then_keeps_its_priority() {
    let ctx = common::context_with(json!({"messaging": {"priority_aging_ms": 200}})).await;
    let queue = common::unique_namespace("prio_q");
    ctx.messaging().create_queue(&queue).await.unwrap();

    send(&ctx, &queue, json!({"n": "retry", "priority": 5}), Some(500)).await;
    send(&ctx, &queue, json!({"n": "now", "priority": 0}), None).await;
    assert_eq!(next(&ctx, &queue).await.as_deref(), Some("now"));
    assert_eq!(next(&ctx, &queue).await, None, "the delayed message is not visible yet");
    // Stats count it, and not as visible (one message in flight, one not due).
    let stats = ctx.messaging().stats(&queue).await.unwrap();
    assert_eq!((stats.depth, stats.visible), (2, 0));

    tokio::time::sleep(Duration::from_millis(600)).await;
    send(&ctx, &queue, json!({"n": "later", "priority": 0}), None).await;
    assert_eq!(next(&ctx, &queue).await.as_deref(), Some("retry"));
    assert_eq!(next(&ctx, &queue).await.as_deref(), Some("later"));
    ctx.messaging().delete_queue(&queue).await.unwrap();
}

/// What the engine sends to a PGMQ queue from outside its send functions
/// (the sweep's re-sends and task requests: `send`, `send_delayed`), a
/// message a worker hands back (`nack`) and a replayed dead letter are keyed
/// by their priority as the send functions key theirs. Aging a = 200 ms:
/// each high-priority message below was sent or put back 1.5 s (7.5 a)
/// after the low-priority one waiting, and goes first, as it is within the
/// bound of 10 a.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgmq_engine_sends_handed_back_messages_and_replayed_dead_letters_keep_their_priority() {
    let ctx = common::context_with(json!({"messaging": {"priority_aging_ms": 200}})).await;
    let mq = ctx.messaging();
    let queue = common::unique_namespace("prio_q");
    mq.create_queue(&queue).await.unwrap();
    let pause = || tokio::time::sleep(Duration::from_millis(1500));

    mq.send(&queue, &json!({"n": "low1", "priority": -5})).await.unwrap();
    pause().await;
    mq.send(&queue, &json!({"n": "sent", "priority": 5})).await.unwrap();
    assert_eq!(next(&ctx, &queue).await.as_deref(), Some("sent"));

    mq.send_delayed(&queue, &json!({"n": "delayed", "priority": 5}), Duration::from_millis(300)).await.unwrap();
    assert_eq!(next(&ctx, &queue).await.as_deref(), Some("low1"), "the delayed message is not visible yet");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(next(&ctx, &queue).await.as_deref(), Some("delayed"));

    // A worker hands back a message it read (as at shutdown).
    mq.send(&queue, &json!({"n": "handed_back", "priority": 5})).await.unwrap();
    let read = mq.receive(&queue, 1, Duration::from_secs(30)).await.unwrap();
    mq.send(&queue, &json!({"n": "low2", "priority": -5})).await.unwrap();
    pause().await;
    mq.nack(&queue, read[0].receipt, Duration::ZERO).await.unwrap();
    assert_eq!(next(&ctx, &queue).await.as_deref(), Some("handed_back"));

    // A dead letter replayed.
    mq.send(&queue, &json!({"n": "replayed", "priority": 5})).await.unwrap();
    let read = mq.receive(&queue, 1, Duration::from_secs(30)).await.unwrap();
    assert_eq!(read[0].payload["n"], "replayed");
    mq.dead_letter(&queue, read[0].receipt).await.unwrap();
    mq.send(&queue, &json!({"n": "low3", "priority": -5})).await.unwrap();
    pause().await;
    let letter = mq.dead_letters(&queue, 10).await.unwrap().remove(0);
    assert!(mq.replay_dead_letter(&queue, &letter.id).await.unwrap());
    let mut order = Vec::new();
    while let Some(n) = next(&ctx, &queue).await {
        order.push(n);
    }
    // low2 has waited 3 s (15 a) by now: more than the bound, so it is not passed.
    assert_eq!(order, ["low2", "replayed", "low3"]);
    mq.delete_queue(&queue).await.unwrap();
}

async fn last_history(ctx: &Context, step: Uuid) -> (String, String, Value) {
    sqlx::query_as(
        "SELECT from_state, to_state, metadata FROM tasker_workflow_step_transitions \
         WHERE step_uuid = $1 ORDER BY sort_key DESC LIMIT 1",
    )
    .bind(step)
    .fetch_one(ctx.pool())
    .await
    .unwrap()
}

async fn raise(ctx: &Context, tasks: &[Uuid]) -> Vec<(String, Value)> {
    sqlx::query_as("SELECT queue, message FROM tasker_raise_priorities($1, 1000, 100)")
        .bind(tasks)
        .fetch_all(ctx.pool())
        .await
        .unwrap()
}

/// RabbitMQ's aging, in SQL (the sweep calls it only for queues outside
/// PostgreSQL; it reads nothing of the queues). Aging step 1 s: a step of
/// priority p is raised once its message waited (5 - p) s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_raises_a_step_that_waited_past_its_bound_to_the_top_priority_once() {
    let ns = common::unique_namespace("prio");
    let ctx = common::context().await;
    ctx.register_template(one_step(&ns, "plain", None)).await.unwrap();
    let client = TaskerClient::new(ctx.clone());
    let mut tasks = Vec::new();
    let mut steps = Vec::new();
    for priority in [5, 3, -5, -5, -5] {
        let task = client.create_task(&request(&ns, "plain", Some(priority))).await.unwrap().task_uuid;
        tasks.push(task);
        steps.push(client.steps(task).await.unwrap()[0].step_uuid);
    }
    let age = |step: Uuid, sql: &'static str| {
        let ctx = ctx.clone();
        async move { sqlx::query(sql).bind(step).execute(ctx.pool()).await.unwrap() }
    };
    // Every message waited 3 s: only priority 3's bound (2 s) has passed.
    for step in &steps {
        age(
            *step,
            "UPDATE tasker_workflow_steps SET enqueued_at = clock_timestamp() - interval '3 s' WHERE step_uuid = $1",
        )
        .await;
    }
    let raised = raise(&ctx, &tasks).await;
    let queue = ctx.router().step_queue(&ns);
    assert_eq!(
        raised,
        [(
            queue.clone(),
            json!({"task_uuid": tasks[1], "step_uuid": steps[1], "correlation_id":
            client.task(tasks[1]).await.unwrap().correlation_id, "priority": 5})
        )]
    );
    let (from, to, metadata) = last_history(&ctx, steps[1]).await;
    assert_eq!((from.as_str(), to.as_str()), ("enqueued", "enqueued"));
    assert_eq!(metadata["priority_raised"], json!({"from": 3, "to": 5}));
    assert!((3000..4000).contains(&metadata["waited_ms"].as_i64().unwrap()), "{metadata}");
    assert_eq!(raise(&ctx, &tasks).await, [], "a step is raised once per wait");

    // Priority -5 waits 10 s. The third step's message waited 11 s; the
    // fourth is a retry due 11 s ago; the fifth waits for its rate limit's
    // token, due in 5 s (its message is not visible yet: not raised).
    age(
        steps[2],
        "UPDATE tasker_workflow_steps SET enqueued_at = clock_timestamp() - interval '11 s' WHERE step_uuid = $1",
    )
    .await;
    age(
        steps[3],
        "UPDATE tasker_workflow_steps SET status = 'waiting_for_retry', retry_at = clock_timestamp() - interval '11 s' \
         WHERE step_uuid = $1",
    )
    .await;
    age(
        steps[4],
        "UPDATE tasker_workflow_steps SET enqueued_at = clock_timestamp() - interval '60 s', \
                retry_at = clock_timestamp() + interval '5 s' WHERE step_uuid = $1",
    )
    .await;
    let raised: Vec<Value> = raise(&ctx, &tasks).await.into_iter().map(|(_, m)| m["step_uuid"].clone()).collect();
    assert_eq!(raised, [json!(steps[2]), json!(steps[3])]);
    let (from, to, metadata) = last_history(&ctx, steps[3]).await;
    assert_eq!((from.as_str(), to.as_str()), ("waiting_for_retry", "waiting_for_retry"));
    assert_eq!(metadata["priority_raised"], json!({"from": -5, "to": 5}));
}

async fn rabbitmq() -> Arc<dyn MessagingService> {
    match RabbitMqProvider::connect(&rabbitmq_url(), 16).await {
        Ok(p) => Arc::new(p),
        Err(e) => {
            panic!("{e}\nThese tests need RabbitMQ: run bin/test (it starts it), or `rabbitmq-server -detached`.")
        }
    }
}

async fn receive_all(mq: &Arc<dyn MessagingService>, queue: &str, want: usize) -> Vec<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut got = Vec::new();
    while got.len() < want && std::time::Instant::now() < deadline {
        for m in mq.receive(queue, 16, Duration::from_secs(30)).await.unwrap() {
            got.push(m.payload["n"].as_str().unwrap().to_owned());
            mq.ack(queue, m.receipt).await.unwrap();
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_delivers_waiting_messages_highest_priority_first() {
    let mq = rabbitmq().await;
    let queue = common::unique_namespace("prio_rq");
    mq.create_queue(&queue).await.unwrap();
    mq.create_queue(&queue).await.expect("declaring it again is fine");
    // Sent before anyone consumes: all wait in the broker.
    for (n, priority) in [("low", Some(-5)), ("plain", None), ("mid", Some(0)), ("high", Some(5)), ("mid2", Some(0))] {
        let mut payload = json!({ "n": n });
        if let Some(p) = priority {
            payload["priority"] = json!(p);
        }
        mq.send(&queue, &payload).await.unwrap();
    }
    // A delayed copy keeps its priority.
    mq.send_delayed(&queue, &json!({"n": "delayed_high", "priority": 5}), Duration::from_millis(50)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receive_all(&mq, &queue, 6).await, ["high", "delayed_high", "mid", "mid2", "low", "plain"]);
    mq.delete_queue(&queue).await.unwrap();
}

/// Declares `queue` as a tasker_core from before priorities did (no
/// x-max-priority), with `messages` messages in it.
async fn legacy_queue(queue: &str, messages: usize) -> lapin::Connection {
    let connection = lapin::Connection::connect(&rabbitmq_url(), lapin::ConnectionProperties::default()).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    let mut arguments = FieldTable::default();
    arguments.insert(
        ShortString::from("x-dead-letter-exchange"),
        AMQPValue::LongString(LongString::from(format!("{queue}.dlx").as_str())),
    );
    channel.queue_declare(ShortString::from(queue), QueueDeclareOptions::durable(), arguments).await.unwrap();
    for i in 0..messages {
        channel
            .basic_publish(
                ShortString::from(""),
                ShortString::from(queue),
                BasicPublishOptions::default(),
                format!("{{\"n\": \"old{i}\"}}").as_bytes(),
                lapin::BasicProperties::default(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }
    connection
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_a_queue_declared_without_priorities_is_replaced_when_idle_and_named_when_not() {
    let mq = rabbitmq().await;
    let idle = common::unique_namespace("prio_old");
    let _old = legacy_queue(&idle, 0).await;
    mq.create_queue(&idle).await.expect("an empty, unused queue is declared again with priorities");
    mq.send(&idle, &json!({"n": "low", "priority": -5})).await.unwrap();
    mq.send(&idle, &json!({"n": "high", "priority": 5})).await.unwrap();
    assert_eq!(receive_all(&mq, &idle, 2).await, ["high", "low"]);
    mq.delete_queue(&idle).await.unwrap();

    let busy = common::unique_namespace("prio_old");
    let old = legacy_queue(&busy, 1).await;
    let err = mq.create_queue(&busy).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Messaging);
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!(
            "queue {busy} exists without priorities (no x-max-priority argument: it was declared by a tasker_core \
             from before priorities) and holds 1 messages with 0 consumers, so it cannot be replaced: "
        )),
        "{msg}"
    );
    assert!(msg.contains(&format!("rabbitmqctl delete_queue {busy}")), "{msg}");
    // The provider still works after the refused declaration.
    let fresh = common::unique_namespace("prio_rq");
    mq.create_queue(&fresh).await.unwrap();
    mq.delete_queue(&fresh).await.unwrap();
    // The remedy the error gives: delete it; the next declaration makes it
    // anew, with priorities.
    let channel = old.create_channel().await.unwrap();
    channel.queue_delete(ShortString::from(busy.as_str()), QueueDeleteOptions::default()).await.unwrap();
    mq.create_queue(&busy).await.unwrap();
    mq.delete_queue(&busy).await.unwrap();
}
