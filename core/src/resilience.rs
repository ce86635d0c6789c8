//! Failing fast while the database or the broker is down.
//!
//! - [`Backoff`]: capped exponential backoff with jitter (100 ms doubling
//!   to 5 s; each wait is half its step plus a random part of the other
//!   half, so processes that lost the same server do not retry in step).
//! - [`LoopRetry`]: what every long-running loop keeps: on an outage error
//!   it says how long to wait, logs once when the outage starts and once
//!   when it ends (never per attempt), counts its attempts
//!   (`tasker_outage_retries_total`), and shows the loop as down in
//!   [`health`](crate::health) meanwhile.
//! - [`Breakers`]: one circuit breaker per dependency (the database, the
//!   broker; one and the same with PGMQ). An outage error anywhere in the
//!   process opens it; while it is open, callers (`create_task`, sending a
//!   message) get [`ErrorKind::Unavailable`] at once instead of waiting for
//!   a connection that will not come. A probe of its own (a `SELECT 1`, or
//!   the broker's stats of a queue; 2 s at most each, with the backoff
//!   above between them) closes it as soon as the dependency answers.
//!
//! An outage error is one that says the server could not be reached or
//! went away (connection refused or reset, a pool timeout, PostgreSQL
//! shutting down, a lost AMQP connection), never one a statement itself
//! caused.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use serde::Serialize;

use crate::error::{Error, ErrorKind, Result};

/// The first wait after a failure.
pub(crate) const FIRST_DELAY: Duration = Duration::from_millis(100);
/// The longest wait between two attempts.
pub(crate) const MAX_DELAY: Duration = Duration::from_secs(5);
/// How long one breaker probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Capped exponential backoff with jitter.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    step: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { step: FIRST_DELAY }
    }
}

impl Backoff {
    /// The wait before the next attempt: in [step / 2, step], the step
    /// doubling each time up to [`MAX_DELAY`].
    pub(crate) fn next_delay(&mut self) -> Duration {
        let step = self.step;
        self.step = (step * 2).min(MAX_DELAY);
        let half = step / 2;
        half + half.mul_f64(random_unit())
    }

    pub(crate) fn reset(&mut self) {
        self.step = FIRST_DELAY;
    }
}

/// A number in [0, 1) that differs between calls and processes.
fn random_unit() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher
        .write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// Which dependency an outage error says is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dependency {
    Database,
    Broker,
}

impl Dependency {
    fn name(self) -> &'static str {
        match self {
            Dependency::Database => "database",
            Dependency::Broker => "broker",
        }
    }
}

/// The dependency `error` says is unreachable, if it says so.
pub(crate) fn outage(error: &Error) -> Option<Dependency> {
    let dependency = match error.kind() {
        ErrorKind::Database => Dependency::Database,
        ErrorKind::Messaging => Dependency::Broker,
        ErrorKind::Unavailable => {
            return Some(if error.message().starts_with("the broker") {
                Dependency::Broker
            } else {
                Dependency::Database
            })
        }
        _ => return None,
    };
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(error);
    while let Some(e) = cause {
        if let Some(e) = e.downcast_ref::<sqlx::Error>() {
            return sqlx_outage(e).then_some(dependency);
        }
        if let Some(e) = e.downcast_ref::<lapin::Error>() {
            use lapin::ErrorKind as K;
            return matches!(
                e.kind(),
                K::IOError(_) | K::InvalidConnectionState(_) | K::InvalidChannelState(..) | K::MissingHeartbeatError
            )
            .then_some(dependency);
        }
        if e.downcast_ref::<std::io::Error>().is_some() {
            return Some(dependency);
        }
        cause = e.source();
    }
    None
}

fn sqlx_outage(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        // Connection exceptions (class 08), the server shutting down or
        // starting (57P01-57P03), too many connections.
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("08") || matches!(c.as_ref(), "57P01" | "57P02" | "57P03" | "53300")),
        _ => false,
    }
}

