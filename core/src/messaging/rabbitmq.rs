//! RabbitMQ through lapin: durable queues, persistent messages with
//! publisher confirms, manual acks, a dead-letter exchange and queue per
//! queue, and reconnection.
//!
//! Semantics that differ from PGMQ (the engine is correct under both):
//! - Push, not pull. The first `receive` (or `wakeups`) for a queue starts a
//!   consumer (`basic.consume`) with `basic.qos` prefetch: the broker pushes
//!   up to `prefetch` unacked deliveries to this provider, which buffers
//!   them; `receive` takes what has arrived (the first, which starts the
//!   consumer, waits up to [`SETTLE`] for the queue's first deliveries), and
//!   each delivery wakes the queue's readers at once. Buffered deliveries
//!   are invisible to other consumers, like held ones.
//! - No visibility timeout. A received message stays unacked, invisible to
//!   others, until this provider acks or nacks it or its connection closes
//!   (the process died, or the connection was lost): then the broker
//!   redelivers it at once. `extend_visibility` therefore has nothing to do.
//!   A worker that hangs while connected keeps its message; the engine's
//!   sweep recovers the step from its missing heartbeat instead.
//! - `delivery_count` counts a delayed nack's republished copy on from the
//!   deliveries before it (header `x-tasker-deliveries`); otherwise a
//!   redelivery (a requeue, a lost connection) counts as one more, however
//!   many there were (classic queues only carry a redelivered flag).
//! - A nack with a delay republishes the message to `<queue>.delay` with a
//!   per-message TTL; it dead-letters back into the queue when it expires.
//! - Sends cannot join a PostgreSQL transaction: the engine sends after
//!   commit.
//! - Stats know the messages ready in the broker and those this provider
//!   buffers or holds (not those other consumers hold), not a total ever
//!   sent. A purge removes ready and buffered messages: those received and
//!   not yet settled stay until settled.
//! - `send` returns a sequence number this provider assigns (carried as the
//!   message_id property); receipts are separate handles.
//! - Priorities: every queue is declared with `x-max-priority` 10, and a
//!   message whose payload has a `priority` (-5..5: a step message, its
//!   task's) is published with AMQP priority `priority + 5` (a delayed
//!   copy keeps it). The broker's priorities are strict; the engine's
//!   sweep ages them (see `tasker_raise_priorities`). Priorities apply to
//!   the messages waiting in the broker, not to those already pushed to a
//!   consumer (up to `prefetch` per queue).
//! - A queue declared earlier without `x-max-priority` cannot be declared
//!   again with it (PRECONDITION_FAILED): `create_queue` deletes it and
//!   declares it anew when it is empty and has no consumer (checked by the
//!   broker in the delete), and otherwise fails naming the queue and what
//!   to do.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    BasicRejectOptions, ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Acker, BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use serde_json::Value;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

mod dead_letters;

use super::{DeadLetter, MessagingService, QueueStats, ReceivedMessage, Wakeups};
use crate::config::redact_url;
use crate::error::{Error, ErrorKind, Result};

/// How long the `receive` that starts a queue's consumer waits for the
/// first deliveries, so that it does not report a full queue as empty.
const SETTLE: Duration = Duration::from_millis(50);

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
    /// Its delivery_count, carried on by a delayed nack's copy.
    deliveries: u32,
    /// Its AMQP priority, carried on by a delayed nack's copy.
    priority: Option<u8>,
}

/// A delivery pushed by the broker that no `receive` has taken yet.
struct Buffered {
    delivery: Delivery,
    generation: u64,
}

/// A running consumer of one queue, on the link of `generation`.
struct Consumer {
    generation: u64,
    tag: ShortString,
    task: JoinHandle<()>,
}

/// What consumer tasks share with the provider.
#[derive(Default)]
struct Inbox {
    buffered: Mutex<HashMap<String, VecDeque<Buffered>>>,
    /// Readers to wake per queue (see `wakeups`).
    watchers: Mutex<Vec<(Vec<String>, Weak<Notify>)>>,
    /// Woken on every delivery, for a `receive` waiting out [`SETTLE`].
    arrived: Notify,
}

impl Inbox {
    fn push(&self, queue: &str, buffered: Buffered) {
        self.buffered.lock().expect("buffer lock").entry(queue.to_owned()).or_default().push_back(buffered);
        self.wake(queue);
    }

