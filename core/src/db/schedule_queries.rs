//! The statements of the scheduler (delayed tasks, cron schedules,
//! deadlines) and of the schedules' status.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::messaging::Outbox;

/// Starts up to `limit` delayed tasks that are due (`tasker_release_due_tasks`);
/// returns their root steps' messages when the queues are not in the
/// database (`send` false), to send after commit.
pub(crate) async fn release_due_tasks(conn: &mut PgConnection, limit: i32, send: bool) -> Result<Vec<Outbox>> {
    let rows: Vec<(String, Value, i64)> = sqlx::query_as("SELECT * FROM tasker_release_due_tasks($1, $2)")
        .bind(limit)
        .bind(send)
        .fetch_all(conn)
        .await
        .map_err(Error::db("starting delayed tasks that are due"))?;
    Ok(rows.into_iter().map(|(queue, message, delay_ms)| Outbox { queue, message, delay_ms }).collect())
}

/// Ends up to `limit` tasks past their deadline (`tasker_expire_tasks`):
/// each task's uuid, namespace and timeout.
pub(crate) async fn expire_tasks(pool: &PgPool, limit: i32) -> Result<Vec<(Uuid, String, i32)>> {
    sqlx::query_as("SELECT task_uuid, namespace, timeout_seconds FROM tasker_expire_tasks($1)")
        .bind(limit)
        .fetch_all(pool)
        .await
        .map_err(Error::db("ending tasks past their deadline"))
}

/// A registered template version that declares schedules, and when it
/// was registered.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct ScheduledTemplate {
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) version: String,
    pub(crate) definition: Value,
    pub(crate) updated_at: DateTime<Utc>,
}

/// Every template version whose definition declares schedules (a small
/// catalogue table).
pub(crate) async fn scheduled_templates(pool: &PgPool) -> Result<Vec<ScheduledTemplate>> {
    sqlx::query_as(
        "SELECT namespace, name, version, definition, updated_at FROM tasker_task_templates \
          WHERE definition ? 'schedules' ORDER BY namespace, name",
    )
    .fetch_all(pool)
    .await
    .map_err(Error::db("reading the templates' schedules"))
}

/// Every template (namespace, name) and its versions: which version is
/// the newest decides whose schedules run.
pub(crate) async fn template_versions(pool: &PgPool) -> Result<Vec<(String, String, String)>> {
    sqlx::query_as("SELECT namespace, name, version FROM tasker_task_templates")
        .fetch_all(pool)
        .await
        .map_err(Error::db("reading the templates' versions"))
}

/// Takes the schedule's transaction-scoped advisory lock if free: one
/// orchestrator at a time works out and fires a schedule's slots (the
/// slots' primary key is what makes each fire once; the lock keeps two
/// orchestrators whose clocks read a second apart from recording two
/// different skipped ranges).
pub(crate) async fn try_lock_schedule(
    conn: &mut PgConnection,
    namespace: &str,
    name: &str,
    schedule: &str,
) -> Result<bool> {
    sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(hashtext('tasker_schedule'), hashtext($1))")
        .bind(format!("{namespace}/{name}:{schedule}"))
        .fetch_one(conn)
        .await
        .map_err(Error::db(format!("locking schedule {schedule:?} of {namespace}/{name}")))
}

/// The newest slot recorded (fired or skipped) for a schedule.
pub(crate) async fn last_slot<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    namespace: &str,
    name: &str,
    schedule: &str,
) -> Result<Option<DateTime<Utc>>> {
    sqlx::query_scalar(
        "SELECT max(slot_at) FROM tasker_schedule_slots WHERE namespace = $1 AND name = $2 AND schedule = $3",
    )
    .bind(namespace)
    .bind(name)
    .bind(schedule)
    .fetch_one(executor)
    .await
    .map_err(Error::db(format!("reading the last slot of schedule {schedule:?} of {namespace}/{name}")))
}

/// Records a slot and creates its task (`tasker_fire_schedule_slot`); None
/// when the slot was already recorded.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn fire_schedule_slot(
    conn: &mut PgConnection,
    namespace: &str,
    name: &str,
    version: &str,
    schedule: &str,
    slot: DateTime<Utc>,
    context: &Value,
    send: bool,
) -> Result<Option<Uuid>> {
    sqlx::query_scalar("SELECT tasker_fire_schedule_slot($1, $2, $3, $4, $5, $6, $7)")
        .bind(namespace)
        .bind(name)
        .bind(version)
        .bind(schedule)
        .bind(slot)
        .bind(context)
        .bind(send)
        .fetch_one(conn)
        .await
        .map_err(Error::db(format!("firing slot {slot} of schedule {schedule:?} of {namespace}/{name}@{version}")))
}

/// Records skipped slots (`tasker_skip_schedule_slots`); true for the one
/// caller that recorded them.
pub(crate) async fn skip_schedule_slots(
    conn: &mut PgConnection,
    namespace: &str,
    name: &str,
    schedule: &str,
    last_slot: DateTime<Utc>,
    count: u64,
) -> Result<bool> {
    sqlx::query_scalar("SELECT tasker_skip_schedule_slots($1, $2, $3, $4, $5)")
        .bind(namespace)
        .bind(name)
        .bind(schedule)
        .bind(last_slot)
        .bind(i32::try_from(count).unwrap_or(i32::MAX))
        .fetch_one(conn)
        .await
        .map_err(Error::db(format!("recording skipped slots of schedule {schedule:?} of {namespace}/{name}")))
}
