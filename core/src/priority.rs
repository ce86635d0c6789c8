//! Task priorities: `priority:` on a template (every task's default) or
//! `create_task(priority:)`, an integer from [`MIN`] to [`MAX`], higher
//! first, 0 by default. Every message of a task's steps carries it; how a
//! queue honours it without starving anyone (aging) is the providers'
//! business: PGMQ reads in order of an aged key (`tasker_install_queue`),
//! RabbitMQ's strict priorities are aged by the sweep
//! (`tasker_raise_priorities`). The range has eleven values so that it maps
//! one to one onto RabbitMQ's priorities 0..=10 (more levels cost the
//! broker a sub-queue each, and RabbitMQ advises at most ten or so).

use serde_json::Value;

/// The lowest priority.
pub const MIN: i32 = -5;
/// The highest priority.
pub const MAX: i32 = 5;

/// `x-max-priority` of a RabbitMQ queue: priorities `MIN..=MAX` as `0..=10`.
pub(crate) const RABBITMQ_MAX: u8 = 10;

/// The problem with `priority`, if any; `what` says where it came from
/// (`"priority"`, `"create_task priority"`).
pub(crate) fn problem(what: &str, priority: i64) -> Option<String> {
    (!(i64::from(MIN)..=i64::from(MAX)).contains(&priority))
        .then(|| format!("{what} {priority} is outside {MIN}..{MAX} (higher runs first; 0 is the default)"))
}

/// The RabbitMQ priority of a message whose payload carries a `priority`
/// (a step message); None for any other message (the broker reads it as 0,
/// the lowest).
pub(crate) fn rabbitmq_priority(payload: &Value) -> Option<u8> {
    let priority = payload.get("priority")?.as_i64()?;
    let clamped = priority.clamp(i64::from(MIN), i64::from(MAX)) - i64::from(MIN);
    u8::try_from(clamped).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_range_maps_onto_rabbitmq_priorities_one_to_one() {
        let mapped: Vec<Option<u8>> = (MIN..=MAX).map(|p| rabbitmq_priority(&json!({ "priority": p }))).collect();
        assert_eq!(mapped, (0..=RABBITMQ_MAX).map(Some).collect::<Vec<_>>());
        assert_eq!(rabbitmq_priority(&json!({ "priority": 99 })), Some(RABBITMQ_MAX));
        assert_eq!(rabbitmq_priority(&json!({ "task_uuid": "x" })), None);
        assert_eq!(rabbitmq_priority(&json!({ "priority": "high" })), None);
    }

    #[test]
    fn names_a_priority_out_of_range() {
        assert_eq!(problem("priority", 5), None);
        assert_eq!(problem("priority", -5), None);
        assert_eq!(
            problem("create_task priority", 6).as_deref(),
            Some("create_task priority 6 is outside -5..5 (higher runs first; 0 is the default)")
        );
    }
}
