//! Health and the operations server: readiness fails while the database or
//! the broker cannot be reached and comes back by itself. The outage is a
//! TCP forwarder this test controls (PostgreSQL and RabbitMQ themselves are
//! never stopped: that only happens in the fault suite).

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tasker_core::{Context, OpsServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Forwards connections to `target` until cut: then it drops every
/// forwarded connection and refuses new ones (accepts and closes them),
/// until healed.
struct Forwarder {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Forwarder {
    async fn start(target: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binding the forwarder");
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let links: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (up2, links2) = (up.clone(), links.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !up2.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let target = target.clone();
                links2.lock().unwrap().push(tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                }));
            }
        });
        Self { addr, up, links, accept }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }

    fn heal(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

/// `url` with its host and port replaced by `addr`, and the host:port it had.
fn through(url: &str, addr: SocketAddr) -> (String, String) {
    let at = url.find('@').expect("a URL with a user") + 1;
    let end = url[at..].find('/').map_or(url.len(), |i| at + i);
    (format!("{}{addr}{}", &url[..at], &url[end..]), url[at..end].to_owned())
}

async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connecting to the operations server");
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response[9..12].parse().expect("a status code");
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// Polls health until it says `ready` (or panics after `within`).
async fn wait_ready(ctx: &Context, ready: bool, within: Duration) -> tasker_core::Health {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let health = tasker_core::health(ctx).await;
        if health.ready == ready {
            return health;
        }
        assert!(tokio::time::Instant::now() < deadline, "health never became ready={ready}: {health:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn readiness_fails_while_the_database_is_unreachable_and_recovers_by_itself() {
    let url = common::test_config().database_url;
    let (_, target) = through(&url, "127.0.0.1:1".parse().unwrap());
    let forwarder = Forwarder::start(target).await;
    let (proxied, _) = through(&url, forwarder.addr);
    let ctx = common::context_with(json!({"database_url": proxied})).await;
    let server = OpsServer::start(ctx.clone(), "127.0.0.1:0".parse().unwrap()).await.unwrap();

    let health = wait_ready(&ctx, true, Duration::from_secs(5)).await;
    assert!(health.database.ok && health.broker.check.ok, "{health:?}");
    assert!(health.queues.iter().any(|q| q.queue == ctx.router().task_requests()), "{health:?}");
    assert_eq!(get(server.addr(), "/health/ready").await.0, 200);

    forwarder.cut();
    let health = wait_ready(&ctx, false, Duration::from_secs(10)).await;
    assert!(!health.database.ok && health.database.error.is_some(), "{health:?}");
    assert!(health.queues.is_empty());
    let (status, body) = get(server.addr(), "/health/ready").await;
    assert_eq!(status, 503, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["ready"], false);
    assert_eq!(body["database"]["ok"], false);
    // Liveness does not depend on the database.
    assert_eq!(get(server.addr(), "/health/live").await.0, 200);

    forwarder.heal();
    let health = wait_ready(&ctx, true, Duration::from_secs(15)).await;
    assert!(health.database.ok);
    assert_eq!(get(server.addr(), "/health/ready").await.0, 200);
}

#[tokio::test]
async fn readiness_fails_while_rabbitmq_is_unreachable_and_recovers_by_itself() {
    let rabbit = std::env::var("RABBITMQ_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned());
    let (_, target) = through(&rabbit, "127.0.0.1:1".parse().unwrap());
    let forwarder = Forwarder::start(target).await;
    let (proxied, _) = through(&rabbit, forwarder.addr);
    let mut overrides = common::rabbitmq_overrides();
    overrides["messaging"]["rabbitmq_url"] = json!(proxied);
    let ctx = common::context_with(overrides).await;
    assert_eq!(ctx.messaging().provider_name(), "rabbitmq");

    let health = wait_ready(&ctx, true, Duration::from_secs(5)).await;
    assert_eq!(health.broker.provider, "rabbitmq");

    forwarder.cut();
    let health = wait_ready(&ctx, false, Duration::from_secs(10)).await;
    assert!(health.database.ok && !health.broker.check.ok, "{health:?}");

    forwarder.heal();
    let health = wait_ready(&ctx, true, Duration::from_secs(15)).await;
    assert!(health.broker.check.ok);
}

#[tokio::test]
async fn the_operations_server_answers_metrics_and_refuses_what_it_does_not_serve() {
    let ctx = common::context().await;
    let server = OpsServer::start(ctx.clone(), "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let (status, body) = get(server.addr(), "/metrics").await;
    assert_eq!(status, 200);
    assert!(body.contains("# TYPE tasker_db_pool_max_connections gauge"), "{body}");
    assert!(body.contains(&format!("tasker_queue_depth{{queue=\"{}\"}} 0", ctx.router().task_requests())), "{body}");
    assert_eq!(get(server.addr(), "/elsewhere").await.0, 404);
    let mut stream = TcpStream::connect(server.addr()).await.unwrap();
    stream.write_all(b"POST /metrics HTTP/1.1\r\n\r\n").await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 405"), "{response}");
}

/// While the database is unreachable, callers fail at once with
/// `Unavailable` (the circuit breaker is open), health shows the open
/// breaker and is not ready, and the breaker's own probe closes it once the
/// database answers again.
#[tokio::test]
async fn callers_fail_fast_while_the_database_is_unreachable_and_recover_by_themselves() {
    let url = common::test_config().database_url;
    let (_, target) = through(&url, "127.0.0.1:1".parse().unwrap());
    let forwarder = Forwarder::start(target).await;
    let (proxied, _) = through(&url, forwarder.addr);
    let ctx = common::context_with(json!({"database_url": proxied, "messaging": {"provider": "pgmq"}})).await;
    let client = tasker_core::TaskerClient::new(ctx.clone());
    let namespace = common::unique_namespace("breaker");
    // A queue of this test's own: nobody else reads it.
    let queue = format!("{namespace}_probes");
    ctx.messaging().create_queue(&queue).await.unwrap();
    ctx.register_template(common::linear_template(&namespace)).await.unwrap();
    let request = tasker_core::CreateTask::new(&namespace, "linear", "1.0.0", json!({"n": 2}));
    client.create_task(&request).await.expect("created while the database answers");
    let health = tasker_core::health(&ctx).await;
    assert_eq!(health.circuit_breakers.len(), 1, "one breaker with PGMQ: {health:?}");
    assert!(!health.circuit_breakers[0].open);

    forwarder.cut();
    // The first call meets the outage and opens the breaker.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        match ctx.send_message(&queue, &json!({"probe": true})).await {
            Err(e) if e.kind() == tasker_core::ErrorKind::Unavailable => break,
            Err(e) => assert!(tasker_core::Context::is_outage(&e), "an outage error: {e}"),
            Ok(_) => {}
        }
        assert!(tokio::time::Instant::now() < deadline, "the breaker never opened");
    }
    for _ in 0..20 {
        let started = std::time::Instant::now();
        let sent = ctx.send_message(&queue, &json!({"probe": true})).await.expect_err("refused");
        let created = client.create_task(&request).await.expect_err("refused");
        assert!(started.elapsed() < Duration::from_millis(20), "refused at once: {:?}", started.elapsed());
        assert_eq!(
            (sent.kind(), created.kind()),
            (tasker_core::ErrorKind::Unavailable, tasker_core::ErrorKind::Unavailable)
        );
        assert!(created.message().starts_with("the database is unavailable"), "{created}");
    }
    let health = wait_ready(&ctx, false, Duration::from_secs(5)).await;
    assert!(health.circuit_breakers[0].open && health.circuit_breakers[0].open_since.is_some(), "{health:?}");
    assert_eq!(health.circuit_breakers[0].dependency, "database");

    forwarder.heal();
    let health = wait_ready(&ctx, true, Duration::from_secs(15)).await;
    assert!(!health.circuit_breakers[0].open, "{health:?}");
    client.create_task(&request).await.expect("created again once the database answers");
    ctx.send_message(&queue, &json!({"probe": true})).await.expect("sent again");
    ctx.messaging().delete_queue(&queue).await.unwrap();
}
