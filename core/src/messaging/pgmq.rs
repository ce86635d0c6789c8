//! PGMQ: queues as tables in the same PostgreSQL database. Sends can join
//! the caller's transaction; visibility timeouts give redelivery.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pgmq::PGMQueueExt;
use serde_json::value::RawValue;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use tokio::sync::Notify;
use uuid::Uuid;

mod dead_letters;

pub(crate) use dead_letters::prune_archive;

use super::{DeadLetter, MessagingService, QueueStats, ReceivedMessage, Wakeups};
use crate::db::notifications::Notifications;
use crate::db::queries::{self, ClaimedStep};
use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct PgmqProvider {
    pool: PgPool,
    pgmq: Arc<PGMQueueExt>,
    /// Where `wakeups` listens for sends; None: callers rely on polling
    /// alone.
    notifications: Option<Arc<Notifications>>,
}

impl PgmqProvider {
    /// `notifications`: whether `wakeups` listens for sends (else callers
    /// rely on polling alone), on a LISTEN session of its own.
    pub async fn new(pool: PgPool, notifications: bool) -> Self {
        let notifications = notifications.then(|| Arc::new(Notifications::new(pool.clone())));
        Self::sharing(pool, notifications).await
    }

    /// Listens for sends on `notifications`, the process's LISTEN session
    /// (see `db::notifications`), when given.
    pub(crate) async fn sharing(pool: PgPool, notifications: Option<Arc<Notifications>>) -> Self {
        let pgmq = PGMQueueExt::new_with_pool(pool.clone()).await;
        Self { pool, pgmq: Arc::new(pgmq), notifications }
    }
}

/// A message [`PgmqProvider::receive_and_claim`] read, with its step's claim
/// when the same statement claimed it.
#[derive(Debug)]
pub(crate) struct ReadMessage {
    pub(crate) message: ReceivedMessage,
    pub(crate) claimed: Option<ClaimedMessage>,
}

/// Who claims the steps of the messages read, and on what terms (see
/// `tasker_claim_steps`).
#[derive(Debug)]
pub(crate) struct Claimant<'a> {
    pub(crate) worker_id: &'a str,
    /// Only the steps of these namespaces are claimed.
    pub(crate) namespaces: &'a [String],
    /// A step in progress is taken over when its claim had no heartbeat
    /// for this long.
    pub(crate) stale_after: Duration,
    /// A message delivered more often is left unclaimed.
    pub(crate) max_receive_count: u32,
}

/// A step claimed by the statement that read its message.
#[derive(Debug)]
pub(crate) struct ClaimedMessage {
    pub(crate) step_uuid: Uuid,
    pub(crate) claim: ClaimedStep,
}

