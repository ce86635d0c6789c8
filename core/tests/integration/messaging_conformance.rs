//! The messaging contract. Every provider runs the very same tests against
//! its real server (PostgreSQL for PGMQ, RabbitMQ): `conformance!` expands
//! the suite once per provider, with no provider-specific skips.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tasker_core::{MessagingService, RabbitMqProvider};

const RABBITMQ_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// A fresh connection to the provider; panics with how to start its server.
async fn connect(provider: &str) -> Arc<dyn MessagingService> {
    match provider {
        "pgmq" => common::context_with(json!({"max_connections": 3})).await.messaging().clone(),
        "rabbitmq" => {
            let url = std::env::var("RABBITMQ_URL").unwrap_or_else(|_| RABBITMQ_URL.to_owned());
            match RabbitMqProvider::connect(&url, 16).await {
                Ok(p) => Arc::new(p),
                Err(e) => panic!(
                    "{e}\nThese tests need RabbitMQ: run bin/test (it starts it), or `rabbitmq-server -detached`."
                ),
            }
        }
        other => panic!("unknown provider {other}"),
    }
}

async fn with_queue(provider: &str) -> (Arc<dyn MessagingService>, String) {
    let mq = connect(provider).await;
    let queue = common::unique_namespace("conf");
    mq.create_queue(&queue).await.expect("create queue");
    mq.create_queue(&queue).await.expect("creating a queue twice is fine");
    (mq, queue)
}

/// Receives until `want` messages arrived (at most `max` per call) or 10 s
/// passed. Consumers are asynchronous (RabbitMQ pushes deliveries), so a
/// message sent a moment ago may take a moment to reach a receiver.
async fn receive_until(
    mq: &Arc<dyn MessagingService>,
    queue: &str,
    max: u32,
    want: usize,
) -> Vec<tasker_core::ReceivedMessage> {
    receive_invisible_for(mq, queue, max, want, Duration::from_secs(30)).await
}

async fn receive_invisible_for(
    mq: &Arc<dyn MessagingService>,
    queue: &str,
    max: u32,
    want: usize,
    visibility_timeout: Duration,
) -> Vec<tasker_core::ReceivedMessage> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut got = Vec::new();
    while got.len() < want && std::time::Instant::now() < deadline {
        got.extend(mq.receive(queue, max, visibility_timeout).await.unwrap());
    }
    got
}

/// (depth, visible), read until they equal `expected` or 5 s passed. Stats
/// are a snapshot: with RabbitMQ a delivery on its way to a consumer is
/// momentarily counted nowhere.
async fn settled_stats(mq: &Arc<dyn MessagingService>, queue: &str, expected: (i64, i64)) -> (i64, i64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let stats = mq.stats(queue).await.unwrap();
        if (stats.depth, stats.visible) == expected || std::time::Instant::now() > deadline {
            return (stats.depth, stats.visible);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn numbers(messages: &[tasker_core::ReceivedMessage]) -> Vec<i64> {
    messages.iter().map(|m| m.payload["i"].as_i64().expect("i")).collect()
}

async fn send_receive_ack(provider: &str) {
    let (mq, queue) = with_queue(provider).await;
    mq.send(&queue, &json!({"a": 1, "list": [1, 2.5, null]})).await.unwrap();
    let got = receive_until(&mq, &queue, 10, 1).await;
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].payload.clone(), got[0].delivery_count), (json!({"a": 1, "list": [1, 2.5, null]}), 1));
    assert_eq!(got[0].queue, queue);
    // In flight: nobody else gets it.
    assert!(mq.receive(&queue, 10, Duration::from_secs(30)).await.unwrap().is_empty());
    let stats = mq.stats(&queue).await.unwrap();
    assert_eq!((stats.depth, stats.visible), (1, 0));
    mq.ack(&queue, got[0].receipt).await.unwrap();
    assert!(mq.ack(&queue, got[0].receipt).await.is_err(), "a second ack is refused");
    let stats = mq.stats(&queue).await.unwrap();
    assert_eq!((stats.depth, stats.visible), (0, 0));
    mq.delete_queue(&queue).await.unwrap();
}

