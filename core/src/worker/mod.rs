//! The Rust side of a worker: a dispatcher polls the namespace queues,
//! claims each step (a duplicate delivery of a step that is not claimable
//! is acked and skipped), and hands jobs over a bounded channel to whoever
//! runs handlers (Ruby threads, or Rust in tests), who reports back with
//! [`WorkerHandle::complete`] or [`WorkerHandle::fail`]. The recorder
//! commits each batch of outcomes in one statement that also advances the
//! tasks: dependents that became ready in this worker's namespaces are
//! claimed for it there and then (eager dispatch) and handed over with no
//! queue hop, the rest enqueued; retries are scheduled as delayed messages;
//! finished tasks are finalized.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, watch, Notify, OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;
use uuid::Uuid;

use crate::context::Context;
use crate::db::queries::{self, ClaimedStep, EagerClaim, Outcomes, UnclaimedStep};
use crate::db::HeldConnection;
use crate::error::{bounded, Error, ErrorKind, Result};
use crate::lifecycle::Lifecycle;
use crate::messaging::dead_letters::drop_overdelivered;
use crate::messaging::{decode_or_dead_letter, Claimant, ClaimedMessage, ReceivedMessage, StepMessage, Wakeups};
use crate::model::RowJson;
use crate::orchestration::backoff_delay;
use crate::resilience::{outage, LoopRetry};
use crate::telemetry::metrics::{
    dead_lettered, step_taken_over, steps_skipped, DeadLetterReason, StepMetrics, TaskFacts,
};
use crate::telemetry::registry;
use crate::template::check_identifier;

/// Most messages read per poll of one queue.
const MAX_BATCH: usize = 10;

/// Most outcomes recorded in one transaction.
const MAX_RECORD_BATCH: usize = 64;

/// Outcome statements a worker has under way at once. While one waits for
/// PostgreSQL, the next batch is recorded beside it: with one, the outcomes
/// of every step a worker ran went through one connection, one statement
/// after another, and PostgreSQL used one core for them however many it
/// had. Outcomes of one task recorded together serialize on the task's row
/// (see `tasker_record_outcomes`), as outcomes from two workers do.
const RECORDERS: usize = 2;

/// Steps a worker keeps claimed per unit of concurrency. A runner that
/// reports an outcome without waiting for its commit (see
/// [`WorkerHandle::complete_detached`]) runs its next step while the outcome
/// is committed: the steps being committed keep their slots (their eager
/// dependents take them over), so with only `concurrency` slots the runners
/// would wait for the commits anyway, and the outcome statements would
/// carry as few steps as there are runners. Queued steps are claimed only
/// for idle runners (see `Dispatcher::run`): the rest is for eager
/// dependents. Measured with `bin/bench tasker_pgmq_throughput`
/// (concurrency 10): 1,699 steps/s with 1 (and runners that waited),
/// 2,098 with 2, 2,285 with 4.
const CLAIMS_PER_RUNNER: usize = 4;

/// How long a recorder keeps its connection with no outcome to record, and
/// the dispatcher its connection while it waits for messages (see
/// `HeldConnection`).
const KEEP_IDLE_CONNECTION: Duration = Duration::from_millis(100);

/// The longest retry delay a handler's `retry_after` may ask for (30 days);
/// a longer one is cut to it.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(30 * 24 * 3600);

/// The longest error message recorded, in bytes; backtraces keep
/// `MAX_BACKTRACE` lines of an eighth of it each.
const MAX_ERROR_TEXT: usize = 8192;
const MAX_BACKTRACE: usize = 50;

/// A claimed step, ready to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepJob {
    pub task_uuid: Uuid,
    pub step_uuid: Uuid,
    pub correlation_id: Uuid,
    pub namespace: String,
    pub step_name: String,
    pub handler_callable: String,
    /// The handler's settings: its template's `handler.initialization` (an
    /// empty object when it has none), as stored when the template was
    /// registered.
    pub handler_config: Value,
    /// The template declares the step a decision point: its handler must
    /// return a decision (which of its dependents run).
    pub decision: bool,
    /// 1 for the first attempt.
    pub attempt: i32,
    pub max_attempts: i32,
    /// The template's limit on one attempt, if it sets one.
    pub timeout_seconds: Option<i32>,
    /// The task's and the step's rows as the claim left them, as JSON text
    /// (an object, column => value), so a worker need not read them back.
    /// A serialized job leaves them out: their owner hands the text over as
    /// it is ([`RowJson::as_str`]), as the Ruby extension does.
    #[serde(skip_serializing)]
    pub task: RowJson,
    #[serde(skip_serializing)]
    pub step: RowJson,
}

/// Why a handler failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepFailure {
    pub error_class: String,
    pub message: String,
    #[serde(default)]
    pub backtrace: Vec<String>,
    /// False for a permanent failure: no further attempts.
    #[serde(default = "yes")]
    pub retryable: bool,
    /// The handler's own wait before the next attempt, in seconds.
    #[serde(default)]
    pub retry_after_seconds: Option<f64>,
}

fn yes() -> bool {
    true
}

/// The message a step was claimed from: (queue, receipt).
type Delivery = (String, i64);

struct InFlight {
    /// None for a step claimed eagerly, which came without a message.
    message: Option<Delivery>,
    job: StepJob,
    claim: ClaimedStep,
    claimed_at: tokio::time::Instant,
    /// The worker's concurrency slot, handed on to a step claimed eagerly
    /// when this one's outcome is recorded.
    permit: Option<OwnedSemaphorePermit>,
    metrics: StepMetrics,
    /// The step's span (claim to recorded outcome), a child of its task's
    /// trace, and its handler's run (hand-over to report).
    span: tracing::Span,
    handler: tracing::Span,
}

impl std::fmt::Debug for InFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InFlight").field("step_uuid", &self.job.step_uuid).field("message", &self.message).finish()
    }
}

type InFlightMap = Arc<Mutex<HashMap<Uuid, InFlight>>>;

/// What the dispatcher and the recorder share to hand a claimed step over
/// to the runners.
#[derive(Clone)]
struct Handover {
    jobs: mpsc::Sender<StepJob>,
    in_flight: InFlightMap,
    /// How many runners take jobs (the worker's concurrency).
    runners: usize,
    /// Signalled each time a runner reports (a step leaves `in_flight`).
    reported: Arc<Notify>,
}

