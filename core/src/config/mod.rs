//! One typed configuration. Precedence: explicit options, then the
//! environment (`DATABASE_URL`, `TASKER_*`), then the config file, then
//! defaults. [`Config::resolve`] merges the layers and reports every bad key
//! and value at once.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};

pub(crate) const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/tasker_development";

#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// PostgreSQL URL: the source of truth, and the PGMQ queues.
    pub database_url: String,
    /// Connections in this process's pool.
    pub max_connections: u32,
    /// Folders (or files) holding YAML task templates.
    pub template_paths: Vec<PathBuf>,
    pub messaging: MessagingConfig,
    pub orchestration: OrchestrationConfig,
    pub worker: WorkerConfig,
    pub retention: RetentionConfig,
    pub schedules: SchedulesConfig,
}

/// Delayed tasks, cron schedules and deadlines (an orchestrator's
/// scheduler: `orchestration/scheduler.rs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchedulesConfig {
    /// After a downtime, cron slots at most this old still fire; older ones
    /// are skipped (recorded and logged once).
    pub catch_up_seconds: u64,
    /// How often the scheduler starts due delayed tasks, fires due cron
    /// slots and ends tasks past their deadline.
    pub poll_interval_ms: u64,
}

impl Default for SchedulesConfig {
    fn default() -> Self {
        Self { catch_up_seconds: 300, poll_interval_ms: 250 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum MessagingProvider {
    /// Queues in the same PostgreSQL database (the default).
    #[default]
    Pgmq,
    /// RabbitMQ at `messaging.rabbitmq_url`.
    Rabbitmq,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MessagingConfig {
    pub provider: MessagingProvider,
    /// AMQP URL of RabbitMQ, used when the provider is `rabbitmq`.
    pub rabbitmq_url: String,
    /// How long a received message stays invisible before it is redelivered
    /// to someone else, unless acked.
    pub visibility_timeout_seconds: u32,
    /// Wake readers with LISTEN/NOTIFY on send. Readers poll as well, so
    /// either alone drives every workflow; off means polling only.
    pub notifications: bool,
    /// RabbitMQ only: deliveries the broker pushes to one consumer of a
    /// queue ahead of its acks (`basic.qos`). Held messages count, so a
    /// worker with concurrency N holds at most this many per queue.
    pub prefetch: u16,
    /// Put before every queue name, the orchestration queues included
    /// (`<prefix><namespace>_queue`, `<prefix>orchestration_task_requests`),
    /// so two apps or two test suites can share a broker, or a database
    /// with namespaces of their own, without sharing queues. Empty by
    /// default.
    pub queue_prefix: String,
    /// A message delivered more times than this (its processing keeps
    /// failing before it is settled) goes to the queue's dead-letter store
    /// with the reason, instead of being delivered again.
    pub max_receive_count: u32,
    /// Aging of task priorities: a step message waits behind newer
    /// messages of higher priority for at most (their priority - its) times
    /// this, so low priority still progresses under a stream of high. With
    /// PGMQ every process that sends step messages (workers, orchestrators,
    /// the app creating tasks) keys them with its own value, so give them
    /// all the same; with RabbitMQ the orchestrator's sweep applies it.
    pub priority_aging_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OrchestrationConfig {
    /// Task requests read per poll.
    pub batch_size: u32,
    /// Longest wait between polls when no notification arrives.
    pub poll_interval_ms: u64,
    /// How often the sweep looks for stuck steps and unadvanced tasks.
    pub sweep_interval_ms: u64,
    /// An enqueued step whose message has not been taken for this long is
    /// sent again (a safety net for messages lost outside PostgreSQL).
    pub stuck_enqueued_seconds: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// Namespaces whose queues this worker polls.
    pub namespaces: Vec<String>,
    /// Steps in flight at once in this worker.
    pub concurrency: u32,
    /// Longest wait between polls when no notification arrives.
    pub poll_interval_ms: u64,
}

/// How long finished work is kept (see `retention.rs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Tasks finished (complete, error, cancelled) longer ago than this are
    /// deleted with their steps, edges and history. 0 keeps them for good.
    pub finished_tasks_days: u32,
    /// PGMQ archive rows (dead letters) older than this are deleted. 0
    /// keeps them for good.
    pub archive_days: u32,
    /// Rows deleted per transaction.
    pub batch_size: u32,
    /// How often an orchestrator prunes; 0: never (prune with
    /// `rake tasker:prune` or `TaskerCore.prune!` instead).
    pub interval_seconds: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self { finished_tasks_days: 30, archive_days: 14, batch_size: 500, interval_seconds: 3600 }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database_url: DEFAULT_DATABASE_URL.to_owned(),
            max_connections: 10,
            template_paths: Vec::new(),
            messaging: MessagingConfig::default(),
            orchestration: OrchestrationConfig::default(),
            worker: WorkerConfig::default(),
            retention: RetentionConfig::default(),
            schedules: SchedulesConfig::default(),
        }
    }
}

impl Default for MessagingConfig {
    fn default() -> Self {
        Self {
            provider: MessagingProvider::Pgmq,
            rabbitmq_url: "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned(),
            visibility_timeout_seconds: 30,
            notifications: true,
            prefetch: 16,
            queue_prefix: String::new(),
            max_receive_count: 5,
            priority_aging_ms: 10_000,
        }
    }
}

impl Default for OrchestrationConfig {
    fn default() -> Self {
        Self { batch_size: 50, poll_interval_ms: 200, sweep_interval_ms: 1000, stuck_enqueued_seconds: 600 }
    }
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self { namespaces: Vec::new(), concurrency: 4, poll_interval_ms: 200 }
    }
}

/// Environment variables and the config keys they set.
const ENV_KEYS: &[(&str, &[&str])] = &[
    ("TASKER_DATABASE_URL", &["database_url"]),
    ("DATABASE_URL", &["database_url"]),
    ("TASKER_MAX_CONNECTIONS", &["max_connections"]),
    ("TASKER_MESSAGING_PROVIDER", &["messaging", "provider"]),
    ("TASKER_RABBITMQ_URL", &["messaging", "rabbitmq_url"]),
    ("RABBITMQ_URL", &["messaging", "rabbitmq_url"]),
    ("TASKER_VISIBILITY_TIMEOUT_SECONDS", &["messaging", "visibility_timeout_seconds"]),
    ("TASKER_MESSAGING_PREFETCH", &["messaging", "prefetch"]),
    ("TASKER_QUEUE_PREFIX", &["messaging", "queue_prefix"]),
    ("TASKER_MAX_RECEIVE_COUNT", &["messaging", "max_receive_count"]),
    ("TASKER_PRIORITY_AGING_MS", &["messaging", "priority_aging_ms"]),
    ("TASKER_WORKER_CONCURRENCY", &["worker", "concurrency"]),
    ("TASKER_SCHEDULES_CATCH_UP_SECONDS", &["schedules", "catch_up_seconds"]),
    ("TASKER_SCHEDULES_POLL_INTERVAL_MS", &["schedules", "poll_interval_ms"]),
];

impl Config {
    /// Defaults, overridden by `file`, then by the environment, then by
    /// `explicit`. Both layers are JSON objects shaped like the config.
    pub fn resolve(file: Value, explicit: Value) -> Result<Self> {
        Self::resolve_with_env(file, explicit, |name| std::env::var(name).ok())
    }

