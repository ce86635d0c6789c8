//! Row types, as read from the database.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;
use uuid::Uuid;

/// A row as JSON text, as PostgreSQL's `to_jsonb` printed it. A claimed
/// step's task and step rows go this way from the claim to the handler's
/// language, which parses them once into its own objects: parsing them
/// into a [`Value`] here, then printing that again for Ruby, was a tenth of
/// a busy worker's CPU. The worker itself reads the few fields it needs
/// with [`RowJson::fields`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RowJson(Box<RawValue>);

impl RowJson {
    /// The JSON text.
    pub fn as_str(&self) -> &str {
        self.0.get()
    }

    /// The fields `T` names, read from the text (the others are skipped).
    pub fn fields<'a, T: Deserialize<'a>>(&'a self) -> serde_json::Result<T> {
        serde_json::from_str(self.0.get())
    }

    /// The whole row, parsed.
    pub fn to_value(&self) -> Value {
        serde_json::from_str(self.0.get()).expect("a row's JSON text parses")
    }
}

impl PartialEq for RowJson {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

/// JSON's `null`: a row taken out of its job.
impl Default for RowJson {
    fn default() -> Self {
        Self(RawValue::NULL.to_owned())
    }
}

impl From<sqlx::types::Json<Box<RawValue>>> for RowJson {
    fn from(json: sqlx::types::Json<Box<RawValue>>) -> Self {
        Self(json.0)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Task {
    pub task_uuid: Uuid,
    pub namespace: String,
    pub name: String,
    pub version: String,
    pub context: Value,
    pub status: String,
    pub identity_key: Option<String>,
    pub correlation_id: Uuid,
    /// The W3C traceparent its steps' spans continue.
    pub traceparent: Option<String>,
    pub created_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    /// -5..5, higher runs first (see `priority`).
    pub priority: i16,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct WorkflowStep {
    pub step_uuid: Uuid,
    pub task_uuid: Uuid,
    pub name: String,
    pub position: i32,
    pub status: String,
    pub attempts: i32,
    pub max_attempts: i32,
    pub results: Option<Value>,
    pub last_error: Option<Value>,
    pub retry_at: Option<DateTime<Utc>>,
    /// A fan-out child's element of its fan-out step's result array.
    pub input: Option<Value>,
    /// A fan-out child's index in that array.
    pub fan_out_index: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct TaskTransition {
    pub task_uuid: Uuid,
    pub from_state: String,
    pub to_state: String,
    pub metadata: Value,
    pub sort_key: i32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct StepTransition {
    pub step_uuid: Uuid,
    pub from_state: String,
    pub to_state: String,
    pub metadata: Value,
    pub sort_key: i32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_keeps_its_text_and_reads_only_the_fields_asked_for() {
        #[derive(Deserialize)]
        struct Named {
            name: String,
            traceparent: Option<String>,
        }
        let text = r#"{"name": "caf\u00e9 \"orders\"", "context": {"a": [1, 2]}, "traceparent": null}"#;
        let row: RowJson = serde_json::from_str(text).unwrap();
        assert_eq!(row.as_str(), text);
        let named: Named = row.fields().unwrap();
        assert_eq!(named.name, "café \"orders\"");
        assert_eq!(named.traceparent, None);
        assert_eq!(row.to_value()["context"]["a"][1], 2);
        assert_eq!(RowJson::default().as_str(), "null");
        assert_eq!(serde_json::to_string(&row).unwrap(), text);
    }
}
