//! RabbitMQ's dead-letter store is `<queue>.dlq`. A message is
//! dead-lettered with its reason by publishing its body there with headers
//! (reason, time, an id) and then acking it; one the broker dead-lettered
//! itself (a reject through `<queue>.dlx`) has no reason and is known by
//! its message_id. Listing, replaying and discarding read the queue with
//! `basic.get` on a channel of their own; closing that channel gives back
//! every message not settled, in place.

use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel};
use serde_json::Value;

use super::{persistent, rabbit_error, RabbitMqProvider};
use crate::error::Result;
use crate::messaging::dead_letters::{AT_HEADER, ID_HEADER, REASON_HEADER};
use crate::messaging::{DeadLetter, MessagingService};

/// Deliveries of a message before a delayed nack republished it.
const DELIVERIES_HEADER: &str = "x-tasker-deliveries";

fn header<'a>(properties: &'a BasicProperties, key: &str) -> Option<&'a AMQPValue> {
    properties.headers().as_ref()?.inner().get(key)
}

fn header_text(properties: &BasicProperties, key: &str) -> Option<String> {
    match header(properties, key)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

fn header_count(properties: &BasicProperties) -> Option<u32> {
    let value = header(properties, DELIVERIES_HEADER)?;
    value.as_long_long_int().and_then(|n| u32::try_from(n).ok())
}

/// How many times the message was delivered before a delayed nack
/// republished it (0 for a message sent once).
pub(super) fn earlier_deliveries(properties: &BasicProperties) -> u32 {
    header_count(properties).unwrap_or(0)
}

pub(super) fn deliveries_header(deliveries: u32) -> FieldTable {
    let mut table = FieldTable::default();
    table.insert(ShortString::from(DELIVERIES_HEADER), AMQPValue::LongLongInt(i64::from(deliveries)));
    table
}

fn text(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

/// A dead letter's id: the one given when it was dead-lettered, else its
/// message_id.
fn letter_id(properties: &BasicProperties) -> String {
    header_text(properties, ID_HEADER)
        .or_else(|| properties.message_id().as_ref().map(|id| id.as_str().to_owned()))
        .unwrap_or_default()
}

fn letter(queue: &str, delivery: &Delivery) -> DeadLetter {
    let properties = &delivery.properties;
    DeadLetter {
        queue: queue.to_owned(),
        id: letter_id(properties),
        reason: header_text(properties, REASON_HEADER),
        delivery_count: header_count(properties).map(i64::from),
        enqueued_at: None,
        dead_lettered_at: header_text(properties, AT_HEADER)
            .and_then(|at| chrono::DateTime::parse_from_rfc3339(&at).ok())
            .map(|at| at.with_timezone(&chrono::Utc)),
        payload: serde_json::from_slice(&delivery.data)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&delivery.data).into_owned())),
    }
}

impl RabbitMqProvider {
    pub(super) async fn dead_letter_to_dlq(&self, queue: &str, receipt: i64, reason: &str) -> Result<()> {
        let held = self.take_held(queue, receipt)?;
        let mut headers = FieldTable::default();
        headers.insert(ShortString::from(REASON_HEADER), text(reason));
        headers.insert(ShortString::from(AT_HEADER), text(&chrono::Utc::now().to_rfc3339()));
        headers.insert(ShortString::from(ID_HEADER), text(&uuid::Uuid::now_v7().to_string()));
        headers.insert(ShortString::from(DELIVERIES_HEADER), AMQPValue::LongLongInt(i64::from(held.deliveries)));
        if let Err(e) = self.publish("", &format!("{queue}.dlq"), &held.data, persistent().with_headers(headers)).await
        {
            // Not kept anywhere else yet: back to its queue.
            let _ = held.acker.nack(BasicNackOptions { requeue: true, multiple: false }).await;
            return Err(e);
        }
        held.acker
            .ack(BasicAckOptions::default())
            .await
            .map_err(rabbit_error(format!("dead-lettering message {receipt} on queue {queue}")))?;
        Ok(())
    }

    async fn reading_channel(&self, queue: &str) -> Result<Channel> {
        let link = self.link().await?;
        link.connection.create_channel().await.map_err(rabbit_error(format!("reading the dead letters of {queue}")))
    }

    async fn get(&self, channel: &Channel, queue: &str) -> Result<Option<Delivery>> {
        let got = channel
            .basic_get(ShortString::from(format!("{queue}.dlq").as_str()), BasicGetOptions { no_ack: false })
            .await
            .map_err(rabbit_error(format!("reading the dead letters of {queue}")))?;
        Ok(got.map(|m| m.delivery))
    }

    pub(super) async fn list_dlq(&self, queue: &str, limit: usize) -> Result<Vec<DeadLetter>> {
        let channel = self.reading_channel(queue).await?;
        let mut letters = Vec::new();
        let read = async {
            while letters.len() < limit {
                match self.get(&channel, queue).await? {
                    Some(delivery) => letters.push(letter(queue, &delivery)),
                    None => break,
                }
            }
            Ok::<_, crate::Error>(())
        }
        .await;
        // Every message taken goes back, in place.
        let _ = channel.close(200, ShortString::from("listed")).await;
        read.map(|()| letters)
    }

    pub(super) async fn count_dlq(&self, queue: &str) -> Result<i64> {
        Ok(self.stats(&format!("{queue}.dlq")).await?.depth)
    }

    /// Finds the dead letter `id`; replays it (sends it to `queue`) or
    /// discards it, then acks it. Whatever else was read goes back.
    pub(super) async fn take_from_dlq(&self, queue: &str, id: &str, replay: bool) -> Result<bool> {
        let channel = self.reading_channel(queue).await?;
        let found = async {
            while let Some(delivery) = self.get(&channel, queue).await? {
                if letter_id(&delivery.properties) != id {
                    continue;
                }
                if replay {
                    self.send_raw(queue, &delivery.data).await?;
                }
                delivery
                    .acker
                    .ack(BasicAckOptions::default())
                    .await
                    .map_err(rabbit_error(format!("settling dead letter {id} of {queue}")))?;
                return Ok(true);
            }
            Ok::<_, crate::Error>(false)
        }
        .await;
        let _ = channel.close(200, ShortString::from("done")).await;
        found
    }

    async fn send_raw(&self, queue: &str, body: &[u8]) -> Result<()> {
        let priority = serde_json::from_slice::<Value>(body).ok().and_then(|p| crate::priority::rabbitmq_priority(&p));
        self.publish("", queue, body, super::with_priority(persistent(), priority)).await
    }
}
