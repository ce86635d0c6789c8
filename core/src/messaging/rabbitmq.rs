//! RabbitMQ through lapin: durable queues, persistent messages with
//! publisher confirms, manual acks, a dead-letter exchange and queue per
//! queue, and reconnection.
//!
//! Semantics that differ from PGMQ (the engine is correct under both):
//! - No visibility timeout. A received message stays unacked, invisible to
//!   others, until this provider acks or nacks it or its connection closes
//!   (the process died, or the connection was lost): then the broker
//!   redelivers it at once. `extend_visibility` therefore has nothing to do.
//!   A worker that hangs while connected keeps its message; the engine's
//!   sweep recovers the step from its missing heartbeat instead.
//! - `delivery_count` is 1, or 2 for any redelivery (classic queues only
//!   carry a redelivered flag).
//! - A nack with a delay republishes the message to `<queue>.delay` with a
//!   per-message TTL; it dead-letters back into the queue when it expires.
//! - Sends cannot join a PostgreSQL transaction: the engine sends after
//!   commit.
//! - Stats know the messages ready in the broker and those this provider
//!   holds, not a total ever sent. A purge removes ready messages only:
//!   those held unacked by a consumer stay until settled.
//! - `send` returns a sequence number this provider assigns (carried as the
//!   message_id property); receipts are separate handles.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions, BasicRejectOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
    QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Acker, BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use serde_json::Value;
use tokio::sync::Notify;

use super::{MessagingService, QueueStats, ReceivedMessage, Wakeups};
use crate::config::redact_url;
use crate::error::{Error, ErrorKind, Result};

/// One connection with a confirming publisher channel and a channel for
/// receiving; replaced whole when either breaks.
struct Link {
    connection: Connection,
    publisher: Channel,
    receiver: Channel,
    generation: u64,
}

/// A delivery this provider holds until it acks, nacks or rejects it.
struct Held {
    queue: String,
    acker: Acker,
    generation: u64,
    data: Vec<u8>,
}

pub struct RabbitMqProvider {
    url: String,
    link: tokio::sync::Mutex<Option<Arc<Link>>>,
    generation: AtomicU64,
    held: Mutex<HashMap<i64, Held>>,
    next_receipt: AtomicI64,
    next_message_id: AtomicI64,
}

impl std::fmt::Debug for RabbitMqProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitMqProvider").field("url", &redact_url(&self.url)).finish()
    }
}

fn rabbit_error(doing: String) -> impl FnOnce(lapin::Error) -> Error {
    Error::messaging(doing)
}

fn table(entries: &[(&str, &str)]) -> FieldTable {
    let mut table = FieldTable::default();
    for (key, value) in entries {
        table.insert(ShortString::from(*key), AMQPValue::LongString(LongString::from(*value)));
    }
    table
}

impl RabbitMqProvider {
    /// Connects now, so a wrong URL or a stopped broker fails at start-up.
    pub async fn connect(url: &str) -> Result<Self> {
        let provider = Self {
            url: url.to_owned(),
            link: tokio::sync::Mutex::new(None),
            generation: AtomicU64::new(0),
            held: Mutex::new(HashMap::new()),
            next_receipt: AtomicI64::new(1),
            next_message_id: AtomicI64::new(1),
        };
        provider.link().await?;
        Ok(provider)
    }

    /// The current link, reconnecting when the last one broke.
    async fn link(&self) -> Result<Arc<Link>> {
        let mut slot = self.link.lock().await;
        if let Some(link) = slot.as_ref() {
            let alive = link.connection.status().connected()
                && link.publisher.status().connected()
                && link.receiver.status().connected();
            if alive {
                return Ok(link.clone());
            }
            tracing::warn!(url = redact_url(&self.url), "RabbitMQ connection lost; reconnecting");
        }
        let connection = Connection::connect(&self.url, ConnectionProperties::default()).await.map_err(|e| {
            Error::with_source(
                ErrorKind::Messaging,
                format!(
                    "cannot connect to RabbitMQ at {}: {e} (is it running? rabbitmq-server -detached)",
                    redact_url(&self.url)
                ),
                e,
            )
        })?;
        let publisher = connection.create_channel().await.map_err(rabbit_error("opening a channel".into()))?;
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(rabbit_error("enabling publisher confirms".into()))?;
        let receiver = connection.create_channel().await.map_err(rabbit_error("opening a channel".into()))?;
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        // Deliveries held on the old connection are back with the broker.
        self.held.lock().expect("held lock").retain(|_, h| h.generation == generation);
        let link = Arc::new(Link { connection, publisher, receiver, generation });
        *slot = Some(link.clone());
        Ok(link)
    }

