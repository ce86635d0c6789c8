//! The connection pool, migrations (PGMQ's SQL, the engine's tables and its
//! SQL functions), and every SQL statement the engine runs (in `queries`).

pub(crate) mod notifications;
pub(crate) mod ops_queries;
pub(crate) mod queries;
pub(crate) mod schedule_queries;

use std::time::Duration;

use pgmq::PGMQueueExt;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, Executor, PgPool};

use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::messaging::{MessageRouter, MessagingService};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The engine's SQL functions: (name, source) of every file in
/// core/sql/functions, in name order.
const FUNCTIONS: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/sql_functions.rs"));

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
/// Bitmap scans go too: with stale statistics the planner ANDed a task's
/// steps with every step in flight (a probe that walked 1,800 index
/// entries for a task of four steps); a plain index scan is right for every
/// probe by key.
/// JIT compilation goes as well: a statement that can only scan (a cold
/// one, over a table with no index to use) is costed at the planner's
/// penalty for a disabled scan, 10^10, far past `jit_above_cost`, and was
/// compiled on every run (the start-up read of PGMQ's migrations: 166 ms
/// with JIT, 5 ms without).
/// Sent after connecting rather than as startup options, which PgBouncer
/// refuses; like the engine's prepared statements, they need session
/// pooling.
const SESSION_SETTINGS: &str = "SET enable_seqscan = off; SET enable_bitmapscan = off; \
                                SET plan_cache_mode = force_generic_plan; SET jit = off";

/// The session settings, and `tasker.priority_aging_ms`: the aging step
/// with which the queues' send functions key this process's step messages
/// (see `tasker_install_queue`).
fn session_settings(config: &Config) -> String {
    format!("{SESSION_SETTINGS}; SET tasker.priority_aging_ms = {}", config.messaging.priority_aging_ms)
}

/// A pooled connection idle this long is checked (a ping, one round trip)
/// before it is handed out. sqlx checks every connection by default, which
/// cost a round trip per statement on the hot path, where a connection is
/// idle for microseconds between uses. A connection that died within this
/// window (the server restarted) fails its next statement instead; every
/// engine loop retries, and a caller sees that one error.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

/// A pooled connection that a hot loop (a worker's dispatcher and its
/// recorders: three) keeps between its statements while it is busy. sqlx
/// pings every connection it takes back into the pool: a round trip that
/// wakes a server process and this one after every statement, on the CPUs
/// the statement's own work needs. A loop that keeps its connection pays
/// that once per busy spell. Connections are kept only from a pool of
/// `HOLD_FROM_POOL_SIZE` (the default is 10), so that heartbeats, sends and
/// the application's own calls always find one; from a smaller pool each
/// statement takes one and gives it back, as other statements do. The
/// loops [`release`](Self::release) it before they wait (a recorder once it
/// has waited 100 ms), so it never sits unused long enough to need the
/// pool's idle check, and a worker stopped but not yet dropped holds none;
/// it goes back before the next statement when the pool is at its limit
/// with none idle (several workers in one process share it), and after a
/// failed statement (it may be the one that broke).
pub(crate) struct HeldConnection {
    pool: PgPool,
    hold: bool,
    conn: Option<sqlx::pool::PoolConnection<sqlx::Postgres>>,
}

/// The smallest pool whose connections hot loops keep (see
/// [`HeldConnection`]).
const HOLD_FROM_POOL_SIZE: u32 = 8;

impl HeldConnection {
    pub(crate) fn new(pool: &PgPool) -> Self {
        let hold = pool.options().get_max_connections() >= HOLD_FROM_POOL_SIZE;
        Self { pool: pool.clone(), hold, conn: None }
    }

    /// The connection for the next statement.
    pub(crate) async fn get(&mut self, doing: &str) -> Result<&mut sqlx::PgConnection> {
        if self.pool.size() >= self.pool.options().get_max_connections() && self.pool.num_idle() == 0 {
            self.conn = None;
        }
        if self.conn.is_none() {
            self.conn = Some(self.pool.acquire().await.map_err(|e| Error::db(doing)(e))?);
        }
        Ok(self.conn.as_deref_mut().expect("taken above"))
    }

    /// Gives the connection back: before the loop waits.
    pub(crate) fn release(&mut self) {
        self.conn = None;
    }

    /// After a statement: the connection is kept for the next one only
    /// where connections are kept, and only if the statement succeeded.
    pub(crate) fn done<T>(&mut self, result: &Result<T>) {
        if !self.hold || result.is_err() {
            self.release();
        }
    }
}

