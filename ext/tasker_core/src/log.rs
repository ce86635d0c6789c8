//! `TaskerCore::Native::Log`: the Rust core's `tracing` events, delivered to
//! Ruby. Events are formatted on whatever thread emits them and queued
//! (bounded: when Ruby falls behind, the oldest news is the one dropped and
//! counted); a Ruby thread drains the queue with the GVL released and hands
//! each line to `TaskerCore.logger`. Ruby is never called from Rust threads.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use magnus::{function, prelude::*, Error, RModule, Ruby};
use tokio::sync::{mpsc, Mutex};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::gvl;

/// Lines waiting for Ruby; past this, new lines are dropped and counted.
const CAPACITY: usize = 10_000;

/// (level, target, message with its fields as key=value).
type Line = (String, String, String);

struct Queue {
    sender: mpsc::Sender<Line>,
    receiver: Mutex<mpsc::Receiver<Line>>,
    dropped: AtomicU64,
}

fn queue() -> &'static Queue {
    static QUEUE: OnceLock<Queue> = OnceLock::new();
    QUEUE.get_or_init(|| {
        let (sender, receiver) = mpsc::channel(CAPACITY);
        Queue { sender, receiver: Mutex::new(receiver), dropped: AtomicU64::new(0) }
    })
}

/// Collects an event's message and its fields (task_uuid, step_uuid,
/// correlation_id, error, ...) into one line.
#[derive(Default)]
struct Fields {
    message: String,
    rest: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.rest, " {}={value}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.rest, " {}={value:?}", field.name());
        }
    }
}

struct RubyLogLayer;

impl<S: tracing::Subscriber> Layer<S> for RubyLogLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let meta = event.metadata();
        let line = (meta.level().to_string(), meta.target().to_owned(), fields.message + &fields.rest);
        let queue = queue();
        if queue.sender.try_send(line).is_err() {
            queue.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Routes events passing `filter` (`RUST_LOG` syntax, e.g.
/// "tasker_core=info,warn") to the queue. Returns false when a subscriber
/// was installed already (the first one stays).
fn install(filter: String) -> Result<bool, Error> {
    let filter = EnvFilter::try_new(&filter).map_err(|e| {
        crate::errors::to_ruby(&tasker_core::Error::new(
            tasker_core::ErrorKind::Config,
            format!("invalid log filter {filter:?}: {e}"),
        ))
    })?;
    // The log filter is the log layer's own: the OTLP layer (when
    // OTEL_EXPORTER_OTLP_ENDPOINT is set) takes tasker_core's spans whatever it says.
    let traces = tasker_core::otlp_layer().map_err(|e| crate::errors::to_ruby(&e))?;
    Ok(tracing_subscriber::registry().with(RubyLogLayer.with_filter(filter)).with(traces).try_init().is_ok())
}

/// Sends the spans finished so far (at exit).
fn flush_traces() {
    tasker_core::flush_traces();
}

/// Up to `max` lines, waiting at most `timeout` seconds for the first one.
fn drain(max: usize, timeout: f64) -> Result<Vec<Line>, Error> {
    let wait = Duration::from_secs_f64(timeout.clamp(0.0, 60.0));
    gvl::run(async move {
        let mut receiver = queue().receiver.lock().await;
        let mut lines = Vec::new();
        let _ = tokio::time::timeout(wait, receiver.recv_many(&mut lines, max.max(1))).await;
        Ok(lines)
    })
}

/// Lines dropped because Ruby did not drain them in time.
fn dropped() -> u64 {
    queue().dropped.load(Ordering::Relaxed)
}

pub(crate) fn init(_ruby: &Ruby, native: RModule) -> Result<(), Error> {
    let log = native.define_module("Log")?;
    log.define_module_function("install", function!(install, 1))?;
    log.define_module_function("drain", function!(drain, 2))?;
    log.define_module_function("dropped", function!(dropped, 0))?;
    log.define_module_function("flush_traces", function!(flush_traces, 0))?;
    Ok(())
}
