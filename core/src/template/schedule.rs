//! Cron schedules of templates: parsing (the `croner` crate, time zones
//! from `chrono-tz`) and which slots are due, skipped or still to come.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds};
use croner::Cron;

/// Slots counted one by one after a downtime before the rest of the
/// skipped range is reported as "at least" this many.
const MAX_COUNTED: u64 = 100_000;

/// A parsed cron expression and the time zone its fields are read in.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    cron: Cron,
    tz: Tz,
}

/// What an orchestrator does with the slots of one schedule since the last
/// recorded one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotPlan {
    /// Slots older than the catch-up window: recorded as skipped, never run.
    pub skipped: u64,
    /// True when there were more skipped slots than were counted.
    pub skipped_at_least: bool,
    /// The newest skipped slot.
    pub last_skipped: Option<DateTime<Utc>>,
    /// Slots inside the window, oldest first: each gets its task.
    pub due: Vec<DateTime<Utc>>,
}

impl CronSchedule {
    /// Five fields (minute, hour, day of month, month, day of week), or six
    /// with seconds first; `@daily` and the like too. `time_zone` is an
    /// IANA name; UTC when None.
    pub fn parse(cron: &str, time_zone: Option<&str>) -> Result<Self, String> {
        let tz = match time_zone {
            Some(name) => Tz::from_str(name).map_err(|_| format!("unknown time zone {name:?}"))?,
            None => Tz::UTC,
        };
        let fields = cron.split_whitespace().count();
        if !cron.trim_start().starts_with('@') && !(5..=6).contains(&fields) {
            return Err(format!(
                "it has {fields} field(s); a cron expression has 5 (minute, hour, day of month, month, day of week) \
                 or 6 (seconds first)"
            ));
        }
        let cron = CronParser::builder().seconds(Seconds::Optional).build().parse(cron).map_err(|e| e.to_string())?;
        Ok(Self { cron, tz })
    }

