//! The one way Ruby calls into blocking Rust: release the GVL (other Ruby
//! threads keep running), run the future on the shared tokio runtime, turn
//! a panic into a Ruby exception instead of aborting the process, and map
//! errors to `TaskerCore::Error` subclasses once the GVL is back.

use std::ffi::c_void;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::OnceLock;

use magnus::Error;
use tokio::runtime::Runtime;

use crate::errors;

pub(crate) fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("tasker-core")
            .enable_all()
            .build()
            .expect("the tokio runtime starts")
    })
}

/// Runs `f` with the GVL released. `f` must not touch Ruby.
fn without_gvl<F: FnOnce() -> R, R>(f: F) -> std::thread::Result<R> {
    struct Call<F, R> {
        f: Option<F>,
        out: Option<std::thread::Result<R>>,
    }
    unsafe extern "C" fn trampoline<F: FnOnce() -> R, R>(data: *mut c_void) -> *mut c_void {
        // SAFETY: `data` is the `Call` below, alive for the whole call.
        let call = unsafe { &mut *data.cast::<Call<F, R>>() };
        if let Some(f) = call.f.take() {
            call.out = Some(std::panic::catch_unwind(AssertUnwindSafe(f)));
        }
        std::ptr::null_mut()
    }
    let mut call = Call { f: Some(f), out: None };
    // SAFETY: the trampoline only touches `call`; no Ruby API is used
    // without the GVL. A NULL unblocking function is allowed: every call
    // made here is bounded by its own timeout.
    unsafe {
        rb_sys::rb_thread_call_without_gvl(
            Some(trampoline::<F, R>),
            (&mut call as *mut Call<F, R>).cast(),
            None,
            std::ptr::null_mut(),
        );
    }
    call.out.unwrap_or_else(|| Err(Box::new("the call without the GVL did not run")))
}

/// Blocks on `future` with the GVL released.
pub(crate) fn run<T, F>(future: F) -> Result<T, Error>
where
    F: Future<Output = tasker_core::Result<T>>,
{
    match without_gvl(|| runtime().block_on(future)) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(errors::to_ruby(&e)),
        Err(panic) => Err(errors::panic_to_ruby(panic)),
    }
}