    /// [`Config::resolve`] with the environment given as a function, for tests.
    pub fn resolve_with_env(file: Value, explicit: Value, env: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let mut merged = serde_json::to_value(Config::default()).expect("config serializes");
        merge(&mut merged, file);
        // The first variable listed for a key wins, so apply them in reverse.
        for (name, path) in ENV_KEYS.iter().rev() {
            if let Some(raw) = env(name).filter(|v| !v.is_empty()) {
                let value = raw.parse::<u64>().map(Value::from).unwrap_or(Value::String(raw));
                merge(&mut merged, nest(path, value));
            }
        }
        merge(&mut merged, explicit);
        let config: Config =
            serde_json::from_value(merged).map_err(|e| Error::config(format!("invalid configuration: {e}")))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every value and reports all problems in one error.
    pub fn validate(&self) -> Result<()> {
        let mut problems = Vec::new();
        if !(self.database_url.starts_with("postgres://") || self.database_url.starts_with("postgresql://")) {
            problems.push(format!("database_url must be a postgres:// URL, got {:?}", redact_url(&self.database_url)));
        }
        let positive = [
            ("max_connections", u64::from(self.max_connections)),
            ("messaging.visibility_timeout_seconds", u64::from(self.messaging.visibility_timeout_seconds)),
            ("messaging.prefetch", u64::from(self.messaging.prefetch)),
            ("messaging.max_receive_count", u64::from(self.messaging.max_receive_count)),
            ("messaging.priority_aging_ms", self.messaging.priority_aging_ms),
            ("orchestration.batch_size", u64::from(self.orchestration.batch_size)),
            ("orchestration.poll_interval_ms", self.orchestration.poll_interval_ms),
            ("orchestration.sweep_interval_ms", self.orchestration.sweep_interval_ms),
            ("orchestration.stuck_enqueued_seconds", self.orchestration.stuck_enqueued_seconds),
            ("worker.concurrency", u64::from(self.worker.concurrency)),
            ("worker.poll_interval_ms", self.worker.poll_interval_ms),
            ("retention.batch_size", u64::from(self.retention.batch_size)),
            ("schedules.poll_interval_ms", self.schedules.poll_interval_ms),
        ];
        for (key, value) in positive {
            if value == 0 {
                problems.push(format!("{key} must be at least 1, got 0"));
            }
        }
        if self.messaging.provider == MessagingProvider::Rabbitmq
            && !(self.messaging.rabbitmq_url.starts_with("amqp://")
                || self.messaging.rabbitmq_url.starts_with("amqps://"))
        {
            problems.push(format!(
                "messaging.rabbitmq_url must be an amqp:// URL, got {:?}",
                redact_url(&self.messaging.rabbitmq_url)
            ));
        }
        if !valid_queue_prefix(&self.messaging.queue_prefix) {
            problems.push(format!(
                "messaging.queue_prefix must be at most {MAX_QUEUE_PREFIX_LEN} lowercase letters, digits and \
                 underscores, starting with a letter, got {:?}",
                self.messaging.queue_prefix
            ));
        }
        if self.messaging.priority_aging_ms > MAX_PRIORITY_AGING_MS {
            problems.push(format!(
                "messaging.priority_aging_ms must be at most {MAX_PRIORITY_AGING_MS} (a day), got {}",
                self.messaging.priority_aging_ms
            ));
        }
        if self.orchestration.batch_size > 1000 {
            problems
                .push(format!("orchestration.batch_size must be at most 1000, got {}", self.orchestration.batch_size));
        }
        for ns in &self.worker.namespaces {
            if let Err(problem) = crate::template::check_identifier("namespace", ns) {
                problems.push(format!("worker.namespaces: {problem}"));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::config(format!("invalid configuration: {}", problems.join("; "))))
        }
    }

    /// The database URL with any password replaced, for logs and errors.
    pub fn redacted_database_url(&self) -> String {
        redact_url(&self.database_url)
    }

    /// The whole configuration as JSON with every URL's passwords replaced:
    /// what a config dump may show.
    pub fn redacted_json(&self) -> Value {
        let mut json = serde_json::to_value(self).unwrap_or(Value::Null);
        json["database_url"] = self.redacted_database_url().into();
        json["messaging"]["rabbitmq_url"] = redact_url(&self.messaging.rabbitmq_url).into();
        json
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("database_url", &self.redacted_database_url())
            .field("max_connections", &self.max_connections)
            .field("template_paths", &self.template_paths)
            .field("messaging.provider", &self.messaging.provider)
            .field("messaging.rabbitmq_url", &redact_url(&self.messaging.rabbitmq_url))
            .field("messaging.visibility_timeout_seconds", &self.messaging.visibility_timeout_seconds)
            .field("messaging.notifications", &self.messaging.notifications)
            .field("messaging.prefetch", &self.messaging.prefetch)
            .field("messaging.queue_prefix", &self.messaging.queue_prefix)
            .field("messaging.priority_aging_ms", &self.messaging.priority_aging_ms)
            .field("orchestration", &self.orchestration)
            .field("worker", &self.worker)
            .field("schedules", &self.schedules)
            .finish()
    }
}

/// Longest aging step of priorities: a day (a message of the lowest
/// priority then waits up to ten days behind newer ones of the highest).
pub(crate) const MAX_PRIORITY_AGING_MS: u64 = 86_400_000;

/// Longest queue prefix: PGMQ's queue names are at most 47 bytes, and a
/// step queue is `<prefix><namespace>_queue`.
pub(crate) const MAX_QUEUE_PREFIX_LEN: usize = 16;

fn valid_queue_prefix(prefix: &str) -> bool {
    prefix.is_empty()
        || (prefix.len() <= MAX_QUEUE_PREFIX_LEN
            && prefix.starts_with(|c: char| c.is_ascii_lowercase())
            && prefix.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
}

/// Replaces every password a URL can carry with `***`: the userinfo's
/// (`scheme://user:password@host/...`) and query parameters that hold one
/// (`?password=...`, `sslpassword=...`), which libpq accepts too.
pub(crate) fn redact_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let mut out = redact_userinfo(base);
    if let Some(query) = query {
        out.push('?');
        let params: Vec<String> = query
            .split('&')
            .map(|param| match param.split_once('=') {
                Some((key, _)) if key.to_ascii_lowercase().contains("password") => format!("{key}=***"),
                _ => param.to_owned(),
            })
            .collect();
        out.push_str(&params.join("&"));
    }
    out
}

fn redact_userinfo(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else { return url.to_owned() };
    let rest = &url[scheme_end + 3..];
    let Some(at) = rest.rfind('@') else { return url.to_owned() };
    match rest[..at].find(':') {
        Some(colon) => format!("{}{}:***{}", &url[..scheme_end + 3], &rest[..colon], &rest[at..]),
        None => url.to_owned(),
    }
}

fn nest(path: &[&str], value: Value) -> Value {
    path.iter().rev().fold(value, |inner, key| {
        let mut map = Map::new();
        map.insert((*key).to_owned(), inner);
        Value::Object(map)
    })
}

/// Deep-merges `overlay` into `base`; objects merge key by key, anything
/// else (including null, which means "not given") replaces or is skipped.
fn merge(base: &mut Value, overlay: Value) {
    match (base, overlay) {
        (_, Value::Null) => {}
        (Value::Object(base), Value::Object(overlay)) => {
            for (key, value) in overlay {
                match base.get_mut(&key) {
                    Some(slot) => merge(slot, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (slot, value) => *slot = value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn defaults_are_valid() {
        let config = Config::resolve_with_env(Value::Null, Value::Null, no_env).unwrap();
        assert_eq!(config, Config::default());
    }

    #[test]
    fn explicit_beats_env_beats_file() {
        let env = |name: &str| match name {
            "DATABASE_URL" => Some("postgres://env@localhost/env".to_owned()),
            "TASKER_WORKER_CONCURRENCY" => Some("7".to_owned()),
            _ => None,
        };
        let file = json!({"database_url": "postgres://file@localhost/file", "max_connections": 3,
                          "worker": {"concurrency": 2, "poll_interval_ms": 50}});
        let explicit = json!({"database_url": "postgres://explicit@localhost/x"});
        let config = Config::resolve_with_env(file, explicit, env).unwrap();
        assert_eq!(config.database_url, "postgres://explicit@localhost/x");
        assert_eq!(config.max_connections, 3);
        assert_eq!(config.worker.concurrency, 7);
        assert_eq!(config.worker.poll_interval_ms, 50);
    }

    #[test]
    fn reports_every_problem_at_once() {
        let explicit = json!({"database_url": "mysql://u:secret@h/db", "max_connections": 0,
                              "worker": {"namespaces": ["Bad-Name"]}});
        let err = Config::resolve_with_env(Value::Null, explicit, no_env).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("database_url must be a postgres:// URL, got \"mysql://u:***@h/db\""), "{msg}");
        assert!(msg.contains("max_connections must be at least 1"), "{msg}");
        assert!(msg.contains("worker.namespaces: namespace \"Bad-Name\""), "{msg}");
        assert!(!msg.contains("secret"), "{msg}");
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = Config::resolve_with_env(Value::Null, json!({"worker": {"concurency": 3}}), no_env).unwrap_err();
        assert!(err.to_string().contains("unknown field `concurency`"), "{err}");
    }

    #[test]
    fn rabbitmq_url_comes_from_the_environment_and_is_checked() {
        let env = |name: &str| (name == "RABBITMQ_URL").then(|| "amqp://u:pw@mq:5672/%2f".to_owned());
        let config =
            Config::resolve_with_env(Value::Null, json!({"messaging": {"provider": "rabbitmq"}}), env).unwrap();
        assert_eq!(config.messaging.provider, MessagingProvider::Rabbitmq);
        assert_eq!(config.messaging.rabbitmq_url, "amqp://u:pw@mq:5672/%2f");
        assert!(!format!("{config:?}").contains("pw@"));
        let err = Config::resolve_with_env(
            Value::Null,
            json!({"messaging": {"provider": "rabbitmq", "rabbitmq_url": "http://x"}}),
            no_env,
        )
        .unwrap_err();
        assert!(err.to_string().contains("messaging.rabbitmq_url must be an amqp:// URL"), "{err}");
    }

    #[test]
    fn unknown_provider_is_named() {
        let err = Config::resolve_with_env(Value::Null, json!({"messaging": {"provider": "sqs"}}), no_env).unwrap_err();
        assert!(err.to_string().contains("unknown variant `sqs`"), "{err}");
    }

    #[test]
    fn queue_prefix_comes_from_the_environment_and_is_checked() {
        let env = |name: &str| (name == "TASKER_QUEUE_PREFIX").then(|| "ci_42_".to_owned());
        assert_eq!(Config::resolve_with_env(Value::Null, Value::Null, env).unwrap().messaging.queue_prefix, "ci_42_");
        let file = json!({"messaging": {"queue_prefix": "file_"}});
        assert_eq!(Config::resolve_with_env(file, Value::Null, no_env).unwrap().messaging.queue_prefix, "file_");
        for bad in ["Upper_", "1abc", "a-b", "far_too_long_a_prefix"] {
            let err =
                Config::resolve_with_env(Value::Null, json!({"messaging": {"queue_prefix": bad}}), no_env).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "invalid configuration: messaging.queue_prefix must be at most 16 lowercase letters, digits \
                     and underscores, starting with a letter, got {bad:?}"
                )
            );
        }
    }

    #[test]
    fn operations_settings_have_defaults_the_environment_and_checks() {
        let config = Config::resolve_with_env(Value::Null, Value::Null, no_env).unwrap();
        assert_eq!(config.messaging.max_receive_count, 5);
        assert_eq!(
            config.retention,
            RetentionConfig { finished_tasks_days: 30, archive_days: 14, batch_size: 500, interval_seconds: 3600 }
        );
        let env = |name: &str| (name == "TASKER_MAX_RECEIVE_COUNT").then(|| "9".to_owned());
        assert_eq!(Config::resolve_with_env(Value::Null, Value::Null, env).unwrap().messaging.max_receive_count, 9);
        let file = json!({"retention": {"finished_tasks_days": 0, "archive_days": 2}});
        let config = Config::resolve_with_env(file, Value::Null, no_env).unwrap();
        assert_eq!((config.retention.finished_tasks_days, config.retention.archive_days), (0, 2));
        let bad = json!({"messaging": {"max_receive_count": 0}, "retention": {"batch_size": 0}});
        let err = Config::resolve_with_env(Value::Null, bad, no_env).unwrap_err().to_string();
        assert!(err.contains("messaging.max_receive_count must be at least 1"), "{err}");
        assert_eq!(config.messaging.priority_aging_ms, 10_000);
        let env = |name: &str| (name == "TASKER_PRIORITY_AGING_MS").then(|| "250".to_owned());
        assert_eq!(Config::resolve_with_env(Value::Null, Value::Null, env).unwrap().messaging.priority_aging_ms, 250);
        for (aging, problem) in [
            (0, "messaging.priority_aging_ms must be at least 1, got 0"),
            (86_400_001, "messaging.priority_aging_ms must be at most 86400000 (a day), got 86400001"),
        ] {
            let bad = json!({"messaging": {"priority_aging_ms": aging}});
            let err = Config::resolve_with_env(Value::Null, bad, no_env).unwrap_err().to_string();
            assert_eq!(err, format!("invalid configuration: {problem}"));
        }
        assert!(err.contains("retention.batch_size must be at least 1"), "{err}");
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact_url("postgres://u:pw@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            redact_url("postgres://u@h/db?sslmode=disable&password=s3cret&PassWord=x&sslpassword=k"),
            "postgres://u@h/db?sslmode=disable&password=***&PassWord=***&sslpassword=***"
        );
        assert_eq!(redact_url("postgres://u:p@ss@h/db?password=a"), "postgres://u:***@h/db?password=***");
        assert_eq!(redact_url("amqp://guest:guest@h:5672/%2f"), "amqp://guest:***@h:5672/%2f");
    }

    #[test]
    fn no_dump_or_error_shows_a_password() {
        let explicit = json!({
            "database_url": "postgres://app@db/prod?password=hunter2",
            "messaging": {"rabbitmq_url": "amqp://app:hunter2@mq/%2f"},
        });
        let config = Config::resolve_with_env(Value::Null, explicit, no_env).unwrap();
        for dump in [format!("{config:?}"), config.redacted_json().to_string()] {
            assert!(!dump.contains("hunter2"), "{dump}");
            assert!(dump.contains("postgres://app@db/prod?password=***"), "{dump}");
            assert!(dump.contains("amqp://app:***@mq/%2f"), "{dump}");
        }
        let bad = json!({"database_url": "mysql://app@db/prod?password=hunter2"});
        let err = Config::resolve_with_env(Value::Null, bad, no_env).unwrap_err().to_string();
        assert!(!err.contains("hunter2") && err.contains("password=***"), "{err}");
    }
}
