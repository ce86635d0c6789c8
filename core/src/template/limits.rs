//! Concurrency limits of a template or a step (`concurrency:` in the YAML):
//! at most `max` tasks (template) or steps of that named step (step) at
//! once per value of `key`, a path into the task context. The database
//! enforces them (see core/sql/functions/limit_steps.sql and the baseline's
//! `tasker_concurrency_slots`).

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

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
        let rest = self.key.strip_prefix("context.")?;
        let path: Vec<&str> = rest.split('.').collect();
        path.iter().all(|p| !p.is_empty()).then_some(path)
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
