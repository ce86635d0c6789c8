use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use sqlx::PgPool;
use tokio::sync::OnceCell;

use super::TaskTemplate;
use crate::db::notifications::{Notifications, OnHeard, Subscription};
use crate::db::queries;
use crate::error::{Error, Result};
use crate::messaging::{MessageRouter, MessagingService};

type Cache = Arc<RwLock<HashMap<String, Arc<TaskTemplate>>>>;

/// Templates stored in the database (so every process sees the same
/// version), cached in memory. A registration that changes a template (new
/// content, or a new version) is announced with NOTIFY; every process that
/// caches templates listens and drops its copy, so the next use reads the
/// new one.
#[derive(Debug)]
pub(crate) struct TemplateRegistry {
    cache: Cache,
    /// (namespace, name, version) of every template this process
    /// registered. Kept apart from the cache, whose entries any process's
    /// change notification drops (this process's own included, after its
    /// first registration of a template).
    registered: RwLock<std::collections::BTreeSet<(String, String, String)>>,
    notifications: Arc<Notifications>,
    watch: OnceCell<Subscription>,
}

fn cache_key(namespace: &str, name: &str, version: &str) -> String {
    format!("{namespace}/{name}@{version}")
}

impl TemplateRegistry {
    /// Changes are heard on `notifications` (the process's LISTEN session).
    pub(crate) fn new(notifications: Arc<Notifications>) -> Self {
        Self { cache: Cache::default(), registered: RwLock::default(), notifications, watch: OnceCell::new() }
    }

    /// Stores a validated template and creates its steps' namespace queues.
    /// Returns whether it changed what the database held (new, or new
    /// content); if so, every listening process drops its cached copy.
    pub(crate) async fn register(
        &self,
        pool: &PgPool,
        messaging: &dyn MessagingService,
        router: &MessageRouter,
        template: TaskTemplate,
    ) -> Result<bool> {
        template.validate()?;
        self.watch().await?;
        for namespace in template.step_namespaces() {
            messaging.create_queue(&router.step_queue(namespace)).await?;
        }
        let mut tx = pool.begin().await.map_err(Error::db("registering a template"))?;
        let changed = queries::upsert_template(&mut tx, router, &template).await?;
        tx.commit().await.map_err(Error::db(format!("registering template {}", template.key())))?;
        self.registered.write().expect("registered templates lock").insert((
            template.namespace.clone(),
            template.name.clone(),
            template.version.clone(),
        ));
        self.cache.write().expect("template cache lock").insert(template.key(), Arc::new(template));
        Ok(changed)
    }

    /// (namespace, name, version) of the templates this process registered.
    pub(crate) fn registered(&self) -> Vec<(String, String, String)> {
        self.registered.read().expect("registered templates lock").iter().cloned().collect()
    }

    /// The template, from the cache or else the database.
    pub(crate) async fn get(
        &self,
        pool: &PgPool,
        namespace: &str,
        name: &str,
        version: &str,
    ) -> Result<Arc<TaskTemplate>> {
        let key = cache_key(namespace, name, version);
        if let Some(found) = self.cache.read().expect("template cache lock").get(&key) {
            return Ok(found.clone());
        }
        // Listening before reading: a change committed after this read is
        // announced to us.
        self.watch().await?;
        let Some(definition) = queries::load_template(pool, namespace, name, version).await? else {
            return Err(Error::not_found(format!(
                "no task template {key} is registered (register_templates! loads template_paths)"
            )));
        };
        let template: TaskTemplate = serde_json::from_value(definition)
            .map_err(|e| Error::template(format!("stored template {key} does not parse: {e}")))?;
        let entry = Arc::new(template);
        self.cache.write().expect("template cache lock").insert(key, entry.clone());
        Ok(entry)
    }

    /// Listens for changed templates (once per process's registry) and drops
    /// each from the cache as it is announced. Should the listening
    /// session drop, announcements may have been missed: the whole cache
    /// is dropped.
    async fn watch(&self) -> Result<()> {
        self.watch
            .get_or_try_init(|| async {
                let cache = self.cache.clone();
                let on_heard: OnHeard = Box::new(move |heard| match heard {
                    Some(n) => {
                        cache.write().expect("template cache lock").remove(n.payload());
                        tracing::info!(template = n.payload(), "a template changed: its cached copy is dropped");
                    }
                    // A change may have been missed meanwhile.
                    None => cache.write().expect("template cache lock").clear(),
                });
                self.notifications.subscribe(vec![queries::TEMPLATE_CHANGED_CHANNEL.to_owned()], on_heard).await
            })
            .await
            .map(|_| ())
    }
}
