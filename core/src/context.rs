use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::{broadcast, OnceCell};
use uuid::Uuid;

use crate::config::{Config, MessagingProvider};
use crate::db::{self, queries};
use crate::error::{Error, Result};
use crate::messaging::{MessagingService, PgmqProvider, RabbitMqProvider};
use crate::template::{TaskTemplate, TemplateRegistry};

/// What every component works through: configuration, the connection pool,
/// the messaging provider and the template registry. Cheap to share.
#[derive(Debug)]
pub struct Context {
    config: Config,
    pool: PgPool,
    messaging: Arc<dyn MessagingService>,
    templates: TemplateRegistry,
    finished_tasks: OnceCell<(broadcast::Sender<Uuid>, AbortOnDrop)>,
}

impl Context {
    /// Connects to PostgreSQL and the configured provider. Does not migrate.
    pub async fn connect(config: Config) -> Result<Arc<Self>> {
        config.validate()?;
        let pool = db::connect(&config).await?;
        let messaging: Arc<dyn MessagingService> = match config.messaging.provider {
            MessagingProvider::Pgmq => Arc::new(PgmqProvider::new(pool.clone(), config.messaging.notifications).await),
            MessagingProvider::Rabbitmq => Arc::new(RabbitMqProvider::connect(&config.messaging.rabbitmq_url).await?),
        };
        Ok(Arc::new(Self {
            config,
            pool,
            messaging,
            templates: TemplateRegistry::default(),
            finished_tasks: OnceCell::new(),
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

    pub(crate) fn templates(&self) -> &TemplateRegistry {
        &self.templates
    }

    /// Installs PGMQ and the schema, and creates the orchestration queues.
    /// Idempotent.
    pub async fn migrate(&self) -> Result<()> {
        db::migrate(&self.pool).await?;
        db::create_orchestration_queues(self.messaging.as_ref()).await
    }

    /// Validates and stores one template; creates its namespace's queue.
    pub async fn register_template(&self, template: TaskTemplate) -> Result<()> {
        self.templates.register(&self.pool, self.messaging.as_ref(), template).await
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

    /// A feed of the uuids of tasks as they finish, shared by every waiter
    /// in this process (one LISTEN connection).
    pub(crate) async fn finished_tasks(&self) -> Result<broadcast::Receiver<Uuid>> {
        let sender = self
            .finished_tasks
            .get_or_try_init(|| async {
                let mut listener =
                    PgListener::connect_with(&self.pool).await.map_err(Error::db("connecting a LISTEN session"))?;
                listener
                    .listen(queries::TASK_FINISHED_CHANNEL)
                    .await
                    .map_err(Error::db("listening for finished tasks"))?;
                let (sender, _) = broadcast::channel(1024);
                let feed = sender.clone();
                let task = tokio::spawn(async move {
                    loop {
                        match listener.recv().await {
                            Ok(n) => {
                                if let Ok(uuid) = n.payload().parse::<Uuid>() {
                                    let _ = feed.send(uuid);
                                }
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "finished-task listener lost its connection");
                                tokio::time::sleep(Duration::from_millis(200)).await;
                            }
                        }
                    }
                });
                Ok::<_, Error>((sender, AbortOnDrop(task)))
            })
            .await?;
        Ok(sender.0.subscribe())
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