    /// Wakes a `receive` waiting out [`SETTLE`] and the readers of `queue`.
    fn wake(&self, queue: &str) {
        self.arrived.notify_waiters();
        let mut watchers = self.watchers.lock().expect("watchers lock");
        watchers.retain(|(_, notify)| notify.strong_count() > 0);
        for (queues, notify) in watchers.iter() {
            if queues.iter().any(|q| q == queue) {
                if let Some(notify) = notify.upgrade() {
                    notify.notify_one();
                }
            }
        }
    }

    /// Takes up to `max` deliveries of the current link; older ones are back
    /// with the broker already and are dropped.
    fn take(&self, queue: &str, max: usize, generation: u64) -> Vec<Delivery> {
        let mut buffered = self.buffered.lock().expect("buffer lock");
        let Some(waiting) = buffered.get_mut(queue) else { return Vec::new() };
        waiting.retain(|b| b.generation == generation);
        let n = max.min(waiting.len());
        waiting.drain(..n).map(|b| b.delivery).collect()
    }

    fn count(&self, queue: &str, generation: u64) -> i64 {
        let buffered = self.buffered.lock().expect("buffer lock");
        let n = buffered.get(queue).map_or(0, |w| w.iter().filter(|b| b.generation == generation).count());
        i64::try_from(n).unwrap_or(i64::MAX)
    }
}

pub struct RabbitMqProvider {
    url: String,
    prefetch: u16,
    link: tokio::sync::Mutex<Option<Arc<Link>>>,
    generation: AtomicU64,
    held: Mutex<HashMap<i64, Held>>,
    inbox: Arc<Inbox>,
    consumers: tokio::sync::Mutex<HashMap<String, Consumer>>,
    next_receipt: AtomicI64,
    next_message_id: AtomicI64,
}

impl std::fmt::Debug for RabbitMqProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitMqProvider").field("url", &redact_url(&self.url)).finish()
    }
}

impl Drop for RabbitMqProvider {
    /// Stops the consumer tasks: each holds its channel open, and with it the
    /// deliveries prefetched for this provider. Once they are gone, lapin
    /// closes the channels and the connection, and the broker hands every
    /// unsettled delivery to another consumer.
    fn drop(&mut self) {
        for (_, consumer) in self.consumers.get_mut().drain() {
            consumer.task.abort();
        }
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

/// The arguments of a queue the engine reads: dead-lettering to `dlx`,
/// and priorities (see the module's notes).
fn queue_arguments(dlx: &str) -> FieldTable {
    let mut arguments = table(&[("x-dead-letter-exchange", dlx)]);
    arguments.insert(ShortString::from("x-max-priority"), AMQPValue::LongInt(i32::from(crate::priority::RABBITMQ_MAX)));
    arguments
}

/// Whether the broker refused a declaration because the queue exists with
/// other arguments.
fn precondition_failed(e: &lapin::Error) -> bool {
    use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(amqp)
        if matches!(amqp.kind(), AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED)))
}

/// Persistent properties with the payload's priority (a step message's).
fn properties_for(payload: &Value) -> BasicProperties {
    with_priority(persistent(), crate::priority::rabbitmq_priority(payload))
}

fn with_priority(properties: BasicProperties, priority: Option<u8>) -> BasicProperties {
    match priority {
        Some(priority) => properties.with_priority(priority),
        None => properties,
    }
}

/// What the broker's confirm of a message for `routing_key` says.
fn confirmed(routing_key: &str, confirm: &lapin::Confirmation) -> Result<()> {
    match confirm {
        lapin::Confirmation::Ack(Some(_)) => Err(Error::new(
            ErrorKind::Messaging,
            format!("sending to queue {routing_key}: no such queue (the message was returned)"),
        )),
        confirm if confirm.is_ack() => Ok(()),
        _ => Err(Error::new(
            ErrorKind::Messaging,
            format!("RabbitMQ refused a message for queue {routing_key} (negative confirm)"),
        )),
    }
}