async fn batch_send_keeps_order(provider: &str) {
    let (mq, queue) = with_queue(provider).await;
    let payloads: Vec<Value> = (0..5).map(|i| json!({"i": i})).collect();
    assert_eq!(mq.send_batch(&queue, &payloads).await.unwrap().len(), 5);
    let got = receive_until(&mq, &queue, 10, 5).await;
    assert_eq!(numbers(&got), vec![0, 1, 2, 3, 4]);
    for message in &got {
        mq.ack(&queue, message.receipt).await.unwrap();
    }
    // A larger batch (RabbitMQ publishes it all before waiting for the
    // confirms): every message once, in order, each with its own id.
    let payloads: Vec<Value> = (0..200).map(|i| json!({"i": i})).collect();
    let mut ids = mq.send_batch(&queue, &payloads).await.unwrap();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 200);
    // Acked as they come: RabbitMQ delivers no more than its prefetch unacked.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut got = Vec::new();
    while got.len() < 200 && std::time::Instant::now() < deadline {
        for message in mq.receive(&queue, 50, Duration::from_secs(30)).await.unwrap() {
            mq.ack(&queue, message.receipt).await.unwrap();
            got.push(message);
        }
    }
    assert_eq!(numbers(&got), (0..200).collect::<Vec<i64>>());
    mq.delete_queue(&queue).await.unwrap();
}

async fn nack_redelivers(provider: &str) {
    let (mq, queue) = with_queue(provider).await;
    mq.send(&queue, &json!({"i": 7})).await.unwrap();
    let first = receive_until(&mq, &queue, 1, 1).await;
    mq.nack(&queue, first[0].receipt, Duration::ZERO).await.unwrap();
    let again = receive_until(&mq, &queue, 1, 1).await;
    assert_eq!((numbers(&again), again[0].delivery_count), (vec![7], 2));
    mq.ack(&queue, again[0].receipt).await.unwrap();
    mq.delete_queue(&queue).await.unwrap();
}

async fn nack_with_delay_holds_the_message_back(provider: &str) {
    let (mq, queue) = with_queue(provider).await;
    mq.send(&queue, &json!({"i": 1})).await.unwrap();
    let first = receive_until(&mq, &queue, 1, 1).await;
    mq.nack(&queue, first[0].receipt, Duration::from_secs(1)).await.unwrap();
    assert!(mq.receive(&queue, 1, Duration::from_secs(30)).await.unwrap().is_empty(), "held back");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let back = receive_until(&mq, &queue, 1, 1).await;
    assert_eq!(numbers(&back), vec![1]);
    mq.delete_queue(&queue).await.unwrap();
}

