//! `TaskerCore::Native::Client`: a connection (pool, provider, templates)
//! and the task operations. Wrapped by the Ruby `TaskerCore` module.

use std::sync::Arc;
use std::time::Duration;

use magnus::{function, method, prelude::*, Error, RModule, Ruby, Value};
use tasker_core::{Config, Context, CreateTask, ErrorKind, TaskTemplate, TaskerClient};
use uuid::Uuid;

use crate::{errors, gvl};

/// A template file checked: its path, and its key or what is wrong with it.
type CheckedFile = (String, Option<String>, Option<String>);

#[magnus::wrap(class = "TaskerCore::Native::Client", free_immediately, size)]
pub(crate) struct Client {
    pub(crate) inner: TaskerClient,
}

pub(crate) fn parse_uuid(text: &str) -> Result<Uuid, Error> {
    text.parse().map_err(|_| errors::new(ErrorKind::Validation, format!("{text:?} is not a UUID")))
}

pub(crate) fn to_ruby<T: serde::Serialize>(ruby: &Ruby, value: &T) -> Result<Value, Error> {
    serde_magnus::serialize(ruby, value)
}

/// Converts a Ruby value. The error names the value's class, never the
/// value itself: it may be huge, or not valid UTF-8.
pub(crate) fn from_ruby<T: serde::de::DeserializeOwned>(ruby: &Ruby, value: Value) -> Result<T, Error> {
    serde_magnus::deserialize(ruby, value).map_err(|e| {
        let mut detail = e.to_string();
        if detail.len() > 300 {
            let cut = (0..=300).rev().find(|&i| detail.is_char_boundary(i)).unwrap_or(0);
            detail.truncate(cut);
            detail.push_str("...");
        }
        errors::new(ErrorKind::Validation, format!("cannot convert a {}: {detail}", value.class()))
    })
}

impl Client {
    /// `file` and `explicit` are config hashes (string keys); see
    /// `Config::resolve` for precedence.
    fn connect(ruby: &Ruby, file: Value, explicit: Value) -> Result<Self, Error> {
        let file: serde_json::Value = from_ruby(ruby, file)?;
        let explicit: serde_json::Value = from_ruby(ruby, explicit)?;
        let config = Config::resolve(file, explicit).map_err(|e| errors::to_ruby(&e))?;
        let ctx = gvl::run(Context::connect(config))?;
        Ok(Self { inner: TaskerClient::new(ctx) })
    }

    /// Checks every template file below the configured template_paths
    /// without connecting to anything: `[[path, key or nil, error or nil]]`.
    fn check_templates(ruby: &Ruby, file: Value, explicit: Value) -> Result<Vec<CheckedFile>, Error> {
        let file: serde_json::Value = from_ruby(ruby, file)?;
        let explicit: serde_json::Value = from_ruby(ruby, explicit)?;
        let config = Config::resolve(file, explicit).map_err(|e| errors::to_ruby(&e))?;
        let checked = TaskTemplate::check_paths(&config.template_paths).map_err(|e| errors::to_ruby(&e))?;
        Ok(checked
            .into_iter()
            .map(|(path, result)| {
                let path = path.display().to_string();
                match result {
                    Ok(template) => (path, Some(template.key()), None),
                    Err(e) => (path, None, Some(e.to_string())),
                }
            })
            .collect())
    }

    pub(crate) fn ctx(&self) -> &Arc<Context> {
        self.inner.context()
    }

    fn config(ruby: &Ruby, rb_self: &Self) -> Result<Value, Error> {
        to_ruby(ruby, &rb_self.ctx().config().redacted_json())
    }

    /// messaging.priority_aging_ms, for the task creations on ActiveRecord's
    /// connection (cheaper than the whole `config`).
    fn priority_aging_ms(&self) -> u64 {
        self.ctx().config().messaging.priority_aging_ms
    }

