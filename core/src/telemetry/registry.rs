//! What this process runs, for health reports and the in-flight gauges:
//! each worker and orchestrator registers itself when it starts, and is
//! left out once it is told to stop (or its handle is dropped).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use serde::Serialize;
use tokio::sync::watch;

/// One running component, as a health report shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ComponentHealth {
    /// `worker` or `orchestrator`.
    pub kind: &'static str,
    /// The worker's id (host:pid:suffix), or `orchestrator`.
    pub id: String,
    pub namespaces: Vec<String>,
    pub in_flight: usize,
    pub concurrency: usize,
    /// When its heartbeat last went through, or it started (RFC 3339);
    /// workers only.
    pub last_heartbeat_at: Option<String>,
}

struct Entry {
    kind: &'static str,
    id: String,
    namespaces: Vec<String>,
    /// The queues it reads, with their deployment's prefix.
    queues: Vec<String>,
    concurrency: usize,
    stopping: watch::Receiver<bool>,
    in_flight: Box<dyn Fn() -> usize + Send + Sync>,
    /// Milliseconds since the epoch; 0 before the first beat.
    last_heartbeat_ms: Arc<AtomicI64>,
}

static ENTRIES: Mutex<Vec<Weak<Entry>>> = Mutex::new(Vec::new());

/// Keeps a component listed while it lives.
pub(crate) struct Registration {
    _entry: Arc<Entry>,
    heartbeat: Arc<AtomicI64>,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration").field("id", &self._entry.id).finish()
    }
}

impl Registration {
    /// A clock the component's heartbeat sets with [`beat`].
    pub(crate) fn heartbeat(&self) -> Arc<AtomicI64> {
        self.heartbeat.clone()
    }
}

/// Records that a heartbeat loop just ran.
pub(crate) fn beat(clock: &AtomicI64) {
    clock.store(chrono::Utc::now().timestamp_millis(), Ordering::Relaxed);
}

pub(crate) fn register(
    kind: &'static str,
    id: String,
    namespaces: Vec<String>,
    queues: Vec<String>,
    concurrency: usize,
    stopping: watch::Receiver<bool>,
    in_flight: Box<dyn Fn() -> usize + Send + Sync>,
) -> Registration {
    // A worker beats from its start on (its first beat comes a third of a
    // visibility timeout later); an orchestrator has no heartbeat.
    let started = if kind == "worker" { chrono::Utc::now().timestamp_millis() } else { 0 };
    let heartbeat = Arc::new(AtomicI64::new(started));
    let entry = Arc::new(Entry {
        kind,
        id,
        namespaces,
        queues,
        concurrency,
        stopping,
        in_flight,
        last_heartbeat_ms: heartbeat.clone(),
    });
    let mut entries = ENTRIES.lock().expect("registry lock");
    entries.retain(|e| e.strong_count() > 0);
    entries.push(Arc::downgrade(&entry));
    Registration { _entry: entry, heartbeat }
}

fn live() -> Vec<Arc<Entry>> {
    let mut entries = ENTRIES.lock().expect("registry lock");
    entries.retain(|e| e.strong_count() > 0);
    entries.iter().filter_map(Weak::upgrade).filter(|e| !*e.stopping.borrow()).collect()
}

/// Every component this process runs now (not told to stop).
pub fn components() -> Vec<ComponentHealth> {
    live()
        .iter()
        .map(|e| {
            let ms = e.last_heartbeat_ms.load(Ordering::Relaxed);
            ComponentHealth {
                kind: e.kind,
                id: e.id.clone(),
                namespaces: e.namespaces.clone(),
                in_flight: (e.in_flight)(),
                concurrency: e.concurrency,
                last_heartbeat_at: (ms > 0)
                    .then(|| chrono::DateTime::from_timestamp_millis(ms))
                    .flatten()
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            }
        })
        .collect()
}

/// Steps in flight and slots, summed over this process's workers.
pub(crate) fn worker_totals() -> (usize, usize) {
    live().iter().filter(|e| e.kind == "worker").fold((0, 0), |(f, c), e| (f + (e.in_flight)(), c + e.concurrency))
}

/// The queues this process's workers read (of every deployment: a test
/// process may hold several).
pub(crate) fn worker_queues() -> Vec<String> {
    live().iter().flat_map(|e| e.queues.clone()).collect()
}
