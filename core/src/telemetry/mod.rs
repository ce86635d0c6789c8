//! Operations: Prometheus metrics ([`metrics_text`]), health ([`health`]),
//! the HTTP server that serves both ([`OpsServer`]), and the deployment's
//! status ([`status`]).

mod health;
mod http;
pub(crate) mod metrics;
mod queues;
pub(crate) mod registry;
mod status;
pub(crate) mod traces;

pub use health::{health, BrokerCheck, Check, Health};
pub use http::OpsServer;
pub use metrics::metrics_text;
pub use queues::deployment_queues;
pub use registry::{components, ComponentHealth};
pub use status::{
    concurrency_limits, schedules, status, LimitStatus, NamespaceStatus, QueueStatus, ScheduleStatus, Status,
    WorkerStatus,
};
pub use traces::{flush_traces, otlp_layer};
