//! The reads behind metrics, health and status: off the hot path, each
//! one statement that follows an index.

use std::collections::HashMap;

use sqlx::PgPool;

use crate::error::{Error, Result};

/// Every namespace queue the database knows (registered templates).
pub(crate) async fn namespace_queues(pool: &PgPool) -> Result<Vec<String>> {
    sqlx::query_scalar("SELECT queue_name FROM tasker_namespaces ORDER BY queue_name")
        .fetch_all(pool)
        .await
        .map_err(Error::db("listing namespace queues"))
}

/// The steps of the tasks in progress (`s`, with `t` their task), those
/// meeting the condition that follows it: steps have no index on their
/// state (their updates stay heap-only), so what looks for steps in some
/// state starts from the tasks in progress (their partial index) and reads
/// each task's steps through its key, in a lateral subquery so the plan
/// does not depend on the statistics.
macro_rules! steps_of_tasks_in_progress {
    ($condition:expr) => {
        concat!(
            "tasker_tasks t JOIN LATERAL (SELECT * FROM tasker_workflow_steps s WHERE s.task_uuid = t.task_uuid AND ",
            $condition,
            " OFFSET 0) s ON true"
        )
    };
}

/// The waiters of the concurrency slots still waiting, each with its
/// namespace (`x.namespace`) and whether it is a task (`x.task`: its
/// holder is its task, which waits to start) or a step: a step pending in
/// a task in progress, a task pending. A waiter that moved on meanwhile
/// (cancelled, resolved) stays in the table until its turn comes and is
/// not counted (see tasker_release_slot). The table holds only waiters,
/// and each one's step and task are looked up by key (the task in a
/// subquery on the step's: joined, a planner that thinks few tasks run
/// would walk every task in progress for each waiter).
macro_rules! slot_waiters {
    () => {
        "tasker_concurrency_waiters w \
         JOIN LATERAL (SELECT ns.namespace, false AS task FROM tasker_workflow_steps s \
                         JOIN tasker_named_steps ns ON ns.named_step_id = s.named_step_id \
                        WHERE w.holder <> w.task_uuid AND s.step_uuid = w.holder AND s.status = 'pending' \
                          AND EXISTS (SELECT 1 FROM tasker_tasks t \
                                       WHERE t.task_uuid = s.task_uuid AND t.status = 'in_progress') \
                       UNION ALL \
                       SELECT t.namespace, true FROM tasker_tasks t \
                        WHERE w.holder = w.task_uuid AND t.task_uuid = w.holder AND t.status = 'pending') x ON true"
    };
}

/// A step waiting for its rate limit's token (see [`namespace_counts`]).
macro_rules! waiting_for_token {
    () => {
        "s.status = 'enqueued' AND s.retry_at > clock_timestamp()"
    };
}

/// Per queue, how long its oldest enqueued step has waited in it, in
/// seconds (see `tasker_queued_since`: a step waiting for its rate limit's
/// token has waited only since the token came due, and 0 before).
pub(crate) async fn oldest_enqueued_ages(pool: &PgPool) -> Result<HashMap<String, f64>> {
    let rows: Vec<(String, f64)> = sqlx::query_as(concat!(
        "SELECT n.queue_name, greatest(extract(epoch FROM clock_timestamp() \
                        - min(coalesce(tasker_queued_since(s.enqueued_at, s.retry_at), s.updated_at))), 0)::float8 \
               FROM ",
        steps_of_tasks_in_progress!("s.status = 'enqueued'"),
        " JOIN tasker_named_steps ns ON ns.named_step_id = s.named_step_id \
              JOIN tasker_namespaces n ON n.name = ns.namespace \
             WHERE t.status = 'in_progress' \
             GROUP BY n.queue_name"
    ))
    .fetch_all(pool)
    .await
    .map_err(Error::db("reading the oldest enqueued steps"))?;
    Ok(rows.into_iter().collect())
}

/// The steps in flight of one namespace's tasks of one priority.
#[derive(sqlx::FromRow)]
struct StepCounts {
    namespace: String,
    priority: i16,
    enqueued: i64,
    in_progress: i64,
    waiting_for_retry: i64,
    stuck_in_progress: i64,
    stuck_enqueued: i64,
    waiting_for_token: i64,
}

fn namespace_entry(
    by_namespace: &mut std::collections::BTreeMap<String, crate::telemetry::NamespaceStatus>,
    namespace: String,
) -> &mut crate::telemetry::NamespaceStatus {
    by_namespace.entry(namespace.clone()).or_insert_with(|| crate::telemetry::NamespaceStatus::new(namespace))
}