    async fn publish(&self, exchange: &str, routing_key: &str, body: &[u8], properties: BasicProperties) -> Result<()> {
        // One retry on a fresh connection: a message is never dropped for a
        // connection that broke between two sends.
        let mut last = None;
        for _ in 0..2 {
            let link = self.link().await?;
            let attempt = async {
                let confirm = link
                    .publisher
                    .basic_publish(
                        ShortString::from(exchange),
                        ShortString::from(routing_key),
                        // Mandatory: a message no queue takes comes back,
                        // instead of vanishing.
                        BasicPublishOptions { mandatory: true, ..Default::default() },
                        body,
                        properties.clone(),
                    )
                    .await?
                    .await?;
                Ok::<_, lapin::Error>(confirm)
            }
            .await;
            match attempt {
                Ok(lapin::Confirmation::Ack(Some(_))) => {
                    return Err(Error::new(
                        ErrorKind::Messaging,
                        format!("sending to queue {routing_key}: no such queue (the message was returned)"),
                    ))
                }
                Ok(confirm) if confirm.is_ack() => return Ok(()),
                Ok(_) => {
                    return Err(Error::new(
                        ErrorKind::Messaging,
                        format!("RabbitMQ refused a message for queue {routing_key} (negative confirm)"),
                    ))
                }
                Err(e) => last = Some(e),
            }
        }
        Err(Error::messaging(format!("sending to queue {routing_key}"))(last.expect("an attempt failed")))
    }

    fn take_held(&self, queue: &str, receipt: i64) -> Result<Held> {
        let held = self.held.lock().expect("held lock").remove(&receipt);
        let current = self.generation.load(Ordering::SeqCst);
        match held {
            Some(h) if h.generation == current && h.queue == queue => Ok(h),
            Some(h) if h.queue != queue => Err(Error::new(
                ErrorKind::Messaging,
                format!("message {receipt} was received from queue {}, not {queue}", h.queue),
            )),
            _ => Err(Error::new(
                ErrorKind::Messaging,
                format!(
                    "message {receipt} on queue {queue} is not held by this consumer (already settled, or its \
                     connection was lost and the broker redelivers it)"
                ),
            )),
        }
    }

    fn held_count(&self, queue: &str) -> i64 {
        let held = self.held.lock().expect("held lock");
        i64::try_from(held.values().filter(|h| h.queue == queue).count()).unwrap_or(i64::MAX)
    }
}

fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2).with_content_type(ShortString::from("application/json"))
}