impl PgmqProvider {
    /// Reads as [`MessagingService::receive`] does and claims the steps of
    /// the messages read (see `tasker_claim_steps`) in the same statement:
    /// one round trip and one commit where a worker's root step took two.
    ///
    /// Only a well-formed step message delivered at most
    /// `claimant.max_receive_count` times is claimed, one message per step (the
    /// oldest). Every other message read comes back unclaimed, for the
    /// caller's checks: over-delivered, malformed, a duplicate, a stray, or
    /// a step not claimable now. A failed statement reads nothing.
    pub(crate) async fn receive_and_claim(
        &self,
        conn: &mut sqlx::PgConnection,
        queue: &str,
        max: u32,
        visibility_timeout: Duration,
        claimant: &Claimant<'_>,
    ) -> Result<Vec<ReadMessage>> {
        // A step message's two ids are checked before the step's is cast
        // (a cast of anything else would fail the statement): what the
        // check passes, the caller's decoding accepts. The correlation id
        // the claim returns is the task's own.
        const UUID: &str = "'^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$'";
        let sql = format!(
            "WITH read AS ({read}), \
             wanted AS MATERIALIZED ( \
               SELECT DISTINCT ON (step_uuid) msg_id, step_uuid::uuid \
                 FROM (SELECT r.msg_id, r.message ->> 'step_uuid' AS step_uuid, \
                              r.message ->> 'correlation_id' AS correlation_id, r.read_ct \
                         FROM read r) AS m \
                WHERE read_ct <= $3 AND CASE WHEN step_uuid ~ {UUID} THEN correlation_id ~ {UUID} END \
                ORDER BY step_uuid, msg_id), \
             claimed AS MATERIALIZED ( \
               SELECT c.step_uuid, to_jsonb(c.*) AS claim \
                 FROM tasker_claim_steps(ARRAY(SELECT step_uuid FROM wanted), $4, $5, make_interval(secs => $6), true) c \
                WHERE EXISTS (SELECT FROM wanted)) \
             SELECT r.msg_id, r.read_ct, r.message, w.step_uuid, c.claim \
               FROM read r LEFT JOIN wanted w ON w.msg_id = r.msg_id LEFT JOIN claimed c ON c.step_uuid = w.step_uuid",
            read = read_statement(&queue_table(queue)?)
        );
        // The claim is read from its text into its type: its rows stay text
        // (see RowJson).
        type Row = (i64, i32, Option<Value>, Option<Uuid>, Option<sqlx::types::Json<Box<RawValue>>>);
        let mut rows: Vec<Row> = sqlx::query_as(&sql)
            .bind(i64::from(max))
            .bind(f64::from(vt_seconds(visibility_timeout)))
            .bind(i64::from(claimant.max_receive_count))
            .bind(claimant.worker_id)
            .bind(claimant.namespaces)
            .bind(claimant.stale_after.as_secs_f64())
            .fetch_all(conn)
            .await
            .map_err(Error::messaging(format!("receiving from queue {queue} and claiming the steps")))?;
        rows.sort_unstable_by_key(|(msg_id, _, message, ..)| handing_order(*msg_id, message.as_ref()));
        rows.into_iter()
            .map(|(msg_id, read_ct, message, step_uuid, claim)| {
                let claimed = match (step_uuid, claim) {
                    (Some(step_uuid), Some(claim)) => Some(ClaimedMessage {
                        step_uuid,
                        claim: serde_json::from_str(claim.get()).map_err(|e| {
                            Error::new(
                                crate::ErrorKind::Database,
                                format!("reading the claim of step {step_uuid}: {e}"),
                            )
                        })?,
                    }),
                    _ => None,
                };
                let message = ReceivedMessage {
                    queue: queue.to_owned(),
                    receipt: msg_id,
                    delivery_count: u32::try_from(read_ct).unwrap_or(0),
                    payload: message.unwrap_or(Value::Null),
                };
                Ok(ReadMessage { message, claimed })
            })
            .collect()
    }
}

/// The table of a queue. Queue names are identifiers the engine built
/// from validated namespaces; anything else is refused before it reaches
/// SQL text.
fn queue_table(queue: &str) -> Result<String> {
    let valid = !queue.is_empty()
        && queue.len() <= 47
        && queue.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if valid {
        Ok(format!("pgmq.\"q_{queue}\""))
    } else {
        Err(Error::new(crate::ErrorKind::Messaging, format!("{queue:?} is not a valid PGMQ queue name")))
    }
}

// The hot operations (send, receive, ack) are plain statements on the
// queue's table rather than calls to PGMQ's functions: those build their SQL
// as text and plan it again on every call, which cost 0.2-0.6 ms of server
// time per call; a prepared statement per queue costs a tenth of that. The
// statements do what PGMQ's `send_batch`, `read` and `delete` do, on the
// table layout of the PGMQ version this crate installs (the conformance
// suite runs them). The rest go through the `pgmq` crate.

async fn insert_messages(conn: &mut PgConnection, queue: &str, payloads: &[Value]) -> Result<Vec<i64>> {
    insert_delayed(conn, queue, payloads, Duration::ZERO).await
}