impl Handover {
    /// Runners that would wait for a job: the steps handed over and not yet
    /// reported (running, or waiting in the channel) leave the rest idle.
    fn idle_runners(&self) -> usize {
        self.runners.saturating_sub(self.in_flight.lock().expect("in-flight lock").len())
    }

    /// Keeps the claim in flight (heartbeats, the outcome's fence) and
    /// passes the job on. When the runners are gone (the worker is
    /// stopping), the claim is given back to the caller to release.
    fn hand_over(
        &self,
        message: Option<Delivery>,
        mut claim: ClaimedStep,
        step_uuid: Uuid,
        permit: OwnedSemaphorePermit,
    ) -> Option<InFlight> {
        let correlation_id = claim.correlation_id;
        let mut job = StepJob {
            task_uuid: claim.task_uuid,
            step_uuid,
            correlation_id,
            namespace: claim.namespace.clone(),
            step_name: claim.step_name.clone(),
            handler_callable: claim.handler_callable.clone(),
            handler_config: Value::Null,
            decision: claim.decision,
            attempt: claim.attempts,
            max_attempts: claim.max_attempts,
            timeout_seconds: claim.timeout_seconds,
            task: RowJson::default(),
            step: RowJson::default(),
        };
        if claim.taken_over {
            step_taken_over(&claim.namespace);
        }
        // The few fields of the rows read here; the rows stay text.
        let task_facts: TaskFacts = claim.task_row.fields().unwrap_or_default();
        let metrics = StepMetrics::started(
            &claim.namespace,
            &claim.step_name,
            &task_facts,
            message.is_some().then(|| claim.step_row.fields().unwrap_or_default()),
        );
        let span = tracing::trace_span!("step", task_uuid = %claim.task_uuid, step_uuid = %step_uuid,
                                        correlation_id = %correlation_id, namespace = %claim.namespace,
                                        step = %claim.step_name, attempt = claim.attempts, eager = message.is_none(),
                                        state = tracing::field::Empty);
        crate::telemetry::traces::continue_task_trace(&span, task_facts.traceparent.as_deref(), claim.task_uuid);
        let handler = tracing::trace_span!(parent: &span, "run_handler", handler = %claim.handler_callable,
                                           task_uuid = %claim.task_uuid, step_uuid = %step_uuid);
        // The in-flight record keeps the job without the rows and the
        // handler's settings, which only the runner reads: they are moved to
        // it, not copied.
        let kept = job.clone();
        job.task = std::mem::take(&mut claim.task_row);
        job.step = std::mem::take(&mut claim.step_row);
        job.handler_config = std::mem::take(&mut claim.handler_config);
        self.in_flight.lock().expect("in-flight lock").insert(
            step_uuid,
            InFlight {
                message,
                job: kept,
                claim,
                claimed_at: tokio::time::Instant::now(),
                permit: Some(permit),
                metrics,
                span,
                handler,
            },
        );
        // Never full: every job in the channel holds one of `concurrency`
        // permits, and the channel has room for that many.
        if self.jobs.try_send(job).is_ok() {
            return None;
        }
        self.in_flight.lock().expect("in-flight lock").remove(&step_uuid)
    }
}

#[derive(Debug)]
pub struct WorkerHandle {
    ctx: Arc<Context>,
    id: String,
    jobs: tokio::sync::Mutex<mpsc::Receiver<StepJob>>,
    in_flight: InFlightMap,
    reported: Arc<Notify>,
    /// To the recorder, which runs until the handle is dropped (steps still
    /// report while the worker shuts down).
    records: mpsc::Sender<Record>,
    /// Outcomes reported without waiting, not yet committed (or given up):
    /// shutdown waits for them.
    detached: Arc<AtomicUsize>,
    lifecycle: Lifecycle,
    _registration: registry::Registration,
}