    /// The resolved database URL (with its password), for ActiveRecord.
    fn database_url(&self) -> String {
        self.ctx().config().database_url.clone()
    }

    fn migrate(&self) -> Result<(), Error> {
        gvl::run(self.ctx().migrate())
    }

    /// Registers every template below the configured paths; returns their
    /// keys (`namespace/name@version`).
    fn register_templates(&self) -> Result<Vec<String>, Error> {
        let templates = gvl::run(self.ctx().register_templates())?;
        Ok(templates.iter().map(TaskTemplate::key).collect())
    }

    fn register_template_yaml(&self, yaml: String, origin: String) -> Result<String, Error> {
        let template = TaskTemplate::from_yaml(&yaml, &origin).map_err(|e| errors::to_ruby(&e))?;
        let key = template.key();
        gvl::run(self.ctx().register_template(template))?;
        Ok(key)
    }

    /// Raises UnavailableError at once while the database's circuit
    /// breaker is open.
    fn check_database_available(&self) -> Result<(), Error> {
        self.ctx().check_database_available().map_err(|e| crate::errors::to_ruby(&e))
    }

    /// Opens the database's circuit breaker: a connection of the caller's
    /// own (ActiveRecord's) could not reach it.
    fn database_unreachable(&self, what: String) {
        // In the runtime's context: the breaker's probe is started on it.
        let _runtime = gvl::runtime().enter();
        self.ctx().database_unreachable(&what);
    }

    fn create_task(ruby: &Ruby, rb_self: &Self, request: Value) -> Result<Value, Error> {
        let request: CreateTask = from_ruby(ruby, request)?;
        let task = gvl::run(rb_self.inner.create_task(&request))?;
        to_ruby(ruby, &task)
    }

    /// Checks a creation request without creating: returns
    /// `[context, identity_key]` as they will be stored.
    fn validate_request(ruby: &Ruby, rb_self: &Self, request: Value) -> Result<Value, Error> {
        let request: CreateTask = from_ruby(ruby, request)?;
        to_ruby(ruby, &gvl::run(rb_self.inner.validate_request(&request))?)
    }

    /// `[[template, step, handler], ...]` for the namespaces' templates.
    fn handlers(&self, namespaces: Vec<String>) -> Result<Vec<(String, String, String)>, Error> {
        gvl::run(self.inner.handlers(&namespaces))
    }

    /// A step's `handler.initialization` settings (a Hash, empty when none).
    fn handler_config(
        ruby: &Ruby,
        rb_self: &Self,
        namespace: String,
        name: String,
        version: String,
        step: String,
    ) -> Result<Value, Error> {
        let config = gvl::run(rb_self.inner.handler_config(&namespace, &name, &version, &step))?;
        to_ruby(ruby, &config)
    }

    /// Whether task creation can send its first messages from inside the
    /// database transaction (PGMQ).
    fn queues_in_database(&self) -> bool {
        self.ctx().messaging().queues_in_database()
    }

    /// The queue a namespace's steps go to, with the queue prefix.
    fn step_queue(&self, namespace: String) -> String {
        self.ctx().router().step_queue(&namespace)
    }

    fn task_requests_queue(&self) -> String {
        self.ctx().router().task_requests()
    }

    fn cancel_task(&self, task_uuid: String, reason: String) -> Result<bool, Error> {
        let uuid = parse_uuid(&task_uuid)?;
        gvl::run(self.inner.cancel_task(uuid, &reason))
    }

    fn retry_step(&self, step_uuid: String, reason: String) -> Result<bool, Error> {
        let uuid = parse_uuid(&step_uuid)?;
        gvl::run(self.inner.retry_step(uuid, &reason))
    }

    fn resolve_step_manually(
        ruby: &Ruby,
        rb_self: &Self,
        step_uuid: String,
        results: Value,
        reason: String,
    ) -> Result<bool, Error> {
        let uuid = parse_uuid(&step_uuid)?;
        let results: serde_json::Value = from_ruby(ruby, results)?;
        gvl::run(rb_self.inner.resolve_step_manually(uuid, &results, &reason))
    }