/// A message's `vt` as the queue's own send function keys it (see
/// `tasker_install_queue`): visible after `$2` seconds, minus the credit of
/// the priority in its payload `message`.
fn keyed_vt(message: &str) -> String {
    format!(
        "clock_timestamp() + make_interval(secs => $2) - tasker_priority_credit(({message} ->> 'priority')::integer)"
    )
}

/// A message's `headers` (now `headers`) with the time it really becomes
/// visible when it is delayed by `$2` seconds (the read checks it: its
/// `vt` is earlier), without it when it is not.
fn delayed_headers(headers: &str) -> String {
    format!(
        "CASE WHEN $2 > 0 THEN coalesce({headers}, '{{}}') || jsonb_build_object('tasker_visible_at', \
                                   clock_timestamp() + make_interval(secs => $2)) \
              ELSE {headers} - 'tasker_visible_at' END"
    )
}

/// Keyed as the queue's own send function keys them (see [`keyed_vt`]).
async fn insert_delayed(conn: &mut PgConnection, queue: &str, payloads: &[Value], delay: Duration) -> Result<Vec<i64>> {
    let sql = format!(
        "INSERT INTO {} (vt, message, headers) SELECT {}, m, {} \
         FROM unnest($1::jsonb[]) WITH ORDINALITY AS u(m, i) ORDER BY i RETURNING msg_id",
        queue_table(queue)?,
        keyed_vt("m"),
        delayed_headers("NULL::jsonb")
    );
    let what = match payloads.len() {
        1 => format!("sending to queue {queue}"),
        n => format!("sending {n} messages to queue {queue}"),
    };
    let mut ids: Vec<i64> = sqlx::query_scalar(&sql)
        .bind(payloads)
        .bind(delay.as_secs_f64())
        .fetch_all(conn)
        .await
        .map_err(Error::messaging(what))?;
    // Identities are drawn in insertion order.
    ids.sort_unstable();
    Ok(ids)
}

async fn delete_messages(conn: &mut PgConnection, queue: &str, receipts: &[i64]) -> Result<u64> {
    let sql = format!("DELETE FROM {} WHERE msg_id = ANY($1)", queue_table(queue)?);
    let done = sqlx::query(&sql)
        .bind(receipts)
        .execute(conn)
        .await
        .map_err(Error::messaging(format!("acking messages on queue {queue}")))?;
    Ok(done.rows_affected())
}

/// The statement that reads up to `$1` messages of `table`, each invisible
/// for `$2` seconds, returning `msg_id, read_ct, message`.
///
/// Its commit need not wait for the disk: if a crash loses it, the messages
/// are visible again at once, as if never read, and are delivered again (at
/// least once, as after any reader's crash). A later commit that must be
/// durable flushes the WAL up to itself, so it never outlives a read it
/// depends on. Idle, a synchronous commit here cost 0.25 ms of every hop.
/// set_config's `true` keeps the setting to the statement's own transaction.
///
/// Messages are read in order of vt, which is also their priority's aged
/// key (see tasker_install_queue), through PGMQ's own index on it: a range
/// scan from the oldest key up to now (`now()`, the statement's start: an
/// index condition, where clock_timestamp() would be a filter over every
/// message in flight) that stops at the first `max` visible ones. A delayed
/// message's key is earlier than its visibility (it keeps its priority's
/// credit), which its `tasker_visible_at` header holds.
fn read_statement(table: &str) -> String {
    format!(
        "UPDATE {table} m SET last_read_at = clock_timestamp(), read_ct = m.read_ct + 1, \
                vt = clock_timestamp() + make_interval(secs => $2) \
           FROM (SELECT set_config('synchronous_commit', 'off', true)) AS async_commit \
         WHERE m.msg_id = ANY(ARRAY(SELECT msg_id FROM {table} WHERE vt <= now() \
                                      AND coalesce((headers ->> 'tasker_visible_at')::timestamptz, '-infinity') \
                                          <= clock_timestamp() \
                                    ORDER BY vt LIMIT $1 FOR UPDATE SKIP LOCKED)) \
         RETURNING m.msg_id, m.read_ct, m.message"
    )
}

