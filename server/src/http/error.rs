//! How errors become HTTP responses: the status for each domain error, the `{"error": …}`
//! body (DESIGN.md §6), `Retry-After` where waiting helps, and the errors only HTTP has (a byte
//! range outside the archive). Internal causes are logged here and never sent.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use niso_registry::error::Error;

/// What a handler fails with: a domain error, or one that exists only in HTTP.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Domain(#[from] Error),
    /// A `Range` header outside the archive (416 with `Content-Range: bytes */size`).
    #[error("{message}")]
    RangeNotSatisfiable { message: String, size: u64 },
}

pub type Result<T, E = ApiError> = std::result::Result<T, E>;

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Domain(error) => status(error),
            ApiError::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
        }
    }
}

/// The status of each domain error.
pub fn status(error: &Error) -> StatusCode {
    match error {
        Error::Invalid(_) => StatusCode::BAD_REQUEST,
        Error::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
        Error::Forbidden(_) => StatusCode::FORBIDDEN,
        Error::NotFound(_) => StatusCode::NOT_FOUND,
        Error::Conflict(_) => StatusCode::CONFLICT,
        Error::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        Error::RateLimited { .. } | Error::LimitReached { .. } => StatusCode::TOO_MANY_REQUESTS,
        Error::Overloaded { .. } | Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        Error::Stalled(_) => StatusCode::REQUEST_TIMEOUT,
        Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match &self {
            ApiError::Domain(error) => {
                match error {
                    Error::Unavailable(cause) => tracing::warn!(%cause, "dependency unavailable"),
                    Error::Internal(cause) => tracing::error!(%cause, "internal error"),
                    _ => {}
                }
                error.public_message()
            }
            other => other.to_string(),
        };
        let body = serde_json::json!({ "error": message });
        let mut response = (status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        match &self {
            ApiError::Domain(error) => {
                if let Some(seconds) = error.retry_after_secs() {
                    headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
                }
                if let Error::Stalled(_) = error {
                    // The body was not read to its end: the connection cannot be reused.
                    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
            }
            ApiError::RangeNotSatisfiable { size, .. } => {
                if let Ok(value) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    headers.insert(header::CONTENT_RANGE, value);
                }
            }
        }
        response
    }
}

/// Lets handlers use `?` on the domain's conversions (`NameError`, `ScopeError`, …) directly.
macro_rules! from_domain {
    ($($source:ty),*) => {$(
        impl From<$source> for ApiError {
            fn from(error: $source) -> Self {
                ApiError::Domain(Error::from(error))
            }
        }
    )*};
}

from_domain!(
    niso_registry::names::NameError,
    niso_registry::auth::scope::ScopeError,
    niso_registry::archive::ArchiveError,
    niso_registry::storage::StorageError,
    sea_orm::DbErr
);
