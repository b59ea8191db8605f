//! The one error type of the registry domain. Variants say what went wrong in the domain's
//! terms (invalid input, not allowed, a limit reached, a dependency down); the server maps them
//! to HTTP statuses (`server/src/http/error.rs`), the operator to conditions and retries.
//!
//! Client-facing variants carry a message that is safe to show. `Unavailable` and `Internal`
//! carry the internal cause for the log only: clients get a fixed message (DESIGN.md §6).

use sea_orm::DbErr;

use crate::archive::ArchiveError;
use crate::auth::scope::ScopeError;
use crate::names::NameError;
use crate::storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input breaks a rule (a name, a version, an archive, a scope, a JSON field).
    #[error("{0}")]
    Invalid(String),
    /// No credentials, or credentials that do not identify anyone.
    #[error("{0}")]
    Unauthenticated(String),
    /// The principal is known but not allowed to do this.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// The operation contradicts the current state (the version exists, the name is taken).
    #[error("{0}")]
    Conflict(String),
    /// The input is larger than a configured limit.
    #[error("{0}")]
    TooLarge(String),
    /// Too many failed logins for this user or address.
    #[error("too many failed attempts; retry in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    /// A per-client limit was hit: too many concurrent uploads for one key, too many
    /// registrations from one address. The message says which limit.
    #[error("{message}")]
    LimitReached {
        message: String,
        retry_after_secs: u64,
    },
    /// The server is at a server-wide capacity limit: concurrent uploads, password hashing,
    /// decompression memory. The message says which; it is not a fault, so it is safe to show.
    #[error("{message}")]
    Overloaded {
        message: String,
        retry_after_secs: u64,
    },
    /// The client stopped sending its input for longer than the idle timeout.
    #[error("{0}")]
    Stalled(String),
    /// A dependency (database, object storage) is down or timing out.
    #[error("dependency unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The message a client may see.
    pub fn public_message(&self) -> String {
        match self {
            Error::Unavailable(_) => "service temporarily unavailable; retry later".to_owned(),
            Error::Internal(_) => "internal server error".to_owned(),
            other => other.to_string(),
        }
    }

    /// How long a client should wait before retrying, for the errors that pass with time.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Error::RateLimited { retry_after_secs }
            | Error::LimitReached {
                retry_after_secs, ..
            }
            | Error::Overloaded {
                retry_after_secs, ..
            } => Some((*retry_after_secs).max(1)),
            Error::Unavailable(_) => Some(5),
            _ => None,
        }
    }

    pub fn not_found(what: impl std::fmt::Display) -> Self {
        Error::NotFound(format!("{what} not found"))
    }

    pub fn internal(cause: impl std::fmt::Display) -> Self {
        Error::Internal(cause.to_string())
    }
}

impl From<DbErr> for Error {
    fn from(error: DbErr) -> Self {
        if is_unavailable(&error) {
            Error::Unavailable(error.to_string())
        } else {
            Error::Internal(error.to_string())
        }
    }
}

/// Whether a database error means "the database is unreachable" (503) rather than a bug (500).
fn is_unavailable(error: &DbErr) -> bool {
    use sea_orm::RuntimeErr;
    use sea_orm::sqlx::Error as SqlxError;
    let runtime = match error {
        DbErr::ConnectionAcquire(_) => return true,
        DbErr::Conn(runtime) | DbErr::Exec(runtime) | DbErr::Query(runtime) => runtime,
        _ => return false,
    };
    let RuntimeErr::SqlxError(sqlx_error) = runtime else {
        return false;
    };
    match sqlx_error.as_ref() {
        SqlxError::Io(_)
        | SqlxError::Tls(_)
        | SqlxError::Protocol(_)
        | SqlxError::PoolTimedOut
        | SqlxError::PoolClosed
        | SqlxError::WorkerCrashed => true,
        SqlxError::Database(database_error) => {
            // PostgreSQL: class 08 (connection exception), 57P01..57P03 (shutdown, cannot connect
            // now); SQLite: SQLITE_BUSY (5) after the busy timeout.
            let code = database_error.code().unwrap_or_default();
            code.starts_with("08") || code.starts_with("57P") || code == "5"
        }
        _ => false,
    }
}

impl From<StorageError> for Error {
    fn from(error: StorageError) -> Self {
        match error {
            // A chunk row whose object is missing is corruption, not a client mistake.
            StorageError::NotFound(key) => Error::Internal(format!("object {key} is missing")),
            StorageError::InvalidKey(_) | StorageError::Config(_) => {
                Error::Internal(error.to_string())
            }
            other => Error::Unavailable(other.to_string()),
        }
    }
}

impl From<NameError> for Error {
    fn from(error: NameError) -> Self {
        Error::Invalid(error.to_string())
    }
}

impl From<ScopeError> for Error {
    fn from(error: ScopeError) -> Self {
        Error::Invalid(error.to_string())
    }
}

impl From<ArchiveError> for Error {
    fn from(error: ArchiveError) -> Self {
        match error {
            ArchiveError::Invalid(message) => Error::Invalid(message),
            ArchiveError::TooLarge(message) => Error::TooLarge(message),
            ArchiveError::Busy(message) => Error::Overloaded {
                message,
                retry_after_secs: 5,
            },
        }
    }
}
