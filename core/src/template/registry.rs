use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use sqlx::PgPool;

use super::TaskTemplate;
use crate::db::queries;
use crate::error::{Error, Result};
use crate::messaging::{MessageRouter, MessagingService};

/// Templates stored in the database (so every process sees the same
/// version), cached in memory.
#[derive(Debug, Default)]
pub(crate) struct TemplateRegistry {
    cache: RwLock<HashMap<String, Arc<TaskTemplate>>>,
}

fn cache_key(namespace: &str, name: &str, version: &str) -> String {
    format!("{namespace}/{name}@{version}")
}

impl TemplateRegistry {
    /// Stores a validated template and creates its steps' namespace queues.
    pub(crate) async fn register(
        &self,
        pool: &PgPool,
        messaging: &dyn MessagingService,
        router: &MessageRouter,
        template: TaskTemplate,
    ) -> Result<()> {
        template.validate()?;
        for namespace in template.step_namespaces() {
            messaging.create_queue(&router.step_queue(namespace)).await?;
        }
        let mut tx = pool.begin().await.map_err(Error::db("registering a template"))?;
        queries::upsert_template(&mut tx, router, &template).await?;
        tx.commit().await.map_err(Error::db(format!("registering template {}", template.key())))?;
        self.cache.write().expect("template cache lock").insert(template.key(), Arc::new(template));
        Ok(())
    }

    /// The templates this process registered (or has loaded since).
    pub(crate) fn cached(&self) -> Vec<Arc<TaskTemplate>> {
        self.cache.read().expect("template cache lock").values().cloned().collect()
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
}
