//! Prometheus metrics, through the `metrics` facade and
//! `metrics-exporter-prometheus`'s recorder (installed once per process,
//! rendered on demand: no HTTP listener of the exporter's own, see
//! `http.rs`).
//!
//! Counters and histograms are recorded where things happen (the worker,
//! the sweep, dead-lettering); gauges that describe state elsewhere (queue
//! depths and ages, the connection pool, steps in flight) are refreshed
//! when the metrics are rendered, so they cost nothing between scrapes.
//!
//! Labels are bounded: namespace, template and step names (from the
//! registered templates), queue names, states and reasons from fixed
//! lists. Never a task or step uuid, a worker id or an error message.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::context::Context;
use crate::db::ops_queries;
use crate::error::Result;

use super::registry;

/// Buckets of the step and queue-wait histograms, in seconds: a step takes
/// milliseconds to minutes.
const STEP_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];
/// Buckets of the task-duration histogram, in seconds.
const TASK_BUCKETS: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0];

static RECORDER: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder the first time it is called (every
/// [`Context::connect`] calls it). Should the host process have installed
/// a `metrics` recorder of its own first, tasker_core's metrics go to that
/// one, [`metrics_text`] renders nothing, and the log says why.
pub(crate) fn install() {
    RECORDER.get_or_init(|| {
        let full = |name: &str| Matcher::Full(name.to_owned());
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(full("tasker_task_duration_seconds"), TASK_BUCKETS)
            .and_then(|b| b.set_buckets_for_metric(full("tasker_step_duration_seconds"), STEP_BUCKETS))
            .and_then(|b| b.set_buckets_for_metric(full("tasker_step_queue_wait_seconds"), STEP_BUCKETS));
        match builder.and_then(PrometheusBuilder::install_recorder) {
            Ok(handle) => {
                describe();
                Some(handle)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot install tasker_core's Prometheus recorder (another metrics \
                                            recorder is installed?): /metrics will be empty");
                None
            }
        }
    });
}

fn describe() {
    describe_counter!(
        "tasker_steps_started_total",
        "Steps claimed by a worker of this process and handed to a handler"
    );
    describe_counter!("tasker_steps_completed_total", "Step outcomes recorded as complete");
    describe_counter!(
        "tasker_steps_taken_over_total",
        "Steps claimed from a stale claim (its worker stopped heartbeating), by namespace"
    );
    describe_counter!("tasker_steps_failed_total", "Step outcomes recorded as a failure for good (error)");
    describe_counter!(
        "tasker_steps_retried_total",
        "Step outcomes recorded as a retryable failure (waiting_for_retry)"
    );
    describe_counter!(
        "tasker_step_outcomes_not_applied_total",
        "Step outcomes that arrived after the claim was lost (kept in the history, not applied)"
    );
    describe_histogram!("tasker_step_duration_seconds", Unit::Seconds, "From claim to recorded outcome, per step");
    describe_histogram!(
        "tasker_step_queue_wait_seconds",
        Unit::Seconds,
        "From a step being enqueued (or its retry coming due) to its claim"
    );
    describe_counter!(
        "tasker_steps_skipped_total",
        "Steps skipped by decisions whose outcome this process's workers recorded (not chosen, or below only \
         skipped steps), by step namespace and template"
    );
    describe_counter!("tasker_tasks_finished_total", "Tasks finalized by this process's workers, by status");
    describe_histogram!("tasker_task_duration_seconds", Unit::Seconds, "From task creation to its end, by status");
    describe_counter!(
        "tasker_sweep_recovered_steps_total",
        "Steps the sweep enqueued again, by the state they were in"
    );
    describe_counter!("tasker_sweep_advanced_tasks_total", "Stalled tasks the sweep advanced");
    describe_counter!(
        "tasker_sweep_priority_raised_steps_total",
        "RabbitMQ: steps whose message waited past their priority's aging bound, sent again at the top priority"
    );
    describe_counter!("tasker_dead_letters_total", "Messages moved to a dead-letter store by this process, by reason");
    describe_gauge!("tasker_queue_depth", "Messages in the queue, in flight or not");
    describe_gauge!("tasker_queue_visible_messages", "Messages a receive would get now");
    describe_gauge!(
        "tasker_queue_oldest_message_age_seconds",
        Unit::Seconds,
        "Age of the oldest message (PGMQ), or of the oldest step enqueued for the queue (RabbitMQ)"
    );
    describe_gauge!("tasker_queue_dead_letters", "Messages in the queue's dead-letter store");
    describe_gauge!("tasker_queue_scrape_errors", "1 when the queue's stats could not be read at the last scrape");
    describe_gauge!(
        "tasker_steps_waiting_for_limit",
        "Steps waiting for a limit, deployment-wide, by namespace and limit: concurrency (pending, waiting for a \
         slot) or rate_limit (enqueued, their token due later)"
    );
    describe_gauge!(
        "tasker_tasks_waiting_for_limit",
        "Tasks pending, waiting for their template's concurrency slot to start, deployment-wide, by namespace"
    );
    describe_gauge!("tasker_worker_steps_in_flight", "Steps claimed by this process's workers and not yet recorded");
    describe_gauge!("tasker_worker_concurrency", "Slots of this process's workers");
    describe_counter!(
        "tasker_outage_retries_total",
        "Attempts a loop made while the database or broker was unreachable (with backoff), by loop"
    );
    describe_gauge!(
        "tasker_circuit_breaker_open",
        "1 while the dependency's circuit breaker is open (callers fail fast), by dependency"
    );
    describe_counter!("tasker_circuit_breaker_probes_total", "Probes made by an open circuit breaker, by dependency");
    describe_gauge!("tasker_db_pool_connections", "Connections of this process's pool, by state (idle, in_use)");
    describe_gauge!("tasker_db_pool_max_connections", "The pool's limit (max_connections)");
}

/// The Prometheus text exposition of every tasker_core metric of this
/// process, with the gauges read now.
pub async fn metrics_text(ctx: &Context) -> Result<String> {
    install();
    refresh_gauges(ctx).await;
    Ok(match RECORDER.get().and_then(Option::as_ref) {
        Some(handle) => {
            handle.run_upkeep();
            handle.render()
        }
        None => String::new(),
    })
}

/// Reads the gauges: each queue's stats (a queue that cannot be read is
/// flagged by `tasker_queue_scrape_errors` and keeps its last values), the
/// pool, the workers' slots, what waits for a limit in each namespace.
async fn refresh_gauges(ctx: &Context) {
    let pool = ctx.pool();
    let size = f64::from(pool.size());
    let idle = f64::from(u32::try_from(pool.num_idle()).unwrap_or(u32::MAX));
    gauge!("tasker_db_pool_connections", "state" => "idle").set(idle);
    gauge!("tasker_db_pool_connections", "state" => "in_use").set((size - idle).max(0.0));
    gauge!("tasker_db_pool_max_connections").set(f64::from(ctx.config().max_connections));
    let (in_flight, concurrency) = registry::worker_totals();
    gauge!("tasker_worker_steps_in_flight").set(in_flight as f64);
    gauge!("tasker_worker_concurrency").set(concurrency as f64);
    // While a dependency is known to be down, the gauges read from it keep
    // their last values: a scrape answers at once instead of waiting for it.
    if ctx.breakers().check_database().is_err() {
        return;
    }
    refresh_limit_waits(ctx).await;
    if ctx.breakers().check_broker().is_err() {
        return;
    }
    let queues = match super::queues::deployment_queues(ctx).await {
        Ok(queues) => queues,
        Err(e) => {
            if ctx.breakers().observe(&e).is_none() {
                tracing::warn!(error = %e, "listing queues for metrics failed");
            }
            return;
        }
    };
    let enqueued_ages = if ctx.messaging().queues_in_database() {
        Default::default()
    } else {
        super::queues::oldest_enqueued_ages(ctx).await.unwrap_or_default()
    };
    for queue in queues {
        match ctx.messaging().stats(&queue).await {
            Ok(stats) => {
                let labels = [("queue", queue.clone())];
                gauge!("tasker_queue_depth", &labels).set(stats.depth as f64);
                gauge!("tasker_queue_visible_messages", &labels).set(stats.visible as f64);
                let age = stats
                    .oldest_age_seconds
                    .map(|s| s as f64)
                    .or_else(|| enqueued_ages.get(&queue).copied())
                    .unwrap_or(0.0);
                gauge!("tasker_queue_oldest_message_age_seconds", &labels).set(age);
                gauge!("tasker_queue_scrape_errors", &labels).set(0.0);
                if let Ok(n) = ctx.messaging().dead_letter_count(&queue).await {
                    gauge!("tasker_queue_dead_letters", &labels).set(n as f64);
                }
            }
            Err(e) => {
                tracing::debug!(queue, error = %e, "reading queue stats for metrics failed");
                gauge!("tasker_queue_scrape_errors", "queue" => queue).set(1.0);
            }
        }
    }
}

/// The steps and tasks waiting for a limit, per registered namespace (0
/// when none waits, so a gauge falls back when its last waiter goes).
async fn refresh_limit_waits(ctx: &Context) {
    match ops_queries::limit_waits(ctx.pool()).await {
        Ok(namespaces) => {
            for (namespace, waits) in namespaces {
                gauge!("tasker_steps_waiting_for_limit", "namespace" => namespace.clone(), "limit" => "concurrency")
                    .set(waits.steps_slot as f64);
                gauge!("tasker_steps_waiting_for_limit", "namespace" => namespace.clone(), "limit" => "rate_limit")
                    .set(waits.steps_rate_limit as f64);
                gauge!("tasker_tasks_waiting_for_limit", "namespace" => namespace).set(waits.tasks_slot as f64);
            }
        }
        Err(e) => {
            if ctx.breakers().observe(&e).is_none() {
                tracing::warn!(error = %e, "counting what waits for a limit for metrics failed");
            }
        }
    }
}

/// The labels of a step's metrics, and what its later metrics need from
/// its claim. Made when the step is handed to a runner.
#[derive(Debug, Clone)]
pub(crate) struct StepMetrics {
    namespace: String,
    template: String,
    step: String,
    /// The task's creation time, seconds since the epoch.
    task_created: Option<f64>,
}

/// What a step's metrics and trace read of its task's row (the claim's
/// `task_row`, read with [`crate::RowJson::fields`]).
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct TaskFacts {
    pub(crate) name: Option<String>,
    pub(crate) created_at: Option<String>,
    pub(crate) traceparent: Option<String>,
}

/// What a step's queue wait is read from, of its row after the claim.
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct StepFacts {
    enqueued_at: Option<String>,
    retry_at: Option<String>,
    started_at: Option<String>,
}

fn timestamp(text: Option<&str>) -> Option<f64> {
    let at = chrono::DateTime::parse_from_rfc3339(text?).ok()?;
    Some(at.timestamp_micros() as f64 / 1e6)
}

fn now() -> f64 {
    chrono::Utc::now().timestamp_micros() as f64 / 1e6
}

impl StepMetrics {
    /// Counts the start, and the queue wait of a step claimed from a
    /// message: from its enqueueing (or its retry coming due, if later) to
    /// the claim. A step claimed eagerly had no wait.
    /// `from_message`: the step's row, for a step claimed from a message.
    pub(crate) fn started(namespace: &str, step: &str, task: &TaskFacts, from_message: Option<StepFacts>) -> Self {
        let metrics = Self {
            namespace: namespace.to_owned(),
            template: task.name.as_deref().unwrap_or("unknown").to_owned(),
            step: step.to_owned(),
            task_created: timestamp(task.created_at.as_deref()),
        };
        counter!("tasker_steps_started_total", &metrics.labels()).increment(1);
        if let Some(row) = from_message {
            let ready = match (timestamp(row.enqueued_at.as_deref()), timestamp(row.retry_at.as_deref())) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            if let (Some(ready), Some(claimed)) = (ready, timestamp(row.started_at.as_deref())) {
                histogram!("tasker_step_queue_wait_seconds", &metrics.labels()).record((claimed - ready).max(0.0));
            }
        }
        metrics
    }

    fn labels(&self) -> [(&'static str, String); 3] {
        [("namespace", self.namespace.clone()), ("template", self.template.clone()), ("step", self.step.clone())]
    }

    /// Counts a recorded outcome by the state it left the step in (None:
    /// not applied), and the step's duration from its claim.
    pub(crate) fn finished(&self, state: Option<&str>, ran_for: Duration) {
        let labels = self.labels();
        let name = match state {
            Some("complete") => "tasker_steps_completed_total",
            Some("waiting_for_retry") => "tasker_steps_retried_total",
            Some("error") => "tasker_steps_failed_total",
            Some(_) | None => "tasker_step_outcomes_not_applied_total",
        };
        counter!(name, &labels).increment(1);
        let outcome = match state {
            Some("complete") => "complete",
            Some("waiting_for_retry") | Some("error") => "failed",
            _ => "not_applied",
        };
        let [namespace, template, step] = labels;
        histogram!("tasker_step_duration_seconds", &[namespace, template, step, ("outcome", outcome.to_owned())])
            .record(ran_for.as_secs_f64());
    }

    /// Counts the end of this step's task, which its outcome finalized.
    pub(crate) fn task_finished(&self, status: &str) {
        let status = match status {
            "complete" | "error" | "cancelled" => status,
            _ => "other",
        };
        let labels =
            [("namespace", self.namespace.clone()), ("template", self.template.clone()), ("status", status.to_owned())];
        counter!("tasker_tasks_finished_total", &labels).increment(1);
        if let Some(created) = self.task_created {
            histogram!("tasker_task_duration_seconds", &labels).record((now() - created).max(0.0));
        }
    }
}

/// Counts the steps an outcome transaction of this process skipped (its
/// decisions: see `tasker_apply_decisions`).
pub(crate) fn steps_skipped(namespace: &str, template: &str, count: u64) {
    counter!("tasker_steps_skipped_total", "namespace" => namespace.to_owned(), "template" => template.to_owned())
        .increment(count);
}

/// Steps whose message the sweep sent again at the top priority (RabbitMQ's
/// aging: see `tasker_raise_priorities`).
pub(crate) fn priorities_raised(n: usize) {
    counter!("tasker_sweep_priority_raised_steps_total").increment(n as u64);
}

/// Counts steps the sweep recovered, by the state they were in.
pub(crate) fn sweep_recovered<'a>(states: impl IntoIterator<Item = &'a str>) {
    for was in states {
        let was: &'static str = match was {
            "in_progress" => "in_progress",
            "enqueued" => "enqueued",
            "waiting_for_retry" => "waiting_for_retry",
            _ => "other",
        };
        counter!("tasker_sweep_recovered_steps_total", "was" => was).increment(1);
    }
}

/// A claim took a step over from a worker that stopped heartbeating.
pub(crate) fn step_taken_over(namespace: &str) {
    counter!("tasker_steps_taken_over_total", "namespace" => namespace.to_owned()).increment(1);
}

/// Counts a stalled task the sweep advanced.
pub(crate) fn sweep_advanced() {
    counter!("tasker_sweep_advanced_tasks_total").increment(1);
}

/// Why a message was dead-lettered: a fixed set, so it can be a label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeadLetterReason {
    /// The payload could not be decoded.
    Malformed,
    /// The step does not exist, or belongs to a namespace the reader does
    /// not serve.
    Stray,
    /// Delivered more than `messaging.max_receive_count` times.
    MaxReceives,
    /// A task request that can never succeed.
    Rejected,
}

impl DeadLetterReason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::Stray => "stray",
            Self::MaxReceives => "max_receives",
            Self::Rejected => "rejected",
        }
    }
}

pub(crate) fn dead_lettered(queue: &str, reason: DeadLetterReason) {
    counter!("tasker_dead_letters_total", "queue" => queue.to_owned(), "reason" => reason.as_str()).increment(1);
}
