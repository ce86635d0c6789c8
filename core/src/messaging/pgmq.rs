//! PGMQ: queues as tables in the same PostgreSQL database. Sends can join
//! the caller's transaction; visibility timeouts give redelivery.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pgmq::PGMQueueExt;
use serde_json::Value;
use sqlx::postgres::PgListener;
use sqlx::{PgConnection, PgPool};
use tokio::sync::Notify;

use super::{MessagingService, QueueStats, ReceivedMessage, Wakeups};
use crate::db::queries;
use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct PgmqProvider {
    pool: PgPool,
    pgmq: Arc<PGMQueueExt>,
    notifications: bool,
}

impl PgmqProvider {
    /// `notifications`: whether `wakeups` listens for sends (else callers
    /// rely on polling alone).
    pub async fn new(pool: PgPool, notifications: bool) -> Self {
        let pgmq = PGMQueueExt::new_with_pool(pool.clone()).await;
        Self { pool, pgmq: Arc::new(pgmq), notifications }
    }
}

fn vt_seconds(d: Duration) -> i32 {
    // PGMQ counts whole seconds; round up so a short timeout is never zero.
    i32::try_from(d.as_millis().div_ceil(1000)).unwrap_or(i32::MAX).max(1)
}

#[async_trait]
impl MessagingService for PgmqProvider {
    fn provider_name(&self) -> &'static str {
        "pgmq"
    }

    fn queues_in_database(&self) -> bool {
        true
    }

    async fn create_queue(&self, queue: &str) -> Result<()> {
        self.pgmq.create(queue).await.map_err(Error::messaging(format!("creating queue {queue}")))?;
        queries::install_queue_notify_trigger(&self.pool, queue).await
    }

    async fn delete_queue(&self, queue: &str) -> Result<()> {
        self.pgmq.drop_queue(queue).await.map_err(Error::messaging(format!("deleting queue {queue}")))
    }

    async fn purge_queue(&self, queue: &str) -> Result<u64> {
        let n = self.pgmq.purge_queue(queue).await.map_err(Error::messaging(format!("purging queue {queue}")))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn send(&self, queue: &str, payload: &Value) -> Result<i64> {
        self.pgmq.send(queue, payload).await.map_err(Error::messaging(format!("sending to queue {queue}")))
    }

    async fn send_batch(&self, queue: &str, payloads: &[Value]) -> Result<Vec<i64>> {
        if payloads.is_empty() {
            return Ok(Vec::new());
        }
        self.pgmq
            .send_batch(queue, payloads)
            .await
            .map_err(Error::messaging(format!("sending {} messages to queue {queue}", payloads.len())))
    }

    async fn receive(&self, queue: &str, max: u32, visibility_timeout: Duration) -> Result<Vec<ReceivedMessage>> {
        let qty = i32::try_from(max).unwrap_or(i32::MAX);
        let messages = self
            .pgmq
            .read_batch::<Value>(queue, vt_seconds(visibility_timeout), qty)
            .await
            .map_err(Error::messaging(format!("receiving from queue {queue}")))?;
        Ok(messages
            .into_iter()
            .map(|m| ReceivedMessage {
                queue: queue.to_owned(),
                receipt: m.msg_id,
                delivery_count: u32::try_from(m.read_ct).unwrap_or(0),
                payload: m.message,
            })
            .collect())
    }

    async fn ack(&self, queue: &str, receipt: i64) -> Result<()> {
        let deleted = self
            .pgmq
            .delete(queue, receipt)
            .await
            .map_err(Error::messaging(format!("acking message {receipt} on queue {queue}")))?;
        if deleted {
            Ok(())
        } else {
            Err(Error::new(
                crate::ErrorKind::Messaging,
                format!("message {receipt} on queue {queue} is not in the queue (already acked)"),
            ))
        }
    }

    async fn nack(&self, queue: &str, receipt: i64, delay: Duration) -> Result<()> {
        let secs = i32::try_from(delay.as_secs()).unwrap_or(i32::MAX);
        self.pgmq
            .set_vt::<Value>(queue, receipt, secs)
            .await
            .map_err(Error::messaging(format!("nacking message {receipt} on queue {queue}")))?;
        Ok(())
    }

    async fn extend_visibility(&self, queue: &str, receipt: i64, visibility_timeout: Duration) -> Result<()> {
        self.pgmq
            .set_vt::<Value>(queue, receipt, vt_seconds(visibility_timeout))
            .await
            .map_err(Error::messaging(format!("extending message {receipt} on queue {queue}")))?;
        Ok(())
    }

    async fn dead_letter(&self, queue: &str, receipt: i64) -> Result<()> {
        self.pgmq
            .archive(queue, receipt)
            .await
            .map_err(Error::messaging(format!("archiving message {receipt} on queue {queue}")))?;
        Ok(())
    }

    async fn stats(&self, queue: &str) -> Result<QueueStats> {
        queries::pgmq_queue_stats(&self.pool, queue).await
    }

    async fn ack_in_transaction(&self, conn: &mut PgConnection, queue: &str, receipts: &[i64]) -> Result<bool> {
        queries::delete_messages(conn, queue, receipts).await?;
        Ok(true)
    }

    async fn send_batch_in_transaction(
        &self,
        conn: &mut PgConnection,
        queue: &str,
        payloads: &[Value],
    ) -> Result<Option<Vec<i64>>> {
        if payloads.is_empty() {
            return Ok(Some(Vec::new()));
        }
        let ids = self
            .pgmq
            .send_batch_with_cxn(queue, payloads, &mut *conn)
            .await
            .map_err(Error::messaging(format!("sending {} messages to queue {queue}", payloads.len())))?;
        Ok(Some(ids))
    }

    async fn wakeups(&self, queues: &[String]) -> Result<Wakeups> {
        if !self.notifications {
            return Ok(Wakeups::new(Arc::new(Notify::new()), None));
        }
        let mut listener =
            PgListener::connect_with(&self.pool).await.map_err(Error::db("connecting a LISTEN session"))?;
        let channels: Vec<String> = queues.iter().map(|q| queries::queue_channel(q)).collect();
        listener
            .listen_all(channels.iter().map(String::as_str))
            .await
            .map_err(Error::db(format!("listening on {}", channels.join(", "))))?;
        let notify = Arc::new(Notify::new());
        let waker = notify.clone();
        let task = tokio::spawn(async move {
            loop {
                if let Err(e) = listener.recv().await {
                    // PgListener reconnects on the next recv; polling covers
                    // the gap.
                    tracing::warn!(error = %e, "queue notification listener lost its connection");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                waker.notify_one();
            }
        });
        Ok(Wakeups::new(notify, Some(task)))
    }
}
