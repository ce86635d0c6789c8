//! The one way Ruby calls into blocking Rust: release the GVL (other Ruby
//! threads keep running), run the future on the shared tokio runtime, turn
//! a panic into a Ruby exception instead of aborting the process, and map
//! errors to `TaskerCore::Error` subclasses once the GVL is back.
//!
//! Every such call can be interrupted (Ctrl-C, `Thread#kill`,
//! `Thread#raise`, `Timeout`): Ruby calls the unblocking function, which
//! cancels the future by dropping it at its next await (a wait stops, a
//! query is abandoned and its transaction rolled back), and the pending
//! interrupt is raised once the GVL is back.

use std::ffi::c_void;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use magnus::Error;
use tokio::runtime::Runtime;
use tokio::sync::Notify;

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

/// Set by the unblocking function; the running call selects on it.
#[derive(Default)]
struct Cancel {
    requested: AtomicBool,
    notify: Notify,
}

/// Ruby's unblocking function: called (from another thread, without the
/// GVL) when the blocked thread is interrupted. Only touches `Cancel`.
unsafe extern "C" fn unblock(data: *mut c_void) {
    // SAFETY: `data` is the `Cancel` of the call in progress, which
    // outlives rb_thread_call_without_gvl.
    let cancel = unsafe { &*data.cast::<Cancel>() };
    cancel.requested.store(true, Ordering::SeqCst);
    cancel.notify.notify_one();
}

/// Runs `f` with the GVL released, `cancel` as its unblocking function's
/// data. `f` must not touch Ruby. None when Ruby did not run `f` (an
/// interrupt was already pending).
fn without_gvl<F: FnOnce() -> R, R>(f: F, cancel: &Cancel) -> Option<std::thread::Result<R>> {
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
    // SAFETY: the trampoline only touches `call`, the unblocking function
    // only `cancel`; no Ruby API is used without the GVL. The `2` variant
    // neither runs `f` when an interrupt is pending nor raises one
    // afterwards: the caller raises it with its own frames unwound.
    unsafe {
        rb_sys::rb_thread_call_without_gvl2(
            Some(trampoline::<F, R>),
            (&mut call as *mut Call<F, R>).cast(),
            Some(unblock),
            (cancel as *const Cancel).cast_mut().cast(),
        );
    }
    call.out
}

/// Blocks on `future` with the GVL released; an interrupt that raises
/// (Interrupt, Thread#kill, Thread#raise, Timeout) cancels it. Ruby also
/// interrupts a blocked thread for things that raise nothing (a signal
/// whose trap returns, a wake-up): the GVL is taken back so Ruby can run
/// them, and the same future is then resumed where it stopped.
pub(crate) fn run<T, F>(future: F) -> Result<T, Error>
where
    F: Future<Output = tasker_core::Result<T>>,
{
    let mut future = DropInRuntime(Some(Box::pin(future)));
    loop {
        let cancel = Cancel::default();
        let outcome = without_gvl(
            || {
                runtime().block_on(async {
                    tokio::select! {
                        biased;
                        () = cancel.notify.notified() => None,
                        result = future.0.as_mut().expect("the future lives until run returns") => Some(result),
                    }
                })
            },
            &cancel,
        );
        match outcome {
            Some(Ok(Some(Ok(value)))) => return Ok(value),
            Some(Ok(Some(Err(e)))) => return Err(errors::to_ruby(&e)),
            Some(Err(panic)) => return Err(errors::panic_to_ruby(panic)),
            // Interrupted: raise what Ruby has pending (the future is
            // dropped with this frame, which cancels it), or go on.
            Some(Ok(None)) | None => pending_interrupt()?,
        }
    }
}

/// A future dropped inside the runtime: a cancelled one still holds what it
/// was using (a pooled connection goes back to its pool), which needs a
/// tokio context to let go of.
struct DropInRuntime<F>(Option<std::pin::Pin<Box<F>>>);

impl<F> Drop for DropInRuntime<F> {
    fn drop(&mut self) {
        let _context = runtime().enter();
        self.0.take();
    }
}

/// Raises the interrupt Ruby has pending (Interrupt, Thread#kill,
/// Timeout's exception) as an error magnus raises once this call's frames
/// are gone; Ok when the interrupt raised nothing.
fn pending_interrupt() -> Result<(), Error> {
    // SAFETY: called with the GVL held; protect catches the raise (or the
    // kill's throw) rb_thread_check_ints makes.
    magnus::rb_sys::protect(|| {
        unsafe { rb_sys::rb_thread_check_ints() };
        rb_sys::Qnil as rb_sys::VALUE
    })
    .map(|_| ())
}
