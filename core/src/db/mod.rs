//! The connection pool, migrations (PGMQ's SQL and the engine's own), and
//! every SQL statement the engine runs (in `queries`).

pub(crate) mod queries;

use std::time::Duration;

use pgmq::PGMQueueExt;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, Executor, PgPool};

use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::messaging::{MessageRouter, MessagingService};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Any fixed number: only migrators take this advisory lock.
const MIGRATION_LOCK: i64 = 0x7461_736b_6572;

/// Settings for every connection of the engine's pool. The engine's hot
/// statements find their rows by key (the sweeps read index ranges; queue
/// counts for stats and migrations are the cold exceptions), and the plan
/// the statistics suggest is wrong for the queue tables, which empty and
/// fill again all the time:
/// after a VACUUM or ANALYZE at a quiet moment they look empty, a sequential
/// scan looks free, and a prepared statement keeps that plan while the
/// table fills (in the bench, a read then cost 2.1 ms instead of 0.2, and
/// its cost grew with the dead rows in the table). So sequential scans are
/// only a last resort, and the prepared statements keep one generic plan
/// rather than planning again (the read was planned anew on every call).
/// Sent after connecting rather than as startup options, which PgBouncer
/// refuses; like the engine's prepared statements, they need session
/// pooling.
const SESSION_SETTINGS: &str = "SET enable_seqscan = off; SET plan_cache_mode = force_generic_plan";

/// A pooled connection idle this long is checked (a ping, one round trip)
/// before it is handed out. sqlx checks every connection by default, which
/// cost a round trip per statement on the hot path, where a connection is
/// idle for microseconds between uses. A connection that died within this
/// window (the server restarted) fails its next statement instead; every
/// engine loop retries, and a caller sees that one error.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

pub(crate) async fn connect(config: &Config) -> Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(config.max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .after_connect(|conn, _| Box::pin(async move { conn.execute(SESSION_SETTINGS).await.map(|_| ()) }))
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_IF_IDLE_FOR {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
        .connect(&config.database_url)
        .await
        .map_err(|e| {
            Error::with_source(
                ErrorKind::Database,
                format!(
                    "cannot connect to PostgreSQL at {}: {e} (is it running? \
                     pg_ctlcluster 15 main start; does the database exist? createdb)",
                    config.redacted_database_url()
                ),
                e,
            )
        })
}

/// Installs PGMQ's SQL and runs the engine's migrations; idempotent, and
/// safe when several processes migrate at once.
pub async fn migrate(pool: &PgPool) -> Result<()> {
    let mut lock = pool.acquire().await.map_err(Error::db("migrating"))?;
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *lock)
        .await
        .map_err(Error::db("taking the migration lock"))?;
    let result = migrate_locked(pool).await;
    let _ = sqlx::query("SELECT pg_advisory_unlock($1)").bind(MIGRATION_LOCK).execute(&mut *lock).await;
    result
}

async fn migrate_locked(pool: &PgPool) -> Result<()> {
    let pgmq = PGMQueueExt::new_with_pool(pool.clone()).await;
    pgmq.install_sql_from_embedded()
        .await
        .map_err(|e| Error::with_source(ErrorKind::Database, format!("installing PGMQ's SQL: {e}"), e))?;
    MIGRATOR
        .run(pool)
        .await
        .map_err(|e| Error::with_source(ErrorKind::Database, format!("running migrations: {e}"), e))?;
    Ok(())
}

/// Creates the queues the orchestrator reads.
pub(crate) async fn create_orchestration_queues(messaging: &dyn MessagingService) -> Result<()> {
    for queue in MessageRouter::orchestration_queues() {
        messaging.create_queue(queue).await?;
    }
    Ok(())
}
