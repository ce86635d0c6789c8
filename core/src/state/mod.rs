//! Task and step state machines. The same transitions are CHECK
//! constraints on the database's history tables, which refuse any other; a
//! test checks the two agree.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, ErrorKind};

macro_rules! states {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self, Error> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(Error::new(ErrorKind::State,
                        format!("unknown {} {other:?}", stringify!($name)))),
                }
            }
        }
    };
}

states!(
    /// A task: pending until its first steps are enqueued, in progress until
    /// nothing can move, then complete, error or cancelled.
    TaskState {
        Pending => "pending",
        InProgress => "in_progress",
        Complete => "complete",
        Error => "error",
        Cancelled => "cancelled",
    }
);

states!(
    /// A workflow step.
    StepState {
        Pending => "pending",
        Enqueued => "enqueued",
        InProgress => "in_progress",
        Complete => "complete",
        Error => "error",
        WaitingForRetry => "waiting_for_retry",
        Cancelled => "cancelled",
        ResolvedManually => "resolved_manually",
        Skipped => "skipped",
    }
);

impl TaskState {
    pub fn is_terminal(self) -> bool {
        matches!(self, TaskState::Complete | TaskState::Cancelled)
    }

    /// Whether `self -> to` is allowed. `error` is not terminal: an operator
    /// may retry or resolve the failed step, which resumes the task.
    pub fn can_transition_to(self, to: TaskState) -> bool {
        use TaskState::*;
        matches!(
            (self, to),
            (Pending, InProgress | Cancelled)
                | (InProgress, Complete | Error | Cancelled)
                | (Error, InProgress | Cancelled)
        )
    }
}

impl StepState {
    /// States a step leaves only by an operator's action, if at all.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            StepState::Complete
                | StepState::Error
                | StepState::Cancelled
                | StepState::ResolvedManually
                | StepState::Skipped
        )
    }

    /// Whether a step in this state satisfies its dependents. A skipped
    /// dependency (a decision did not choose it) does too, as long as at
    /// least one other ran: a step whose dependencies were all skipped is
    /// skipped itself (see `tasker_apply_decisions`).
    pub fn satisfies_dependents(self) -> bool {
        matches!(self, StepState::Complete | StepState::ResolvedManually | StepState::Skipped)
    }

    /// Whether `self -> to` is allowed. A self-transition records a late
    /// outcome in the history without changing anything. A step is claimed
    /// from `enqueued` (its message was read), from `pending` (eager
    /// dispatch: the worker that finished its last dependency runs it) and
    /// from `waiting_for_retry` (its delayed message came due).
    pub fn can_transition_to(self, to: StepState) -> bool {
        use StepState::*;
        self == to
            || matches!(
                (self, to),
                (Pending, Enqueued | InProgress | Cancelled | ResolvedManually | Skipped)
                    | (Enqueued, InProgress | Cancelled | ResolvedManually)
                    | (InProgress, Complete | Error | WaitingForRetry | Enqueued | Cancelled | ResolvedManually)
                    | (WaitingForRetry, InProgress | Enqueued | Cancelled | ResolvedManually)
                    | (Error, Pending | ResolvedManually | Cancelled)
            )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in StepState::ALL {
            assert_eq!(s.as_str().parse::<StepState>().unwrap(), *s);
        }
        for s in TaskState::ALL {
            assert_eq!(s.as_str().parse::<TaskState>().unwrap(), *s);
        }
        assert!("done".parse::<StepState>().unwrap_err().to_string().contains("unknown StepState \"done\""));
    }

    #[test]
    fn finished_steps_do_not_run_again() {
        for s in [StepState::Complete, StepState::Cancelled, StepState::ResolvedManually, StepState::Skipped] {
            assert!(!s.can_transition_to(StepState::Enqueued));
            assert!(!s.can_transition_to(StepState::InProgress));
            // (cancelled -> cancelled is the self-transition of a late outcome)
            assert!(s == StepState::Cancelled || !s.can_transition_to(StepState::Cancelled));
        }
        assert!(StepState::Pending.can_transition_to(StepState::Skipped));
        assert!(!StepState::Enqueued.can_transition_to(StepState::Skipped));
        assert!(TaskState::Complete.is_terminal());
        assert!(!TaskState::Complete.can_transition_to(TaskState::InProgress));
    }
}