/// Per namespace: tasks pending and in progress, and steps in flight by
/// state; a step in progress whose heartbeat is older than `stale_after`,
/// or enqueued for longer than `stuck_enqueued_after`, is stuck. Both reads
/// start from the partial index of the tasks not finished. Steps and tasks
/// waiting for a concurrency slot are read from the slots' waiters.
///
/// A step waiting for its rate limit's token is enqueued with `retry_at`
/// later than now: tasker_limit_steps sets it (the token's time) while the
/// step is pending, tasker_enqueue_steps keeps it only for a step that was
/// pending, and its message is sent delayed until then. A retry scheduled
/// by a failure is `waiting_for_retry` (retry_at is its backoff) and is
/// enqueued with retry_at cleared (tasker_enqueue_steps, the sweep), so it
/// is never counted here; nor is a step whose token came due (retry_at
/// past).
pub(crate) async fn namespace_counts(
    pool: &PgPool,
    stale_after: std::time::Duration,
    stuck_enqueued_after: std::time::Duration,
) -> Result<Vec<crate::telemetry::NamespaceStatus>> {
    // By namespace and task priority: the enqueued steps by priority come
    // from the same read.
    let steps: Vec<StepCounts> = sqlx::query_as(concat!(
        "SELECT ns.namespace, t.priority, \
                count(*) FILTER (WHERE s.status = 'enqueued') AS enqueued, \
                count(*) FILTER (WHERE s.status = 'in_progress') AS in_progress, \
                count(*) FILTER (WHERE s.status = 'waiting_for_retry') AS waiting_for_retry, \
                count(*) FILTER (WHERE s.status = 'in_progress' \
                                   AND coalesce(s.heartbeat_at, s.started_at) < clock_timestamp() - make_interval(secs => $1)) \
                  AS stuck_in_progress, \
                count(*) FILTER (WHERE s.status = 'enqueued' \
                                   AND tasker_queued_since(s.enqueued_at, s.retry_at) < clock_timestamp() - make_interval(secs => $2)) \
                  AS stuck_enqueued, \
                count(*) FILTER (WHERE ",
        waiting_for_token!(),
        ") AS waiting_for_token FROM ",
        steps_of_tasks_in_progress!("s.status IN ('enqueued', 'in_progress', 'waiting_for_retry')"),
        " JOIN tasker_named_steps ns ON ns.named_step_id = s.named_step_id \
          WHERE t.status = 'in_progress' \
          GROUP BY ns.namespace, t.priority"
    ))
    .bind(stale_after.as_secs_f64())
    .bind(stuck_enqueued_after.as_secs_f64())
    .fetch_all(pool)
    .await
    .map_err(Error::db("counting steps in flight"))?;
    let tasks: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT namespace, count(*) FILTER (WHERE status = 'pending'), count(*) FILTER (WHERE status = 'in_progress') \
           FROM tasker_tasks WHERE status IN ('pending', 'in_progress') GROUP BY namespace",
    )
    .fetch_all(pool)
    .await
    .map_err(Error::db("counting tasks in flight"))?;
    let slots = slot_waits(pool).await?;
    let mut by_namespace: std::collections::BTreeMap<String, crate::telemetry::NamespaceStatus> = Default::default();
    for (namespace, pending, in_progress) in tasks {
        let entry = namespace_entry(&mut by_namespace, namespace);
        entry.tasks_pending = pending;
        entry.tasks_in_progress = in_progress;
    }
    for counts in steps {
        let entry = namespace_entry(&mut by_namespace, counts.namespace);
        entry.steps_enqueued += counts.enqueued;
        entry.steps_in_progress += counts.in_progress;
        entry.steps_waiting_for_retry += counts.waiting_for_retry;
        entry.steps_stuck_in_progress += counts.stuck_in_progress;
        entry.steps_stuck_enqueued += counts.stuck_enqueued;
        entry.steps_waiting_for_rate_limit += counts.waiting_for_token;
        if counts.enqueued > 0 {
            entry.steps_enqueued_by_priority.insert(counts.priority, counts.enqueued);
        }
    }
    for (namespace, steps, tasks) in slots {
        let entry = namespace_entry(&mut by_namespace, namespace);
        entry.steps_waiting_for_slot = steps;
        entry.tasks_waiting_for_slot = tasks;
    }
    Ok(by_namespace.into_values().collect())
}

