use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;

use crate::context::Context;
use crate::db::schedule_queries as queries;
use crate::error::{Error, Result};
use crate::template::{CronSchedule, TaskTemplate};

/// Delayed tasks started, and tasks ended at their deadline, per statement.
const BATCH: i32 = 500;

/// Every `schedules.poll_interval_ms`, in every orchestrator (they share the
/// work through row locks and the slots table's primary key):
/// - starts delayed tasks whose `run_at` has come (`tasker_release_due_tasks`);
/// - ends tasks in progress past their deadline (`tasker_expire_tasks`);
/// - fires each due slot of the templates' cron schedules, once: the slot's
///   row and its task are inserted in one transaction, and a slot already
///   recorded is left alone. After a downtime, slots older than
///   `schedules.catch_up_seconds` are recorded as skipped (and logged by
///   the one orchestrator that recorded them) instead of fired.
pub(crate) struct Scheduler {
    ctx: Arc<Context>,
}

/// One schedule of the newest version of a template.
pub(crate) struct ActiveSchedule {
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) version: String,
    pub(crate) key: String,
    pub(crate) cron: String,
    pub(crate) time_zone: Option<String>,
    pub(crate) context: serde_json::Value,
    pub(crate) parsed: CronSchedule,
    /// When the template version was registered: a schedule with no slot
    /// recorded yet counts its slots from then.
    pub(crate) registered_at: DateTime<Utc>,
}

impl Scheduler {
    pub(crate) fn new(ctx: Arc<Context>) -> Self {
        Self { ctx }
    }

    pub(crate) async fn run(self, mut stop: watch::Receiver<bool>) {
        let interval = Duration::from_millis(self.ctx.config().schedules.poll_interval_ms);
        while !*stop.borrow() {
            if let Err(e) = self.release_due_tasks().await {
                tracing::warn!(error = %e, "starting delayed tasks failed; trying again next interval");
            }
            if let Err(e) = self.expire_tasks().await {
                tracing::warn!(error = %e, "ending tasks past their deadline failed; trying again next interval");
            }
            if let Err(e) = self.fire_schedules().await {
                tracing::warn!(error = %e, "firing cron schedules failed; trying again next interval");
            }
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                _ = stop.changed() => {}
            }
        }
    }

    /// One batch a pass: more than that many due at once wait for the next.
    async fn release_due_tasks(&self) -> Result<()> {
        let send = self.ctx.messaging().queues_in_database();
        let mut tx = self.ctx.pool().begin().await.map_err(Error::db("starting delayed tasks"))?;
        let outbox = queries::release_due_tasks(&mut tx, BATCH, send).await?;
        tx.commit().await.map_err(Error::db("starting delayed tasks"))?;
        self.ctx.send_outbox(outbox).await;
        Ok(())
    }

    async fn expire_tasks(&self) -> Result<()> {
        for (task_uuid, namespace, timeout_seconds) in queries::expire_tasks(self.ctx.pool(), BATCH).await? {
            tracing::warn!(%task_uuid, namespace, timeout_seconds, "task passed its deadline: ended in error, its \
                           unfinished steps cancelled");
        }
        Ok(())
    }

    async fn fire_schedules(&self) -> Result<()> {
        let schedules = active_schedules(self.ctx.pool()).await?;
        if schedules.is_empty() {
            return Ok(());
        }
        let catch_up = Duration::from_secs(self.ctx.config().schedules.catch_up_seconds);
        let send = self.ctx.messaging().queues_in_database();
        for schedule in schedules {
            if let Err(e) = self.fire_schedule(&schedule, catch_up, send).await {
                tracing::warn!(template = %format!("{}/{}@{}", schedule.namespace, schedule.name, schedule.version),
                               schedule = schedule.key, cron = schedule.cron, error = %e,
                               "firing a cron schedule failed; trying again next interval");
            }
        }
        Ok(())
    }

    /// In one transaction holding the schedule's advisory lock (another
    /// orchestrator holding it is working on it: nothing to do here).
    async fn fire_schedule(&self, s: &ActiveSchedule, catch_up: Duration, send: bool) -> Result<()> {
        let failed = || Error::db(format!("firing schedule {:?} of {}/{}", s.key, s.namespace, s.name));
        let mut tx = self.ctx.pool().begin().await.map_err(failed())?;
        if !queries::try_lock_schedule(&mut tx, &s.namespace, &s.name, &s.key).await? {
            return Ok(());
        }
        let last = queries::last_slot(&mut *tx, &s.namespace, &s.name, &s.key).await?.unwrap_or(s.registered_at);
        let plan = s.parsed.plan(last, Utc::now(), catch_up);
        let mut skipped = false;
        if let Some(last_skipped) = plan.last_skipped {
            skipped = queries::skip_schedule_slots(&mut tx, &s.namespace, &s.name, &s.key, last_skipped, plan.skipped)
                .await?;
        }
        let mut fired = Vec::with_capacity(plan.due.len());
        for slot in &plan.due {
            let task = queries::fire_schedule_slot(
                &mut tx,
                &s.namespace,
                &s.name,
                &s.version,
                &s.key,
                *slot,
                &s.context,
                send,
            )
            .await?;
            if let Some(task_uuid) = task {
                fired.push((*slot, task_uuid));
            }
        }
        tx.commit().await.map_err(failed())?;
        let template = format!("{}/{}@{}", s.namespace, s.name, s.version);
        if skipped {
            tracing::warn!(template, schedule = s.key, skipped = plan.skipped, at_least = plan.skipped_at_least,
                           last_skipped = ?plan.last_skipped, catch_up_seconds = catch_up.as_secs(),
                           "cron slots older than the catch-up window were skipped (no orchestrator ran then)");
        }
        for (slot, task_uuid) in fired {
            tracing::info!(%task_uuid, template, schedule = s.key, slot = %slot, "cron slot fired");
        }
        Ok(())
    }
}

