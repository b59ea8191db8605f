//! The client's error: a message for people and the exit code scripts branch on.
//!
//! Exit codes (documented in `niso --help`):
//! 0 success; 1 the operation failed (the registry refused the request, or a local file or
//! archive problem); 2 usage (bad arguments, no registry configured); 3 authentication or
//! permission (not logged in, 401, 403); 4 not found (404); 5 server or network (5xx, 429 after
//! the retries, connection failures, responses that break the protocol).

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Failed,
    Usage,
    Auth,
    NotFound,
    Server,
}

impl ErrorKind {
    pub fn exit_code(self) -> u8 {
        match self {
            ErrorKind::Failed => 1,
            ErrorKind::Usage => 2,
            ErrorKind::Auth => 3,
            ErrorKind::NotFound => 4,
            ErrorKind::Server => 5,
        }
    }

    /// How an HTTP error status is classified.
    pub fn for_status(status: reqwest::StatusCode) -> ErrorKind {
        match status.as_u16() {
            401 | 403 => ErrorKind::Auth,
            404 => ErrorKind::NotFound,
            429 => ErrorKind::Server,
            status if status >= 500 => ErrorKind::Server,
            _ => ErrorKind::Failed,
        }
    }
}

/// An error shown to the user as `error: {message}`; never a debug dump.
#[derive(Debug)]
pub struct CliError {
    pub kind: ErrorKind,
    pub message: String,
}

impl CliError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> CliError {
        CliError {
            kind,
            message: message.into(),
        }
    }

    pub fn failed(message: impl Into<String>) -> CliError {
        CliError::new(ErrorKind::Failed, message)
    }

    pub fn usage(message: impl Into<String>) -> CliError {
        CliError::new(ErrorKind::Usage, message)
    }

    pub fn server(message: impl Into<String>) -> CliError {
        CliError::new(ErrorKind::Server, message)
    }

    /// A local I/O failure, naming what was being done.
    pub fn io(context: impl fmt::Display, error: std::io::Error) -> CliError {
        CliError::failed(format!("{context}: {error}"))
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

pub type Result<T, E = CliError> = std::result::Result<T, E>;
