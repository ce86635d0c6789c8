//! The Rust side of a worker: a dispatcher polls the namespace queues,
//! claims each step (a duplicate delivery of a step that is not enqueued is
//! acked and skipped), and hands jobs over a bounded channel to whoever runs
//! handlers (Ruby threads, or Rust in tests), who reports back with
//! [`WorkerHandle::complete`] or [`WorkerHandle::fail`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

use crate::context::Context;
use crate::db::queries::{self, ClaimedStep};
use crate::error::{Error, ErrorKind, Result};
use crate::lifecycle::Lifecycle;
use crate::messaging::{
    decode_or_dead_letter, MessageRouter, ReceivedMessage, StepMessage, StepResultMessage, Wakeups,
};
use crate::orchestration::backoff_delay;
use crate::template::check_identifier;

/// Most messages read per poll of one queue.
const MAX_BATCH: usize = 10;

/// Most outcomes recorded in one transaction.
const MAX_RECORD_BATCH: usize = 64;

/// A claimed step, ready to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepJob {
    pub task_uuid: Uuid,
    pub step_uuid: Uuid,
    pub correlation_id: Uuid,
    pub namespace: String,
    pub step_name: String,
    pub handler_callable: String,
    /// 1 for the first attempt.
    pub attempt: i32,
    pub max_attempts: i32,
    /// The template's limit on one attempt, if it sets one.
    pub timeout_seconds: Option<i32>,
    /// The task's and the step's rows as the claim left them (column =>
    /// value), so a worker need not read them back.
    pub task: Value,
    pub step: Value,
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

struct InFlight {
    queue: String,
    receipt: i64,
    job: StepJob,
    claim: ClaimedStep,
    claimed_at: tokio::time::Instant,
    _permit: OwnedSemaphorePermit,
}

#[derive(Debug)]
pub struct WorkerHandle {
    ctx: Arc<Context>,
    id: String,
    jobs: tokio::sync::Mutex<mpsc::Receiver<StepJob>>,
    in_flight: Arc<Mutex<HashMap<Uuid, InFlight>>>,
    /// To the recorder, which runs until the handle is dropped (steps still
    /// report while the worker shuts down).
    records: mpsc::Sender<Record>,
    lifecycle: Lifecycle,
}

impl std::fmt::Debug for InFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InFlight").field("queue", &self.queue).field("receipt", &self.receipt).finish()
    }
}

impl WorkerHandle {
    /// Starts polling the namespaces' queues with at most `concurrency`
    /// steps claimed at once.
    pub async fn start(ctx: Arc<Context>, namespaces: &[String], concurrency: usize) -> Result<Self> {
        if namespaces.is_empty() {
            return Err(Error::config("a worker needs at least one namespace to poll"));
        }
        for ns in namespaces {
            check_identifier("namespace", ns).map_err(Error::config)?;
        }
        let concurrency = concurrency.max(1);
        let queues: Vec<String> = namespaces.iter().map(|ns| MessageRouter::step_queue(ns)).collect();
        for queue in &queues {
            ctx.messaging().create_queue(queue).await?;
        }
        let id = format!("{}:{}:{}", hostname(), std::process::id(), &Uuid::now_v7().simple().to_string()[20..]);
        let (sender, receiver) = mpsc::channel(concurrency);
        let in_flight = Arc::new(Mutex::new(HashMap::new()));
        let dispatcher = Dispatcher {
            ctx: ctx.clone(),
            worker_id: id.clone(),
            wakeups: ctx.messaging().wakeups(&queues).await?,
            queues,
            permits: Arc::new(Semaphore::new(concurrency)),
            jobs: sender,
            in_flight: in_flight.clone(),
        };
        let heartbeat = Heartbeat { ctx: ctx.clone(), in_flight: in_flight.clone() };
        let (records, requests) = mpsc::channel(concurrency);
        tokio::spawn(Recorder { ctx: ctx.clone(), worker_id: id.clone(), records: requests }.run());
        let lifecycle = Lifecycle::new();
        lifecycle.spawn("worker_dispatcher", move |stop| dispatcher.run(stop));
        lifecycle.spawn("worker_heartbeat", move |stop| heartbeat.run(stop));
        tracing::info!(worker = id, ?namespaces, concurrency, "worker started");
        Ok(Self { ctx, id, jobs: tokio::sync::Mutex::new(receiver), in_flight, records, lifecycle })
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
        if self.lifecycle.is_stopping() {
            return Ok(None);
        }
        Ok(tokio::time::timeout(timeout, jobs.recv()).await.ok().flatten())
    }