/// The workers whose heartbeat on a step in progress is fresh (each named
/// in its step's latest claim), with how many such steps each runs.
pub(crate) async fn live_workers(pool: &PgPool, stale_after: std::time::Duration) -> Result<Vec<(String, i64)>> {
    sqlx::query_as(concat!(
        "SELECT coalesce(w.worker, '(unknown)'), count(*) \
           FROM ",
        steps_of_tasks_in_progress!(
            "s.status = 'in_progress' \
                 AND coalesce(s.heartbeat_at, s.started_at) >= clock_timestamp() - make_interval(secs => $1)"
        ),
        " LEFT JOIN LATERAL (SELECT tr.metadata->>'worker' AS worker FROM tasker_workflow_step_transitions tr \
                               WHERE tr.step_uuid = s.step_uuid AND tr.to_state = 'in_progress' \
                               ORDER BY tr.sort_key DESC LIMIT 1) w ON true \
          WHERE t.status = 'in_progress' \
          GROUP BY 1 ORDER BY 1"
    ))
    .bind(stale_after.as_secs_f64())
    .fetch_all(pool)
    .await
    .map_err(Error::db("listing live workers"))
}

/// Concurrency slots in use or waited for, with their waiters still
/// waiting (a waiter cancelled meanwhile, or whose task ended, is not
/// counted: see tasker_release_slot).
pub(crate) async fn concurrency_limits(pool: &PgPool) -> Result<Vec<crate::telemetry::LimitStatus>> {
    sqlx::query_as(
        "SELECT c.slot, c.max_slots AS max, c.in_use, \
                (SELECT count(*) FROM tasker_concurrency_waiters w \
                  WHERE w.slot = c.slot \
                    AND (EXISTS (SELECT 1 FROM tasker_workflow_steps s JOIN tasker_tasks t USING (task_uuid) \
                                  WHERE s.step_uuid = w.holder AND s.status = 'pending' \
                                    AND t.status = 'in_progress') \
                         OR EXISTS (SELECT 1 FROM tasker_tasks t \
                                     WHERE t.task_uuid = w.holder AND t.status = 'pending'))) AS waiting \
           FROM tasker_concurrency_slots c \
          WHERE c.in_use > 0 OR EXISTS (SELECT 1 FROM tasker_concurrency_waiters w WHERE w.slot = c.slot) \
          ORDER BY c.slot",
    )
    .fetch_all(pool)
    .await
    .map_err(Error::db("reading concurrency limits"))
}

/// Per namespace (steps by their own, tasks by theirs), the steps and the
/// tasks waiting for a concurrency slot.
async fn slot_waits(pool: &PgPool) -> Result<Vec<(String, i64, i64)>> {
    sqlx::query_as(concat!(
        "SELECT x.namespace, count(*) FILTER (WHERE NOT x.task), count(*) FILTER (WHERE x.task) FROM ",
        slot_waiters!(),
        " GROUP BY x.namespace"
    ))
    .fetch_all(pool)
    .await
    .map_err(Error::db("counting waiters for concurrency slots"))
}

/// What waits for a limit in one namespace (see [`limit_waits`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct LimitWaits {
    /// Enqueued, their rate limit's token due later.
    pub(crate) steps_rate_limit: i64,
    /// Pending, waiting for a concurrency slot.
    pub(crate) steps_slot: i64,
    /// Pending, waiting for their template's concurrency slot to start.
    pub(crate) tasks_slot: i64,
}

/// For every registered namespace (0 when nothing waits), the steps
/// waiting for a rate limit's token and the steps and tasks waiting for a
/// concurrency slot, in one statement: the gauges of the metrics, which
/// must fall back to 0 when the last waiter goes. The same reads as
/// [`namespace_counts`].
pub(crate) async fn limit_waits(pool: &PgPool) -> Result<Vec<(String, LimitWaits)>> {
    let rows: Vec<(String, i64, i64, i64)> = sqlx::query_as(concat!(
        "WITH rate AS (SELECT ns.namespace, count(*) AS n FROM ",
        steps_of_tasks_in_progress!(waiting_for_token!()),
        " JOIN tasker_named_steps ns ON ns.named_step_id = s.named_step_id \
           WHERE t.status = 'in_progress' GROUP BY ns.namespace), \
         slots AS (SELECT x.namespace, count(*) FILTER (WHERE NOT x.task) AS steps, \
                          count(*) FILTER (WHERE x.task) AS tasks FROM ",
        slot_waiters!(),
        " GROUP BY x.namespace) \
         SELECT n.name AS namespace, coalesce(r.n, 0) AS steps_rate_limit, coalesce(w.steps, 0) AS steps_slot, \
                coalesce(w.tasks, 0) AS tasks_slot \
           FROM tasker_namespaces n \
           LEFT JOIN rate r ON r.namespace = n.name \
           LEFT JOIN slots w ON w.namespace = n.name \
          ORDER BY n.name"
    ))
    .fetch_all(pool)
    .await
    .map_err(Error::db("counting what waits for a limit"))?;
    Ok(rows
        .into_iter()
        .map(|(namespace, steps_rate_limit, steps_slot, tasks_slot)| {
            (namespace, LimitWaits { steps_rate_limit, steps_slot, tasks_slot })
        })
        .collect())
}
