//! Concurrency limits of a template or a step (`concurrency:` in the YAML):
//! at most `max` tasks (template) or steps of that named step (step) at
//! once per value of `key`, a path into the task context; and rate limits
//! of a step (`rate_limit:`): at most `burst` starts in any `burst /
//! per_second` seconds per key value. The database enforces them (see
//! core/sql/functions/limit_steps.sql and the baseline's
//! `tasker_concurrency_slots` and `tasker_rate_buckets`).

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// `context.a.b` as `["a", "b"]`; None for anything else.
fn context_path(key: &str) -> Option<Vec<&str>> {
    let path: Vec<&str> = key.strip_prefix("context.")?.split('.').collect();
    path.iter().all(|p| !p.is_empty()).then_some(path)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConcurrencySpec {
    /// A path into the task context, `context.customer_id` or
    /// `context.order.merchant`: tasks (or steps) whose contexts have the
    /// same value there share the limit.
    pub key: String,
    /// How many may run at once per key value, at least 1.
    pub max: u32,
}

impl ConcurrencySpec {
    /// The context path of `key` (`["customer_id"]`), when it is one.
    pub fn path(&self) -> Option<Vec<&str>> {
        context_path(&self.key)
    }

    /// The problems with this declaration, each prefixed by `at` (`step
    /// "charge"` or `the template`).
    pub(crate) fn problems(&self, at: &str) -> Vec<String> {
        let mut problems = Vec::new();
        if self.path().is_none() {
            problems.push(format!(
                "{at} has concurrency.key {:?}, which is not a path into the task context like context.customer_id",
                self.key
            ));
        }
        if self.max == 0 {
            problems.push(format!("{at} has concurrency.max 0; it must be at least 1"));
        } else if self.max > i32::MAX as u32 {
            problems.push(format!("{at} has concurrency.max {}, which is too large", self.max));
        }
        problems
    }

    /// What the database keeps for a limited named step: the scope all the
    /// template's versions share (`step:<namespace>/<name>/<step>`), the
    /// context path and the maximum.
    pub(crate) fn to_row(&self, scope: String) -> Value {
        json!({ "scope": scope, "path": self.path().unwrap_or_default(), "max": self.max })
    }
}

/// The most tokens a rate limit's bucket holds.
pub(crate) const MAX_BURST: u32 = 1000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSpec {
    /// A path into the task context, as for [`ConcurrencySpec::key`].
    pub key: String,
    /// Starts a second, over time (a fraction is allowed: 0.5 is one
    /// every 2 s).
    pub per_second: f64,
    /// Starts allowed at once; a token used comes back `burst /
    /// per_second` seconds later. 1 when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

impl RateLimitSpec {
    /// The context path of `key`, when it is one.
    pub fn path(&self) -> Option<Vec<&str>> {
        context_path(&self.key)
    }

    /// Starts allowed at once (`burst`, 1 when not given).
    pub fn burst(&self) -> u32 {
        self.burst.unwrap_or(1)
    }

    pub(crate) fn problems(&self, at: &str) -> Vec<String> {
        let mut problems = Vec::new();
        if self.path().is_none() {
            problems.push(format!(
                "{at} has rate_limit.key {:?}, which is not a path into the task context like context.merchant_id",
                self.key
            ));
        }
        if !(self.per_second.is_finite() && self.per_second > 0.0) {
            problems.push(format!("{at} has rate_limit.per_second {}; it must be above 0", self.per_second));
        }
        if self.burst == Some(0) || self.burst() > MAX_BURST {
            problems.push(format!("{at} has rate_limit.burst {}; it must be from 1 to {MAX_BURST}", self.burst()));
        }
        problems
    }

    /// What the database keeps for a rate-limited named step.
    pub(crate) fn to_row(&self, scope: String) -> Value {
        json!({ "scope": scope, "path": self.path().unwrap_or_default(), "per_second": self.per_second,
                "burst": self.burst() })
    }
}
