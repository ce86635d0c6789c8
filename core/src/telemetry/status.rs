//! `status`: what the deployment is doing now, from the database and the
//! queues (not only this process): each queue's depth, age and dead
//! letters; per namespace, tasks and steps in flight and the steps that are
//! stuck; the workers alive.

use std::time::Duration;

use serde::Serialize;

use crate::context::Context;
use crate::db::ops_queries;
use crate::error::Result;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct QueueStatus {
    pub queue: String,
    pub depth: i64,
    pub visible: i64,
    /// PGMQ: the oldest message's; RabbitMQ: the oldest enqueued step's.
    pub oldest_age_seconds: Option<f64>,
    pub dead_letters: i64,
    /// Set when the queue could not be read.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct NamespaceStatus {
    pub namespace: String,
    pub tasks_pending: i64,
    pub tasks_in_progress: i64,
    pub steps_enqueued: i64,
    pub steps_in_progress: i64,
    pub steps_waiting_for_retry: i64,
    /// In progress with no heartbeat for a visibility timeout.
    pub steps_stuck_in_progress: i64,
    /// Enqueued for longer than `orchestration.stuck_enqueued_seconds`
    /// (a step waiting for its rate limit's token: since the token came due).
    pub steps_stuck_enqueued: i64,
    /// The enqueued steps by their task's priority (only those with any).
    pub steps_enqueued_by_priority: std::collections::BTreeMap<i16, i64>,
    /// Enqueued steps whose rate limit's token is due later (their message
    /// becomes visible then); among `steps_enqueued`.
    pub steps_waiting_for_rate_limit: i64,
    /// Pending steps (ready, of tasks in progress) waiting for a
    /// concurrency slot.
    pub steps_waiting_for_slot: i64,
    /// Pending tasks waiting for their template's concurrency slot to start;
    /// among `tasks_pending`.
    pub tasks_waiting_for_slot: i64,
}

impl NamespaceStatus {
    pub(crate) fn new(namespace: String) -> Self {
        Self { namespace, ..Self::default() }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WorkerStatus {
    pub worker: String,
    pub steps_in_progress: i64,
}

/// A concurrency limit's slot (one key value of a template's or a step's
/// `concurrency:`) that is in use or has waiters.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, sqlx::FromRow)]
pub struct LimitStatus {
    /// `task:<namespace>/<name>=<key value>` or
    /// `step:<namespace>/<name>/<step>=<key value>`.
    pub slot: String,
    pub max: i32,
    pub in_use: i32,
    /// Tasks (pending) or steps (pending, ready) waiting for it.
    pub waiting: i64,
}

/// A cron schedule of the newest version of a template.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ScheduleStatus {
    /// `namespace/name@version`.
    pub template: String,
    /// Its name, or its index in the template's list.
    pub schedule: String,
    pub cron: String,
    pub time_zone: String,
    /// The newest slot fired or skipped (RFC 3339, UTC).
    pub last_slot_at: Option<String>,
    /// When it fires next (RFC 3339, UTC); None when it never does again.
    pub next_fire_at: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Status {
    pub queues: Vec<QueueStatus>,
    /// Namespaces with anything in flight.
    pub namespaces: Vec<NamespaceStatus>,
    /// Workers running a step with a fresh heartbeat (an idle worker holds
    /// no row and is not seen here; see `health` in its own process).
    pub workers: Vec<WorkerStatus>,
    /// Every cron schedule that runs, with its next fire time.
    pub schedules: Vec<ScheduleStatus>,
    /// Concurrency slots in use or waited for.
    pub limits: Vec<LimitStatus>,
    pub checked_at: String,
}

fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Each active schedule's last slot and next fire time: the first slot
/// after both the last recorded one and now.
pub async fn schedules(ctx: &Context) -> Result<Vec<ScheduleStatus>> {
    let now = chrono::Utc::now();
    let mut out = Vec::new();
    for s in crate::orchestration::scheduler::active_schedules(ctx.pool()).await? {
        let last = crate::db::schedule_queries::last_slot(ctx.pool(), &s.namespace, &s.name, &s.key).await?;
        let from = last.map_or(now, |l| l.max(now));
        out.push(ScheduleStatus {
            template: format!("{}/{}@{}", s.namespace, s.name, s.version),
            schedule: s.key.clone(),
            cron: s.cron.clone(),
            time_zone: s.time_zone.clone().unwrap_or_else(|| "UTC".to_owned()),
            last_slot_at: last.map(rfc3339),
            next_fire_at: s.parsed.next_after(from).map(rfc3339),
        });
    }
    Ok(out)
}

/// Every concurrency slot in use or waited for.
pub async fn concurrency_limits(ctx: &Context) -> Result<Vec<LimitStatus>> {
    ops_queries::concurrency_limits(ctx.pool()).await
}

pub async fn status(ctx: &Context) -> Result<Status> {
    let config = ctx.config();
    let stale_after = Duration::from_secs(u64::from(config.messaging.visibility_timeout_seconds));
    let stuck_enqueued = Duration::from_secs(config.orchestration.stuck_enqueued_seconds);
    let messaging = ctx.messaging();
    let enqueued_ages = if messaging.queues_in_database() {
        Default::default()
    } else {
        super::queues::oldest_enqueued_ages(ctx).await?
    };
    let mut queues = Vec::new();
    for queue in super::queues::deployment_queues(ctx).await? {
        let read = async {
            let stats = messaging.stats(&queue).await?;
            let dead_letters = messaging.dead_letter_count(&queue).await?;
            Ok::<_, crate::Error>((stats, dead_letters))
        };
        queues.push(match read.await {
            Ok((stats, dead_letters)) => QueueStatus {
                oldest_age_seconds: stats
                    .oldest_age_seconds
                    .map(|s| s as f64)
                    .or_else(|| enqueued_ages.get(&queue).copied()),
                queue,
                depth: stats.depth,
                visible: stats.visible,
                dead_letters,
                error: None,
            },
            Err(e) => QueueStatus {
                queue,
                depth: 0,
                visible: 0,
                oldest_age_seconds: None,
                dead_letters: 0,
                error: Some(e.to_string()),
            },
        });
    }
    let namespaces = ops_queries::namespace_counts(ctx.pool(), stale_after, stuck_enqueued).await?;
    let workers = ops_queries::live_workers(ctx.pool(), stale_after)
        .await?
        .into_iter()
        .map(|(worker, steps_in_progress)| WorkerStatus { worker, steps_in_progress })
        .collect();
    Ok(Status {
        queues,
        namespaces,
        workers,
        schedules: schedules(ctx).await?,
        limits: ops_queries::concurrency_limits(ctx.pool()).await?,
        checked_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    })
}