pub(crate) type Probe = Arc<dyn Fn() -> BoxFuture<'static, Result<()>> + Send + Sync>;

/// The circuit breakers of one [`Context`](crate::Context).
#[derive(Clone)]
pub(crate) struct Breakers {
    database: Arc<Breaker>,
    /// The same breaker as `database` when the queues are in PostgreSQL.
    broker: Arc<Breaker>,
}

impl std::fmt::Debug for Breakers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Breakers")
            .field("database", &self.database.is_open())
            .field("broker", &self.broker.is_open())
            .finish()
    }
}

impl Breakers {
    /// `broker`: None when the queues are in the database.
    pub(crate) fn new(database: Probe, broker: Option<Probe>) -> Self {
        let database = Breaker::new(Dependency::Database, database);
        let broker = match broker {
            Some(probe) => Breaker::new(Dependency::Broker, probe),
            None => database.clone(),
        };
        Self { database, broker }
    }

    fn breaker(&self, dependency: Dependency) -> &Arc<Breaker> {
        match dependency {
            Dependency::Database => &self.database,
            Dependency::Broker => &self.broker,
        }
    }

    /// Fails at once while the database's breaker is open.
    pub(crate) fn check_database(&self) -> Result<()> {
        self.database.check()
    }

    /// Fails at once while the broker's breaker is open.
    pub(crate) fn check_broker(&self) -> Result<()> {
        self.broker.check()
    }

    /// Opens the breaker of the dependency `error` says is down, if it says so.
    /// Returns that dependency.
    pub(crate) fn observe(&self, error: &Error) -> Option<Dependency> {
        let dependency = outage(error)?;
        let breaker = self.breaker(dependency);
        breaker.trip(error);
        // With PGMQ the broker is the database.
        Some(breaker.dependency)
    }

    /// Passes a call's result through, opening a breaker on an outage error.
    pub(crate) fn watch<T>(&self, result: Result<T>) -> Result<T> {
        if let Err(e) = &result {
            self.observe(e);
        }
        result
    }

    /// The state of each breaker, for health reports.
    pub(crate) fn states(&self) -> Vec<BreakerHealth> {
        let mut states = vec![self.database.health()];
        if !Arc::ptr_eq(&self.database, &self.broker) {
            states.push(self.broker.health());
        }
        states
    }
}

/// One breaker, as a health report shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BreakerHealth {
    /// `database` or `broker`.
    pub dependency: &'static str,
    /// Open: callers fail fast with `UnavailableError`.
    pub open: bool,
    /// When it opened (RFC 3339).
    pub open_since: Option<String>,
    /// The error that opened it.
    pub last_error: Option<String>,
}

struct Breaker {
    dependency: Dependency,
    open: AtomicBool,
    /// Since when it is open, and why.
    state: Mutex<Option<(Instant, chrono::DateTime<chrono::Utc>, String)>>,
    probe: Probe,
}

impl Breaker {
    fn new(dependency: Dependency, probe: Probe) -> Arc<Self> {
        metrics::gauge!("tasker_circuit_breaker_open", "dependency" => dependency.name()).set(0.0);
        Arc::new(Self { dependency, open: AtomicBool::new(false), state: Mutex::new(None), probe })
    }

    fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    fn check(&self) -> Result<()> {
        if !self.is_open() {
            return Ok(());
        }
        let state = self.state.lock().expect("breaker lock");
        let (since, why) = match &*state {
            Some((since, _, why)) => (since.elapsed().as_secs_f64(), why.as_str()),
            None => (0.0, "unknown"),
        };
        Err(Error::new(
            ErrorKind::Unavailable,
            format!(
                "the {} is unavailable (unreachable for {since:.1} s: {why}); failing fast until it answers again",
                self.dependency.name()
            ),
        ))
    }

