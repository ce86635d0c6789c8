use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::{broadcast, mpsc, OnceCell};
use uuid::Uuid;

use crate::config::{Config, MessagingProvider};
use crate::db::notifications::{Notifications, OnHeard, Subscription};
use crate::db::{self, queries};
use crate::error::{Error, Result};
use crate::messaging::{MessageRouter, MessagingService, Outbox, PgmqProvider, RabbitMqProvider};
use crate::resilience::{Backoff, Breakers, LoopRetry, Probe};
use crate::template::{TaskTemplate, TemplateRegistry};

/// What every component works through: configuration, the connection pool,
/// the messaging provider and the template registry. Cheap to share.
#[derive(Debug)]
pub struct Context {
    config: Config,
    pool: PgPool,
    messaging: Arc<dyn MessagingService>,
    router: MessageRouter,
    templates: TemplateRegistry,
    /// The process's one LISTEN session (see `db::notifications`).
    notifications: Arc<Notifications>,
    finished_tasks: OnceCell<(broadcast::Sender<FinishedTask>, Subscription)>,
    resender: std::sync::OnceLock<Resender>,
    breakers: Breakers,
}

impl Context {
    /// Connects to PostgreSQL and the configured provider. Does not migrate.
    pub async fn connect(config: Config) -> Result<Arc<Self>> {
        config.validate()?;
        crate::telemetry::metrics::install();
        let pool = db::connect(&config).await?;
        let notifications = Arc::new(Notifications::new(pool.clone()));
        let messaging: Arc<dyn MessagingService> = match config.messaging.provider {
            MessagingProvider::Pgmq => Arc::new(
                PgmqProvider::sharing(pool.clone(), config.messaging.notifications.then(|| notifications.clone()))
                    .await,
            ),
            MessagingProvider::Rabbitmq => {
                Arc::new(RabbitMqProvider::connect(&config.messaging.rabbitmq_url, config.messaging.prefetch).await?)
            }
        };
        let router = MessageRouter::new(config.messaging.queue_prefix.clone());
        let probed = pool.clone();
        let database_probe: Probe = Arc::new(move || {
            let pool = probed.clone();
            Box::pin(async move {
                sqlx::query("SELECT 1").execute(&pool).await.map(|_| ()).map_err(Error::db("probing the database"))
            })
        });
        let broker_probe: Option<Probe> = (!messaging.queues_in_database()).then(|| {
            let (messaging, queue) = (messaging.clone(), router.task_requests());
            let probe: Probe = Arc::new(move || {
                let (messaging, queue) = (messaging.clone(), queue.clone());
                Box::pin(async move { messaging.stats(&queue).await.map(|_| ()) })
            });
            probe
        });
        Ok(Arc::new(Self {
            router,
            breakers: Breakers::new(database_probe, broker_probe),
            config,
            pool,
            messaging,
            templates: TemplateRegistry::new(notifications.clone()),
            notifications,
            finished_tasks: OnceCell::new(),
            resender: std::sync::OnceLock::new(),
        }))
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn messaging(&self) -> &Arc<dyn MessagingService> {
        &self.messaging
    }

    /// Queue names, with this deployment's prefix.
    pub fn router(&self) -> &MessageRouter {
        &self.router
    }

    /// The circuit breakers of the database and the broker.
    pub(crate) fn breakers(&self) -> &Breakers {
        &self.breakers
    }

    /// Fails at once with [`ErrorKind::Unavailable`](crate::ErrorKind)
    /// while the database is known to be down (its circuit breaker is
    /// open), for callers that reach it on a connection of their own (Ruby's
    /// `create_task` on ActiveRecord's).
    pub fn check_database_available(&self) -> Result<()> {
        self.breakers.check_database()
    }

    /// As [`Context::check_database_available`], for the broker.
    pub fn check_broker_available(&self) -> Result<()> {
        self.breakers.check_broker()
    }

    /// Tells the breaker that a connection of the caller's own could not
    /// reach the database (`what` says how it failed): it opens, and calls
    /// fail fast until its probe reaches the database again.
    pub fn database_unreachable(&self, what: &str) {
        let cause = std::io::Error::new(std::io::ErrorKind::NotConnected, what.to_owned());
        self.breakers.observe(&Error::with_source(crate::ErrorKind::Database, what.to_owned(), cause));
    }

    /// Sends one message through the provider, failing at once with
    /// [`ErrorKind::Unavailable`](crate::ErrorKind) while the broker's
    /// circuit breaker is open (an outage error opens it).
    pub async fn send_message(&self, queue: &str, payload: &Value) -> Result<i64> {
        self.breakers.check_broker()?;
        let sent = self.messaging.send(queue, payload).await;
        self.breakers.watch(sent)
    }

    /// As [`Context::send_message`], for a batch.
    pub async fn send_messages(&self, queue: &str, payloads: &[Value]) -> Result<Vec<i64>> {
        self.breakers.check_broker()?;
        let sent = self.messaging.send_batch(queue, payloads).await;
        self.breakers.watch(sent)
    }

    /// Whether `error` says the database or the broker is unreachable.
    pub fn is_outage(error: &Error) -> bool {
        crate::resilience::outage(error).is_some()
    }

    pub(crate) fn templates(&self) -> &TemplateRegistry {
        &self.templates
    }

    /// Installs PGMQ and the schema, and creates the orchestration queues.
    /// Idempotent.
    pub async fn migrate(&self) -> Result<()> {
        db::migrate(&self.pool).await?;
        db::create_orchestration_queues(self.messaging.as_ref(), &self.router).await
    }

    /// Validates and stores one template; creates its namespace's queue.
    /// Returns whether it changed what the database held (then every
    /// process caching it drops its copy).
    pub async fn register_template(&self, template: TaskTemplate) -> Result<bool> {
        self.templates.register(&self.pool, self.messaging.as_ref(), &self.router, template).await
    }

    /// Loads every template below the configured `template_paths`; nothing
    /// is stored unless every one of them is valid.
    pub async fn register_templates(&self) -> Result<Vec<TaskTemplate>> {
        let templates = TaskTemplate::load_paths(&self.config.template_paths)?;
        for template in &templates {
            self.register_template(template.clone()).await?;
        }
        Ok(templates)
    }

    /// Sends messages that committed state has promised, for providers
    /// whose queues are outside PostgreSQL. The state cannot be rolled back
    /// any more, so a send that fails (the broker is restarting, say) is not
    /// an error for the caller: it is retried in the background with backoff
    /// until it goes through. Should this process die first, the sweep
    /// recovers the steps involved.
    pub(crate) async fn send_after_commit(&self, queue: &str, payloads: Vec<Value>) {
        if payloads.is_empty() {
            return;
        }
        // While the broker's breaker is open, straight to the resender.
        let sent = match self.breakers.check_broker() {
            Ok(()) => self.messaging.send_batch(queue, &payloads).await.map(|_| ()),
            Err(e) => Err(e),
        };
        if let Err(e) = sent {
            // An outage is logged once, by the breaker and the resender.
            if self.breakers.observe(&e).is_none() {
                tracing::warn!(queue, messages = payloads.len(), error = %e, "sending after commit failed; retrying in the background");
            }
            self.resender
                .get_or_init(|| Resender::start(self.messaging.clone(), self.breakers.clone()))
                .push(queue, payloads);
        }
    }

    /// Sends a message for each of the steps (already enqueued) to its
    /// namespace's queue: inserted at once with PGMQ, else sent through
    /// [`Context::send_outbox`].
    pub(crate) async fn send_step_messages(&self, steps: &[Uuid]) -> Result<()> {
        let mut conn = self.pool.acquire().await.map_err(Error::db("sending step messages"))?;
        let outbox = queries::dispatch_messages(&mut conn, steps, self.messaging.queues_in_database()).await?;
        drop(conn);
        self.send_outbox(outbox).await;
        Ok(())
    }

    /// Sends what an outcome, advance or recovery committed without sending
    /// (queues outside PostgreSQL): undelayed messages through
    /// [`Context::send_after_commit`], grouped by queue; a delayed one (a
    /// retry) on its own. A delayed send that fails is logged: the sweep
    /// enqueues a step whose retry message never came.
    pub(crate) async fn send_outbox(&self, outbox: Vec<Outbox>) {
        let mut now: std::collections::BTreeMap<String, Vec<Value>> = std::collections::BTreeMap::new();
        for Outbox { queue, message, delay_ms } in outbox {
            if delay_ms <= 0 {
                now.entry(queue).or_default().push(message);
                continue;
            }
            let delay = Duration::from_millis(u64::try_from(delay_ms).unwrap_or(0));
            let sent = match self.breakers.check_broker() {
                Ok(()) => self.messaging.send_delayed(&queue, &message, delay).await.map(|_| ()),
                Err(e) => Err(e),
            };
            if let Err(e) = sent {
                if self.breakers.observe(&e).is_some() {
                    continue;
                }
                tracing::warn!(queue, error = %e, "sending a retry's delayed message failed; the sweep recovers the step");
            }
        }
        for (queue, payloads) in now {
            self.send_after_commit(&queue, payloads).await;
        }
    }

    /// A feed of tasks as they finish (uuid, end state), shared by every
    /// waiter in this process (on the process's LISTEN session).
    pub(crate) async fn finished_tasks(&self) -> Result<broadcast::Receiver<FinishedTask>> {
        let sender = self
            .finished_tasks
            .get_or_try_init(|| async {
                let (sender, _) = broadcast::channel(1024);
                let feed = sender.clone();
                // A lost session (None) says nothing here: waiters read the
                // task's state again on their own.
                let on_heard: OnHeard = Box::new(move |heard| {
                    if let Some(finished) = heard.and_then(|n| FinishedTask::parse(n.payload())) {
                        let _ = feed.send(finished);
                    }
                });
                let subscription =
                    self.notifications.subscribe(vec![queries::TASK_FINISHED_CHANNEL.to_owned()], on_heard).await?;
                Ok::<_, Error>((sender, subscription))
            })
            .await?;
        Ok(sender.0.subscribe())
    }
}

/// Most messages waiting to be resent; past it, the sweep recovers the rest.
const RESEND_CAPACITY: usize = 10_000;

/// Retries, in order and with capped exponential backoff, the sends of
/// [`Context::send_after_commit`] that failed.
#[derive(Debug)]
struct Resender {
    queue: mpsc::Sender<(String, Vec<Value>)>,
    _task: AbortOnDrop,
}

impl Resender {
    fn start(messaging: Arc<dyn MessagingService>, breakers: Breakers) -> Self {
        let (queue, mut pending) = mpsc::channel::<(String, Vec<Value>)>(RESEND_CAPACITY);
        let task = tokio::spawn(async move {
            let mut retry = LoopRetry::new("resender", Some(breakers));
            while let Some((queue, payloads)) = pending.recv().await {
                let mut backoff = Backoff::default();
                let mut tries = 1;
                loop {
                    let wait = if retry.is_down() { Duration::ZERO } else { backoff.next_delay() };
                    tokio::time::sleep(wait).await;
                    match messaging.send_batch(&queue, &payloads).await {
                        Ok(_) => {
                            retry.succeeded();
                            tracing::info!(queue, messages = payloads.len(), tries, "resent messages after commit");
                            break;
                        }
                        Err(e) => {
                            tries += 1;
                            // An outage is logged once, when it starts; the
                            // outage's backoff paces the next try.
                            match retry.failed(&e) {
                                Some(wait) => tokio::time::sleep(wait).await,
                                None => {
                                    tracing::warn!(queue, tries, error = %e, "resending after commit failed; retrying")
                                }
                            }
                        }
                    }
                }
            }
        });
        Self { queue, _task: AbortOnDrop(task) }
    }

