//! The lifecycle every long-running component shares: started as named
//! tokio tasks, told to stop through one watch channel, stopped in reverse
//! order of starting, each given what is left of the timeout. Dropping the
//! owner tells every component to stop too: "forgot to call shutdown"
//! leaves nothing looping.

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
    /// changes to true, and must not wait on `changed()` once it has seen
    /// true (after the owner is dropped, `changed()` returns at once).
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

impl Drop for Lifecycle {
    /// Components see `true` before the channel closes, so each leaves its
    /// loop instead of spinning on a `changed()` that returns at once.
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    /// The loop shape every component uses.
    async fn component(
        mut stop: watch::Receiver<bool>,
        turns: Arc<AtomicUsize>,
        done: tokio::sync::oneshot::Sender<()>,
    ) {
        while !*stop.borrow() {
            turns.fetch_add(1, Ordering::SeqCst);
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(3600)) => {}
                _ = stop.changed() => {}
            }
        }
        let _ = done.send(());
    }

    #[tokio::test]
    async fn a_dropped_lifecycle_stops_its_components_instead_of_leaving_them_spinning() {
        let lifecycle = Lifecycle::new();
        let turns = Arc::new(AtomicUsize::new(0));
        let (done, stopped) = tokio::sync::oneshot::channel();
        let counted = turns.clone();
        lifecycle.spawn("component", move |stop| component(stop, counted, done));
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(lifecycle);
        tokio::time::timeout(Duration::from_secs(2), stopped).await.expect("stopped within 2 s").unwrap();
        assert_eq!(turns.load(Ordering::SeqCst), 1, "one turn before the drop, none spun after it");
    }

    #[tokio::test]
    async fn shutdown_reports_a_component_that_panicked() {
        let lifecycle = Lifecycle::new();
        lifecycle.spawn("doomed", |_stop| async { panic!("boom") });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let error = lifecycle.shutdown(Duration::from_secs(1)).await.unwrap_err();
        assert_eq!(error.to_string(), "doomed panicked");
    }
}
