//! One LISTEN session per process, shared by everything in it that listens:
//! the waits for finished tasks, the template cache's change feed and the
//! PGMQ workers' queue wake-ups. PostgreSQL signals every session that
//! listens in a database for every NOTIFY committed in it, whatever the
//! channel, and each wakes to read the notification queue: with a session
//! per feed, a worker and a process that creates tasks and waits for them
//! held four, and each task's two notifications woke them all, at the two
//! moments its latency depends on (the root's message, the task's end).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::postgres::{PgListener, PgNotification};
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot, OnceCell};

use crate::context::AbortOnDrop;
use crate::error::{Error, ErrorKind, Result};
use crate::resilience::{listen, Heard, LoopRetry};

/// Called with each notification on a subscription's channels, and with
/// None when the session was lost and is back (notifications may have been
/// missed meanwhile). It runs on the listening task: it must not block.
pub(crate) type OnHeard = Box<dyn Fn(Option<&PgNotification>) + Send + Sync>;

/// The process's LISTEN session, connected on first use.
#[derive(Debug)]
pub(crate) struct Notifications {
    pool: PgPool,
    hub: OnceCell<Hub>,
}

#[derive(Debug)]
struct Hub {
    commands: mpsc::UnboundedSender<Command>,
    _task: AbortOnDrop,
}

enum Command {
    Subscribe { id: u64, channels: Vec<String>, on_heard: OnHeard, done: oneshot::Sender<Result<()>> },
    Unsubscribe(u64),
}

/// Its callback is no longer called once this is dropped (the channels stay
/// listened to: a notification nobody wants is read and dropped).
#[derive(Debug)]
pub(crate) struct Subscription {
    id: u64,
    commands: mpsc::UnboundedSender<Command>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Unsubscribe(self.id));
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl Notifications {
    pub(crate) fn new(pool: PgPool) -> Self {
        Self { pool, hub: OnceCell::new() }
    }

    /// Calls `on_heard` for the notifications of `channels` (see
    /// [`OnHeard`]) from the moment this returns: the session listens on
    /// them by then.
    pub(crate) async fn subscribe(&self, channels: Vec<String>, on_heard: OnHeard) -> Result<Subscription> {
        let hub = self.hub.get_or_try_init(|| Hub::start(&self.pool)).await?;
        let stopped = || Error::new(ErrorKind::State, "the LISTEN session's task stopped");
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let (done, answer) = oneshot::channel();
        hub.commands.send(Command::Subscribe { id, channels, on_heard, done }).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())??;
        Ok(Subscription { id, commands: hub.commands.clone() })
    }
}

impl Hub {
    async fn start(pool: &PgPool) -> Result<Self> {
        let listener = PgListener::connect_with(pool).await.map_err(Error::db("connecting a LISTEN session"))?;
        let (commands, received) = mpsc::unbounded_channel();
        Ok(Self { commands, _task: AbortOnDrop(tokio::spawn(run(listener, received))) })
    }
}

/// Listens, and hands each notification to the subscriptions of its
/// channel. `PgListener` reconnects on its next use and listens again on
/// every channel; while the database is down that is tried with backoff.
/// Waiting for a notification is given up when a command comes (reading a
/// message off the connection is cancel-safe in sqlx).
async fn run(mut listener: PgListener, mut commands: mpsc::UnboundedReceiver<Command>) {
    let mut retry = LoopRetry::new("notification_listener", None);
    let mut listened: HashSet<String> = HashSet::new();
    let mut subscriptions: Vec<(u64, HashSet<String>, OnHeard)> = Vec::new();
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                None => return,
                Some(Command::Subscribe { id, channels, on_heard, done }) => {
                    let new: Vec<&str> =
                        channels.iter().filter(|c| !listened.contains(*c)).map(String::as_str).collect();
                    let result = if new.is_empty() {
                        Ok(())
                    } else {
                        listener.listen_all(new.iter().copied()).await.map_err(Error::db(format!(
                            "listening on {}",
                            new.join(", ")
                        )))
                    };
                    if result.is_ok() {
                        listened.extend(channels.iter().cloned());
                        subscriptions.push((id, channels.into_iter().collect(), on_heard));
                    }
                    let _ = done.send(result);
                }
                Some(Command::Unsubscribe(id)) => subscriptions.retain(|(s, ..)| *s != id),
            },
            heard = listen(&mut listener, &mut retry, "listening for notifications") => match heard {
                Heard::Notification(n) => {
                    for (_, channels, on_heard) in &subscriptions {
                        if channels.contains(n.channel()) {
                            on_heard(Some(&n));
                        }
                    }
                }
                Heard::Reconnected => subscriptions.iter().for_each(|(.., on_heard)| on_heard(None)),
            },
        }
    }
}