    fn push(&self, queue: &str, payloads: Vec<Value>) {
        if self.queue.try_send((queue.to_owned(), payloads)).is_err() {
            tracing::error!(queue, "too many messages waiting to be resent; the sweep recovers their steps");
        }
    }
}

/// Stops a background task when its owner goes away.
#[derive(Debug)]
pub(crate) struct AbortOnDrop(pub(crate) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A task's end as its notification tells it: "<task uuid> <end state>",
/// then " <its row as JSON>" when the row fits in a notification.
#[derive(Debug, Clone)]
pub(crate) struct FinishedTask {
    pub(crate) task_uuid: Uuid,
    pub(crate) status: String,
    pub(crate) row: Option<std::sync::Arc<str>>,
}

impl FinishedTask {
    fn parse(payload: &str) -> Option<Self> {
        let mut parts = payload.splitn(3, ' ');
        let task_uuid = parts.next()?.parse::<Uuid>().ok()?;
        let status = parts.next().unwrap_or_default().to_owned();
        let row = parts.next().filter(|row| !row.is_empty()).map(std::sync::Arc::from);
        Some(Self { task_uuid, status, row })
    }
}

#[cfg(test)]
mod tests {
    use super::FinishedTask;

    #[test]
    fn a_finished_task_notification_is_read_with_or_without_its_row() {
        let uuid = "01a23452-0cc7-7614-8410-00f64cd57116";
        let bare = FinishedTask::parse(&format!("{uuid} complete")).unwrap();
        assert_eq!((bare.task_uuid.to_string().as_str(), bare.status.as_str(), bare.row), (uuid, "complete", None));
        let with_row =
            FinishedTask::parse(&format!("{uuid} error {{\"status\": \"error\", \"name\": \"a b\"}}")).unwrap();
        assert_eq!(with_row.status, "error");
        assert_eq!(with_row.row.as_deref(), Some("{\"status\": \"error\", \"name\": \"a b\"}"));
        assert!(FinishedTask::parse("not-a-uuid complete").is_none());
    }
}
