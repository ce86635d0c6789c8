//! PGMQ's NOTIFY wake-ups (RabbitMQ readers poll, so this is not part of
//! the conformance suite).

mod common;

use std::time::Duration;

use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wakeups_fire_on_send() {
    let ctx = common::context().await;
    let mq = ctx.messaging().clone();
    let queue = common::unique_namespace("wake");
    mq.create_queue(&queue).await.unwrap();
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