impl RabbitMqProvider {
    /// Connects now, so a wrong URL or a stopped broker fails at start-up.
    /// `prefetch` bounds the unacked deliveries of each queue's consumer.
    pub async fn connect(url: &str, prefetch: u16) -> Result<Self> {
        let provider = Self {
            url: url.to_owned(),
            prefetch: prefetch.max(1),
            link: tokio::sync::Mutex::new(None),
            generation: AtomicU64::new(0),
            held: Mutex::new(HashMap::new()),
            inbox: Arc::new(Inbox::default()),
            consumers: tokio::sync::Mutex::new(HashMap::new()),
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
                Ok(confirm) => return confirmed(routing_key, &confirm),
                Err(e) => last = Some(e),
            }
        }
        Err(Error::messaging(format!("sending to queue {routing_key}"))(last.expect("an attempt failed")))
    }

    /// A message's id, body and properties (persistent, its priority).
    fn outgoing(&self, payload: &Value) -> (i64, Vec<u8>, BasicProperties) {
        let body = serde_json::to_vec(payload).expect("JSON serializes");
        let id = self.next_message_id.fetch_add(1, Ordering::SeqCst);
        let properties = properties_for(payload).with_message_id(ShortString::from(id.to_string().as_str()));
        (id, body, properties)
    }

    /// Starts a consumer of `queue` on `link` unless one runs there already.
    /// Its deliveries go to the inbox; it ends with its connection, or when
    /// the broker cancels it (the queue was deleted).
    /// Returns whether it started one.
    async fn ensure_consumer(&self, link: &Link, queue: &str) -> Result<bool> {
        let mut consumers = self.consumers.lock().await;
        if consumers.get(queue).is_some_and(|c| c.generation == link.generation && !c.task.is_finished()) {
            return Ok(false);
        }
        let doing = || format!("consuming queue {queue}");
        link.receiver
            .basic_qos(self.prefetch, BasicQosOptions { global: false })
            .await
            .map_err(rabbit_error(doing()))?;
        let mut stream = link
            .receiver
            .basic_consume(
                ShortString::from(queue),
                ShortString::from(""),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(rabbit_error(doing()))?;
        let (inbox, name, generation, tag) = (self.inbox.clone(), queue.to_owned(), link.generation, stream.tag());
        let task = tokio::spawn(async move {
            while let Some(delivery) = stream.next().await {
                match delivery {
                    Ok(delivery) => inbox.push(&name, Buffered { delivery, generation }),
                    Err(e) => {
                        tracing::warn!(queue = name, error = %e, "RabbitMQ consumer stopped; restarted on the next receive");
                        break;
                    }
                }
            }
            // Wake readers so they receive again, which restarts the consumer.
            inbox.wake(&name);
        });
        if let Some(old) = consumers.insert(queue.to_owned(), Consumer { generation, tag, task }) {
            old.task.abort();
        }
        Ok(true)
    }

    fn hold(&self, queue: &str, delivery: Delivery, generation: u64) -> ReceivedMessage {
        let receipt = self.next_receipt.fetch_add(1, Ordering::SeqCst);
        // A body that is not JSON arrives as a string, so the caller can
        // dead-letter it.
        let payload = serde_json::from_slice(&delivery.data)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&delivery.data).into_owned()));
        let earlier = dead_letters::earlier_deliveries(&delivery.properties);
        let delivery_count = earlier.saturating_add(if delivery.redelivered { 2 } else { 1 });
        let message = ReceivedMessage { queue: queue.to_owned(), receipt, delivery_count, payload };
        self.held.lock().expect("held lock").insert(
            receipt,
            Held {
                queue: queue.to_owned(),
                acker: delivery.acker,
                generation,
                priority: *delivery.properties.priority(),
                data: delivery.data,
                deliveries: delivery_count,
            },
        );
        message
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

    /// Declares the queue `queue` with [`queue_arguments`], each attempt on
    /// a channel of its own (a refused declaration closes its channel). A
    /// queue declared without priorities by an earlier version is deleted
    /// and declared again when it is empty and has no consumer (the broker
    /// checks both in the delete, so no message can be lost to a race);
    /// otherwise the error names the queue and what to do.
    async fn declare_with_priorities(&self, link: &Link, queue: &str, dlx: &str) -> Result<()> {
        let doing = || format!("creating queue {queue}");
        let declare = || async {
            let channel = link.connection.create_channel().await?;
            let declared = channel
                .queue_declare(ShortString::from(queue), QueueDeclareOptions::durable(), queue_arguments(dlx))
                .await;
            if declared.is_ok() {
                let _ = channel.close(200, ShortString::from("declared")).await;
            }
            declared.map(|_| ())
        };
        match declare().await {
            Ok(()) => return Ok(()),
            Err(e) if !precondition_failed(&e) => return Err(rabbit_error(doing())(e)),
            Err(_) => {}
        }
        let channel = link.connection.create_channel().await.map_err(rabbit_error(doing()))?;
        let only_if_idle = QueueDeleteOptions { if_unused: true, if_empty: true, nowait: false };
        if channel.queue_delete(ShortString::from(queue), only_if_idle).await.is_err() {
            let (messages, consumers) = match link.connection.create_channel().await {
                Ok(channel) => channel
                    .queue_declare(
                        ShortString::from(queue),
                        QueueDeclareOptions { passive: true, ..Default::default() },
                        FieldTable::default(),
                    )
                    .await
                    .map(|q| (q.message_count().to_string(), q.consumer_count().to_string()))
                    .unwrap_or_else(|_| ("?".to_owned(), "?".to_owned())),
                Err(_) => ("?".to_owned(), "?".to_owned()),
            };
            return Err(Error::new(
                ErrorKind::Messaging,
                format!(
                    "queue {queue} exists without priorities (no x-max-priority argument: it was declared by a \
                     tasker_core from before priorities) and holds {messages} messages with {consumers} consumers, \
                     so it cannot be replaced: stop the processes still running that version, let the queue drain, \
                     and start again (an empty, unused queue is replaced by itself), or delete it (rabbitmqctl \
                     delete_queue {queue}; the sweep sends the messages of its enqueued steps again after \
                     orchestration.stuck_enqueued_seconds)"
                ),
            ));
        }
        let _ = channel.close(200, ShortString::from("replaced")).await;
        declare().await.map_err(rabbit_error(doing()))?;
        tracing::warn!(
            queue,
            "queue declared again with priorities (x-max-priority 10): an earlier version had \
                               declared it without them; it was empty and unused"
        );
        Ok(())
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
        // An empty name would have the broker make one up.
        super::check_queue_name(queue)?;
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
        self.declare_with_priorities(&link, queue, &dlx).await?;
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
        if let Some(consumer) = self.consumers.lock().await.remove(queue) {
            consumer.task.abort();
        }
        self.inbox.buffered.lock().expect("buffer lock").remove(queue);
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
        let doing = || format!("purging queue {queue}");
        // Deliveries pushed to this provider and not received are still the
        // queue's messages. Cancelling the consumer first flushes those on
        // their way (the broker sends them before it confirms the cancel).
        let mut taken = 0;
        if let Some(consumer) = self.consumers.lock().await.remove(queue) {
            if consumer.generation == link.generation {
                link.receiver
                    .basic_cancel(consumer.tag, BasicCancelOptions::default())
                    .await
                    .map_err(rabbit_error(doing()))?;
                let _ = tokio::time::timeout(Duration::from_secs(5), consumer.task).await;
            } else {
                consumer.task.abort();
            }
            for delivery in self.inbox.take(queue, usize::MAX, link.generation) {
                delivery.acker.ack(BasicAckOptions::default()).await.map_err(rabbit_error(doing()))?;
                taken += 1;
            }
        }
        let purged = link
            .publisher
            .queue_purge(ShortString::from(queue), QueuePurgeOptions::default())
            .await
            .map_err(rabbit_error(doing()))?;
        Ok(u64::from(purged) + taken)
    }

    async fn send(&self, queue: &str, payload: &Value) -> Result<i64> {
        let (id, body, properties) = self.outgoing(payload);
        self.publish("", queue, &body, properties).await?;
        Ok(id)
    }

    /// Publishes every message, then waits for their confirms: the broker
    /// writes and confirms them together, where waiting for each confirm
    /// before the next publish cost a disk write per message (about 2 ms).
    /// A message whose publish or confirm failed for the connection is sent
    /// again on its own (see `publish`); one the broker refused fails the
    /// batch.
    async fn send_batch(&self, queue: &str, payloads: &[Value]) -> Result<Vec<i64>> {
        let link = self.link().await?;
        let mut published = Vec::with_capacity(payloads.len());
        for payload in payloads {
            let (id, body, properties) = self.outgoing(payload);
            let confirm = link
                .publisher
                .basic_publish(
                    ShortString::from(""),
                    ShortString::from(queue),
                    BasicPublishOptions { mandatory: true, ..Default::default() },
                    &body,
                    properties.clone(),
                )
                .await;
            published.push((id, body, properties, confirm));
        }
        let mut ids = Vec::with_capacity(payloads.len());
        for (id, body, properties, confirm) in published {
            let confirm = match confirm {
                Ok(confirm) => confirm.await,
                Err(e) => Err(e),
            };
            match confirm {
                Ok(confirm) => confirmed(queue, &confirm)?,
                Err(_) => self.publish("", queue, &body, properties).await?,
            }
            ids.push(id);
        }
        Ok(ids)
    }

    async fn send_delayed(&self, queue: &str, payload: &Value, delay: Duration) -> Result<i64> {
        if delay.is_zero() {
            return self.send(queue, payload).await;
        }
        let (id, body, properties) = self.outgoing(payload);
        let expiration = ShortString::from(delay.as_millis().max(1).to_string().as_str());
        let properties = properties.with_expiration(expiration);
        self.publish("", &format!("{queue}.delay"), &body, properties).await?;
        Ok(id)
    }

    async fn receive(&self, queue: &str, max: u32, _visibility_timeout: Duration) -> Result<Vec<ReceivedMessage>> {
        let link = self.link().await?;
        let arrived = self.inbox.arrived.notified();
        tokio::pin!(arrived);
        arrived.as_mut().enable();
        let started = self.ensure_consumer(&link, queue).await?;
        let max = usize::try_from(max).unwrap_or(usize::MAX);
        let mut deliveries = self.inbox.take(queue, max, link.generation);
        if deliveries.is_empty() && started {
            // A new consumer: what the queue holds is on its way.
            let _ = tokio::time::timeout(SETTLE, arrived).await;
            deliveries = self.inbox.take(queue, max, link.generation);
        }
        Ok(deliveries.into_iter().map(|d| self.hold(queue, d, link.generation)).collect())
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
        let properties = with_priority(persistent(), held.priority)
            .with_expiration(expiration)
            .with_headers(dead_letters::deliveries_header(held.deliveries));
        self.publish("", &format!("{queue}.delay"), &held.data, properties).await?;
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

    async fn dead_letter_because(&self, queue: &str, receipt: i64, reason: &str) -> Result<()> {
        self.dead_letter_to_dlq(queue, receipt, reason).await
    }

    async fn dead_letters(&self, queue: &str, limit: usize) -> Result<Vec<DeadLetter>> {
        self.list_dlq(queue, limit).await
    }

    async fn dead_letter_count(&self, queue: &str) -> Result<i64> {
        self.count_dlq(queue).await
    }

    async fn replay_dead_letter(&self, queue: &str, id: &str) -> Result<bool> {
        self.take_from_dlq(queue, id, true).await
    }

    async fn discard_dead_letter(&self, queue: &str, id: &str) -> Result<bool> {
        self.take_from_dlq(queue, id, false).await
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
        let visible = i64::from(declared.message_count()) + self.inbox.count(queue, link.generation);
        Ok(QueueStats {
            queue: queue.to_owned(),
            depth: visible + self.held_count(queue),
            visible,
            total_sent: None,
            oldest_age_seconds: None,
        })
    }

    async fn wakeups(&self, queues: &[String]) -> Result<Wakeups> {
        // Woken by each delivery pushed to this provider's consumers, which
        // start here so the first message wakes its reader too.
        let link = self.link().await?;
        for queue in queues {
            self.ensure_consumer(&link, queue).await?;
        }
        let notify = Arc::new(Notify::new());
        self.inbox.watchers.lock().expect("watchers lock").push((queues.to_vec(), Arc::downgrade(&notify)));
        Ok(Wakeups::new(notify, true, None))
    }

    async fn close(&self) -> Result<()> {
        if let Some(link) = self.link.lock().await.take() {
            for (_, consumer) in self.consumers.lock().await.drain() {
                consumer.task.abort();
            }
            self.inbox.buffered.lock().expect("buffer lock").clear();
            self.held.lock().expect("held lock").clear();
            link.connection.close(200, ShortString::from("closing")).await.map_err(rabbit_error("closing".into()))?;
        }
        Ok(())
    }
}