#[async_trait]
impl MessagingService for RabbitMqProvider {
    fn provider_name(&self) -> &'static str {
        "rabbitmq"
    }

    async fn create_queue(&self, queue: &str) -> Result<()> {
        let link = self.link().await?;
        let ch = &link.publisher;
        let (dlx, dlq, delay) = (format!("{queue}.dlx"), format!("{queue}.dlq"), format!("{queue}.delay"));
        let doing = |what: &str| format!("creating queue {queue} ({what})");
        ch.exchange_declare(
            ShortString::from(dlx.as_str()),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions { durable: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .map_err(rabbit_error(doing("dead-letter exchange")))?;
        ch.queue_declare(ShortString::from(dlq.as_str()), QueueDeclareOptions::durable(), FieldTable::default())
            .await
            .map_err(rabbit_error(doing("dead-letter queue")))?;
        ch.queue_bind(
            ShortString::from(dlq.as_str()),
            ShortString::from(dlx.as_str()),
            ShortString::from(""),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(rabbit_error(doing("binding the dead-letter queue")))?;
        ch.queue_declare(
            ShortString::from(queue),
            QueueDeclareOptions::durable(),
            table(&[("x-dead-letter-exchange", dlx.as_str())]),
        )
        .await
        .map_err(rabbit_error(doing("queue")))?;
        ch.queue_declare(
            ShortString::from(delay.as_str()),
            QueueDeclareOptions::durable(),
            table(&[("x-dead-letter-exchange", ""), ("x-dead-letter-routing-key", queue)]),
        )
        .await
        .map_err(rabbit_error(doing("delay queue")))?;
        Ok(())
    }

    async fn delete_queue(&self, queue: &str) -> Result<()> {
        let link = self.link().await?;
        for name in [queue.to_owned(), format!("{queue}.dlq"), format!("{queue}.delay")] {
            link.publisher
                .queue_delete(ShortString::from(name.as_str()), QueueDeleteOptions::default())
                .await
                .map_err(rabbit_error(format!("deleting queue {name}")))?;
        }
        link.publisher
            .exchange_delete(ShortString::from(format!("{queue}.dlx").as_str()), ExchangeDeleteOptions::default())
            .await
            .map_err(rabbit_error(format!("deleting exchange {queue}.dlx")))?;
        Ok(())
    }

    async fn purge_queue(&self, queue: &str) -> Result<u64> {
        let link = self.link().await?;
        let purged = link
            .publisher
            .queue_purge(ShortString::from(queue), QueuePurgeOptions::default())
            .await
            .map_err(rabbit_error(format!("purging queue {queue}")))?;
        Ok(u64::from(purged))
    }

    async fn send(&self, queue: &str, payload: &Value) -> Result<i64> {
        let body = serde_json::to_vec(payload).expect("JSON serializes");
        let id = self.next_message_id.fetch_add(1, Ordering::SeqCst);
        self.publish("", queue, &body, persistent().with_message_id(ShortString::from(id.to_string().as_str())))
            .await?;
        Ok(id)
    }

    async fn send_batch(&self, queue: &str, payloads: &[Value]) -> Result<Vec<i64>> {
        let mut ids = Vec::with_capacity(payloads.len());
        for payload in payloads {
            ids.push(self.send(queue, payload).await?);
        }
        Ok(ids)
    }

    async fn receive(&self, queue: &str, max: u32, _visibility_timeout: Duration) -> Result<Vec<ReceivedMessage>> {
        let link = self.link().await?;
        let mut messages = Vec::new();
        for _ in 0..max {
            let got = link
                .receiver
                .basic_get(ShortString::from(queue), BasicGetOptions { no_ack: false })
                .await
                .map_err(rabbit_error(format!("receiving from queue {queue}")))?;
            let Some(got) = got else { break };
            let delivery = got.delivery;
            let receipt = self.next_receipt.fetch_add(1, Ordering::SeqCst);
            // A body that is not JSON arrives as a string, so the caller
            // can dead-letter it.
            let payload = serde_json::from_slice(&delivery.data)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&delivery.data).into_owned()));
            messages.push(ReceivedMessage {
                queue: queue.to_owned(),
                receipt,
                delivery_count: if delivery.redelivered { 2 } else { 1 },
                payload,
            });
            self.held.lock().expect("held lock").insert(
                receipt,
                Held {
                    queue: queue.to_owned(),
                    acker: delivery.acker,
                    generation: link.generation,
                    data: delivery.data,
                },
            );
        }
        Ok(messages)
    }

    async fn ack(&self, queue: &str, receipt: i64) -> Result<()> {
        let held = self.take_held(queue, receipt)?;
        held.acker
            .ack(BasicAckOptions::default())
            .await
            .map_err(rabbit_error(format!("acking message {receipt} on queue {queue}")))?;
        Ok(())
    }

    async fn nack(&self, queue: &str, receipt: i64, delay: Duration) -> Result<()> {
        let held = self.take_held(queue, receipt)?;
        if delay.is_zero() {
            held.acker
                .nack(BasicNackOptions { requeue: true, multiple: false })
                .await
                .map_err(rabbit_error(format!("nacking message {receipt} on queue {queue}")))?;
            return Ok(());
        }
        let expiration = ShortString::from(delay.as_millis().max(1).to_string().as_str());
        self.publish("", &format!("{queue}.delay"), &held.data, persistent().with_expiration(expiration)).await?;
        held.acker
            .ack(BasicAckOptions::default())
            .await
            .map_err(rabbit_error(format!("nacking message {receipt} on queue {queue}")))?;
        Ok(())
    }

    async fn extend_visibility(&self, queue: &str, receipt: i64, _visibility_timeout: Duration) -> Result<()> {
        // Unacked messages stay held for as long as the connection lives.
        let held = self.held.lock().expect("held lock");
        match held.get(&receipt) {
            Some(h) if h.queue == queue => Ok(()),
            _ => Err(Error::new(
                ErrorKind::Messaging,
                format!("message {receipt} on queue {queue} is not held by this consumer"),
            )),
        }
    }

    async fn dead_letter(&self, queue: &str, receipt: i64) -> Result<()> {
        let held = self.take_held(queue, receipt)?;
        held.acker
            .reject(BasicRejectOptions { requeue: false })
            .await
            .map_err(rabbit_error(format!("dead-lettering message {receipt} on queue {queue}")))?;
        Ok(())
    }

    async fn stats(&self, queue: &str) -> Result<QueueStats> {
        let link = self.link().await?;
        let declared = link
            .receiver
            .queue_declare(
                ShortString::from(queue),
                QueueDeclareOptions { passive: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .map_err(rabbit_error(format!("reading stats of queue {queue}")));
        let declared = match declared {
            Ok(declared) => declared,
            Err(e) => {
                // A failed passive declare closes the channel; reopen it.
                drop(link);
                *self.link.lock().await = None;
                return Err(e);
            }
        };
        let ready = i64::from(declared.message_count());
        Ok(QueueStats {
            queue: queue.to_owned(),
            depth: ready + self.held_count(queue),
            visible: ready,
            total_sent: None,
            oldest_age_seconds: None,
        })
    }

    async fn wakeups(&self, _queues: &[String]) -> Result<Wakeups> {
        // Readers of RabbitMQ queues poll (`poll_interval_ms`).
        Ok(Wakeups::new(Arc::new(Notify::new()), None))
    }

    async fn close(&self) -> Result<()> {
        if let Some(link) = self.link.lock().await.take() {
            self.held.lock().expect("held lock").clear();
            link.connection.close(200, ShortString::from("closing")).await.map_err(rabbit_error("closing".into()))?;
        }
        Ok(())
    }
}
