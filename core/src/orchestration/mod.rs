//! The orchestrator, off the hot path: workers advance their own tasks in
//! their outcome transactions, so a workflow that meets no crash finishes
//! with no orchestrator running. Small components, one per lifecycle
//! concern, started in order and stopped in reverse:
//!
//! - `task_requests`: creates the tasks asked for on
//!   `<queue_prefix>orchestration_task_requests` (callers outside Ruby and
//!   Rust).
//! - `creation_publisher` (queues outside PostgreSQL only): sends a new
//!   task's first messages once its creating transaction commits.
//! - `pruner` (`retention.rs`): deletes finished tasks and archived
//!   messages past their retention, every `retention.interval_seconds`.
//! - `scheduler`: starts delayed tasks when due, fires cron schedules'
//!   slots (once each, however many orchestrators run) and ends tasks past
//!   their deadline.
//! - `sweeper`: the safety net: recovers steps whose worker died or whose
//!   message was lost, and advances tasks a crash left unadvanced.
//!
//! `step_enqueuer` advances tasks for operator actions and the sweep.

mod backoff;
mod creation_publisher;
pub(crate) mod scheduler;
pub(crate) mod step_enqueuer;
mod sweeper;
mod task_requests;

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
    _registration: crate::telemetry::registry::Registration,
}

impl OrchestratorHandle {
    pub async fn start(ctx: Arc<Context>) -> Result<Self> {
        // A deployment with a queue prefix of its own may start before any
        // migrate created its orchestration queues.
        crate::db::create_orchestration_queues(ctx.messaging().as_ref(), ctx.router()).await?;
        let lifecycle = Lifecycle::new();
        let requests = task_requests::TaskRequests::new(ctx.clone()).await?;
        lifecycle.spawn("task_requests", move |stop| requests.run(stop));
        if !ctx.messaging().queues_in_database() {
            let publisher = creation_publisher::CreationPublisher::new(ctx.clone()).await?;
            lifecycle.spawn("creation_publisher", move |stop| publisher.run(stop));
        }
        if ctx.config().retention.interval_seconds > 0 {
            let pruning = ctx.clone();
            lifecycle.spawn("pruner", move |stop| crate::retention::run(pruning, stop));
        }
        let scheduler = scheduler::Scheduler::new(ctx.clone());
        lifecycle.spawn("scheduler", move |stop| scheduler.run(stop));
        let sweeper = sweeper::Sweeper::new(ctx);
        lifecycle.spawn("sweeper", move |stop| sweeper.run(stop));
        let registration = crate::telemetry::registry::register(
            "orchestrator",
            "orchestrator".to_owned(),
            Vec::new(),
            Vec::new(),
            0,
            lifecycle.stopping(),
            Box::new(|| 0),
        );
        Ok(Self { lifecycle, _registration: registration })
    }

    pub fn is_running(&self) -> bool {
        self.lifecycle.is_running()
    }

    /// Stops taking requests and sweeping; what is under way finishes first.
    pub async fn shutdown(&self, timeout: Duration) -> Result<()> {
        self.lifecycle.shutdown(timeout).await
    }
}