pub(crate) async fn connect(config: &Config) -> Result<PgPool> {
    let settings: std::sync::Arc<str> = session_settings(config).into();
    PgPoolOptions::new()
        .max_connections(config.max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .after_connect(move |conn, _| {
            let settings = settings.clone();
            Box::pin(async move { conn.execute(&*settings).await.map(|_| ()) })
        })
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
///
/// Cancellable (dropping the future: an interrupted `migrate!`) without
/// leaving the lock behind: the lock is tried, not waited for inside
/// PostgreSQL, and a lock holder dropped before it unlocks closes its
/// connection instead of returning it to the pool, so PostgreSQL releases
/// the lock (and rolls back what was under way).
pub async fn migrate(pool: &PgPool) -> Result<()> {
    let mut lock = MigrationLock(Some(pool.acquire().await.map_err(Error::db("migrating"))?));
    let conn = lock.0.as_mut().expect("held");
    loop {
        let taken: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(MIGRATION_LOCK)
            .fetch_one(&mut **conn)
            .await
            .map_err(Error::db("taking the migration lock"))?;
        if taken {
            break;
        }
        // Another process migrates; its migration takes a moment.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let result = migrate_locked(pool).await;
    let mut conn = lock.0.take().expect("held");
    let _ = sqlx::query("SELECT pg_advisory_unlock($1)").bind(MIGRATION_LOCK).execute(&mut *conn).await;
    result
}

/// The connection that may hold the migration lock; dropped while it does,
/// its connection is closed rather than pooled.
struct MigrationLock(Option<sqlx::pool::PoolConnection<sqlx::Postgres>>);

impl Drop for MigrationLock {
    fn drop(&mut self) {
        if let Some(conn) = self.0.take() {
            drop(conn.detach());
        }
    }
}

async fn migrate_locked(pool: &PgPool) -> Result<()> {
    let pgmq = PGMQueueExt::new_with_pool(pool.clone()).await;
    pgmq.install_sql_from_embedded()
        .await
        .map_err(|e| Error::with_source(ErrorKind::Database, format!("installing PGMQ's SQL: {e}"), e))?;
    refuse_prerelease_schema(pool).await?;
    MIGRATOR
        .run(pool)
        .await
        .map_err(|e| Error::with_source(ErrorKind::Database, format!("running migrations: {e}"), e))?;
    install_functions(pool).await
}

/// Before the first release the schema's 15 migrations were folded into one
/// baseline; a database migrated with those cannot be migrated on, and
/// says so instead of failing on a missing migration.
async fn refuse_prerelease_schema(pool: &PgPool) -> Result<()> {
    let prerelease: bool = sqlx::query_scalar(
        "SELECT to_regclass('_sqlx_migrations') IS NOT NULL \
           AND EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('tasker_workflow_step_transitions') \
                        AND attname = 'most_recent')",
    )
    .fetch_one(pool)
    .await
    .map_err(Error::db("reading the schema version"))?;
    if prerelease {
        return Err(Error::new(
            ErrorKind::Database,
            "this database holds tasker_core's pre-release schema (before the migrations were folded into one \
             baseline); its tasks cannot be carried over: drop and create the database (dropdb NAME && createdb NAME), \
             then migrate again",
        ));
    }
    Ok(())
}

/// Installs the SQL functions when their sources changed (a checksum of
/// all of them is kept in `tasker_sql_functions`): in one transaction,
/// every `tasker_` function is dropped (a changed signature cannot be
/// replaced in place) and each file is run. The trigger function the queue
/// tables depend on is replaced in place; trigger functions and the
/// `tasker_check_` functions of the baseline's constraints are the
/// schema's, not these files'. Each PGMQ queue's own functions (see
/// `tasker_install_queue`) are made again from the new sources.
async fn install_functions(pool: &PgPool) -> Result<()> {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for (name, source) in FUNCTIONS {
        hasher.update(name.as_bytes());
        hasher.update([0]);
        hasher.update(source.as_bytes());
    }
    let checksum: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
    let failed = |doing: &str| Error::db(format!("installing the SQL functions: {doing}"));
    let mut tx = pool.begin().await.map_err(failed("beginning"))?;
    tx.execute("CREATE TABLE IF NOT EXISTS tasker_sql_functions (checksum text NOT NULL)")
        .await
        .map_err(failed("creating tasker_sql_functions"))?;
    let installed: Option<String> = sqlx::query_scalar("SELECT checksum FROM tasker_sql_functions")
        .fetch_optional(&mut *tx)
        .await
        .map_err(failed("reading the installed checksum"))?;
    if installed.as_deref() == Some(checksum.as_str()) {
        return Ok(());
    }
    tx.execute(
        "DO $$ DECLARE f regprocedure; BEGIN \
           FOR f IN SELECT p.oid::regprocedure FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
                     WHERE n.nspname = current_schema() AND p.proname LIKE 'tasker\\_%' \
                       AND p.prorettype <> 'trigger'::regtype AND p.proname NOT LIKE 'tasker\\_check\\_%' LOOP \
             EXECUTE 'DROP FUNCTION ' || f; \
           END LOOP; END $$",
    )
    .await
    .map_err(failed("dropping the previous ones"))?;
    // Function bodies refer to each other; they are checked when called.
    tx.execute("SET LOCAL check_function_bodies = off").await.map_err(failed("deferring body checks"))?;
    for (name, source) in FUNCTIONS {
        tx.execute(*source).await.map_err(failed(&format!("core/sql/functions/{name}.sql")))?;
    }
    // The functions generated per queue follow the new sources.
    tx.execute("SELECT tasker_install_queue(m.queue_name) FROM pgmq.meta m")
        .await
        .map_err(failed("installing them on the existing queues"))?;
    tx.execute("DELETE FROM tasker_sql_functions").await.map_err(failed("recording the checksum"))?;
    sqlx::query("INSERT INTO tasker_sql_functions (checksum) VALUES ($1)")
        .bind(&checksum)
        .execute(&mut *tx)
        .await
        .map_err(failed("recording the checksum"))?;
    tx.commit().await.map_err(failed("committing"))?;
    Ok(())
}

/// Creates the queues the orchestrator reads.
pub(crate) async fn create_orchestration_queues(
    messaging: &dyn MessagingService,
    router: &MessageRouter,
) -> Result<()> {
    for queue in router.orchestration_queues() {
        messaging.create_queue(&queue).await?;
    }
    Ok(())
}
