//! The command's errors and exit codes.
//!
//! Every failure becomes a [`CliError`]: a message printed as `annal: <message>`
//! on stderr and an exit code. [`annal::Error`] variants map to the codes of the
//! contract (see [`code`]).

use std::fmt;

/// Success.
pub const OK: i32 = 0;
/// Any error that has no code of its own.
pub const ERROR: i32 = 1;
/// Wrong expected version, or a failed append condition.
pub const CONFLICT: i32 = 3;
/// The stream does not exist, or was deleted.
pub const NOT_FOUND: i32 = 4;
/// Corruption detected (damaged bytes, or a system event that cannot be read).
pub const CORRUPT: i32 = 5;

/// An error with the exit code it ends the command with.
#[derive(Debug)]
pub struct CliError {
    /// The exit code.
    pub code: i32,
    /// What to print after `annal: `; empty means exit silently (a closed stdout).
    pub message: String,
}

/// Result of a command.
pub type CliResult<T = ()> = Result<T, CliError>;

impl CliError {
    /// An error with exit code 1.
    pub fn msg(message: impl Into<String>) -> Self {
        CliError {
            code: ERROR,
            message: message.into(),
        }
    }

    /// An error with an explicit exit code.
    pub fn with_code(code: i32, message: impl Into<String>) -> Self {
        CliError {
            code,
            message: message.into(),
        }
    }

    /// The reader of our output went away (`annal read-all | head`): stop quietly, successfully.
    pub fn closed_output() -> Self {
        CliError {
            code: OK,
            message: String::new(),
        }
    }

    /// An I/O error with context; a closed stdout is not an error.
    pub fn io(context: impl fmt::Display, e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            return Self::closed_output();
        }
        Self::msg(format!("{context}: {e}"))
    }

    /// Adds text to the message.
    pub fn context(mut self, prefix: impl fmt::Display) -> Self {
        if !self.message.is_empty() {
            self.message = format!("{prefix}: {}", self.message);
        }
        self
    }
}

/// The exit code of a library error.
pub fn code(e: &annal::Error) -> i32 {
    use annal::Error as E;
    match e {
        E::WrongExpectedVersion { .. } | E::ConditionFailed { .. } | E::IdempotencyConflict { .. } => CONFLICT,
        E::StreamNotFound(_) | E::StreamDeleted(_) => NOT_FOUND,
        E::Corruption { .. } | E::BadSystemEvent { .. } => CORRUPT,
        _ => ERROR,
    }
}

impl From<annal::Error> for CliError {
    fn from(e: annal::Error) -> Self {
        let code = code(&e);
        let mut message = e.to_string();
        match &e {
            annal::Error::Locked { .. } => message.push_str(
                " (only one process can open a data directory at a time: stop the one that holds it, \
                 or read the store through it)",
            ),
            annal::Error::Corruption { .. } => {
                message.push_str(" (run `annal verify` for a full report and `annal repair` to fix the store)")
            }
            // Its checksum is good, so repair would keep it: a newer annal wrote it, or a bug did.
            annal::Error::BadSystemEvent { .. } => {
                message.push_str(" (a newer version of annal may have written it; `annal repair` does not change it)")
            }
            _ => {}
        }
        CliError { code, message }
    }
}
