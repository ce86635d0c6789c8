//! `TaskerCore::Native::Orchestrator`: the orchestration components running
//! on the extension's tokio runtime, off every Ruby thread.

use std::time::Duration;

use magnus::{function, method, prelude::*, Error, RModule, Ruby};
use tasker_core::OrchestratorHandle;

use crate::client::Client;
use crate::gvl;

#[magnus::wrap(class = "TaskerCore::Native::Orchestrator", free_immediately, size)]
struct Orchestrator {
    handle: OrchestratorHandle,
}

impl Orchestrator {
    fn start(client: &Client) -> Result<Self, Error> {
        let ctx = client.ctx().clone();
        // Components are spawned on the runtime, so start inside it.
        let handle = gvl::run(async move { OrchestratorHandle::start(ctx).await })?;
        Ok(Self { handle })
    }

    fn is_running(&self) -> bool {
        self.handle.is_running()
    }

    fn shutdown(&self, timeout_seconds: f64) -> Result<(), Error> {
        gvl::run(self.handle.shutdown(Duration::from_secs_f64(timeout_seconds.max(0.0))))
    }
}

pub(crate) fn init(ruby: &Ruby, native: RModule) -> Result<(), Error> {
    let class = native.define_class("Orchestrator", ruby.class_object())?;
    class.define_singleton_method("start", function!(Orchestrator::start, 1))?;
    class.define_method("running?", method!(Orchestrator::is_running, 0))?;
    class.define_method("shutdown", method!(Orchestrator::shutdown, 1))?;
    Ok(())
}