    /// Waits (GVL released) until the task is complete, error or cancelled;
    /// returns [status, its row as JSON or nil] (see `wait_for_end`).
    fn wait_for_task(&self, task_uuid: String, timeout_seconds: f64) -> Result<(String, Option<String>), Error> {
        let uuid = parse_uuid(&task_uuid)?;
        let timeout = Duration::from_secs_f64(timeout_seconds.max(0.0));
        let (status, row) = gvl::run(self.inner.wait_for_end(uuid, timeout))?;
        Ok((status, row.map(|row| row.to_string())))
    }

    fn task(ruby: &Ruby, rb_self: &Self, task_uuid: String) -> Result<Value, Error> {
        let uuid = parse_uuid(&task_uuid)?;
        to_ruby(ruby, &gvl::run(rb_self.inner.task(uuid))?)
    }

    fn steps(ruby: &Ruby, rb_self: &Self, task_uuid: String) -> Result<Value, Error> {
        let uuid = parse_uuid(&task_uuid)?;
        to_ruby(ruby, &gvl::run(rb_self.inner.steps(uuid))?)
    }

    fn task_transitions(ruby: &Ruby, rb_self: &Self, task_uuid: String) -> Result<Value, Error> {
        let uuid = parse_uuid(&task_uuid)?;
        to_ruby(ruby, &gvl::run(rb_self.inner.task_transitions(uuid))?)
    }

    fn step_transitions(ruby: &Ruby, rb_self: &Self, task_uuid: String) -> Result<Value, Error> {
        let uuid = parse_uuid(&task_uuid)?;
        to_ruby(ruby, &gvl::run(rb_self.inner.step_transitions(uuid))?)
    }
}

pub(crate) fn init(ruby: &Ruby, native: RModule) -> Result<(), Error> {
    let class = native.define_class("Client", ruby.class_object())?;
    class.define_singleton_method("connect", function!(Client::connect, 2))?;
    class.define_singleton_method("check_templates", function!(Client::check_templates, 2))?;
    class.define_method("config", method!(Client::config, 0))?;
    class.define_method("database_url", method!(Client::database_url, 0))?;
    class.define_method("priority_aging_ms", method!(Client::priority_aging_ms, 0))?;
    class.define_method("migrate", method!(Client::migrate, 0))?;
    class.define_method("register_templates", method!(Client::register_templates, 0))?;
    class.define_method("register_template_yaml", method!(Client::register_template_yaml, 2))?;
    class.define_method("create_task", method!(Client::create_task, 1))?;
    class.define_method("check_database_available", method!(Client::check_database_available, 0))?;
    class.define_method("database_unreachable", method!(Client::database_unreachable, 1))?;
    class.define_method("validate_request", method!(Client::validate_request, 1))?;
    class.define_method("handlers", method!(Client::handlers, 1))?;
    class.define_method("handler_config", method!(Client::handler_config, 4))?;
    class.define_method("queues_in_database?", method!(Client::queues_in_database, 0))?;
    class.define_method("step_queue", method!(Client::step_queue, 1))?;
    class.define_method("task_requests_queue", method!(Client::task_requests_queue, 0))?;
    class.define_method("cancel_task", method!(Client::cancel_task, 2))?;
    class.define_method("retry_step", method!(Client::retry_step, 2))?;
    class.define_method("resolve_step_manually", method!(Client::resolve_step_manually, 3))?;
    class.define_method("wait_for_task", method!(Client::wait_for_task, 2))?;
    class.define_method("task", method!(Client::task, 1))?;
    class.define_method("steps", method!(Client::steps, 1))?;
    class.define_method("task_transitions", method!(Client::task_transitions, 1))?;
    class.define_method("step_transitions", method!(Client::step_transitions, 1))?;
    Ok(())
}