    /// Opens the breaker (once: later errors while it is open change
    /// nothing) and starts the probe that closes it.
    fn trip(self: &Arc<Self>, error: &Error) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let mut state = self.state.lock().expect("breaker lock");
        if self.is_open() {
            return;
        }
        *state = Some((Instant::now(), chrono::Utc::now(), error.to_string()));
        self.open.store(true, Ordering::Release);
        drop(state);
        metrics::gauge!("tasker_circuit_breaker_open", "dependency" => self.dependency.name()).set(1.0);
        tracing::warn!(dependency = self.dependency.name(), %error,
                       "circuit breaker opened: callers fail fast with UnavailableError until it answers again");
        let weak: Weak<Self> = Arc::downgrade(self);
        runtime.spawn(async move {
            let mut backoff = Backoff::default();
            // The first probe at once: a single dropped connection (a
            // server restart) closes the breaker again within a round trip.
            let mut wait = Duration::ZERO;
            loop {
                tokio::time::sleep(wait).await;
                let Some(breaker) = weak.upgrade() else { return };
                metrics::counter!("tasker_circuit_breaker_probes_total", "dependency" => breaker.dependency.name())
                    .increment(1);
                let answered = matches!(tokio::time::timeout(PROBE_TIMEOUT, (breaker.probe)()).await, Ok(Ok(())));
                if answered {
                    let opened = breaker.state.lock().expect("breaker lock").take();
                    breaker.open.store(false, Ordering::Release);
                    metrics::gauge!("tasker_circuit_breaker_open", "dependency" => breaker.dependency.name()).set(0.0);
                    let down_for = opened.map(|(since, _, _)| since.elapsed().as_secs_f64()).unwrap_or(0.0);
                    tracing::warn!(
                        dependency = breaker.dependency.name(),
                        down_for_seconds = format!("{down_for:.1}"),
                        "circuit breaker closed: the dependency answers again"
                    );
                    return;
                }
                wait = backoff.next_delay();
            }
        });
    }

    fn health(&self) -> BreakerHealth {
        let state = self.state.lock().expect("breaker lock");
        BreakerHealth {
            dependency: self.dependency.name(),
            open: self.is_open(),
            open_since: state.as_ref().map(|(_, at, _)| at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            last_error: state.as_ref().map(|(_, _, why)| why.clone()),
        }
    }
}

/// One loop, as a health report shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LoopHealth {
    /// The loop's name (`worker_dispatcher`, `sweeper`, ...).
    pub name: &'static str,
    /// False while its dependency is unreachable.
    pub healthy: bool,
    /// When its current outage started (RFC 3339).
    pub down_since: Option<String>,
    /// Attempts made during the current outage.
    pub retries: u64,
    pub last_error: Option<String>,
}

struct LoopState {
    name: &'static str,
    /// Milliseconds since the epoch; 0 while healthy.
    down_since_ms: AtomicI64,
    retries: AtomicU64,
    last_error: Mutex<Option<String>>,
}

static LOOPS: Mutex<Vec<Weak<LoopState>>> = Mutex::new(Vec::new());

/// Every loop of this process still running.
pub(crate) fn loops() -> Vec<LoopHealth> {
    let mut loops = LOOPS.lock().expect("loop registry lock");
    loops.retain(|l| l.strong_count() > 0);
    loops
        .iter()
        .filter_map(Weak::upgrade)
        .map(|l| {
            let ms = l.down_since_ms.load(Ordering::Relaxed);
            LoopHealth {
                name: l.name,
                healthy: ms == 0,
                down_since: (ms > 0)
                    .then(|| chrono::DateTime::from_timestamp_millis(ms))
                    .flatten()
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
                retries: l.retries.load(Ordering::Relaxed),
                last_error: l.last_error.lock().expect("loop state lock").clone(),
            }
        })
        .collect()
}

/// A long-running loop's view of outages; see the module's documentation.
pub(crate) struct LoopRetry {
    state: Arc<LoopState>,
    breakers: Option<Breakers>,
    backoff: Backoff,
    down_since: Option<Instant>,
}

