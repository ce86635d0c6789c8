//! The messaging contract, run against the PGMQ provider on the real
//! PostgreSQL. Every provider must pass these same tests.

mod common;

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tasker_core::MessagingService;

async fn provider_with_queue() -> (Arc<dyn MessagingService>, String) {
    let ctx = common::context().await;
    let queue = common::unique_namespace("conf");
    let messaging = ctx.messaging().clone();
    messaging.create_queue(&queue).await.expect("create queue");
    // Creating again is fine.
    messaging.create_queue(&queue).await.expect("create queue twice");
    (messaging, queue)
}

#[tokio::test]
async fn send_receive_ack_round_trip() {
    let (mq, queue) = provider_with_queue().await;
    let sent = mq.send(&queue, &json!({"a": 1})).await.unwrap();
    let got = mq.receive(&queue, 10, Duration::from_secs(30)).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].receipt, sent);
    assert_eq!(got[0].payload, json!({"a": 1}));
    assert_eq!(got[0].delivery_count, 1);
    assert_eq!(got[0].queue, queue);
    // In flight: nobody else sees it.
    assert!(mq.receive(&queue, 10, Duration::from_secs(30)).await.unwrap().is_empty());
    mq.ack(&queue, sent).await.unwrap();
    let stats = mq.stats(&queue).await.unwrap();
    assert_eq!((stats.depth, stats.visible, stats.total_sent), (0, 0, 1));
    mq.delete_queue(&queue).await.unwrap();
}

#[tokio::test]
async fn batch_send_keeps_order() {
    let (mq, queue) = provider_with_queue().await;
    let payloads: Vec<_> = (0..5).map(|i| json!({"i": i})).collect();
    let ids = mq.send_batch(&queue, &payloads).await.unwrap();
    assert_eq!(ids.len(), 5);
    let got = mq.receive(&queue, 10, Duration::from_secs(30)).await.unwrap();
    let order: Vec<_> = got.iter().map(|m| m.payload["i"].as_i64().unwrap()).collect();
    assert_eq!(order, vec![0, 1, 2, 3, 4]);
    mq.delete_queue(&queue).await.unwrap();
}

#[tokio::test]
async fn nack_redelivers_and_counts_deliveries() {
    let (mq, queue) = provider_with_queue().await;
    mq.send(&queue, &json!({"n": 1})).await.unwrap();
    let first = mq.receive(&queue, 1, Duration::from_secs(30)).await.unwrap();
    mq.nack(&queue, first[0].receipt, Duration::ZERO).await.unwrap();
    let again = mq.receive(&queue, 1, Duration::from_secs(30)).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].receipt, first[0].receipt);
    assert_eq!(again[0].delivery_count, 2);
    mq.delete_queue(&queue).await.unwrap();
}

#[tokio::test]
async fn unacked_message_reappears_after_visibility_timeout() {
    let (mq, queue) = provider_with_queue().await;
    mq.send(&queue, &json!({"n": 1})).await.unwrap();
    let taken = mq.receive(&queue, 1, Duration::from_secs(1)).await.unwrap();
    assert_eq!(taken.len(), 1);
    // The consumer "dies": no ack. The message comes back.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let back = mq.receive(&queue, 1, Duration::from_secs(30)).await.unwrap();
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].receipt, taken[0].receipt);
    mq.delete_queue(&queue).await.unwrap();
}

#[tokio::test]
async fn concurrent_consumers_never_share_a_message() {
    let (mq, queue) = provider_with_queue().await;
    let payloads: Vec<_> = (0..200).map(|i| json!({"i": i})).collect();
    mq.send_batch(&queue, &payloads).await.unwrap();
    let mut consumers = Vec::new();
    for _ in 0..4 {
        let (mq, queue) = (mq.clone(), queue.clone());
        consumers.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            loop {
                let got = mq.receive(&queue, 7, Duration::from_secs(30)).await.unwrap();
                if got.is_empty() {
                    break seen;
                }
                for m in got {
                    mq.ack(&queue, m.receipt).await.unwrap();
                    seen.push(m.payload["i"].as_i64().unwrap());
                }
            }
        }));
    }
    let mut all = Vec::new();
    for c in consumers {
        all.extend(c.await.unwrap());
    }
    all.sort_unstable();
    assert_eq!(all, (0..200).collect::<Vec<_>>());
    mq.delete_queue(&queue).await.unwrap();
}

#[tokio::test]
async fn dead_letter_purge_and_stats() {
    let (mq, queue) = provider_with_queue().await;
    mq.send_batch(&queue, &[json!(1), json!(2), json!(3)]).await.unwrap();
    let poison = mq.receive(&queue, 1, Duration::from_secs(30)).await.unwrap();
    mq.dead_letter(&queue, poison[0].receipt).await.unwrap();
    let stats = mq.stats(&queue).await.unwrap();
    assert_eq!((stats.depth, stats.visible, stats.total_sent), (2, 2, 3));
    assert_eq!(mq.purge_queue(&queue).await.unwrap(), 2);
    assert!(mq.receive(&queue, 10, Duration::from_secs(30)).await.unwrap().is_empty());
    mq.delete_queue(&queue).await.unwrap();
}

#[tokio::test]
async fn wakeups_fire_on_send() {
    let (mq, queue) = provider_with_queue().await;
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
    // Woken by the notification, long before the 20 s fallback.
    assert!(started.elapsed() < Duration::from_secs(10), "woke after {:?}", started.elapsed());
    mq.delete_queue(&queue).await.unwrap();
}
