//! `TaskerCore::Native::Worker`: polling and claiming happen in Rust; Ruby
//! threads take jobs with `next_job(timeout)` (GVL released while waiting),
//! run the handler themselves, and report with `complete` or `fail`.

use std::sync::Arc;
use std::time::Duration;

use magnus::{function, method, prelude::*, Error, RHash, RModule, Ruby, Value};
use tasker_core::{StepFailure, WorkerHandle};

use crate::client::{from_ruby, parse_uuid, to_ruby, Client};
use crate::gvl;

#[magnus::wrap(class = "TaskerCore::Native::Worker", free_immediately, size)]
struct Worker {
    handle: Arc<WorkerHandle>,
}

impl Worker {
    fn start(client: &Client, namespaces: Vec<String>, concurrency: usize) -> Result<Self, Error> {
        let ctx = client.ctx().clone();
        let handle = gvl::run(async move { WorkerHandle::start(ctx, &namespaces, concurrency).await })?;
        Ok(Self { handle: Arc::new(handle) })
    }

    fn id(&self) -> String {
        self.handle.id().to_owned()
    }

    fn is_running(&self) -> bool {
        self.handle.is_running()
    }

    /// A Hash describing the claimed step, or nil after `timeout` seconds.
    /// The task's and the step's rows (`:task`, `:step`) come as JSON text,
    /// which Ruby's parser turns into the string-keyed Hashes ActiveRecord's
    /// `instantiate` takes: building them here, a Ruby call per key and
    /// value, was a tenth of an idle worker's CPU in `perf`.
    fn next_job(ruby: &Ruby, rb_self: &Self, timeout_seconds: f64) -> Result<Option<Value>, Error> {
        let handle = rb_self.handle.clone();
        let timeout = Duration::from_secs_f64(timeout_seconds.max(0.0));
        let Some(job) = gvl::run(async move { handle.next_job(timeout).await })? else {
            return Ok(None);
        };
        // The rows are the claim's text, handed over as they came (a job
        // serializes without them).
        let hash = RHash::from_value(to_ruby(ruby, &job)?)
            .ok_or_else(|| Error::new(ruby.exception_type_error(), "a job converts to a Hash"))?;
        hash.aset(ruby.to_symbol("task"), ruby.str_new(job.task.as_str()))?;
        hash.aset(ruby.to_symbol("step"), ruby.str_new(job.step.as_str()))?;
        Ok(Some(hash.as_value()))
    }

    /// Hands the result to the recorder and returns "complete" at once: the
    /// thread runs its next step while the outcome is committed (see
    /// `WorkerHandle::complete_detached`; shutdown waits for it). A result that
    /// cannot be converted (the Ruby facade checks first; this is the
    /// backstop) is recorded as a permanent failure instead of raising with
    /// the step still claimed, which would hold its slot for good.
    fn complete(ruby: &Ruby, rb_self: &Self, step_uuid: String, result: Value) -> Result<String, Error> {
        let uuid = parse_uuid(&step_uuid)?;
        let handle = rb_self.handle.clone();
        match from_ruby::<serde_json::Value>(ruby, result) {
            Ok(result) => {
                gvl::run(async move { handle.complete_detached(uuid, result).await.map(|()| "complete".to_owned()) })
            }
            Err(e) => {
                let failure = StepFailure {
                    error_class: "TaskerCore::ValidationError".to_owned(),
                    message: format!("the step's result cannot be stored as JSON: {e}"),
                    backtrace: Vec::new(),
                    retryable: false,
                    retry_after_seconds: None,
                };
                gvl::run(async move { handle.fail(uuid, failure).await })
            }
        }
    }

    /// `failure`: {"error_class", "message", "backtrace", "retryable",
    /// "retry_after_seconds"}. Returns the step's new state. A failure that
    /// cannot be converted is recorded as one that says so.
    fn fail(ruby: &Ruby, rb_self: &Self, step_uuid: String, failure: Value) -> Result<String, Error> {
        let uuid = parse_uuid(&step_uuid)?;
        let failure = from_ruby::<StepFailure>(ruby, failure).unwrap_or_else(|e| StepFailure {
            error_class: "TaskerCore::Error".to_owned(),
            message: format!("the handler's failure could not be read: {e}"),
            backtrace: Vec::new(),
            retryable: true,
            retry_after_seconds: None,
        });
        gvl::run(rb_self.handle.fail(uuid, failure))
    }

    fn shutdown(&self, timeout_seconds: f64) -> Result<(), Error> {
        gvl::run(self.handle.shutdown(Duration::from_secs_f64(timeout_seconds.max(0.0))))
    }
}

pub(crate) fn init(ruby: &Ruby, native: RModule) -> Result<(), Error> {
    let class = native.define_class("Worker", ruby.class_object())?;
    class.define_singleton_method("start", function!(Worker::start, 3))?;
    class.define_method("id", method!(Worker::id, 0))?;
    class.define_method("running?", method!(Worker::is_running, 0))?;
    class.define_method("next_job", method!(Worker::next_job, 1))?;
    class.define_method("complete", method!(Worker::complete, 2))?;
    class.define_method("fail", method!(Worker::fail, 2))?;
    class.define_method("shutdown", method!(Worker::shutdown, 1))?;
    Ok(())
}