impl std::fmt::Debug for LoopRetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoopRetry").field("name", &self.state.name).field("down", &self.down_since.is_some()).finish()
    }
}

impl LoopRetry {
    /// `breakers`: opened by the outages this loop meets, when given.
    pub(crate) fn new(name: &'static str, breakers: Option<Breakers>) -> Self {
        let state = Arc::new(LoopState {
            name,
            down_since_ms: AtomicI64::new(0),
            retries: AtomicU64::new(0),
            last_error: Mutex::new(None),
        });
        let mut loops = LOOPS.lock().expect("loop registry lock");
        loops.retain(|l| l.strong_count() > 0);
        loops.push(Arc::downgrade(&state));
        drop(loops);
        // Present from the start, so an alert on its rate sees a zero.
        metrics::counter!("tasker_outage_retries_total", "loop" => name).absolute(0);
        Self { state, breakers, backoff: Backoff::default(), down_since: None }
    }

    /// The loop reached its dependencies: an outage it was in is over
    /// (logged once).
    pub(crate) fn succeeded(&mut self) {
        let Some(since) = self.down_since.take() else { return };
        tracing::warn!(
            component = self.state.name,
            down_for_seconds = format!("{:.1}", since.elapsed().as_secs_f64()),
            retries = self.state.retries.load(Ordering::Relaxed),
            "reached the database and broker again; resumed"
        );
        self.backoff.reset();
        self.state.down_since_ms.store(0, Ordering::Relaxed);
        self.state.retries.store(0, Ordering::Relaxed);
        *self.state.last_error.lock().expect("loop state lock") = None;
    }

    /// After a failure: for an outage error, the wait before the next
    /// attempt (the outage's start is logged once); None for any other
    /// error, which the caller reports as before.
    pub(crate) fn failed(&mut self, error: &Error) -> Option<Duration> {
        let dependency = match &self.breakers {
            Some(breakers) => breakers.observe(error),
            None => outage(error),
        }?;
        metrics::counter!("tasker_outage_retries_total", "loop" => self.state.name).increment(1);
        self.state.retries.fetch_add(1, Ordering::Relaxed);
        *self.state.last_error.lock().expect("loop state lock") = Some(error.to_string());
        if self.down_since.is_none() {
            self.down_since = Some(Instant::now());
            self.state.down_since_ms.store(chrono::Utc::now().timestamp_millis().max(1), Ordering::Relaxed);
            tracing::warn!(component = self.state.name, dependency = dependency.name(), %error,
                           "lost a dependency; backing off (100 ms doubling to 5 s) until it answers, \
                            logging again only when it does");
        }
        Some(self.backoff.next_delay())
    }

    pub(crate) fn is_down(&self) -> bool {
        self.down_since.is_some()
    }
}

/// What a LISTEN session heard.
#[derive(Debug)]
pub(crate) enum Heard {
    Notification(sqlx::postgres::PgNotification),
    /// The session was lost and is back (or failed otherwise): notifications
    /// may have been missed meanwhile.
    Reconnected,
}

