//! Reading a small request body whole: JSON bodies and single chunks. Both are held in memory,
//! so each has a size limit answered early (a `Content-Length` over it is a 413 before a byte
//! is read; a chunked body is cut off as it crosses it) and a deadline for the whole body (a
//! client trickling bytes is cut off with a 408 rather than holding its buffer open).
//!
//! Archive uploads stream and are not read here.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};

use niso_registry::error::Error;

/// Largest single chunk `PUT /v1/chunks/{hash}` accepts: the largest chunk any chunking
/// setting can make (fastcdc's 16 MiB bound, see `config.rs`).
pub const MAX_CHUNK_BODY_BYTES: usize = 16 * 1024 * 1024;

/// The body, at most `limit` bytes, received within `timeout`.
pub async fn read_limited(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, Error> {
    let too_large = || Error::TooLarge(format!("request body larger than {limit} bytes"));
    // Declared too large: refused before reading (hyper has already checked the header is a
    // number; an unparsable one never gets here).
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }
    let read = Limited::new(body, limit).collect();
    match tokio::time::timeout(timeout, read).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(error)) if error.is::<LengthLimitError>() => Err(too_large()),
        // An idle body (the connection loop's timeout) is a 408 like an idle upload.
        Ok(Err(error)) => Err(super::serve::body_error(axum::Error::new(error))),
        Err(_) => Err(Error::Stalled(format!(
            "request body not received within {} s",
            timeout.as_secs_f64()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::{StreamExt, stream};

    fn streaming(pieces: Vec<Vec<u8>>) -> Body {
        Body::from_stream(stream::iter(
            pieces
                .into_iter()
                .map(|piece| Ok::<_, std::io::Error>(Bytes::from(piece))),
        ))
    }

    #[tokio::test]
    async fn a_declared_length_over_the_limit_is_refused_unread() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_LENGTH, "31457280".parse().unwrap());
        // A body that would never end: it must not be polled.
        let body = Body::from_stream(stream::pending::<Result<Bytes, std::io::Error>>());
        let error = read_limited(&headers, body, 1024, Duration::from_secs(3600))
            .await
            .unwrap_err();
        assert!(matches!(error, Error::TooLarge(_)), "{error:?}");
    }

    #[tokio::test]
    async fn an_undeclared_body_is_cut_off_at_the_limit() {
        let body = streaming(vec![vec![b'a'; 600], vec![b'b'; 600]]);
        let error = read_limited(&HeaderMap::new(), body, 1024, Duration::from_secs(3600))
            .await
            .unwrap_err();
        assert!(matches!(error, Error::TooLarge(_)), "{error:?}");
        let body = streaming(vec![vec![b'a'; 600], vec![b'b'; 424]]);
        let bytes = read_limited(&HeaderMap::new(), body, 1024, Duration::from_secs(3600))
            .await
            .unwrap();
        assert_eq!(bytes.len(), 1024);
    }

    #[tokio::test]
    async fn a_trickling_body_times_out() {
        let body = Body::from_stream(
            stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"{"))])
                .chain(stream::pending()),
        );
        let error = read_limited(&HeaderMap::new(), body, 1024, Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(matches!(error, Error::Stalled(_)), "{error:?}");
    }
}