    /// The first slot strictly after `t`, or None when the expression
    /// never matches again.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.find_next_occurrence(&t.with_timezone(&self.tz), false).ok().map(|next| next.with_timezone(&Utc))
    }

    /// The slots after `last` up to and including `now`: those at or before
    /// `now - catch_up` are skipped (a downtime longer than the window), the
    /// others are due.
    pub fn plan(&self, last: DateTime<Utc>, now: DateTime<Utc>, catch_up: Duration) -> SlotPlan {
        let window_start = now - chrono::Duration::from_std(catch_up).unwrap_or(chrono::Duration::MAX);
        let mut plan = SlotPlan { skipped: 0, skipped_at_least: false, last_skipped: None, due: Vec::new() };
        let mut cursor = last;
        while let Some(slot) = self.next_after(cursor) {
            if slot > now {
                break;
            }
            if slot <= window_start {
                plan.skipped += 1;
                plan.last_skipped = Some(slot);
                if plan.skipped >= MAX_COUNTED {
                    // Jump to the newest slot before the window.
                    plan.skipped_at_least = true;
                    plan.last_skipped = self
                        .cron
                        .find_previous_occurrence(&window_start.with_timezone(&self.tz), true)
                        .ok()
                        .map(|t| t.with_timezone(&Utc))
                        .or(plan.last_skipped);
                    cursor = plan.last_skipped.unwrap_or(window_start);
                    continue;
                }
            } else {
                plan.due.push(slot);
            }
            cursor = slot;
        }
        plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn parses_five_and_six_fields_and_refuses_bad_ones() {
        assert!(CronSchedule::parse("0 2 * * *", None).is_ok());
        assert!(CronSchedule::parse("*/2 * * * * *", None).is_ok());
        assert!(CronSchedule::parse("@daily", Some("Europe/Berlin")).is_ok());
        assert!(CronSchedule::parse("61 * * * *", None).is_err());
        assert!(CronSchedule::parse("every day", None).is_err());
        assert!(CronSchedule::parse("* * *", None).is_err());
        assert_eq!(
            CronSchedule::parse("0 0 0 1 1 * 2030", None).unwrap_err(),
            "it has 7 field(s); a cron expression has 5 (minute, hour, day of month, month, day of week) or 6 \
             (seconds first)"
        );
        assert_eq!(
            CronSchedule::parse("0 2 * * *", Some("Mars/Olympus")).unwrap_err(),
            "unknown time zone \"Mars/Olympus\""
        );
    }

    #[test]
    fn next_slot_is_read_in_the_time_zone() {
        let nightly = CronSchedule::parse("0 2 * * *", Some("Europe/Berlin")).unwrap();
        // 02:00 in Berlin is 01:00 UTC in winter and 00:00 UTC in summer.
        assert_eq!(nightly.next_after(at("2026-01-10T12:00:00Z")), Some(at("2026-01-11T01:00:00Z")));
        assert_eq!(nightly.next_after(at("2026-07-10T12:00:00Z")), Some(at("2026-07-11T00:00:00Z")));
        let utc = CronSchedule::parse("0 2 * * *", None).unwrap();
        assert_eq!(utc.next_after(at("2026-01-10T12:00:00Z")), Some(at("2026-01-11T02:00:00Z")));
        // Strictly after: a slot is never returned twice.
        assert_eq!(utc.next_after(at("2026-01-11T02:00:00Z")), Some(at("2026-01-12T02:00:00Z")));
    }

    #[test]
    fn seconds_level_slots_are_due_in_order() {
        let every_two = CronSchedule::parse("*/2 * * * * *", None).unwrap();
        let plan = every_two.plan(at("2026-01-01T00:00:00Z"), at("2026-01-01T00:00:07Z"), Duration::from_secs(60));
        assert_eq!(
            plan,
            SlotPlan {
                skipped: 0,
                skipped_at_least: false,
                last_skipped: None,
                due: vec![at("2026-01-01T00:00:02Z"), at("2026-01-01T00:00:04Z"), at("2026-01-01T00:00:06Z")],
            }
        );
    }

    #[test]
    fn slots_older_than_the_catch_up_window_are_skipped() {
        let every_second = CronSchedule::parse("* * * * * *", None).unwrap();
        // Last fired at :00, back at :10 with a 3 s window: :01..:07 are
        // skipped, :08, :09 and :10 fire.
        let plan = every_second.plan(at("2026-01-01T00:00:00Z"), at("2026-01-01T00:00:10Z"), Duration::from_secs(3));
        assert_eq!(plan.skipped, 7);
        assert!(!plan.skipped_at_least);
        assert_eq!(plan.last_skipped, Some(at("2026-01-01T00:00:07Z")));
        assert_eq!(plan.due, vec![at("2026-01-01T00:00:08Z"), at("2026-01-01T00:00:09Z"), at("2026-01-01T00:00:10Z")]);
    }

    #[test]
    fn a_very_long_downtime_is_counted_up_to_a_bound() {
        let every_second = CronSchedule::parse("* * * * * *", None).unwrap();
        let plan = every_second.plan(at("2026-01-01T00:00:00Z"), at("2026-01-03T00:00:00Z"), Duration::from_secs(2));
        assert!(plan.skipped_at_least);
        assert_eq!(plan.skipped, MAX_COUNTED);
        assert_eq!(plan.last_skipped, Some(at("2026-01-02T23:59:58Z")));
        assert_eq!(plan.due, vec![at("2026-01-02T23:59:59Z"), at("2026-01-03T00:00:00Z")]);
    }

    #[test]
    fn nothing_is_due_before_the_first_slot() {
        let nightly = CronSchedule::parse("0 2 * * *", None).unwrap();
        let plan = nightly.plan(at("2026-01-01T03:00:00Z"), at("2026-01-01T23:00:00Z"), Duration::from_secs(300));
        assert_eq!(plan, SlotPlan { skipped: 0, skipped_at_least: false, last_skipped: None, due: vec![] });
    }
}
