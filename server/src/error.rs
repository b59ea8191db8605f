//! The one error type of the server crate and its stable mapping to HTTP statuses.
//!
//! Client-facing variants carry a message that is safe to show. `Unavailable` and `Internal`
//! carry the internal cause for the log only: clients get a fixed message (DESIGN.md §6).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sea_orm::DbErr;

use crate::archive::ArchiveError;
use crate::auth::scope::ScopeError;
use crate::names::NameError;
use crate::storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{message}")]
    RangeNotSatisfiable { message: String, size: u64 },
    #[error("too many failed attempts; retry in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    /// A per-client limit was hit (429 with `Retry-After`): too many concurrent uploads for one
    /// key, too many registrations from one address. The message says which limit.
    #[error("{message}")]
    TooManyRequests {
        message: String,
        retry_after_secs: u64,
    },
    /// The server is at a server-wide capacity limit (503 with `Retry-After`): concurrent
    /// uploads, password hashing, decompression memory. The message says which; it is not a
    /// fault, so it is safe to show.
    #[error("{message}")]
    Overloaded {
        message: String,
        retry_after_secs: u64,
    },
    /// The client stopped sending its request body for longer than the idle timeout (408).
    #[error("{0}")]
    RequestTimeout(String),
    /// A dependency (database, object storage) is down or timing out.
    #[error("dependency unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn status(&self) -> StatusCode {
        match self {
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Conflict(_) => StatusCode::CONFLICT,
            Error::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            Error::RateLimited { .. } | Error::TooManyRequests { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Error::Overloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Error::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The message a client may see.
    pub fn public_message(&self) -> String {
        match self {
            Error::Unavailable(_) => "service temporarily unavailable; retry later".to_owned(),
            Error::Internal(_) => "internal server error".to_owned(),
            other => other.to_string(),
        }
    }

    pub fn not_found(what: impl std::fmt::Display) -> Self {
        Error::NotFound(format!("{what} not found"))
    }

    pub fn internal(cause: impl std::fmt::Display) -> Self {
        Error::Internal(cause.to_string())
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            Error::Unavailable(cause) => tracing::warn!(%cause, "dependency unavailable"),
            Error::Internal(cause) => tracing::error!(%cause, "internal error"),
            _ => {}
        }
        let body = serde_json::json!({ "error": self.public_message() });
        let mut response = (status, axum::Json(body)).into_response();
        match self {
            Error::RateLimited { retry_after_secs }
            | Error::TooManyRequests {
                retry_after_secs, ..
            }
            | Error::Overloaded {
                retry_after_secs, ..
            } => {
                response.headers_mut().insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(retry_after_secs.max(1)),
                );
            }
            Error::RequestTimeout(_) => {
                // The body was not read to its end: the connection cannot be reused.
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            Error::RangeNotSatisfiable { size, .. } => {
                if let Ok(value) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    response.headers_mut().insert(header::CONTENT_RANGE, value);
                }
            }
            Error::Unavailable(_) => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(5u32));
            }
            _ => {}
        }
        response
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
        Error::BadRequest(error.to_string())
    }
}

impl From<ScopeError> for Error {
    fn from(error: ScopeError) -> Self {
        Error::BadRequest(error.to_string())
    }
}

impl From<ArchiveError> for Error {
    fn from(error: ArchiveError) -> Self {
        match error {
            ArchiveError::Invalid(message) => Error::BadRequest(message),
            ArchiveError::TooLarge(message) => Error::PayloadTooLarge(message),
            ArchiveError::Busy(message) => Error::Overloaded {
                message,
                retry_after_secs: 5,
            },
        }
    }
}
