//! RabbitMQ restarting under a running workflow. In a test binary of its
//! own: while the broker is down, every RabbitMQ test in the same process
//! would see it down too.

mod common;

use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflows_survive_a_broker_restart() {
    common::rabbitmq_workflows_survive("restart", || async {
        common::rabbitmqctl(&["stop_app"]).await;
        // Down long enough for every process to notice and fail a send.
        tokio::time::sleep(Duration::from_secs(2)).await;
        common::rabbitmqctl(&["start_app"]).await;
    })
    .await;
}
