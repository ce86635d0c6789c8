//! tasker-core: DAG workflow orchestration on PostgreSQL.
//!
//! The crate has no Ruby dependency. A [`Context`] owns the connection pool,
//! the messaging provider and the template registry; the orchestrator, the
//! worker and the client all work through one.

#![deny(unsafe_code)]
#![warn(missing_debug_implementations, rust_2018_idioms, unreachable_pub)]

mod client;
mod config;
mod context;
mod db;
mod error;
mod lifecycle;
mod messaging;
mod model;
mod orchestration;
pub mod priority;
mod resilience;
mod retention;
mod state;
mod telemetry;
mod template;
mod worker;

pub use client::{CreateTask, TaskerClient};
pub use config::{
    Config, MessagingConfig, MessagingProvider, OrchestrationConfig, RetentionConfig, SchedulesConfig, WorkerConfig,
};
pub use context::Context;
pub use db::migrate;
pub use error::{Error, ErrorKind, Result};
pub use messaging::{
    DeadLetter, MessageRouter, MessagingService, PgmqProvider, QueueStats, RabbitMqProvider, ReceivedMessage,
    StepMessage,
};
pub use model::{RowJson, StepTransition, Task, TaskTransition, WorkflowStep};
pub use orchestration::{backoff_delay, OrchestratorHandle};
pub use resilience::{BreakerHealth, LoopHealth};
pub use retention::{prune, PruneReport};
pub use state::{StepState, TaskState};
pub use telemetry::{
    components, deployment_queues, flush_traces, health, metrics_text, otlp_layer, schedules, status, BrokerCheck,
    Check, ComponentHealth, Health, NamespaceStatus, OpsServer, QueueStatus, ScheduleStatus, Status, WorkerStatus,
};
pub use telemetry::{concurrency_limits, LimitStatus};
pub use template::{
    ConcurrencySpec, CronSchedule, FanOutSpec, HandlerSpec, RateLimitSpec, RetryPolicy, ScheduleSpec, SlotPlan,
    StepTemplate, TaskTemplate,
};
pub use worker::{StepFailure, StepJob, WorkerHandle};
