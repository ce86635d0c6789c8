//! The orchestrator: small components, one per lifecycle concern, started
//! in order and stopped in reverse.
//!
//! - `step_enqueuer`: moves ready steps to `enqueued`, sends their messages
//!   and finalizes the task, in one transaction (used at creation too).
//! - `result_processor`: reads `orchestration_step_results` and advances the
//!   task each result belongs to.
//! - `creation_publisher` (queues outside PostgreSQL only): sends a new
//!   task's first messages once its creating transaction commits.
//! - `sweeper`: advances tasks whose steps' retry backoff elapsed, and
//!   recovers steps whose worker died or whose message was lost.

mod backoff;
mod creation_publisher;
mod result_processor;
pub(crate) mod step_enqueuer;
mod sweeper;

use std::sync::Arc;
use std::time::Duration;

use crate::context::Context;
use crate::error::Result;
use crate::lifecycle::Lifecycle;

pub use backoff::backoff_delay;

/// A running orchestrator. Any number may run against one database.
#[derive(Debug)]
pub struct OrchestratorHandle {
    lifecycle: Lifecycle,
}

impl OrchestratorHandle {
    pub async fn start(ctx: Arc<Context>) -> Result<Self> {
        let lifecycle = Lifecycle::new();
        let results = result_processor::ResultProcessor::new(ctx.clone()).await?;
        lifecycle.spawn("result_processor", move |stop| results.run(stop));
        if !ctx.messaging().queues_in_database() {
            let publisher = creation_publisher::CreationPublisher::new(ctx.clone()).await?;
            lifecycle.spawn("creation_publisher", move |stop| publisher.run(stop));
        }
        let sweeper = sweeper::Sweeper::new(ctx);
        lifecycle.spawn("sweeper", move |stop| sweeper.run(stop));
        Ok(Self { lifecycle })
    }

    pub fn is_running(&self) -> bool {
        self.lifecycle.is_running()
    }

    /// Stops taking results; what is being processed finishes first.
    pub async fn shutdown(&self, timeout: Duration) -> Result<()> {
        self.lifecycle.shutdown(timeout).await
    }
}