async fn a_dead_consumers_message_is_redelivered(provider: &str) {
    let (mq, queue) = with_queue(provider).await;
    mq.send(&queue, &json!({"i": 3})).await.unwrap();
    let doomed = connect(provider).await;
    let taken = receive_invisible_for(&doomed, &queue, 1, 1, Duration::from_secs(1)).await;
    assert_eq!(numbers(&taken), vec![3]);
    // The consumer dies without acking: its connection goes away, and for
    // PGMQ the visibility timeout runs out.
    doomed.close().await.unwrap();
    drop(doomed);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let back = loop {
        let got = mq.receive(&queue, 1, Duration::from_secs(30)).await.unwrap();
        if !got.is_empty() || std::time::Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!((numbers(&back), back[0].delivery_count), (vec![3], 2));
    mq.delete_queue(&queue).await.unwrap();
}

async fn concurrent_consumers_never_share_a_message(provider: &str) {
    let (mq, queue) = with_queue(provider).await;
    let payloads: Vec<Value> = (0..200).map(|i| json!({"i": i})).collect();
    mq.send_batch(&queue, &payloads).await.unwrap();
    let acked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut consumers = Vec::new();
    for _ in 0..4 {
        let (queue, acked) = (queue.clone(), acked.clone());
        let mq = connect(provider).await;
        consumers.push(tokio::spawn(async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            let mut seen = Vec::new();
            while acked.load(std::sync::atomic::Ordering::SeqCst) < 200 && std::time::Instant::now() < deadline {
                let got = mq.receive(&queue, 7, Duration::from_secs(30)).await.unwrap();
                for m in &got {
                    mq.ack(&queue, m.receipt).await.unwrap();
                }
                acked.fetch_add(got.len(), std::sync::atomic::Ordering::SeqCst);
                seen.extend(numbers(&got));
            }
            mq.close().await.unwrap();
            seen
        }));
    }
    let mut all = Vec::new();
    for c in consumers {
        all.extend(c.await.unwrap());
    }
    // Every message exactly once: none lost, none held by two at once.
    all.sort_unstable();
    assert_eq!(all, (0..200).collect::<Vec<_>>());
    mq.delete_queue(&queue).await.unwrap();
}

async fn poison_goes_to_the_dead_letter_store_then_purge_and_stats(provider: &str) {
    let (mq, queue) = with_queue(provider).await;
    mq.send_batch(&queue, &[json!({"i": 1}), json!({"i": 2}), json!({"i": 3})]).await.unwrap();
    let poison = receive_until(&mq, &queue, 1, 1).await;
    mq.dead_letter(&queue, poison[0].receipt).await.unwrap();
    assert_eq!(settled_stats(&mq, &queue, (2, 2)).await, (2, 2));
    assert_eq!(mq.purge_queue(&queue).await.unwrap(), 2);
    assert!(mq.receive(&queue, 10, Duration::from_secs(30)).await.unwrap().is_empty());
    assert_eq!(settled_stats(&mq, &queue, (0, 0)).await, (0, 0));
    mq.delete_queue(&queue).await.unwrap();
    // A deleted queue takes no more messages, and says so.
    let err = mq.send(&queue, &json!({"i": 4})).await.unwrap_err();
    assert!(err.to_string().contains(&format!("sending to queue {queue}")), "{err}");
}

async fn wakeups_fire_on_send(provider: &str) {
    let (mq, queue) = with_queue(provider).await;
    let wake = mq.wakeups(std::slice::from_ref(&queue)).await.unwrap();
    let sender = {
        let (mq, queue) = (mq.clone(), queue.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            mq.send(&queue, &json!({})).await.unwrap();
        })
    };
    let started = std::time::Instant::now();
    wake.wait(Duration::from_secs(20)).await;
    sender.await.unwrap();
    // Woken by the send (PGMQ: NOTIFY; RabbitMQ: the pushed delivery), long
    // before the 20 s fallback.
    assert!(started.elapsed() < Duration::from_secs(10), "woke after {:?}", started.elapsed());
    assert_eq!(receive_until(&mq, &queue, 1, 1).await.len(), 1);
    mq.delete_queue(&queue).await.unwrap();
}

async fn an_empty_queue_name_is_refused(provider: &str) {
    let mq = connect(provider).await;
    let err = mq.create_queue("").await.unwrap_err();
    assert_eq!(err.to_string(), "\"\" is not a valid queue name");
    assert!(mq.send("", &json!({})).await.is_err());
}

