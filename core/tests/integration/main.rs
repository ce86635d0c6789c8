//! The core's integration tests, against the real PostgreSQL and RabbitMQ,
//! as one test binary: each file here linked on its own cost a release
//! link of the whole crate and its dependencies, most of `cargo test`'s
//! time on 2 cores. Every test makes a deployment of its own (namespaces
//! and queue prefixes, see `common`), so they run in parallel and in any
//! order. Two stay binaries of their own, as they read the process's
//! global state: the traces test (`../traces.rs`) installs the global
//! tracing subscriber, and the operations test (`../operations.rs`)
//! asserts the process's health and metrics registries.

#[path = "../common/mod.rs"]
mod common;

mod data_flow;
mod dead_letters;
mod decisions;
mod engine;
mod fan_out;
mod limits;
mod messaging_conformance;
mod orchestration;
mod poison_task;
mod priorities;
mod retention;
mod templates;
mod worker_lifecycle;