/// Every message of a batch came before those left in the queue; it is
/// handed over highest priority first, then in sending order.
fn handing_order(msg_id: i64, message: Option<&Value>) -> (std::cmp::Reverse<i64>, i64) {
    let priority = message.and_then(|m| m.get("priority")).and_then(Value::as_i64).unwrap_or(0);
    (std::cmp::Reverse(priority), msg_id)
}

fn vt_seconds(d: Duration) -> i32 {
    // PGMQ counts whole seconds; round up so a short timeout is never zero.
    i32::try_from(d.as_millis().div_ceil(1000)).unwrap_or(i32::MAX).max(1)
}

#[async_trait]
impl MessagingService for PgmqProvider {
    fn provider_name(&self) -> &'static str {
        "pgmq"
    }

    fn queues_in_database(&self) -> bool {
        true
    }

    fn as_pgmq(&self) -> Option<&PgmqProvider> {
        Some(self)
    }

    async fn create_queue(&self, queue: &str) -> Result<()> {
        super::check_queue_name(queue)?;
        queue_table(queue)?;
        self.pgmq.create(queue).await.map_err(Error::messaging(format!("creating queue {queue}")))?;
        queries::install_queue(&self.pool, queue).await
    }

    async fn delete_queue(&self, queue: &str) -> Result<()> {
        self.pgmq.drop_queue(queue).await.map_err(Error::messaging(format!("deleting queue {queue}")))?;
        queries::uninstall_queue(&self.pool, queue).await
    }

    async fn purge_queue(&self, queue: &str) -> Result<u64> {
        let n = self.pgmq.purge_queue(queue).await.map_err(Error::messaging(format!("purging queue {queue}")))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn send(&self, queue: &str, payload: &Value) -> Result<i64> {
        let ids = self.send_batch(queue, std::slice::from_ref(payload)).await?;
        Ok(ids[0])
    }

    async fn send_batch(&self, queue: &str, payloads: &[Value]) -> Result<Vec<i64>> {
        if payloads.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.pool.acquire().await.map_err(Error::db(format!("sending to queue {queue}")))?;
        insert_messages(&mut conn, queue, payloads).await
    }

    async fn send_delayed(&self, queue: &str, payload: &Value, delay: Duration) -> Result<i64> {
        let mut conn = self.pool.acquire().await.map_err(Error::db(format!("sending to queue {queue}")))?;
        let ids = insert_delayed(&mut conn, queue, std::slice::from_ref(payload), delay).await?;
        Ok(ids[0])
    }

    async fn receive(&self, queue: &str, max: u32, visibility_timeout: Duration) -> Result<Vec<ReceivedMessage>> {
        let table = queue_table(queue)?;
        let mut rows: Vec<(i64, i32, Option<Value>)> = sqlx::query_as(&read_statement(&table))
            .bind(i64::from(max))
            .bind(f64::from(vt_seconds(visibility_timeout)))
            .fetch_all(&self.pool)
            .await
            .map_err(Error::messaging(format!("receiving from queue {queue}")))?;
        rows.sort_unstable_by_key(|(msg_id, _, message)| handing_order(*msg_id, message.as_ref()));
        Ok(rows
            .into_iter()
            .map(|(msg_id, read_ct, message)| ReceivedMessage {
                queue: queue.to_owned(),
                receipt: msg_id,
                delivery_count: u32::try_from(read_ct).unwrap_or(0),
                payload: message.unwrap_or(Value::Null),
            })
            .collect())
    }

    async fn ack(&self, queue: &str, receipt: i64) -> Result<()> {
        let mut conn = self.pool.acquire().await.map_err(Error::db(format!("acking on queue {queue}")))?;
        let deleted = delete_messages(&mut conn, queue, &[receipt]).await? == 1;
        if deleted {
            Ok(())
        } else {
            Err(Error::new(
                crate::ErrorKind::Messaging,
                format!("message {receipt} on queue {queue} is not in the queue (already acked)"),
            ))
        }
    }

    /// The message goes back keyed as a message sent now (see
    /// [`keyed_vt`]): a worker handing back what it had read does not send
    /// it to the back of its priority.
    async fn nack(&self, queue: &str, receipt: i64, delay: Duration) -> Result<()> {
        let sql = format!(
            "UPDATE {} SET vt = {}, headers = {} WHERE msg_id = $1",
            queue_table(queue)?,
            keyed_vt("message"),
            delayed_headers("headers")
        );
        sqlx::query(&sql)
            .bind(receipt)
            .bind(delay.as_secs_f64())
            .execute(&self.pool)
            .await
            .map_err(Error::messaging(format!("nacking message {receipt} on queue {queue}")))?;
        Ok(())
    }

    async fn extend_visibility(&self, queue: &str, receipt: i64, visibility_timeout: Duration) -> Result<()> {
        self.pgmq
            .set_vt::<Value>(queue, receipt, vt_seconds(visibility_timeout))
            .await
            .map_err(Error::messaging(format!("extending message {receipt} on queue {queue}")))?;
        Ok(())
    }

    async fn dead_letter(&self, queue: &str, receipt: i64) -> Result<()> {
        self.pgmq
            .archive(queue, receipt)
            .await
            .map_err(Error::messaging(format!("archiving message {receipt} on queue {queue}")))?;
        Ok(())
    }

    async fn dead_letter_because(&self, queue: &str, receipt: i64, reason: &str) -> Result<()> {
        dead_letters::archive_because(&self.pool, queue, receipt, reason).await
    }

    async fn dead_letters(&self, queue: &str, limit: usize) -> Result<Vec<DeadLetter>> {
        dead_letters::list(&self.pool, queue, limit).await
    }

    async fn dead_letter_count(&self, queue: &str) -> Result<i64> {
        dead_letters::count(&self.pool, queue).await
    }

    async fn replay_dead_letter(&self, queue: &str, id: &str) -> Result<bool> {
        dead_letters::replay(&self.pool, queue, id).await
    }

    async fn discard_dead_letter(&self, queue: &str, id: &str) -> Result<bool> {
        dead_letters::discard(&self.pool, queue, id).await
    }

    async fn stats(&self, queue: &str) -> Result<QueueStats> {
        queries::pgmq_queue_stats(&self.pool, queue).await
    }

    async fn ack_in_transaction(&self, conn: &mut PgConnection, queue: &str, receipts: &[i64]) -> Result<bool> {
        delete_messages(conn, queue, receipts).await?;
        Ok(true)
    }

    async fn send_batch_in_transaction(
        &self,
        conn: &mut PgConnection,
        queue: &str,
        payloads: &[Value],
    ) -> Result<Option<Vec<i64>>> {
        if payloads.is_empty() {
            return Ok(Some(Vec::new()));
        }
        insert_messages(conn, queue, payloads).await.map(Some)
    }

    async fn wakeups(&self, queues: &[String]) -> Result<Wakeups> {
        let Some(notifications) = &self.notifications else {
            return Ok(Wakeups::new(Arc::new(Notify::new()), false, None));
        };
        let channels: Vec<String> = queues.iter().map(|q| queries::queue_channel(q)).collect();
        let notify = Arc::new(Notify::new());
        let waker = notify.clone();
        // Polling covers the gap while the session is lost; a reconnection
        // (None) wakes the reader too (a message may have come).
        let subscription = notifications.subscribe(channels, Box::new(move |_| waker.notify_one())).await?;
        Ok(Wakeups::new(notify, true, Some(subscription)))
    }
}