macro_rules! conformance {
    ($provider:ident) => {
        mod $provider {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn send_receive_ack() {
                super::send_receive_ack(stringify!($provider)).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn batch_send_keeps_order() {
                super::batch_send_keeps_order(stringify!($provider)).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn nack_redelivers() {
                super::nack_redelivers(stringify!($provider)).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn nack_with_delay_holds_the_message_back() {
                super::nack_with_delay_holds_the_message_back(stringify!($provider)).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_dead_consumers_message_is_redelivered() {
                super::a_dead_consumers_message_is_redelivered(stringify!($provider)).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_consumers_never_share_a_message() {
                super::concurrent_consumers_never_share_a_message(stringify!($provider)).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn an_empty_queue_name_is_refused() {
                super::an_empty_queue_name_is_refused(stringify!($provider)).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn wakeups_fire_on_send() {
                super::wakeups_fire_on_send(stringify!($provider)).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn poison_goes_to_the_dead_letter_store_then_purge_and_stats() {
                super::poison_goes_to_the_dead_letter_store_then_purge_and_stats(stringify!($provider)).await;
            }
        }
    };
}

conformance!(pgmq);
conformance!(rabbitmq);

/// RabbitMQ's prefetch (PGMQ has none: a receive takes what it asks for).
/// A consumer holds at most `prefetch` unacked deliveries; the rest go to
/// other consumers, and come back to the queue when it closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_prefetch_bounds_what_one_consumer_holds() {
    let (mq, queue) = with_queue("rabbitmq").await;
    let url = std::env::var("RABBITMQ_URL").unwrap_or_else(|_| RABBITMQ_URL.to_owned());
    let narrow: Arc<dyn MessagingService> = Arc::new(RabbitMqProvider::connect(&url, 2).await.unwrap());
    let payloads: Vec<Value> = (0..10).map(|i| json!({"i": i})).collect();
    mq.send_batch(&queue, &payloads).await.unwrap();
    let held = receive_until(&narrow, &queue, 10, 2).await;
    assert_eq!(numbers(&held), vec![0, 1]);
    assert!(narrow.receive(&queue, 10, Duration::from_secs(30)).await.unwrap().is_empty(), "prefetch is 2");
    let rest = receive_until(&mq, &queue, 10, 8).await;
    assert_eq!(numbers(&rest), (2..10).collect::<Vec<_>>());
    narrow.close().await.unwrap();
    let back = receive_until(&mq, &queue, 10, 2).await;
    assert_eq!((numbers(&back), back[0].delivery_count), (vec![0, 1], 2));
    mq.delete_queue(&queue).await.unwrap();
}

/// A RabbitMQ provider dropped without `close` (a Ruby client reconfigured
/// and collected, say) hands back what it had prefetched and not received.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_a_dropped_provider_gives_back_its_prefetched_deliveries() {
    let (mq, queue) = with_queue("rabbitmq").await;
    let url = std::env::var("RABBITMQ_URL").unwrap_or_else(|_| RABBITMQ_URL.to_owned());
    let dropped: Arc<dyn MessagingService> = Arc::new(RabbitMqProvider::connect(&url, 16).await.unwrap());
    mq.send_batch(&queue, &(0..5).map(|i| json!({"i": i})).collect::<Vec<_>>()).await.unwrap();
    assert_eq!(numbers(&receive_until(&dropped, &queue, 1, 1).await), vec![0]);
    drop(dropped);
    let back = receive_until(&mq, &queue, 10, 5).await;
    let mut got = numbers(&back);
    got.sort_unstable();
    assert_eq!(got, vec![0, 1, 2, 3, 4]);
    mq.delete_queue(&queue).await.unwrap();
}

/// A PGMQ provider on a pool of one connection, so the statements it
/// prepares are on the connection a test inspects, and a new queue.
async fn one_connection_pgmq() -> (Arc<tasker_core::Context>, Arc<dyn MessagingService>, String) {
    common::context().await; // migrated (that takes two connections)
    let ctx = common::context_with(json!({"max_connections": 1})).await;
    let mq = ctx.messaging().clone();
    let queue = common::unique_namespace("conf");
    mq.create_queue(&queue).await.unwrap();
    (ctx, mq, queue)
}

/// PGMQ's reads and acks find messages by key however the queue table's
/// statistics look. A queue vacuumed while empty looks free to scan whole,
/// and a prepared statement planned then used to keep scanning the whole
/// table (live and dead rows) on every call while the queue filled again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgmq_reads_and_acks_by_key_after_the_queue_was_vacuumed_empty() {
    let (ctx, mq, queue) = one_connection_pgmq().await;
    let batch: Vec<Value> = (0..200).map(|i| json!({"i": i})).collect();
    mq.send_batch(&queue, &batch).await.unwrap();
    let drained = receive_until(&mq, &queue, 200, 200).await;
    for m in &drained {
        mq.ack(&queue, m.receipt).await.unwrap();
    }
    sqlx::query(&format!("VACUUM (ANALYZE) pgmq.\"q_{queue}\"")).execute(ctx.pool()).await.unwrap();
    mq.send_batch(&queue, &batch[..3]).await.unwrap();
    let got = mq.receive(&queue, 1, Duration::from_secs(30)).await.unwrap();
    mq.ack(&queue, got[0].receipt).await.unwrap();

    let prepared: Vec<(String, String)> = sqlx::query_as(
        "SELECT name, statement FROM pg_prepared_statements \
          WHERE statement LIKE 'UPDATE pgmq.%' OR statement LIKE 'DELETE FROM pgmq.%' ORDER BY statement DESC",
    )
    .fetch_all(ctx.pool())
    .await
    .unwrap();
    let kinds: Vec<&str> = prepared.iter().map(|(_, sql)| &sql[..6]).collect();
    assert_eq!(kinds, vec!["UPDATE", "DELETE"], "the read and the ack are prepared statements");
    for (name, sql) in &prepared {
        let args = if sql.starts_with("UPDATE") { "(10, 30)" } else { "('{1}')" };
        let plan: Vec<String> =
            sqlx::query_scalar(&format!("EXPLAIN EXECUTE {name}{args}")).fetch_all(ctx.pool()).await.unwrap();
        let plan = plan.join("\n");
        assert!(!plan.contains("Seq Scan"), "{sql}\nscans the whole queue table:\n{plan}");
        assert!(plan.contains(&format!("Index Scan using q_{queue}_pkey")), "{sql}\n{plan}");
    }
    mq.delete_queue(&queue).await.unwrap();
}

/// A read commits without waiting for the disk (a lost read only makes its
/// messages visible again): the prepared read, run in a transaction, leaves
/// that transaction's commit asynchronous.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgmq_reads_commit_without_waiting_for_the_disk() {
    let (ctx, mq, queue) = one_connection_pgmq().await;
    mq.send_batch(&queue, &[json!({"i": 1}), json!({"i": 2})]).await.unwrap();
    let first = mq.receive(&queue, 1, Duration::from_secs(30)).await.unwrap();
    assert_eq!(first.len(), 1);

    let (name,): (String,) =
        sqlx::query_as("SELECT name FROM pg_prepared_statements WHERE statement LIKE $1 AND statement LIKE 'UPDATE %'")
            .bind(format!("%q_{queue}%"))
            .fetch_one(ctx.pool())
            .await
            .unwrap();
    let mut tx = ctx.pool().begin().await.unwrap();
    let before: String = sqlx::query_scalar("SHOW synchronous_commit").fetch_one(&mut *tx).await.unwrap();
    let read = sqlx::raw_sql(&format!("EXECUTE {name}(1, 30)")).fetch_all(&mut *tx).await.unwrap();
    assert_eq!(read.len(), 1, "the second message is read");
    let during: String = sqlx::query_scalar("SHOW synchronous_commit").fetch_one(&mut *tx).await.unwrap();
    assert_eq!(during, "off", "the read's transaction commits asynchronously");
    tx.rollback().await.unwrap();
    let after: String = sqlx::query_scalar("SHOW synchronous_commit").fetch_one(ctx.pool()).await.unwrap();
    assert_eq!(after, before, "only for the read's own transaction");
    mq.delete_queue(&queue).await.unwrap();
}