/// The next notification of a LISTEN session. Once the session is lost, it
/// is re-established (`PgListener` reconnects and listens again on its next
/// use) with `retry`'s backoff, and `Reconnected` says when it is back, so
/// the loop counts as healthy again without waiting for a notification.
pub(crate) async fn listen(listener: &mut sqlx::postgres::PgListener, retry: &mut LoopRetry, what: &str) -> Heard {
    loop {
        let heard = if retry.is_down() {
            sqlx::query("SELECT 1").execute(&mut *listener).await.map(|_| None)
        } else {
            listener.recv().await.map(Some)
        };
        match heard {
            Ok(Some(notification)) => return Heard::Notification(notification),
            Ok(None) => {
                retry.succeeded();
                return Heard::Reconnected;
            }
            Err(e) => {
                let e = Error::db(what.to_owned())(e);
                match retry.failed(&e) {
                    Some(wait) => tokio::time::sleep(wait).await,
                    None => {
                        tracing::warn!(error = %e, "a LISTEN session failed; listening again");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        return Heard::Reconnected;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let mut backoff = Backoff::default();
        let steps = [100u64, 200, 400, 800, 1600, 3200, 5000, 5000, 5000];
        for step in steps {
            let delay = backoff.next_delay();
            let step = Duration::from_millis(step);
            assert!(delay >= step / 2 && delay <= step, "{delay:?} not within [{:?}, {step:?}]", step / 2);
        }
        backoff.reset();
        assert!(backoff.next_delay() <= FIRST_DELAY);
    }

    #[test]
    fn only_connection_errors_are_outages() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = Error::with_source(ErrorKind::Database, "reading", sqlx::Error::Io(refused));
        assert_eq!(outage(&e), Some(Dependency::Database));
        let e = Error::with_source(ErrorKind::Database, "reading", sqlx::Error::PoolTimedOut);
        assert_eq!(outage(&e), Some(Dependency::Database));
        let e = Error::with_source(ErrorKind::Database, "reading", sqlx::Error::RowNotFound);
        assert_eq!(outage(&e), None);
        assert_eq!(outage(&Error::new(ErrorKind::Database, "no cause")), None);
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        let e = Error::with_source(ErrorKind::Messaging, "sending", refused);
        assert_eq!(outage(&e), Some(Dependency::Broker));
        let e = Error::with_source(ErrorKind::Validation, "bad", sqlx::Error::PoolTimedOut);
        assert_eq!(outage(&e), None);
    }

    #[tokio::test]
    async fn an_open_breaker_fails_fast_and_its_probe_closes_it() {
        let answers = Arc::new(AtomicBool::new(false));
        let probe_answers = answers.clone();
        let probe: Probe = Arc::new(move || {
            let up = probe_answers.load(Ordering::SeqCst);
            Box::pin(async move {
                if up {
                    Ok(())
                } else {
                    Err(Error::new(ErrorKind::Database, "down"))
                }
            })
        });
        let breakers = Breakers::new(probe, None);
        breakers.check_database().expect("closed at first");
        let e = Error::with_source(ErrorKind::Database, "reading", sqlx::Error::PoolTimedOut);
        assert_eq!(breakers.observe(&e), Some(Dependency::Database));
        let started = Instant::now();
        let refused = breakers.check_broker().expect_err("open: the broker is the database with PGMQ");
        assert!(started.elapsed() < Duration::from_millis(5));
        assert_eq!(refused.kind(), ErrorKind::Unavailable);
        assert!(refused.message().starts_with("the database is unavailable"), "{}", refused.message());
        assert_eq!(breakers.states().len(), 1);
        assert!(breakers.states()[0].open);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(breakers.check_database().is_err(), "still open while the probe fails");
        answers.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(3);
        while breakers.check_database().is_err() {
            assert!(Instant::now() < deadline, "the probe closed the breaker");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!breakers.states()[0].open);
    }

    #[test]
    fn a_loop_reports_its_outage_and_counts_its_retries() {
        let mut retry = LoopRetry::new("test_loop", None);
        let e = Error::with_source(ErrorKind::Database, "reading", sqlx::Error::PoolTimedOut);
        for _ in 0..3 {
            assert!(retry.failed(&e).is_some());
        }
        let mine: Vec<LoopHealth> = loops().into_iter().filter(|l| l.name == "test_loop").collect();
        assert_eq!(mine.len(), 1);
        assert!(!mine[0].healthy);
        assert_eq!(mine[0].retries, 3);
        assert!(retry.failed(&Error::new(ErrorKind::Validation, "bad input")).is_none());
        retry.succeeded();
        let mine: Vec<LoopHealth> = loops().into_iter().filter(|l| l.name == "test_loop").collect();
        assert!(mine[0].healthy);
        assert_eq!(mine[0].retries, 0);
        drop(retry);
        assert!(loops().iter().all(|l| l.name != "test_loop"));
    }
}