impl WorkerHandle {
    /// Starts polling the namespaces' queues for `concurrency` runners; at
    /// most `CLAIMS_PER_RUNNER` times as many steps are claimed at once
    /// (running, waiting for a runner, or their outcomes being committed).
    pub async fn start(ctx: Arc<Context>, namespaces: &[String], concurrency: usize) -> Result<Self> {
        if namespaces.is_empty() {
            return Err(Error::config("a worker needs at least one namespace to poll"));
        }
        for ns in namespaces {
            check_identifier("namespace", ns).map_err(Error::config)?;
        }
        let concurrency = concurrency.max(1);
        let claims = concurrency * CLAIMS_PER_RUNNER;
        let queues: Vec<String> = namespaces.iter().map(|ns| ctx.router().step_queue(ns)).collect();
        for queue in &queues {
            ctx.messaging().create_queue(queue).await?;
        }
        let id = format!("{}:{}:{}", hostname(), std::process::id(), &Uuid::now_v7().simple().to_string()[20..]);
        let (sender, receiver) = mpsc::channel(claims);
        let in_flight: InFlightMap = Arc::new(Mutex::new(HashMap::new()));
        let reported = Arc::new(Notify::new());
        let handover =
            Handover { jobs: sender, in_flight: in_flight.clone(), runners: concurrency, reported: reported.clone() };
        let permits = Arc::new(Semaphore::new(claims));
        let namespaces: Arc<[String]> = namespaces.into();
        let lifecycle = Lifecycle::new();
        let dispatcher = Dispatcher {
            ctx: ctx.clone(),
            worker_id: id.clone(),
            namespaces: namespaces.clone(),
            wakeups: ctx.messaging().wakeups(&queues).await?,
            queues,
            permits: permits.clone(),
            handover: handover.clone(),
        };
        let counted = Arc::downgrade(&in_flight);
        let registration = registry::register(
            "worker",
            id.clone(),
            namespaces.to_vec(),
            dispatcher.queues.clone(),
            concurrency,
            lifecycle.stopping(),
            Box::new(move || counted.upgrade().map_or(0, |m| m.lock().expect("in-flight lock").len())),
        );
        let heartbeat = Heartbeat { ctx: ctx.clone(), in_flight: in_flight.clone(), clock: registration.heartbeat() };
        let (records, requests) = mpsc::channel(claims);
        let recorder = Recorder {
            ctx: ctx.clone(),
            worker_id: id.clone(),
            namespaces: namespaces.clone(),
            permits,
            handover,
            stopping: lifecycle.stopping(),
            records: Arc::new(tokio::sync::Mutex::new(requests)),
        };
        for _ in 0..RECORDERS.min(concurrency) {
            tokio::spawn(recorder.clone().run());
        }
        lifecycle.spawn("worker_dispatcher", move |stop| dispatcher.run(stop));
        lifecycle.spawn("worker_heartbeat", move |stop| heartbeat.run(stop));
        tracing::info!(worker = id, ?namespaces, concurrency, "worker started");
        Ok(Self {
            ctx,
            id,
            jobs: tokio::sync::Mutex::new(receiver),
            in_flight,
            reported,
            records,
            detached: Arc::new(AtomicUsize::new(0)),
            lifecycle,
            _registration: registration,
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn is_running(&self) -> bool {
        self.lifecycle.is_running()
    }

    /// The next claimed step, or None after `timeout` (or once stopped and
    /// drained).
    pub async fn next_job(&self, timeout: Duration) -> Result<Option<StepJob>> {
        let mut jobs = match tokio::time::timeout(timeout, self.jobs.lock()).await {
            Ok(jobs) => jobs,
            Err(_) => return Ok(None),
        };
        // A wait ends when the worker starts stopping, so that shutdown gets
        // the channel at once to release the jobs buffered in it.
        let mut stopping = self.lifecycle.stopping();
        if *stopping.borrow_and_update() {
            return Ok(None);
        }
        tokio::select! {
            job = tokio::time::timeout(timeout, jobs.recv()) => Ok(job.ok().flatten()),
            _ = stopping.changed() => Ok(None),
        }
    }

    fn take(&self, step_uuid: Uuid) -> Result<InFlight> {
        let mut flight = self.in_flight.lock().expect("in-flight lock").remove(&step_uuid).ok_or_else(|| {
            Error::new(ErrorKind::State, format!("step {step_uuid} is not in flight in worker {}", self.id))
        })?;
        // The handler has reported: its span ends, and its runner is free.
        flight.handler = tracing::Span::none();
        self.reported.notify_one();
        Ok(flight)
    }

    /// Records the handler's result and the transition in one transaction
    /// with the result message, and acks the step's message in it where the
    /// provider allows.
    pub async fn complete(&self, step_uuid: Uuid, result: Value) -> Result<()> {
        let flight = self.take(step_uuid)?;
        self.record(flight, Outcome::Complete { result }).await.map(|_| ())
    }

    /// Hands the handler's result to the recorder and returns at once: the
    /// runner goes on to its next step while the outcome is committed with
    /// others (as [`Self::complete`] records it). A failure to record it is
    /// logged, and the step's claim goes stale and it runs again; shutdown
    /// waits for the outcomes handed over this way.
    pub async fn complete_detached(&self, step_uuid: Uuid, result: Value) -> Result<()> {
        let flight = self.take(step_uuid)?;
        let reply = Reply::Detached(Detached::new(&self.detached));
        self.records.send(Record { flight, outcome: Outcome::Complete { result }, reply }).await.map_err(|_| {
            Error::new(ErrorKind::State, format!("worker {} stopped before recording step {step_uuid}", self.id))
        })
    }

    /// Records a failure: `waiting_for_retry` with a backoff while attempts
    /// are left and the error is retryable, else `error`. Returns the state.
    pub async fn fail(&self, step_uuid: Uuid, failure: StepFailure) -> Result<String> {
        let flight = self.take(step_uuid)?;
        let claim = &flight.claim;
        // A retry_after that is not a number of seconds Duration can hold
        // (negative, NaN, 1e30) is cut to the nearest one that is.
        let retry_after = failure
            .retry_after_seconds
            .map(|s| Duration::try_from_secs_f64(s.max(0.0)).unwrap_or(MAX_RETRY_DELAY).min(MAX_RETRY_DELAY));
        let delay = backoff_delay(
            u32::try_from(claim.attempts).unwrap_or(1),
            u32::try_from(claim.backoff_base_ms).unwrap_or(0),
            u32::try_from(claim.max_backoff_ms).unwrap_or(0),
            retry_after,
        );
        let retryable = claim.retryable && failure.retryable;
        let backtrace: Vec<std::borrow::Cow<'_, str>> =
            failure.backtrace.iter().take(MAX_BACKTRACE).map(|line| bounded(line, MAX_ERROR_TEXT / 8)).collect();
        let error = json!({
            "class": bounded(&failure.error_class, 256),
            "message": bounded(&failure.message, MAX_ERROR_TEXT),
            "backtrace": backtrace,
            "attempt": claim.attempts,
            "retryable": retryable,
            "worker": self.id,
        });
        let delay_ms = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
        let state = self.record(flight, Outcome::Fail { error, retryable, delay_ms }).await?;
        Ok(state.unwrap_or_else(|| "unchanged".to_owned()))
    }

    async fn record(&self, flight: InFlight, outcome: Outcome) -> Result<Option<String>> {
        let (reply, answer) = oneshot::channel();
        let step_uuid = flight.job.step_uuid;
        self.records.send(Record { flight, outcome, reply: Reply::Waiting(reply) }).await.map_err(|_| {
            Error::new(ErrorKind::State, format!("worker {} stopped before recording step {step_uuid}", self.id))
        })?;
        answer.await.map_err(|_| {
            Error::new(ErrorKind::State, format!("worker {} stopped while recording step {step_uuid}", self.id))
        })?
    }

    /// Stops claiming work, waits up to `timeout` for steps being run to be
    /// reported, then releases the rest (claimed, not finished) so another
    /// worker runs them: nothing is lost.
    pub async fn shutdown(&self, timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        // Nothing more is claimed; the heartbeat goes on while steps finish.
        self.lifecycle.signal_stop();
        // Jobs claimed but never handed out are released at once; a claim
        // made from now on is released by whoever made it.
        let mut jobs = self.jobs.lock().await;
        jobs.close();
        while let Ok(job) = jobs.try_recv() {
            if let Ok(flight) = self.take(job.step_uuid) {
                release(&self.ctx, flight, "worker shut down before starting it").await;
            }
        }
        drop(jobs);
        while (!self.in_flight.lock().expect("in-flight lock").is_empty() || self.detached.load(Ordering::Acquire) > 0)
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left: Vec<Uuid> = self.in_flight.lock().expect("in-flight lock").keys().copied().collect();
        for step_uuid in left {
            if let Ok(flight) = self.take(step_uuid) {
                release(&self.ctx, flight, "worker shut down before it finished").await;
            }
        }
        let stopped = self.lifecycle.shutdown(deadline.saturating_duration_since(tokio::time::Instant::now())).await;
        tracing::info!(worker = self.id, "worker stopped");
        stopped
    }
}

/// Gives a step this worker claimed and will not finish back: in_progress ->
/// enqueued with the attempt returned, and its message back in its queue (a
/// step claimed eagerly, which had none, gets one).
async fn release(ctx: &Context, flight: InFlight, reason: &str) {
    let step_uuid = flight.job.step_uuid;
    let outcome = async {
        let released = queries::release_step(ctx.pool(), step_uuid, flight.job.attempt, reason).await?;
        match &flight.message {
            Some((queue, receipt)) => ctx.messaging().nack(queue, *receipt, Duration::ZERO).await,
            None if released => ctx.send_step_messages(&[step_uuid]).await,
            None => Ok(()),
        }
    }
    .await;
    match outcome {
        Ok(()) => tracing::info!(%step_uuid, reason, "released step for redelivery"),
        Err(e) => {
            tracing::error!(%step_uuid, error = %e, "releasing a step failed; it is recovered after its visibility timeout")
        }
    }
}

/// A handler's outcome, to be recorded.
enum Outcome {
    Complete { result: Value },
    Fail { error: Value, retryable: bool, delay_ms: i64 },
}

struct Record {
    flight: InFlight,
    outcome: Outcome,
    reply: Reply,
}

/// Who is told when an outcome is committed.
enum Reply {
    /// The reporter, waiting: answered with the step's new state (None when
    /// the outcome did not apply).
    Waiting(oneshot::Sender<Result<Option<String>>>),
    /// Nobody waits (see [`WorkerHandle::complete_detached`]): a failure is
    /// logged.
    Detached(Detached),
}

impl Reply {
    fn answer(self, step_uuid: Uuid, result: Result<Option<String>>) {
        match self {
            Reply::Waiting(reply) => {
                let _ = reply.send(result);
            }
            Reply::Detached(pending) => {
                if let Err(e) = result {
                    tracing::error!(%step_uuid, error = %e, "recording a step's outcome failed; its claim goes \
                                                             stale and it runs again");
                }
                // Counted until answered, failure or not.
                drop(pending);
            }
        }
    }
}

/// One outcome reported without waiting and not yet answered: counted in
/// the worker's `detached` from creation to drop.
struct Detached(Arc<AtomicUsize>);

impl Detached {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        Self(count.clone())
    }
}

impl Drop for Detached {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Records outcomes with group commit: outcomes reported while a commit is
/// under way are recorded together in the next statement, so under load
/// many steps share one commit, and an outcome reported alone is recorded
/// at once. `RECORDERS` of them take batches from one channel. A reporter
/// that waits is answered only after its outcome is committed; steps
/// claimed eagerly by the commit are handed to the runners on the slots the
/// recorded steps leave.
#[derive(Clone)]
struct Recorder {
    ctx: Arc<Context>,
    worker_id: String,
    namespaces: Arc<[String]>,
    permits: Arc<Semaphore>,
    handover: Handover,
    /// True once the worker is stopping: it claims nothing more, eagerly or
    /// not.
    stopping: watch::Receiver<bool>,
    records: Arc<tokio::sync::Mutex<mpsc::Receiver<Record>>>,
}

impl Recorder {
    async fn run(self) {
        let mut retry = LoopRetry::new("worker_recorder", Some(self.ctx.breakers().clone()));
        let mut held = HeldConnection::new(self.ctx.pool());
        loop {
            // The connection is kept across short gaps between batches
            // only: an idle recorder (or one whose worker is gone but not
            // yet dropped) holds none.
            let next = match tokio::time::timeout(KEEP_IDLE_CONNECTION, self.next_batch()).await {
                Ok(next) => next,
                Err(_) => {
                    held.release();
                    self.next_batch().await
                }
            };
            let Some(mut batch) = next else { break };
            // While the database is down the batch is held and tried again
            // with backoff (its reporters wait): recorded once it answers,
            // unless the worker is stopping meanwhile.
            let failed = loop {
                match self.record(batch, &mut held).await {
                    Ok(()) => {
                        retry.succeeded();
                        break None;
                    }
                    Err((e, records)) => match retry.failed(&e) {
                        Some(wait) if !*self.stopping.borrow() => {
                            tokio::time::sleep(wait).await;
                            batch = records;
                        }
                        _ => break Some((e, records)),
                    },
                }
            };
            let Some((e, mut batch)) = failed else { continue };
            if batch.len() > 1 {
                tracing::warn!(worker = self.worker_id, outcomes = batch.len(), error = %e,
                               "recording outcomes together failed; recording each on its own");
            } else if let Some(record) = batch.pop() {
                record.reply.answer(record.flight.job.step_uuid, Err(e));
                continue;
            }
            // One at a time: what one outcome's failure holds up is its own.
            for record in batch {
                if let Err((e, mut records)) = self.record(vec![record], &mut held).await {
                    if let Some(record) = records.pop() {
                        record.reply.answer(record.flight.job.step_uuid, Err(e));
                    }
                }
            }
        }
    }

    /// The outcomes waiting, at least one; None once every reporter is gone.
    async fn next_batch(&self) -> Option<Vec<Record>> {
        let mut records = self.records.lock().await;
        let mut batch = vec![records.recv().await?];
        while batch.len() < MAX_RECORD_BATCH {
            match records.try_recv() {
                Ok(record) => batch.push(record),
                Err(_) => break,
            }
        }
        Some(batch)
    }

    /// Records the batch in one statement (see `tasker_record_outcomes`),
    /// answers each reporter, hands eagerly claimed steps over and sends
    /// what could not be sent inside the transaction. On failure, nothing
    /// was recorded and the batch is given back.
    async fn record(
        &self,
        mut batch: Vec<Record>,
        held: &mut HeldConnection,
    ) -> std::result::Result<(), (Error, Vec<Record>)> {
        let in_database = self.ctx.messaging().queues_in_database();
        // Every recorded step frees its slot; a few free ones may join them.
        let mut slots: Vec<OwnedSemaphorePermit> = Vec::new();
        if !*self.stopping.borrow() {
            while slots.len() < batch.len() {
                match self.permits.clone().try_acquire_owned() {
                    Ok(permit) => slots.push(permit),
                    Err(_) => break,
                }
            }
        }
        let eager_slots = if *self.stopping.borrow() { 0 } else { batch.len() + slots.len() };
        let recorded = {
            let mut outcomes = Outcomes::default();
            for Record { flight, outcome, .. } in &batch {
                outcomes.steps.push(flight.job.step_uuid);
                outcomes.attempts.push(flight.job.attempt);
                let (queue, receipt) = match (&flight.message, in_database) {
                    (Some((queue, receipt)), true) => (Some(queue.as_str()), Some(*receipt)),
                    _ => (None, None),
                };
                outcomes.ack_queues.push(queue);
                outcomes.ack_receipts.push(receipt);
                let meta = json!({"worker": self.worker_id, "attempt": flight.job.attempt});
                match outcome {
                    Outcome::Complete { result } => {
                        outcomes.completed.push(true);
                        outcomes.payloads.push(result);
                        outcomes.retryable.push(false);
                        outcomes.delays_ms.push(0);
                    }
                    Outcome::Fail { error, retryable, delay_ms } => {
                        outcomes.completed.push(false);
                        outcomes.payloads.push(error);
                        outcomes.retryable.push(*retryable);
                        outcomes.delays_ms.push(*delay_ms);
                    }
                }
                outcomes.metadata.push(meta);
            }
            // One span per outcome, each in its step's trace, around the
            // statement that records them and advances their tasks.
            let spans: Vec<tracing::Span> = batch
                .iter()
                .map(|r| {
                    tracing::trace_span!(parent: &r.flight.span, "record_outcome", task_uuid = %r.flight.job.task_uuid,
                                         step_uuid = %r.flight.job.step_uuid, batch = batch.len(),
                                         completed = matches!(r.outcome, Outcome::Complete { .. }))
                })
                .collect();
            let recorded = async {
                let conn = held.get("recording outcomes").await?;
                queries::record_outcomes(conn, &outcomes, &self.worker_id, &self.namespaces, eager_slots, in_database)
                    .await
            }
            .await;
            held.done(&recorded);
            drop(spans);
            recorded
        };
        let mut recorded = match recorded {
            Ok(recorded) => recorded,
            Err(e) => return Err((e, batch)),
        };
        let mut settle = Vec::new();
        let mut states = Vec::with_capacity(batch.len());
        for record in &mut batch {
            let step_uuid = record.flight.job.step_uuid;
            let state = recorded.states.remove(&step_uuid).flatten();
            if state.is_none() {
                tracing::warn!(%step_uuid, step = record.flight.job.step_name,
                               "step was no longer in progress at this attempt when its outcome arrived; \
                                outcome kept in its history, not applied");
            }
            record.flight.metrics.finished(state.as_deref(), record.flight.claimed_at.elapsed());
            record.flight.span.record("state", state.as_deref().unwrap_or("not_applied"));
            slots.extend(record.flight.permit.take());
            if let Some(message) = record.flight.message.take() {
                settle.push((step_uuid, message, state.is_some()));
            }
            states.push(state);
        }
        // The dependents claimed eagerly first: they are the next steps of
        // their tasks, and a reporter answered first would take the GVL
        // from the Ruby thread that runs them.
        self.hand_over_eager(recorded.claimed, &mut slots).await;
        drop(slots);
        for skipped in &recorded.skipped {
            steps_skipped(&skipped.namespace, &skipped.template, skipped.count);
        }
        for task in &recorded.finished {
            if let Some(record) = batch.iter().find(|r| r.flight.job.task_uuid == task.task_uuid) {
                record.flight.metrics.task_finished(&task.status);
            }
        }
        for (record, state) in batch.into_iter().zip(states) {
            record.reply.answer(record.flight.job.step_uuid, Ok(state));
        }
        self.settle_messages(settle, in_database).await;
        self.ctx.send_outbox(recorded.unsent).await;
        for task in recorded.finished {
            tracing::info!(task_uuid = %task.task_uuid, correlation_id = %task.correlation_id,
                           namespace = task.namespace, status = task.status, worker = self.worker_id, "task finished");
        }
        Ok(())
    }

    async fn hand_over_eager(&self, claimed: Vec<EagerClaim>, slots: &mut Vec<OwnedSemaphorePermit>) {
        for EagerClaim { step_uuid, claim } in claimed {
            let Some(permit) = slots.pop() else {
                // Never: the statement claims at most as many as the slots.
                tracing::error!(%step_uuid, "a step was claimed eagerly without a free slot; its claim goes stale \
                                             and it is recovered");
                continue;
            };
            tracing::debug!(%step_uuid, step = claim.step_name, "running a ready dependent eagerly");
            if let Some(flight) = self.handover.hand_over(None, claim, step_uuid, permit) {
                release(&self.ctx, flight, "worker shut down before starting it").await;
            }
        }
    }

    /// The messages of recorded steps, where the provider could not settle
    /// them inside the transaction, are acked now; the message of an
    /// outcome that did not apply goes back to its queue (the step was
    /// cancelled or resolved meanwhile, or its claim was lost - a database
    /// crash took an asynchronous commit - and it is claimable again: the
    /// next claim runs it if it still needs to run, and acks it if not).
    async fn settle_messages(&self, settle: Vec<(Uuid, Delivery, bool)>, in_database: bool) {
        for (step_uuid, (queue, receipt), applied) in settle {
            if !applied {
                if let Err(e) = self.ctx.messaging().nack(&queue, receipt, Duration::ZERO).await {
                    tracing::warn!(%step_uuid, error = %e, "returning the message of an unapplied outcome failed");
                }
            } else if !in_database {
                // The outcome is committed; a failed ack only means the
                // message is delivered again, and the claim skips a step
                // that is not claimable.
                if let Err(e) = self.ctx.messaging().ack(&queue, receipt).await {
                    tracing::warn!(%step_uuid, error = %e, "acking a finished step's message failed");
                }
            }
        }
    }
}

struct Dispatcher {
    ctx: Arc<Context>,
    worker_id: String,
    namespaces: Arc<[String]>,
    queues: Vec<String>,
    wakeups: Wakeups,
    permits: Arc<Semaphore>,
    handover: Handover,
}

impl Dispatcher {
    async fn run(self, mut stop: watch::Receiver<bool>) {
        let poll = Duration::from_millis(self.ctx.config().worker.poll_interval_ms);
        let visibility = Duration::from_secs(u64::from(self.ctx.config().messaging.visibility_timeout_seconds));
        let mut start = 0;
        let mut retry = LoopRetry::new("worker_dispatcher", Some(self.ctx.breakers().clone()));
        let mut held = HeldConnection::new(self.ctx.pool());
        while !*stop.borrow() {
            // No connection is held while waiting for a free slot here or for
            // a runner, nor for messages below beyond KEEP_IDLE_CONNECTION.
            let first = match self.permits.clone().try_acquire_owned() {
                Ok(permit) => permit,
                Err(_) => {
                    held.release();
                    tokio::select! {
                        permit = self.permits.clone().acquire_owned() => permit.expect("semaphore never closes"),
                        _ = stop.changed() => break,
                    }
                }
            };
            // Messages are claimed for runners that would otherwise wait; the
            // rest of the claims are for the eager dependents of outcomes
            // being committed. A worker holds no queued step back from the
            // others while its runners are busy.
            let idle = self.handover.idle_runners();
            if idle == 0 {
                drop(first);
                held.release();
                tokio::select! {
                    () = self.handover.reported.notified() => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
            let mut permits = vec![first];
            while permits.len() < MAX_BATCH.min(idle) {
                match self.permits.clone().try_acquire_owned() {
                    Ok(p) => permits.push(p),
                    Err(_) => break,
                }
            }
            // Read again at once only where there may be more: a queue that
            // filled the batch, or one not read for want of permits. With
            // pushed wake-ups, a queue that gave less than asked is drained
            // and its next arrival wakes the wait below.
            let mut received_any = false;
            let mut maybe_more = false;
            let mut outage_wait = None;
            for i in 0..self.queues.len() {
                if permits.is_empty() {
                    maybe_more = true;
                    break;
                }
                let queue = &self.queues[(start + i) % self.queues.len()];
                let want = permits.len();
                match self.receive(&mut held, queue, u32::try_from(want).unwrap_or(1), visibility).await {
                    Ok((claimed, messages)) if claimed.len() + messages.len() > 0 => {
                        retry.succeeded();
                        received_any = true;
                        maybe_more |= claimed.len() + messages.len() >= want;
                        for (message, read) in claimed {
                            let permit = permits.pop().expect("a permit for every message read");
                            self.hand_over(message, read.claim, read.step_uuid, permit).await;
                        }
                        if messages.is_empty() {
                            continue;
                        }
                        let (got, max) = (messages.len(), self.ctx.config().messaging.max_receive_count);
                        let messages = drop_overdelivered(self.ctx.messaging().as_ref(), max, messages).await;
                        permits.truncate(permits.len() - (got - messages.len()));
                        if messages.is_empty() {
                            continue;
                        }
                        let taken = permits.split_off(permits.len() - messages.len());
                        if let Some(e) = self.dispatch(&mut held, messages, taken).await {
                            outage_wait = retry.failed(&e);
                            break;
                        }
                    }
                    Ok(_) => retry.succeeded(),
                    Err(e) => match retry.failed(&e) {
                        Some(wait) => {
                            outage_wait = Some(wait);
                            break;
                        }
                        None => tracing::warn!(queue, error = %e, "polling a step queue failed; retrying"),
                    },
                }
            }
            start = start.wrapping_add(1);
            drop(permits);
            if let Some(wait) = outage_wait {
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
            let read_again = if self.wakeups.pushed() { maybe_more } else { received_any };
            if !read_again {
                // The connection is kept over the first moments of the wait,
                // as a recorder keeps its own: a message arriving soon (the
                // next task's root) is read on it, and giving it back (a
                // ping) does not compete with the step just handed over. A
                // wait that ends sooner (a wake-up, or a poll interval
                // shorter than that) reads again on the same connection.
                let ended_soon = tokio::select! {
                    waited = tokio::time::timeout(KEEP_IDLE_CONNECTION, self.wakeups.wait(poll)) => waited.is_ok(),
                    _ = stop.changed() => true,
                };
                if !ended_soon {
                    held.release();
                    tokio::select! {
                        () = self.wakeups.wait(poll.saturating_sub(KEEP_IDLE_CONNECTION)) => {}
                        _ = stop.changed() => {}
                    }
                }
            }
        }
    }

    /// Up to `max` messages of `queue`: those whose steps were claimed as
    /// they were read, and the rest, for [`Dispatcher::dispatch`]. PGMQ
    /// reads and claims in one statement; should that statement fail for
    /// anything but an outage (a step whose claim fails, say), the queue is
    /// read alone and each step claimed as `dispatch` claims it.
    async fn receive(
        &self,
        held: &mut HeldConnection,
        queue: &str,
        max: u32,
        visibility: Duration,
    ) -> Result<(Vec<(ReceivedMessage, ClaimedMessage)>, Vec<ReceivedMessage>)> {
        if let Some(pgmq) = self.ctx.messaging().as_pgmq() {
            let claimant = Claimant {
                worker_id: &self.worker_id,
                namespaces: &self.namespaces,
                stale_after: self.stale_after(),
                max_receive_count: self.ctx.config().messaging.max_receive_count,
            };
            let span = tracing::trace_span!("receive_and_claim", queue, worker = %self.worker_id);
            let read = async {
                let conn = held.get("receiving and claiming steps").await?;
                pgmq.receive_and_claim(conn, queue, max, visibility, &claimant).await
            }
            .instrument(span)
            .await;
            held.done(&read);
            match read {
                Ok(read) => {
                    let mut claimed = Vec::new();
                    let mut rest = Vec::new();
                    for message in read {
                        match message.claimed {
                            Some(claim) => claimed.push((message.message, claim)),
                            None => rest.push(message.message),
                        }
                    }
                    return Ok((claimed, rest));
                }
                Err(e) if outage(&e).is_some() => return Err(e),
                Err(e) => {
                    tracing::warn!(queue, error = %e, "reading and claiming in one statement failed; doing each apart");
                }
            }
        }
        Ok((Vec::new(), self.ctx.messaging().receive(queue, max, visibility).await?))
    }

    /// Keeps a claimed step in flight and passes it to a runner; releases
    /// the claim when the worker stopped meanwhile.
    async fn hand_over(
        &self,
        message: ReceivedMessage,
        claim: ClaimedStep,
        step_uuid: Uuid,
        permit: OwnedSemaphorePermit,
    ) {
        let delivery = Some((message.queue, message.receipt));
        if let Some(flight) = self.handover.hand_over(delivery, claim, step_uuid, permit) {
            release(&self.ctx, flight, "worker shut down before starting it").await;
        }
    }

    /// Claims the steps of a batch of messages in one statement (each on its
    /// own if that fails), then hands each claimed step to a runner.
    /// Returns the error when the claim failed for an outage (every message
    /// was handed back).
    async fn dispatch(
        &self,
        held: &mut HeldConnection,
        messages: Vec<ReceivedMessage>,
        permits: Vec<OwnedSemaphorePermit>,
    ) -> Option<Error> {
        let mut steps = Vec::with_capacity(messages.len());
        for message in messages {
            if let Some(step) = decode_or_dead_letter::<StepMessage>(self.ctx.messaging().as_ref(), &message).await {
                steps.push((message, step));
            }
        }
        let uuids: Vec<Uuid> = steps.iter().map(|(_, step)| step.step_uuid).collect();
        let mut claims = match self.claim(held, &uuids).await {
            Ok(claims) => claims,
            // The database is down: claiming each on its own would fail as well.
            Err(e) if outage(&e).is_some() => {
                for (message, step) in &steps {
                    self.hand_back(message, step, &e).await;
                }
                return Some(e);
            }
            Err(e) if uuids.len() > 1 => {
                tracing::warn!(steps = uuids.len(), error = %e, "claiming a batch of steps failed; claiming each on its own");
                let mut claims = HashMap::new();
                let mut handed_back = Vec::new();
                for (i, (message, step)) in steps.iter().enumerate() {
                    match self.claim(held, &[step.step_uuid]).await {
                        Ok(claim) => claims.extend(claim),
                        Err(e) => {
                            self.hand_back(message, step, &e).await;
                            handed_back.push(i);
                        }
                    }
                }
                for i in handed_back.into_iter().rev() {
                    steps.remove(i);
                }
                claims
            }
            Err(e) => {
                for (message, step) in &steps {
                    self.hand_back(message, step, &e).await;
                }
                return None;
            }
        };
        let mut unclaimed = Vec::new();
        for ((message, step), permit) in steps.into_iter().zip(permits) {
            match claims.remove(&step.step_uuid) {
                Some(claim) => self.hand_over(message, claim, step.step_uuid, permit).await,
                None => unclaimed.push((message, step)),
            }
        }
        if !unclaimed.is_empty() {
            self.settle_unclaimed(unclaimed).await;
        }
        None
    }

    /// A message whose step was not claimed is a duplicate delivery (the
    /// step finished, failed or was cancelled meanwhile: acked), a step in
    /// progress elsewhere, or a stray: a step that does not exist or belongs
    /// to a namespace this worker does not serve, which never runs here and
    /// is archived with the reason (kept for inspection in the dead-letter
    /// store).
    ///
    /// A step in progress keeps its message: it comes back when the claim
    /// could be stale. Its message is what recovers the step if the claim's
    /// worker is gone, and a message can come back a moment before the
    /// claim goes stale (its visibility timeout counts from the read, the
    /// claim's from just after); acked then, a step whose outcome could not
    /// be recorded waited for an orchestrator's sweep, or forever without
    /// one.
    async fn settle_unclaimed(&self, unclaimed: Vec<(ReceivedMessage, StepMessage)>) {
        let uuids: Vec<Uuid> = unclaimed.iter().map(|(_, step)| step.step_uuid).collect();
        let steps = match queries::unclaimed_steps(self.ctx.pool(), &uuids, self.stale_after()).await {
            Ok(steps) => steps,
            Err(e) => {
                // Unknown for now: back to the queue, to be looked at again.
                tracing::warn!(error = %e, "reading unclaimed steps failed; their messages are redelivered");
                for (message, _) in &unclaimed {
                    let _ = self.ctx.messaging().nack(&message.queue, message.receipt, Duration::from_secs(1)).await;
                }
                return;
            }
        };
        for (message, step) in unclaimed {
            let settled = match steps.get(&step.step_uuid) {
                None => self.archive_stray(&message, step.step_uuid, "no such step exists").await,
                Some(found) if !self.namespaces.contains(&found.namespace) => {
                    let reason =
                        format!("the step belongs to namespace {}, which this worker does not serve", found.namespace);
                    self.archive_stray(&message, step.step_uuid, &reason).await
                }
                Some(UnclaimedStep { stale_in_seconds: Some(stale_in), .. }) => {
                    let delay = Duration::from_secs_f64(*stale_in) + Duration::from_millis(100);
                    tracing::debug!(step_uuid = %step.step_uuid, queue = message.queue, ?delay,
                                    "a step in progress elsewhere: its message comes back when the claim could be stale");
                    self.ctx.messaging().nack(&message.queue, message.receipt, delay).await
                }
                Some(_) => {
                    tracing::debug!(step_uuid = %step.step_uuid, queue = message.queue,
                                    "skipping a duplicate delivery of a step that is not claimable");
                    self.ctx.messaging().ack(&message.queue, message.receipt).await
                }
            };
            if let Err(e) = settled {
                tracing::warn!(step_uuid = %step.step_uuid, error = %e, "settling an unclaimed step message failed");
            }
        }
    }

    async fn archive_stray(&self, message: &ReceivedMessage, step_uuid: Uuid, reason: &str) -> Result<()> {
        tracing::warn!(%step_uuid, queue = message.queue, receipt = message.receipt, reason,
                       "archiving a step message that this worker can never run");
        dead_lettered(&message.queue, DeadLetterReason::Stray);
        self.ctx.messaging().dead_letter_because(&message.queue, message.receipt, reason).await
    }

    /// A step in progress is taken over only when its claim went stale: no
    /// heartbeat for a whole visibility timeout.
    fn stale_after(&self) -> Duration {
        Duration::from_secs(u64::from(self.ctx.config().messaging.visibility_timeout_seconds))
    }

    async fn claim(&self, held: &mut HeldConnection, steps: &[Uuid]) -> Result<HashMap<Uuid, ClaimedStep>> {
        let stale_after = self.stale_after();
        // Losing a claim in a database crash only means the step runs again;
        // it need not wait for the disk when the queues are in the same
        // database (see tasker_claim_steps).
        let async_commit = self.ctx.messaging().queues_in_database();
        // A batch's claim, its own trace: each claimed step's span starts
        // when it returns (in its task's trace).
        let span = tracing::trace_span!("claim_steps", steps = steps.len(), worker = %self.worker_id);
        let claimed = async {
            let conn = held.get("claiming steps").await?;
            queries::claim_steps(conn, steps, &self.worker_id, &self.namespaces, stale_after, async_commit).await
        }
        .instrument(span)
        .await;
        held.done(&claimed);
        claimed
    }

    async fn hand_back(&self, message: &ReceivedMessage, step: &StepMessage, error: &Error) {
        // An outage is logged once, by the dispatcher's loop.
        if outage(error).is_some() {
            tracing::debug!(step_uuid = %step.step_uuid, %error, "claiming a step failed; it is redelivered");
        } else {
            tracing::warn!(step_uuid = %step.step_uuid, %error, "claiming a step failed; it is redelivered");
        }
        let _ = self.ctx.messaging().nack(&message.queue, message.receipt, Duration::from_secs(1)).await;
    }
}

/// Keeps the steps this worker runs visibly alive: refreshes their
/// heartbeat and their messages' visibility every third of the visibility
/// timeout, until a step's own `timeout_seconds` has passed. A worker that
/// dies stops beating; its steps are then taken over.
struct Heartbeat {
    ctx: Arc<Context>,
    in_flight: InFlightMap,
    /// When the last beat went through (health reports).
    clock: Arc<std::sync::atomic::AtomicI64>,
}

impl Heartbeat {
    async fn run(self, mut stop: watch::Receiver<bool>) {
        let visibility = Duration::from_secs(u64::from(self.ctx.config().messaging.visibility_timeout_seconds));
        let every = (visibility / 3).max(Duration::from_millis(200));
        let mut retry = LoopRetry::new("worker_heartbeat", Some(self.ctx.breakers().clone()));
        let mut wait = every;
        loop {
            if *stop.borrow() {
                // Stopping: beat on schedule while steps finish, and leave
                // as soon as none is left (shutdown waits for this).
                let next_beat = tokio::time::Instant::now() + every;
                while tokio::time::Instant::now() < next_beat && !self.idle() && stop.has_changed().is_ok() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            } else {
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => {}
                }
            }
            // The handle was dropped without a shutdown: nobody can report
            // the steps still in flight, so they are given back now rather
            // than kept alive for good.
            if stop.has_changed().is_err() {
                let left: Vec<InFlight> =
                    self.in_flight.lock().expect("in-flight lock").drain().map(|(_, flight)| flight).collect();
                for flight in left {
                    release(&self.ctx, flight, "worker dropped without a shutdown").await;
                }
                break;
            }
            if *stop.borrow() && self.idle() {
                break;
            }
            // Beat once more when told to stop: in-flight steps are finishing.
            match self.beat(visibility).await {
                Ok(()) => {
                    retry.succeeded();
                    wait = every;
                    registry::beat(&self.clock);
                }
                Err(e) => match retry.failed(&e) {
                    Some(backoff) => wait = backoff.max(every),
                    None => {
                        wait = every;
                        tracing::warn!(error = %e, "step heartbeat failed; retrying");
                    }
                },
            }
        }
    }

    fn idle(&self) -> bool {
        self.in_flight.lock().expect("in-flight lock").is_empty()
    }

    async fn beat(&self, visibility: Duration) -> Result<()> {
        let alive: Vec<(Uuid, i32, Option<Delivery>)> = {
            let in_flight = self.in_flight.lock().expect("in-flight lock");
            in_flight
                .values()
                .filter(|f| match f.job.timeout_seconds {
                    Some(t) => f.claimed_at.elapsed() < Duration::from_secs(u64::try_from(t).unwrap_or(0)),
                    None => true,
                })
                .map(|f| (f.job.step_uuid, f.job.attempt, f.message.clone()))
                .collect()
        };
        if alive.is_empty() {
            return Ok(());
        }
        let steps: Vec<Uuid> = alive.iter().map(|a| a.0).collect();
        let attempts: Vec<i32> = alive.iter().map(|a| a.1).collect();
        queries::heartbeat_steps(self.ctx.pool(), &steps, &attempts).await?;
        for (step_uuid, _, message) in &alive {
            let Some((queue, receipt)) = message else { continue };
            if let Err(e) = self.ctx.messaging().extend_visibility(queue, *receipt, visibility).await {
                // A step that finished since the list was taken has had its
                // message acked: nothing to extend. Any other step is tried
                // again at the next beat, the others meanwhile extended.
                if self.in_flight.lock().expect("in-flight lock").contains_key(step_uuid) {
                    tracing::warn!(%step_uuid, error = %e, "extending a running step's message failed; retrying");
                }
            }
        }
        Ok(())
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "worker".to_owned())
}
