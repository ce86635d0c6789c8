//! `TaskerCore::Native::MessageService`: queue operations on whichever
//! provider the client is configured with.

use std::sync::Arc;
use std::time::Duration;

use magnus::{function, method, prelude::*, Error, RModule, Ruby, Value};
use tasker_core::MessagingService;

use crate::client::{from_ruby, to_ruby, Client};
use crate::gvl;

#[magnus::wrap(class = "TaskerCore::Native::MessageService", free_immediately, size)]
struct MessageService {
    messaging: Arc<dyn MessagingService>,
    ctx: Arc<tasker_core::Context>,
}

fn seconds(s: f64) -> Duration {
    Duration::from_secs_f64(if s.is_finite() { s.max(0.0) } else { 0.0 })
}

impl MessageService {
    fn new(client: &Client) -> Self {
        Self { messaging: client.ctx().messaging().clone(), ctx: client.ctx().clone() }
    }

    fn provider(&self) -> &'static str {
        self.messaging.provider_name()
    }

    fn create_queue(&self, queue: String) -> Result<(), Error> {
        gvl::run(self.messaging.create_queue(&queue))
    }

    fn delete_queue(&self, queue: String) -> Result<(), Error> {
        gvl::run(self.messaging.delete_queue(&queue))
    }

    fn purge_queue(&self, queue: String) -> Result<u64, Error> {
        gvl::run(self.messaging.purge_queue(&queue))
    }

    fn send(ruby: &Ruby, rb_self: &Self, queue: String, payload: Value) -> Result<i64, Error> {
        let payload: serde_json::Value = from_ruby(ruby, payload)?;
        gvl::run(async { rb_self.ctx.send_message(&queue, &payload).await })
    }

    fn send_batch(ruby: &Ruby, rb_self: &Self, queue: String, payloads: Value) -> Result<Vec<i64>, Error> {
        let payloads: Vec<serde_json::Value> = from_ruby(ruby, payloads)?;
        gvl::run(async { rb_self.ctx.send_messages(&queue, &payloads).await })
    }

    /// Array of {"queue", "receipt", "delivery_count", "payload"}.
    fn receive(ruby: &Ruby, rb_self: &Self, queue: String, max: u32, visibility: f64) -> Result<Value, Error> {
        let messages = gvl::run(rb_self.messaging.receive(&queue, max, seconds(visibility)))?;
        let messages: Vec<serde_json::Value> = messages
            .into_iter()
            .map(|m| {
                serde_json::json!({
                    "queue": m.queue,
                    "receipt": m.receipt,
                    "delivery_count": m.delivery_count,
                    "payload": m.payload,
                })
            })
            .collect();
        to_ruby(ruby, &messages)
    }

    fn ack(&self, queue: String, receipt: i64) -> Result<(), Error> {
        gvl::run(self.messaging.ack(&queue, receipt))
    }

    fn nack(&self, queue: String, receipt: i64, delay: f64) -> Result<(), Error> {
        gvl::run(self.messaging.nack(&queue, receipt, seconds(delay)))
    }

    fn dead_letter(&self, queue: String, receipt: i64) -> Result<(), Error> {
        gvl::run(self.messaging.dead_letter(&queue, receipt))
    }

    /// Dead-letters with a reason kept beside the message.
    fn dead_letter_because(&self, queue: String, receipt: i64, reason: String) -> Result<(), Error> {
        gvl::run(self.messaging.dead_letter_because(&queue, receipt, &reason))
    }

    fn close(&self) -> Result<(), Error> {
        gvl::run(self.messaging.close())
    }

    fn stats(ruby: &Ruby, rb_self: &Self, queue: String) -> Result<Value, Error> {
        to_ruby(ruby, &gvl::run(rb_self.messaging.stats(&queue))?)
    }
}

pub(crate) fn init(ruby: &Ruby, native: RModule) -> Result<(), Error> {
    let class = native.define_class("MessageService", ruby.class_object())?;
    class.define_singleton_method("new", function!(MessageService::new, 1))?;
    class.define_method("provider", method!(MessageService::provider, 0))?;
    class.define_method("create_queue", method!(MessageService::create_queue, 1))?;
    class.define_method("delete_queue", method!(MessageService::delete_queue, 1))?;
    class.define_method("purge_queue", method!(MessageService::purge_queue, 1))?;
    class.define_method("send_message", method!(MessageService::send, 2))?;
    class.define_method("send_batch", method!(MessageService::send_batch, 2))?;
    class.define_method("receive", method!(MessageService::receive, 3))?;
    class.define_method("ack", method!(MessageService::ack, 2))?;
    class.define_method("nack", method!(MessageService::nack, 3))?;
    class.define_method("dead_letter", method!(MessageService::dead_letter, 2))?;
    class.define_method("dead_letter_because", method!(MessageService::dead_letter_because, 3))?;
    class.define_method("stats", method!(MessageService::stats, 1))?;
    class.define_method("close", method!(MessageService::close, 0))?;
    Ok(())
}
