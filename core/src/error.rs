use std::fmt;

/// What kind of thing failed. Callers (and the Ruby bindings) map kinds to
/// their own error types; new kinds may be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Bad configuration: a key, a value, a missing setting.
    Config,
    /// The database refused or could not be reached.
    Database,
    /// The messaging provider refused or could not be reached.
    Messaging,
    /// A task template failed to parse or validate.
    Template,
    /// Input (a task context, an argument) failed validation.
    Validation,
    /// A task, step, template or queue does not exist.
    NotFound,
    /// A state transition was refused.
    State,
    /// Waiting for something took longer than allowed.
    Timeout,
    /// The component is shutting down or stopped.
    Shutdown,
    /// The database or the broker is down: a circuit breaker is open and
    /// the call failed at once, without trying (see `resilience.rs`).
    Unavailable,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            ErrorKind::Config => "configuration error",
            ErrorKind::Database => "database error",
            ErrorKind::Messaging => "messaging error",
            ErrorKind::Template => "template error",
            ErrorKind::Validation => "validation error",
            ErrorKind::NotFound => "not found",
            ErrorKind::State => "state error",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Shutdown => "shut down",
            ErrorKind::Unavailable => "unavailable",
        };
        f.write_str(name)
    }
}

/// The crate's one error type: a kind, a message that names what failed and
/// with which identifiers, and the underlying cause where there is one.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into(), source: None }
    }

    pub fn with_source(
        kind: ErrorKind,
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self { kind, message: message.into(), source: Some(Box::new(source)) }
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub(crate) fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config, message)
    }

    pub(crate) fn template(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Template, message)
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    /// Wraps a database error with what was being done. An error the
    /// engine's SQL functions raise on purpose (not found, invalid input)
    /// keeps its own message and kind.
    pub(crate) fn db(doing: impl Into<String>) -> impl FnOnce(sqlx::Error) -> Self {
        let doing = doing.into();
        move |e| {
            if let Some(db) = e.as_database_error() {
                let kind = match db.code().as_deref() {
                    Some("P0002") => Some(ErrorKind::NotFound),
                    Some("22023") => Some(ErrorKind::Validation),
                    _ => None,
                };
                if let Some(kind) = kind {
                    let message = db.message().to_owned();
                    return Self::with_source(kind, message, e);
                }
            }
            Self::with_source(ErrorKind::Database, format!("{doing}: {e}"), e)
        }
    }

    /// Wraps a messaging error with what was being done.
    pub(crate) fn messaging<E: std::error::Error + Send + Sync + 'static>(
        doing: impl Into<String>,
    ) -> impl FnOnce(E) -> Self {
        let doing = doing.into();
        move |e| Self::with_source(ErrorKind::Messaging, format!("{doing}: {e}"), e)
    }
}

/// `text` cut to at most `max` bytes (on a character boundary), saying how
/// much was left out.
pub(crate) fn bounded(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max {
        return text.into();
    }
    let cut = (0..=max).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
    format!("{}... ({} more bytes)", &text[..cut], text.len() - cut).into()
}

/// The most of a message payload a log line quotes.
pub(crate) const MAX_LOGGED_PAYLOAD: usize = 1024;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}
