//! The messaging abstraction: a provider trait, the tiny messages the
//! engine sends, and the router that names queues.

pub(crate) mod dead_letters;
mod pgmq;
mod rabbitmq;

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgConnection;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::db::notifications::Subscription;
use crate::error::Result;

pub use self::dead_letters::DeadLetter;
pub(crate) use self::pgmq::prune_archive;
pub use self::pgmq::PgmqProvider;
pub(crate) use self::pgmq::{Claimant, ClaimedMessage};
pub use self::rabbitmq::RabbitMqProvider;

/// A step to run: identifiers only; everything else is read from the
/// database by whoever receives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepMessage {
    pub task_uuid: Uuid,
    pub step_uuid: Uuid,
    pub correlation_id: Uuid,
    /// Its task's priority (-5..5): the queue's order (see `priority`).
    #[serde(default)]
    pub priority: i32,
}

/// A message that committed state promises and that could not be sent in
/// the committing transaction (queues outside PostgreSQL): the caller sends
/// it after commit, visible after `delay_ms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Outbox {
    pub(crate) queue: String,
    pub(crate) message: Value,
    #[serde(default)]
    pub(crate) delay_ms: i64,
}

/// A message taken from a queue, invisible to others until acked, nacked or
/// its visibility timeout passes.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedMessage {
    pub queue: String,
    /// The provider's handle for ack and nack.
    pub receipt: i64,
    /// How many times this message has been delivered, this time included.
    pub delivery_count: u32,
    pub payload: Value,
}

