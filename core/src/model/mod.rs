//! Row types, as read from the database.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

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
