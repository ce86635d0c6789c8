//! Dead letters: messages that will never be processed, kept with the
//! reason in the queue's dead-letter store (PGMQ: the queue's archive
//! table, the reason in the row's headers; RabbitMQ: `<queue>.dlq`, the
//! reason in a message header), where an operator lists, replays or
//! discards them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{MessagingService, ReceivedMessage};

/// The header (PGMQ: key of the archive row's headers) naming why a message
/// was dead-lettered.
pub(crate) const REASON_HEADER: &str = "x-tasker-dead-letter-reason";
/// When it was dead-lettered (RFC 3339).
pub(crate) const AT_HEADER: &str = "x-tasker-dead-lettered-at";
/// RabbitMQ: the dead letter's id, for replay and discard.
pub(crate) const ID_HEADER: &str = "x-tasker-dead-letter-id";

/// A message in a dead-letter store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The queue it was taken from (and goes back to on replay).
    pub queue: String,
    /// Its id in the store, for [`MessagingService::replay_dead_letter`] and
    /// [`MessagingService::discard_dead_letter`].
    pub id: String,
    /// Why it was dead-lettered; None for one dead-lettered before reasons
    /// were kept (or by hand).
    pub reason: Option<String>,
    /// Deliveries before it was dead-lettered, where the provider knows.
    pub delivery_count: Option<i64>,
    pub enqueued_at: Option<DateTime<Utc>>,
    pub dead_lettered_at: Option<DateTime<Utc>>,
    pub payload: Value,
}

/// Dead-letters, with the reason, every message delivered more than
/// `max_receive_count` times (a message that keeps coming back: its
/// processing fails before it can be settled), and returns the others.
pub(crate) async fn drop_overdelivered(
    messaging: &dyn MessagingService,
    max_receive_count: u32,
    messages: Vec<ReceivedMessage>,
) -> Vec<ReceivedMessage> {
    if messages.iter().all(|m| m.delivery_count <= max_receive_count) {
        return messages;
    }
    let mut kept = Vec::with_capacity(messages.len());
    for message in messages {
        if message.delivery_count <= max_receive_count {
            kept.push(message);
            continue;
        }
        let reason = format!(
            "delivered {} times, more than messaging.max_receive_count ({max_receive_count})",
            message.delivery_count
        );
        let payload = message.payload.to_string();
        let payload = crate::error::bounded(&payload, crate::error::MAX_LOGGED_PAYLOAD);
        tracing::error!(queue = message.queue, receipt = message.receipt, %payload, reason,
                        "message moved to the dead-letter store");
        crate::telemetry::metrics::dead_lettered(
            &message.queue,
            crate::telemetry::metrics::DeadLetterReason::MaxReceives,
        );
        if let Err(e) = messaging.dead_letter_because(&message.queue, message.receipt, &reason).await {
            tracing::error!(queue = message.queue, error = %e, "dead-lettering an over-delivered message failed");
        }
    }
    kept
}