    fn take(&self, step_uuid: Uuid) -> Result<InFlight> {
        self.in_flight.lock().expect("in-flight lock").remove(&step_uuid).ok_or_else(|| {
            Error::new(ErrorKind::State, format!("step {step_uuid} is not in flight in worker {}", self.id))
        })
    }

    /// Records the handler's result and the transition in one transaction
    /// with the result message, and acks the step's message in it where the
    /// provider allows.
    pub async fn complete(&self, step_uuid: Uuid, result: Value) -> Result<()> {
        let flight = self.take(step_uuid)?;
        let meta = json!({"worker": self.id, "attempt": flight.job.attempt});
        self.record(flight, Outcome::Complete { result, meta }).await.map(|_| ())
    }

    /// Records a failure: `waiting_for_retry` with a backoff while attempts
    /// are left and the error is retryable, else `error`. Returns the state.
    pub async fn fail(&self, step_uuid: Uuid, failure: StepFailure) -> Result<String> {
        let flight = self.take(step_uuid)?;
        let claim = &flight.claim;
        let retry_after =
            failure.retry_after_seconds.filter(|s| s.is_finite() && *s >= 0.0).map(Duration::from_secs_f64);
        let delay = backoff_delay(
            u32::try_from(claim.attempts).unwrap_or(1),
            u32::try_from(claim.backoff_base_ms).unwrap_or(0),
            u32::try_from(claim.max_backoff_ms).unwrap_or(0),
            retry_after,
        );
        let retry_at = Utc::now() + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::zero());
        let retryable = claim.retryable && failure.retryable;
        let error = json!({
            "class": failure.error_class,
            "message": failure.message,
            "backtrace": failure.backtrace,
            "attempt": claim.attempts,
            "retryable": retryable,
            "worker": self.id,
        });
        let state = self.record(flight, Outcome::Fail { error, retryable, retry_at }).await?;
        Ok(state.unwrap_or_else(|| "unchanged".to_owned()))
    }

    async fn record(&self, flight: InFlight, outcome: Outcome) -> Result<Option<String>> {
        let (reply, answer) = oneshot::channel();
        let step_uuid = flight.job.step_uuid;
        self.records.send(Record { flight, outcome, reply }).await.map_err(|_| {
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
        let stopped = self.lifecycle.shutdown(timeout).await;
        // Jobs claimed but never handed out are released at once.
        let mut jobs = self.jobs.lock().await;
        jobs.close();
        while let Ok(job) = jobs.try_recv() {
            self.release(job.step_uuid, "worker shut down before starting it").await;
        }
        drop(jobs);
        while !self.in_flight.lock().expect("in-flight lock").is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left: Vec<Uuid> = self.in_flight.lock().expect("in-flight lock").keys().copied().collect();
        for step_uuid in left {
            self.release(step_uuid, "worker shut down before it finished").await;
        }
        tracing::info!(worker = self.id, "worker stopped");
        stopped
    }

    async fn release(&self, step_uuid: Uuid, reason: &str) {
        let Ok(flight) = self.take(step_uuid) else { return };
        let outcome = async {
            queries::release_step(self.ctx.pool(), step_uuid, reason).await?;
            self.ctx.messaging().nack(&flight.queue, flight.receipt, Duration::ZERO).await
        }
        .await;
        match outcome {
            Ok(()) => tracing::info!(%step_uuid, reason, "released step for redelivery"),
            Err(e) => {
                tracing::error!(%step_uuid, error = %e, "releasing a step failed; it is recovered after its visibility timeout")
            }
        }
    }
}

/// A handler's outcome, to be recorded.
enum Outcome {
    Complete { result: Value, meta: Value },
    Fail { error: Value, retryable: bool, retry_at: chrono::DateTime<Utc> },
}

struct Record {
    flight: InFlight,
    outcome: Outcome,
    reply: oneshot::Sender<Result<Option<String>>>,
}

/// Records outcomes with group commit: outcomes reported while a commit is
/// under way are recorded together in the next transaction, so under load
/// many steps share one commit (and one send and one ack), and an outcome
/// reported alone is recorded at once. Each reporter is answered only after
/// its outcome is committed.
struct Recorder {
    ctx: Arc<Context>,
    worker_id: String,
    records: mpsc::Receiver<Record>,
}

impl Recorder {
    async fn run(mut self) {
        while let Some(first) = self.records.recv().await {
            let mut batch = vec![first];
            while batch.len() < MAX_RECORD_BATCH {
                match self.records.try_recv() {
                    Ok(record) => batch.push(record),
                    Err(_) => break,
                }
            }
            if batch.len() > 1 {
                match self.record(&batch).await {
                    Ok(states) => {
                        for (record, state) in batch.into_iter().zip(states) {
                            let _ = record.reply.send(Ok(state));
                        }
                        continue;
                    }
                    Err(e) => tracing::warn!(worker = self.worker_id, outcomes = batch.len(), error = %e,
                                             "recording outcomes together failed; recording each on its own"),
                }
            }
            // One at a time: what one outcome's failure holds up is its own.
            for record in batch {
                let state = self.record(std::slice::from_ref(&record)).await.map(|mut states| states.remove(0));
                let _ = record.reply.send(state);
            }
        }
    }

    /// Records the outcomes and their result messages in one transaction,
    /// which also acks their step messages where the provider allows.
    async fn record(&self, batch: &[Record]) -> Result<Vec<Option<String>>> {
        let mut tx = self.ctx.pool().begin().await.map_err(Error::db("recording step outcomes"))?;
        let mut states = Vec::with_capacity(batch.len());
        let mut results = Vec::with_capacity(batch.len());
        let mut acks: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
        // Completions in one statement; failures (rarer, each with its own
        // retry decision) one by one.
        let completed = {
            let (mut steps, mut attempts, mut values, mut metas) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for Record { flight, outcome, .. } in batch {
                if let Outcome::Complete { result, meta } = outcome {
                    steps.push(flight.job.step_uuid);
                    attempts.push(flight.job.attempt);
                    values.push(result);
                    metas.push(meta);
                }
            }
            if steps.is_empty() {
                HashSet::new()
            } else {
                queries::complete_steps(&mut tx, &steps, &attempts, &values, &metas).await?
            }
        };
        for Record { flight, outcome, .. } in batch {
            let (step_uuid, attempt) = (flight.job.step_uuid, flight.job.attempt);
            let state = match outcome {
                Outcome::Complete { .. } => completed.contains(&step_uuid).then(|| "complete".to_owned()),
                Outcome::Fail { error, retryable, retry_at } => {
                    queries::fail_step(&mut tx, step_uuid, attempt, error, *retryable, *retry_at).await?
                }
            };
            if state.is_some() {
                let message = StepResultMessage {
                    task_uuid: flight.job.task_uuid,
                    step_uuid,
                    correlation_id: flight.job.correlation_id,
                };
                results.push(serde_json::to_value(message).expect("messages serialize"));
                acks.entry(flight.queue.as_str()).or_default().push(flight.receipt);
            } else {
                tracing::warn!(%step_uuid, step = flight.job.step_name,
                               "step was no longer in progress when its outcome arrived; outcome not applied");
            }
            states.push(state);
        }
        let sent = results.is_empty()
            || self
                .ctx
                .messaging()
                .send_batch_in_transaction(&mut tx, MessageRouter::STEP_RESULTS, &results)
                .await?
                .is_some();
        // The step messages go with the outcomes, in the same commit where
        // the provider allows.
        let mut acked = true;
        for (queue, receipts) in &acks {
            acked &= self.ctx.messaging().ack_in_transaction(&mut tx, queue, receipts).await?;
        }
        tx.commit().await.map_err(Error::db("recording step outcomes"))?;
        if !sent {
            self.ctx.send_after_commit(MessageRouter::STEP_RESULTS, results).await;
        }
        for (Record { flight, .. }, state) in batch.iter().zip(&states) {
            let step_uuid = flight.job.step_uuid;
            if state.is_none() {
                // Not applied: the step was cancelled or resolved meanwhile,
                // or the claim itself was lost (a database crash took an
                // asynchronous commit) and the step is enqueued again. The
                // message goes back: a claim runs the step if it still needs
                // to run, and acks the message if not.
                if let Err(e) = self.ctx.messaging().nack(&flight.queue, flight.receipt, Duration::ZERO).await {
                    tracing::warn!(%step_uuid, error = %e, "returning the message of an unapplied outcome failed");
                }
            } else if !acked {
                // The outcome is committed; a failed ack only means the
                // message is delivered again, and the claim skips a step
                // that is not enqueued.
                if let Err(e) = self.ctx.messaging().ack(&flight.queue, flight.receipt).await {
                    tracing::warn!(%step_uuid, error = %e, "acking a finished step's message failed");
                }
            }
        }
        Ok(states)
    }
}

struct Dispatcher {
    ctx: Arc<Context>,
    worker_id: String,
    queues: Vec<String>,
    wakeups: Wakeups,
    permits: Arc<Semaphore>,
    jobs: mpsc::Sender<StepJob>,
    in_flight: Arc<Mutex<HashMap<Uuid, InFlight>>>,
}

impl Dispatcher {
    async fn run(self, mut stop: watch::Receiver<bool>) {
        let poll = Duration::from_millis(self.ctx.config().worker.poll_interval_ms);
        let visibility = Duration::from_secs(u64::from(self.ctx.config().messaging.visibility_timeout_seconds));
        let mut start = 0;
        while !*stop.borrow() {
            let first = tokio::select! {
                permit = self.permits.clone().acquire_owned() => permit.expect("semaphore never closes"),
                _ = stop.changed() => break,
            };
            let mut permits = vec![first];
            while permits.len() < MAX_BATCH {
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
            for i in 0..self.queues.len() {
                if permits.is_empty() {
                    maybe_more = true;
                    break;
                }
                let queue = &self.queues[(start + i) % self.queues.len()];
                let want = permits.len();
                match self.ctx.messaging().receive(queue, u32::try_from(want).unwrap_or(1), visibility).await {
                    Ok(messages) if !messages.is_empty() => {
                        received_any = true;
                        maybe_more |= messages.len() >= want;
                        let taken = permits.split_off(permits.len() - messages.len());
                        self.dispatch(messages, taken).await;
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(queue, error = %e, "polling a step queue failed; retrying"),
                }
            }
            start = start.wrapping_add(1);
            drop(permits);
            let read_again = if self.wakeups.pushed() { maybe_more } else { received_any };
            if !read_again {
                tokio::select! {
                    () = self.wakeups.wait(poll) => {}
                    _ = stop.changed() => {}
                }
            }
        }
    }

    /// Claims the steps of a batch of messages in one statement (each on its
    /// own if that fails), then hands each claimed step to a runner.
    async fn dispatch(&self, messages: Vec<ReceivedMessage>, permits: Vec<OwnedSemaphorePermit>) {
        let mut steps = Vec::with_capacity(messages.len());
        for message in messages {
            if let Some(step) = decode_or_dead_letter::<StepMessage>(self.ctx.messaging().as_ref(), &message).await {
                steps.push((message, step));
            }
        }
        let uuids: Vec<Uuid> = steps.iter().map(|(_, step)| step.step_uuid).collect();
        let mut claims = match self.claim(&uuids).await {
            Ok(claims) => claims,
            Err(e) if uuids.len() > 1 => {
                tracing::warn!(steps = uuids.len(), error = %e, "claiming a batch of steps failed; claiming each on its own");
                let mut claims = HashMap::new();
                let mut handed_back = Vec::new();
                for (i, (message, step)) in steps.iter().enumerate() {
                    match self.claim(&[step.step_uuid]).await {
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
                return;
            }
        };
        for ((message, step), permit) in steps.into_iter().zip(permits) {
            match claims.remove(&step.step_uuid) {
                Some(claim) => self.hand_over(message, step, claim, permit).await,
                None => {
                    // Not enqueued: a duplicate delivery, or already claimed,
                    // finished or cancelled. Never run it again.
                    tracing::debug!(step_uuid = %step.step_uuid, "skipping a step that is not enqueued");
                    if let Err(e) = self.ctx.messaging().ack(&message.queue, message.receipt).await {
                        tracing::warn!(error = %e, "acking a skipped step message failed");
                    }
                }
            }
        }
    }

    async fn claim(&self, steps: &[Uuid]) -> Result<HashMap<Uuid, ClaimedStep>> {
        // A step in progress is taken over only when its claim went stale:
        // no heartbeat for a whole visibility timeout.
        let stale_after = Duration::from_secs(u64::from(self.ctx.config().messaging.visibility_timeout_seconds));
        // Losing a claim in a database crash only means the step runs again;
        // it need not wait for the disk when the queues are in the same
        // database (see migration 008).
        let async_commit = self.ctx.messaging().queues_in_database();
        queries::claim_steps(self.ctx.pool(), steps, &self.worker_id, stale_after, async_commit).await
    }

    async fn hand_back(&self, message: &ReceivedMessage, step: &StepMessage, error: &Error) {
        tracing::warn!(step_uuid = %step.step_uuid, %error, "claiming a step failed; it is redelivered");
        let _ = self.ctx.messaging().nack(&message.queue, message.receipt, Duration::from_secs(1)).await;
    }

    async fn hand_over(
        &self,
        message: ReceivedMessage,
        step: StepMessage,
        mut claim: ClaimedStep,
        permit: OwnedSemaphorePermit,
    ) {
        let mut job = StepJob {
            task_uuid: claim.task_uuid,
            step_uuid: step.step_uuid,
            correlation_id: step.correlation_id,
            namespace: MessageRouter::namespace_of(&message.queue).unwrap_or(&message.queue).to_owned(),
            step_name: claim.step_name.clone(),
            handler_callable: claim.handler_callable.clone(),
            attempt: claim.attempts,
            max_attempts: claim.max_attempts,
            timeout_seconds: claim.timeout_seconds,
            task: Value::Null,
            step: Value::Null,
        };
        // The in-flight record keeps the job without the rows, which only the
        // runner reads: they are moved to it, not copied.
        let kept = job.clone();
        job.task = std::mem::take(&mut claim.task_row);
        job.step = std::mem::take(&mut claim.step_row);
        self.in_flight.lock().expect("in-flight lock").insert(
            step.step_uuid,
            InFlight {
                queue: message.queue,
                receipt: message.receipt,
                job: kept,
                claim,
                claimed_at: tokio::time::Instant::now(),
                _permit: permit,
            },
        );
        if self.jobs.send(job).await.is_err() {
            tracing::debug!(step_uuid = %step.step_uuid, "worker stopping; step will be released");
        }
    }
}

/// Keeps the steps this worker runs visibly alive: refreshes their
/// heartbeat and their messages' visibility every third of the visibility
/// timeout, until a step's own `timeout_seconds` has passed. A worker that
/// dies stops beating; its steps are then taken over.
struct Heartbeat {
    ctx: Arc<Context>,
    in_flight: Arc<Mutex<HashMap<Uuid, InFlight>>>,
}

impl Heartbeat {
    async fn run(self, mut stop: watch::Receiver<bool>) {
        let visibility = Duration::from_secs(u64::from(self.ctx.config().messaging.visibility_timeout_seconds));
        let every = (visibility / 3).max(Duration::from_millis(200));
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                _ = stop.changed() => {}
            }
            // Beat once more while stopping: in-flight steps are finishing.
            if let Err(e) = self.beat(visibility).await {
                tracing::warn!(error = %e, "step heartbeat failed; retrying");
            }
            if *stop.borrow() && self.in_flight.lock().expect("in-flight lock").is_empty() {
                break;
            }
        }
    }

    async fn beat(&self, visibility: Duration) -> Result<()> {
        let alive: Vec<(Uuid, i32, String, i64)> = {
            let in_flight = self.in_flight.lock().expect("in-flight lock");
            in_flight
                .values()
                .filter(|f| match f.job.timeout_seconds {
                    Some(t) => f.claimed_at.elapsed() < Duration::from_secs(u64::try_from(t).unwrap_or(0)),
                    None => true,
                })
                .map(|f| (f.job.step_uuid, f.job.attempt, f.queue.clone(), f.receipt))
                .collect()
        };
        if alive.is_empty() {
            return Ok(());
        }
        let steps: Vec<Uuid> = alive.iter().map(|a| a.0).collect();
        let attempts: Vec<i32> = alive.iter().map(|a| a.1).collect();
        queries::heartbeat_steps(self.ctx.pool(), &steps, &attempts).await?;
        for (step_uuid, _, queue, receipt) in &alive {
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
