//! Ruby bindings for tasker-core: glue only. One file per exposed class,
//! each with its own `init`; blocking calls go through `gvl::run`.

mod client;
mod errors;
mod gvl;
mod log;
mod message_service;
mod ops;
mod orchestrator;
mod worker;

use magnus::{prelude::*, Error, Ruby};

#[magnus::init(name = "tasker_core")]
fn init(ruby: &Ruby) -> Result<(), Error> {
    let native = ruby.define_module("TaskerCore")?.define_module("Native")?;
    client::init(ruby, native)?;
    log::init(ruby, native)?;
    message_service::init(ruby, native)?;
    ops::init(ruby, native)?;
    orchestrator::init(ruby, native)?;
    worker::init(ruby, native)?;
    Ok(())
}
