//! PGMQ's dead-letter store is the queue's archive table
//! (`pgmq.a_<queue>`): a dead-lettered message is moved there with its
//! reason in the row's `headers`, in one statement.

use serde_json::{json, Value};
use sqlx::{PgPool, Row};

use super::{keyed_vt, queue_table};
use crate::error::{Error, ErrorKind, Result};
use crate::messaging::dead_letters::{AT_HEADER, REASON_HEADER};
use crate::messaging::DeadLetter;

/// The archive table of a queue (the name checked as [`queue_table`] does).
fn archive_table(queue: &str) -> Result<String> {
    queue_table(queue)?;
    Ok(format!("pgmq.\"a_{queue}\""))
}

fn parse_id(queue: &str, id: &str) -> Result<i64> {
    id.parse()
        .map_err(|_| Error::new(ErrorKind::Validation, format!("{id:?} is not a dead letter id of queue {queue}")))
}

pub(super) async fn archive_because(pool: &PgPool, queue: &str, receipt: i64, reason: &str) -> Result<()> {
    let sql = format!(
        "WITH moved AS (DELETE FROM {} WHERE msg_id = $1 \
                        RETURNING msg_id, vt, read_ct, enqueued_at, last_read_at, message, headers) \
         INSERT INTO {} (msg_id, vt, read_ct, enqueued_at, last_read_at, message, headers) \
         SELECT msg_id, vt, read_ct, enqueued_at, last_read_at, message, coalesce(headers, '{{}}') || $2 FROM moved",
        queue_table(queue)?,
        archive_table(queue)?
    );
    let headers = json!({ REASON_HEADER: reason, AT_HEADER: chrono::Utc::now() });
    let moved = sqlx::query(&sql)
        .bind(receipt)
        .bind(headers)
        .execute(pool)
        .await
        .map_err(Error::messaging(format!("dead-lettering message {receipt} on queue {queue}")))?;
    if moved.rows_affected() == 1 {
        Ok(())
    } else {
        Err(Error::new(ErrorKind::Messaging, format!("message {receipt} on queue {queue} is not in the queue")))
    }
}

pub(super) async fn list(pool: &PgPool, queue: &str, limit: usize) -> Result<Vec<DeadLetter>> {
    let sql = format!(
        "SELECT msg_id, read_ct, enqueued_at, archived_at, message, headers FROM {} ORDER BY msg_id DESC LIMIT $1",
        archive_table(queue)?
    );
    let rows = sqlx::query(&sql)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(pool)
        .await
        .map_err(Error::messaging(format!("listing the dead letters of queue {queue}")))?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let headers: Option<Value> = row.get("headers");
            let header =
                |key: &str| headers.as_ref().and_then(|h| h.get(key)).and_then(Value::as_str).map(str::to_owned);
            DeadLetter {
                queue: queue.to_owned(),
                id: row.get::<i64, _>("msg_id").to_string(),
                reason: header(REASON_HEADER),
                delivery_count: Some(i64::from(row.get::<i32, _>("read_ct"))),
                enqueued_at: row.get("enqueued_at"),
                dead_lettered_at: header(AT_HEADER)
                    .and_then(|at| chrono::DateTime::parse_from_rfc3339(&at).ok())
                    .map(|at| at.with_timezone(&chrono::Utc))
                    .or_else(|| row.get("archived_at")),
                payload: row.get::<Option<Value>, _>("message").unwrap_or(Value::Null),
            }
        })
        .collect())
}

pub(super) async fn count(pool: &PgPool, queue: &str) -> Result<i64> {
    archive_table(queue)?;
    sqlx::query_scalar("SELECT tasker_dead_letter_count($1)")
        .bind(queue)
        .fetch_one(pool)
        .await
        .map_err(Error::messaging(format!("counting the dead letters of queue {queue}")))
}

/// Moves the message back into its queue, visible at once and keyed by its
/// priority like a new message (no delay: $2 = 0), in one statement (the
/// queue's NOTIFY trigger wakes its readers).
pub(super) async fn replay(pool: &PgPool, queue: &str, id: &str) -> Result<bool> {
    let sql = format!(
        "WITH moved AS (DELETE FROM {} WHERE msg_id = $1 RETURNING message) \
         INSERT INTO {} (vt, message) SELECT {}, message FROM moved",
        archive_table(queue)?,
        queue_table(queue)?,
        keyed_vt("message")
    );
    let done = sqlx::query(&sql)
        .bind(parse_id(queue, id)?)
        .bind(0.0_f64)
        .execute(pool)
        .await
        .map_err(Error::messaging(format!("replaying dead letter {id} of queue {queue}")))?;
    Ok(done.rows_affected() == 1)
}

pub(super) async fn discard(pool: &PgPool, queue: &str, id: &str) -> Result<bool> {
    let done = sqlx::query(&format!("DELETE FROM {} WHERE msg_id = $1", archive_table(queue)?))
        .bind(parse_id(queue, id)?)
        .execute(pool)
        .await
        .map_err(Error::messaging(format!("discarding dead letter {id} of queue {queue}")))?;
    Ok(done.rows_affected() == 1)
}

/// Deletes up to `limit` of the queue's archived messages archived before
/// `before` (by the archive's `archived_at` index); returns how many. A
/// queue not created yet has nothing to prune.
pub(crate) async fn prune_archive(
    pool: &PgPool,
    queue: &str,
    before: chrono::DateTime<chrono::Utc>,
    limit: i64,
) -> Result<u64> {
    let table = archive_table(queue)?;
    let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(&table)
        .fetch_one(pool)
        .await
        .map_err(Error::messaging(format!("looking for the archive of queue {queue}")))?;
    if !exists {
        return Ok(0);
    }
    let sql = format!(
        "DELETE FROM {table} WHERE msg_id = ANY (ARRAY(SELECT msg_id FROM {table} WHERE archived_at < $1 \
                                                       ORDER BY archived_at LIMIT $2))"
    );
    let done = sqlx::query(&sql)
        .bind(before)
        .bind(limit)
        .execute(pool)
        .await
        .map_err(Error::messaging(format!("pruning the archive of queue {queue}")))?;
    Ok(done.rows_affected())
}