/// The schedules of the newest version (by semantic version) of each
/// template: a new version's schedules replace the old ones, and slots are
/// counted per template name, so they do not fire twice.
pub(crate) async fn active_schedules(pool: &sqlx::PgPool) -> Result<Vec<ActiveSchedule>> {
    let scheduled = queries::scheduled_templates(pool).await?;
    if scheduled.is_empty() {
        return Ok(Vec::new());
    }
    let mut newest: HashMap<(String, String), semver::Version> = HashMap::new();
    for (namespace, name, version) in queries::template_versions(pool).await? {
        let Ok(version) = semver::Version::parse(&version) else { continue };
        let entry = newest.entry((namespace, name)).or_insert_with(|| version.clone());
        if version > *entry {
            *entry = version;
        }
    }
    let mut active = Vec::new();
    for row in scheduled {
        let is_newest = semver::Version::parse(&row.version)
            .is_ok_and(|v| newest.get(&(row.namespace.clone(), row.name.clone())) == Some(&v));
        if !is_newest {
            continue;
        }
        let template: TaskTemplate = match serde_json::from_value(row.definition) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(namespace = row.namespace, name = row.name, error = %e,
                               "a stored template cannot be read; its schedules do not run");
                continue;
            }
        };
        for (i, spec) in template.schedules.iter().enumerate() {
            match spec.parse() {
                Ok(parsed) => active.push(ActiveSchedule {
                    namespace: row.namespace.clone(),
                    name: row.name.clone(),
                    version: row.version.clone(),
                    key: spec.key(i),
                    cron: spec.cron.clone(),
                    time_zone: spec.time_zone.clone(),
                    context: spec.task_context(),
                    parsed,
                    registered_at: row.updated_at,
                }),
                Err(e) => tracing::warn!(
                    template = template.key(),
                    schedule = spec.key(i),
                    error = e,
                    "a stored schedule cannot be parsed; it does not run"
                ),
            }
        }
    }
    Ok(active)
}
