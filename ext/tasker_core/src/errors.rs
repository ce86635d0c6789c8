//! Rust errors become `TaskerCore::Error` subclasses (defined once, in
//! lib/tasker_core/errors.rb). Never a bare RuntimeError.

use magnus::{prelude::*, Error, ExceptionClass, RModule, Ruby};
use tasker_core::ErrorKind;

fn class_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Config => "ConfigurationError",
        ErrorKind::Database => "DatabaseError",
        ErrorKind::Messaging => "MessagingError",
        ErrorKind::Template => "TemplateError",
        ErrorKind::Validation => "ValidationError",
        ErrorKind::NotFound => "NotFoundError",
        ErrorKind::State => "StateError",
        ErrorKind::Timeout => "TimeoutError",
        ErrorKind::Shutdown => "ShutdownError",
        ErrorKind::Unavailable => "UnavailableError",
        _ => "Error",
    }
}

fn class(ruby: &Ruby, name: &str) -> ExceptionClass {
    ruby.class_object()
        .const_get::<_, RModule>("TaskerCore")
        .and_then(|m| m.const_get::<_, ExceptionClass>(name))
        .unwrap_or_else(|_| ruby.exception_runtime_error())
}

pub(crate) fn to_ruby(error: &tasker_core::Error) -> Error {
    let ruby = Ruby::get().expect("errors are converted on a Ruby thread");
    Error::new(class(&ruby, class_name(error.kind())), error.to_string())
}

/// An error raised by the bindings themselves, of the given kind.
pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
    to_ruby(&tasker_core::Error::new(kind, message))
}

pub(crate) fn panic_to_ruby(panic: Box<dyn std::any::Any + Send>) -> Error {
    let ruby = Ruby::get().expect("errors are converted on a Ruby thread");
    let detail = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned());
    Error::new(class(&ruby, "Error"), format!("internal error in the native extension (panic): {detail}"))
}
