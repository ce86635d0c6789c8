//! `TaskerCore::Native::Ops`: metrics and health of this process, and
//! `TaskerCore::Native::OpsServer`, the HTTP server of `/metrics`,
//! `/health/live` and `/health/ready`.

use std::net::{IpAddr, SocketAddr};

use magnus::{function, method, prelude::*, Error, RModule, Ruby, Value};
use tasker_core::{ErrorKind, OpsServer};

use crate::client::{to_ruby, Client};
use crate::{errors, gvl};

/// The Prometheus text exposition of this process's metrics.
fn metrics_text(client: &Client) -> Result<String, Error> {
    let ctx = client.ctx().clone();
    gvl::run(async move { tasker_core::metrics_text(&ctx).await })
}

/// The health report as a Hash (string keys).
fn health(ruby: &Ruby, client: &Client) -> Result<Value, Error> {
    let ctx = client.ctx().clone();
    let health = gvl::run(async move { Ok(tasker_core::health(&ctx).await) })?;
    to_ruby(ruby, &health)
}

/// The deployment's status as a Hash (string keys).
fn status(ruby: &Ruby, client: &Client) -> Result<Value, Error> {
    let ctx = client.ctx().clone();
    to_ruby(ruby, &gvl::run(async move { tasker_core::status(&ctx).await })?)
}

/// Every cron schedule that runs, with its last slot and next fire time
/// (an Array of Hashes).
fn schedules(ruby: &Ruby, client: &Client) -> Result<Value, Error> {
    let ctx = client.ctx().clone();
    to_ruby(ruby, &gvl::run(async move { tasker_core::schedules(&ctx).await })?)
}

/// Every concurrency slot in use or waited for (an Array of Hashes).
fn concurrency_limits(ruby: &Ruby, client: &Client) -> Result<Value, Error> {
    let ctx = client.ctx().clone();
    to_ruby(ruby, &gvl::run(async move { tasker_core::concurrency_limits(&ctx).await })?)
}

/// Prunes what is past its retention; returns what went (a Hash).
fn prune(ruby: &Ruby, client: &Client) -> Result<Value, Error> {
    let ctx = client.ctx().clone();
    to_ruby(ruby, &gvl::run(async move { tasker_core::prune(&ctx).await })?)
}

/// This deployment's queues: task requests and every namespace queue.
fn queues(client: &Client) -> Result<Vec<String>, Error> {
    let ctx = client.ctx().clone();
    gvl::run(async move { tasker_core::deployment_queues(&ctx).await })
}

/// The queue's dead letters (Hashes with string keys).
fn dead_letters(ruby: &Ruby, client: &Client, queue: String, limit: usize) -> Result<Value, Error> {
    let ctx = client.ctx().clone();
    let letters = gvl::run(async move { ctx.messaging().dead_letters(&queue, limit).await })?;
    to_ruby(ruby, &letters)
}

fn dead_letter_count(client: &Client, queue: String) -> Result<i64, Error> {
    let ctx = client.ctx().clone();
    gvl::run(async move { ctx.messaging().dead_letter_count(&queue).await })
}

fn replay_dead_letter(client: &Client, queue: String, id: String) -> Result<bool, Error> {
    let ctx = client.ctx().clone();
    gvl::run(async move { ctx.messaging().replay_dead_letter(&queue, &id).await })
}

fn discard_dead_letter(client: &Client, queue: String, id: String) -> Result<bool, Error> {
    let ctx = client.ctx().clone();
    gvl::run(async move { ctx.messaging().discard_dead_letter(&queue, &id).await })
}

#[magnus::wrap(class = "TaskerCore::Native::OpsServer", free_immediately, size)]
struct Server {
    server: std::sync::Mutex<Option<OpsServer>>,
    port: u16,
}

impl Server {
    fn start(client: &Client, host: String, port: u16) -> Result<Self, Error> {
        let ip: IpAddr = host
            .parse()
            .map_err(|_| errors::new(ErrorKind::Config, format!("{host:?} is not an IP address to listen on")))?;
        let ctx = client.ctx().clone();
        // The server is spawned on the runtime, so start inside it.
        let server = gvl::run(async move { OpsServer::start(ctx, SocketAddr::new(ip, port)).await })?;
        let port = server.addr().port();
        Ok(Self { server: std::sync::Mutex::new(Some(server)), port })
    }

    fn port(&self) -> u16 {
        self.port
    }

    fn stop(&self) {
        let server = self.server.lock().expect("server lock").take();
        let _context = gvl::runtime().enter();
        drop(server);
    }
}

pub(crate) fn init(ruby: &Ruby, native: RModule) -> Result<(), Error> {
    let ops = native.define_module("Ops")?;
    ops.define_singleton_method("metrics_text", function!(metrics_text, 1))?;
    ops.define_singleton_method("health", function!(health, 1))?;
    ops.define_singleton_method("queues", function!(queues, 1))?;
    ops.define_singleton_method("status", function!(status, 1))?;
    ops.define_singleton_method("schedules", function!(schedules, 1))?;
    ops.define_singleton_method("concurrency_limits", function!(concurrency_limits, 1))?;
    ops.define_singleton_method("prune", function!(prune, 1))?;
    ops.define_singleton_method("dead_letters", function!(dead_letters, 3))?;
    ops.define_singleton_method("dead_letter_count", function!(dead_letter_count, 2))?;
    ops.define_singleton_method("replay_dead_letter", function!(replay_dead_letter, 3))?;
    ops.define_singleton_method("discard_dead_letter", function!(discard_dead_letter, 3))?;
    let class = native.define_class("OpsServer", ruby.class_object())?;
    class.define_singleton_method("start", function!(Server::start, 3))?;
    class.define_method("port", method!(Server::port, 0))?;
    class.define_method("stop", method!(Server::stop, 0))?;
    Ok(())
}
