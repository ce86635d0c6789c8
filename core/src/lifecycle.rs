//! The lifecycle every long-running component shares: started as named
//! tokio tasks, told to stop through one watch channel, stopped in reverse
//! order of starting, each given what is left of the timeout.

use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::{Error, ErrorKind, Result};

#[derive(Debug)]
pub(crate) struct Lifecycle {
    stop: watch::Sender<bool>,
    components: Mutex<Vec<(&'static str, JoinHandle<()>)>>,
}

impl Lifecycle {
    pub(crate) fn new() -> Self {
        Self { stop: watch::channel(false).0, components: Mutex::new(Vec::new()) }
    }

    /// Starts a component; it should return soon after the receiver
    /// changes to true.
    pub(crate) fn spawn<F, Fut>(&self, name: &'static str, component: F)
    where
        F: FnOnce(watch::Receiver<bool>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let handle = tokio::spawn(component(self.stop.subscribe()));
        tracing::debug!(component = name, "started");
        self.components.lock().expect("lifecycle lock").push((name, handle));
    }

    pub(crate) fn is_running(&self) -> bool {
        !*self.stop.borrow() && self.components.lock().expect("lifecycle lock").iter().any(|(_, h)| !h.is_finished())
    }

    pub(crate) fn is_stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Tells every component to stop, without waiting for them (see
    /// [`Lifecycle::shutdown`]).
    pub(crate) fn signal_stop(&self) {
        self.stop.send_replace(true);
    }

    /// A view of the stop signal for helpers that are not components.
    pub(crate) fn stopping(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// Signals every component, then waits for each in reverse order. A
    /// component still running at the deadline is aborted; one that
    /// panicked is reported.
    pub(crate) async fn shutdown(&self, timeout: Duration) -> Result<()> {
        self.signal_stop();
        let deadline = Instant::now() + timeout;
        let components: Vec<_> = std::mem::take(&mut *self.components.lock().expect("lifecycle lock"));
        let mut problems = Vec::new();
        for (name, mut handle) in components.into_iter().rev() {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, &mut handle).await {
                Ok(Ok(())) => tracing::debug!(component = name, "stopped"),
                Ok(Err(e)) if e.is_panic() => problems.push(format!("{name} panicked")),
                Ok(Err(_)) => {}
                Err(_) => {
                    handle.abort();
                    problems.push(format!("{name} did not stop within {timeout:?} and was aborted"));
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::new(ErrorKind::Shutdown, problems.join("; ")))
        }
    }
}