impl ReceivedMessage {
    /// The payload as a typed message; an error names the queue and receipt.
    pub fn decode<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_value(self.payload.clone()).map_err(|e| {
            crate::Error::new(
                crate::ErrorKind::Messaging,
                format!("message {} on queue {} is malformed: {e}", self.receipt, self.queue),
            )
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStats {
    pub queue: String,
    /// Messages in the queue, in flight or not.
    pub depth: i64,
    /// Messages a receive would get now.
    pub visible: i64,
    /// Messages ever sent to the queue, where the provider knows it.
    pub total_sent: Option<i64>,
    pub oldest_age_seconds: Option<i64>,
}

/// A queue transport. Every provider passes the same conformance tests.
#[async_trait]
pub trait MessagingService: Send + Sync + Debug {
    fn provider_name(&self) -> &'static str;

    /// Creates the queue if it does not exist.
    async fn create_queue(&self, queue: &str) -> Result<()>;
    async fn delete_queue(&self, queue: &str) -> Result<()>;
    /// Removes every message; returns how many.
    async fn purge_queue(&self, queue: &str) -> Result<u64>;

    /// Returns the provider's id for the message (PGMQ: its msg_id, which
    /// is also its receipt; RabbitMQ: a sequence number of this provider).
    async fn send(&self, queue: &str, payload: &Value) -> Result<i64>;
    async fn send_batch(&self, queue: &str, payloads: &[Value]) -> Result<Vec<i64>>;
    /// Sends a message that becomes visible only after `delay` (a retry's
    /// backoff): PGMQ sets its visibility time; RabbitMQ holds it in
    /// `<queue>.delay` until its TTL dead-letters it into the queue.
    async fn send_delayed(&self, queue: &str, payload: &Value, delay: Duration) -> Result<i64>;
    /// Up to `max` messages, each invisible to other receivers for
    /// `visibility_timeout` unless acked or nacked first.
    async fn receive(&self, queue: &str, max: u32, visibility_timeout: Duration) -> Result<Vec<ReceivedMessage>>;
    /// Done with the message: it is removed for good.
    async fn ack(&self, queue: &str, receipt: i64) -> Result<()>;
    /// Not done: the message becomes visible again after `delay`.
    async fn nack(&self, queue: &str, receipt: i64, delay: Duration) -> Result<()>;
    /// Keeps a message invisible for `visibility_timeout` from now, for work
    /// that runs long.
    async fn extend_visibility(&self, queue: &str, receipt: i64, visibility_timeout: Duration) -> Result<()>;
    /// Takes a message that can never be processed out of the queue and
    /// keeps it for inspection (PGMQ: the queue's archive table).
    async fn dead_letter(&self, queue: &str, receipt: i64) -> Result<()>;
    /// [`MessagingService::dead_letter`], keeping `reason` with the message.
    async fn dead_letter_because(&self, queue: &str, receipt: i64, reason: &str) -> Result<()>;
    /// The newest `limit` messages of the queue's dead-letter store (PGMQ:
    /// newest first; RabbitMQ: the store's first `limit`, left in it).
    async fn dead_letters(&self, queue: &str, limit: usize) -> Result<Vec<DeadLetter>>;
    /// How many messages the queue's dead-letter store holds.
    async fn dead_letter_count(&self, queue: &str) -> Result<i64>;
    /// Sends a dead letter to its queue again and removes it from the store
    /// (PGMQ: in one transaction). False when no such dead letter exists.
    async fn replay_dead_letter(&self, queue: &str, id: &str) -> Result<bool>;
    /// Removes a dead letter for good. False when no such dead letter exists.
    async fn discard_dead_letter(&self, queue: &str, id: &str) -> Result<bool>;
    async fn stats(&self, queue: &str) -> Result<QueueStats>;

    /// Whether the queues live in the engine's PostgreSQL database, so SQL
    /// functions can send inside the transaction that changes state.
    fn queues_in_database(&self) -> bool {
        false
    }

    /// The PGMQ provider, whose queues share the engine's database: a
    /// worker reads its queue and claims the steps in one statement (see
    /// `PgmqProvider::receive_and_claim`).
    fn as_pgmq(&self) -> Option<&PgmqProvider> {
        None
    }

    /// Sends inside the caller's PostgreSQL transaction, so the messages
    /// exist if and only if the transaction commits. Returns `None` when the
    /// provider's queues are not in PostgreSQL; the caller then sends after
    /// commit.
    async fn send_batch_in_transaction(
        &self,
        _conn: &mut PgConnection,
        _queue: &str,
        _payloads: &[Value],
    ) -> Result<Option<Vec<i64>>> {
        Ok(None)
    }

    /// Acks inside the caller's PostgreSQL transaction, so the messages are
    /// gone if and only if the transaction commits: one commit where there
    /// were two. Returns false when the provider's queues are not in
    /// PostgreSQL; the caller then acks after commit.
    async fn ack_in_transaction(&self, _conn: &mut PgConnection, _queue: &str, _receipts: &[i64]) -> Result<bool> {
        Ok(false)
    }

    /// A notifier woken when a message may have arrived on one of the
    /// queues. Wake-ups are hints: callers still poll on a timer, so a lost
    /// notification costs latency, never a message.
    async fn wakeups(&self, queues: &[String]) -> Result<Wakeups>;

    /// Releases this provider's connections. Messages it received and did
    /// not settle go back to their queues (PGMQ: when their visibility
    /// timeout passes; RabbitMQ: at once).
    async fn close(&self) -> Result<()> {
        Ok(())
    }
}

/// Wake-up hints for a set of queues; stops listening when dropped.
#[derive(Debug)]
pub struct Wakeups {
    notify: Arc<Notify>,
    pushed: bool,
    _listening: Option<Subscription>,
}

impl Wakeups {
    /// `pushed`: every new message wakes a waiter (or the next wait, if
    /// none waits yet), as opposed to hints that polling alone stands in
    /// for. A message that becomes visible again (a nack, an expired
    /// visibility timeout) may wake nobody and is found by polling.
    pub(crate) fn new(notify: Arc<Notify>, pushed: bool, listening: Option<Subscription>) -> Self {
        Self { notify, pushed, _listening: listening }
    }

    /// Whether a reader that found a queue drained can wait for the next
    /// arrival instead of reading again: true when arrivals are pushed.
    pub fn pushed(&self) -> bool {
        self.pushed
    }

    /// Waits for a hint or `max_wait`, whichever comes first.
    pub async fn wait(&self, max_wait: Duration) {
        let _ = tokio::time::timeout(max_wait, self.notify.notified()).await;
    }
}

/// Refuses a queue name no provider should create (an empty one, which
/// RabbitMQ would replace with a made-up name), the same for every provider.
pub(crate) fn check_queue_name(queue: &str) -> Result<()> {
    if queue.is_empty() {
        return Err(crate::error::Error::new(
            crate::ErrorKind::Messaging,
            format!("{queue:?} is not a valid queue name"),
        ));
    }
    Ok(())
}

/// Decodes a received message; one that cannot be decoded is a poison
/// message: it is logged and moved to the provider's dead-letter store (kept,
/// never dropped), and None is returned.
pub(crate) async fn decode_or_dead_letter<T: serde::de::DeserializeOwned>(
    messaging: &dyn MessagingService,
    message: &ReceivedMessage,
) -> Option<T> {
    match message.decode() {
        Ok(decoded) => Some(decoded),
        Err(error) => {
            // Both quote the payload, which may be megabytes: bounded.
            let (payload, error) = (message.payload.to_string(), error.to_string());
            let payload = crate::error::bounded(&payload, crate::error::MAX_LOGGED_PAYLOAD);
            let error = crate::error::bounded(&error, crate::error::MAX_LOGGED_PAYLOAD);
            tracing::error!(queue = message.queue, receipt = message.receipt, %payload,
                            %error, "poison message moved to the dead-letter store");
            crate::telemetry::metrics::dead_lettered(
                &message.queue,
                crate::telemetry::metrics::DeadLetterReason::Malformed,
            );
            let reason = format!("malformed: {error}");
            if let Err(e) = messaging.dead_letter_because(&message.queue, message.receipt, &reason).await {
                tracing::error!(error = %e, "dead-lettering a poison message failed");
            }
            None
        }
    }
}

/// Names the queues: one per namespace for steps, and the orchestration
/// queue, each behind the deployment's `messaging.queue_prefix`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageRouter {
    prefix: String,
}

impl MessageRouter {
    /// Requests to create tasks, from callers outside Ruby and Rust; read by
    /// orchestrators. This is the name without the prefix: see
    /// [`MessageRouter::task_requests`].
    pub const TASK_REQUESTS: &'static str = "orchestration_task_requests";

    pub fn new(prefix: impl Into<String>) -> Self {
        Self { prefix: prefix.into() }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The queue a namespace's steps are sent to.
    pub fn step_queue(&self, namespace: &str) -> String {
        format!("{}{namespace}_queue", self.prefix)
    }

    /// The namespace whose steps a queue carries (the inverse of
    /// [`MessageRouter::step_queue`]); None for another prefix's queue.
    pub fn namespace_of<'q>(&self, queue: &'q str) -> Option<&'q str> {
        queue.strip_prefix(self.prefix.as_str())?.strip_suffix("_queue")
    }

    /// The queue of task requests.
    pub fn task_requests(&self) -> String {
        format!("{}{}", self.prefix, Self::TASK_REQUESTS)
    }

    /// The queues the engine itself reads.
    pub fn orchestration_queues(&self) -> [String; 1] {
        [self.task_requests()]
    }
}

#[cfg(test)]
mod tests {
    use super::MessageRouter;

    #[test]
    fn every_queue_name_carries_the_prefix() {
        let plain = MessageRouter::default();
        assert_eq!(plain.step_queue("fulfillment"), "fulfillment_queue");
        assert_eq!(plain.task_requests(), "orchestration_task_requests");
        let ci = MessageRouter::new("ci7_");
        assert_eq!(ci.step_queue("fulfillment"), "ci7_fulfillment_queue");
        assert_eq!(ci.orchestration_queues(), ["ci7_orchestration_task_requests".to_owned()]);
        assert_eq!(ci.namespace_of("ci7_fulfillment_queue"), Some("fulfillment"));
        assert_eq!(ci.namespace_of("fulfillment_queue"), None);
    }
}
