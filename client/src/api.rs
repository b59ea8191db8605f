//! The registry's HTTP API as the client calls it: URLs, the key, retries and error messages.
//!
//! Retries: a response of 429 or 503 (the registry is busy or rate limiting) is retried after
//! its `Retry-After` (at most [`MAX_RETRY_WAIT`]) or an exponential backoff; a connection that
//! failed or was reset is retried too, but for requests that are not idempotent (login, key
//! creation) only when the connection was never made, since the server may have acted on a
//! request whose answer was lost. At most [`ATTEMPTS`] attempts.
//!
//! Errors: a response that is not a success becomes the server's `{"error": "…"}` message,
//! classified by status into an exit code; a body that is not that shape is never shown raw
//! beyond a short, printable prefix (a hostile or broken server cannot flood the terminal).

use std::time::Duration;

use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;

use crate::error::{CliError, ErrorKind, Result};

pub const ATTEMPTS: u32 = 5;
pub const MAX_RETRY_WAIT: Duration = Duration::from_secs(30);
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// Largest JSON or error body read from the registry (listings are paginated well below this).
const MAX_JSON_BYTES: usize = 16 * 1024 * 1024;

/// Characters escaped in one path segment.
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'?')
    .add(b'<')
    .add(b'>')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'\\');

/// One path segment, escaped.
pub fn segment(value: &str) -> String {
    utf8_percent_encode(value, SEGMENT).to_string()
}

/// `/v1/packages/@ns/pkg`: a package name as its two segments.
pub fn package_path(name: &niso_core::names::PackageName) -> String {
    format!(
        "/v1/packages/{}/{}",
        segment(name.namespace()),
        segment(name.short_name())
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idempotency {
    /// Safe to send again after a lost answer (GET, PUT, DELETE).
    Idempotent,
    /// Only retried when the server cannot have seen it.
    Once,
}

#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Api {
    pub fn new(base: &str, token: Option<String>) -> Result<Api> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("niso/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(30))
            // No overall timeout (archives are large); a stalled read ends the request instead.
            .read_timeout(Duration::from_secs(120))
            .build()
            .map_err(|error| CliError::failed(format!("starting the HTTP client: {error}")))?;
        Ok(Api {
            http,
            base: base.to_owned(),
            token,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Fails with an auth error when no key is configured.
    pub fn require_token(&self) -> Result<()> {
        if self.token.is_none() {
            return Err(CliError::new(
                ErrorKind::Auth,
                format!(
                    "not logged in to {}: run `niso login` or set NISO_TOKEN",
                    self.base
                ),
            ));
        }
        Ok(())
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let builder = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    /// Sends the request `build` makes (called again for each attempt), retrying as the module
    /// doc says; returns the first response that is a success, or the error it maps to.
    pub async fn send(
        &self,
        idempotency: Idempotency,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<Response> {
        let mut attempt = 1;
        loop {
            let wait = match build().send().await {
                Ok(response) if response.status().is_success() => return Ok(response),
                Ok(response) => {
                    let status = response.status();
                    let retryable = matches!(
                        status,
                        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
                    );
                    if !retryable || attempt >= ATTEMPTS {
                        return Err(error_from_response(response).await);
                    }
                    retry_after(&response).unwrap_or_else(|| backoff(attempt))
                }
                Err(error) => {
                    let retryable = error.is_connect()
                        || (idempotency == Idempotency::Idempotent
                            && (error.is_timeout() || error.is_request() || error.is_body()));
                    if !retryable || attempt >= ATTEMPTS {
                        return Err(network_error(&self.base, &error));
                    }
                    backoff(attempt)
                }
            };
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// GET returning JSON.
    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let response = self
            .send(Idempotency::Idempotent, || self.request(Method::GET, path))
            .await?;
        read_json(response).await
    }

    /// A request with a JSON body, returning JSON (or `null` for an empty body).
    pub async fn send_json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &serde_json::Value,
        idempotency: Idempotency,
    ) -> Result<T> {
        let response = self
            .send(idempotency, || {
                self.request(method.clone(), path).json(body)
            })
            .await?;
        read_json(response).await
    }

    /// DELETE, expecting no body.
    pub async fn delete(&self, path: &str) -> Result<()> {
        self.send(Idempotency::Idempotent, || {
            self.request(Method::DELETE, path)
        })
        .await?;
        Ok(())
    }
}

fn backoff(attempt: u32) -> Duration {
    FIRST_BACKOFF.saturating_mul(1 << (attempt - 1).min(6))
}

fn retry_after(response: &Response) -> Option<Duration> {
    let seconds: u64 = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds).min(MAX_RETRY_WAIT))
}

pub fn network_error(base: &str, error: &reqwest::Error) -> CliError {
    // The chain of causes, not the Debug form: "error sending request: connection refused".
    let mut message = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    CliError::server(format!("cannot reach {base}: {message}"))
}

/// Reads a body of at most `limit` bytes.
pub async fn read_limited(mut response: Response, limit: usize) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    while let Some(piece) = response
        .chunk()
        .await
        .map_err(|error| CliError::server(format!("reading the response: {error}")))?
    {
        if body.len() + piece.len() > limit {
            return Err(CliError::server(format!(
                "the registry's response is larger than {limit} bytes"
            )));
        }
        body.extend_from_slice(&piece);
    }
    Ok(body)
}

async fn read_json<T: DeserializeOwned>(response: Response) -> Result<T> {
    let body = read_limited(response, MAX_JSON_BYTES).await?;
    let body: &[u8] = if body.is_empty() { b"null" } else { &body };
    serde_json::from_slice(body).map_err(|error| {
        CliError::server(format!(
            "the registry's response is not what niso expects: {error}"
        ))
    })
}

/// The error for a response that is not a success: the server's `error` message.
pub async fn error_from_response(response: Response) -> CliError {
    let status = response.status();
    let kind = ErrorKind::for_status(status);
    let body = read_limited(response, 64 * 1024).await.unwrap_or_default();
    let message = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|value| value.get("error")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| {
            let text: String = String::from_utf8_lossy(&body)
                .chars()
                .filter(|c| !c.is_control())
                .take(200)
                .collect();
            if text.trim().is_empty() {
                format!("the registry answered {status}")
            } else {
                format!("the registry answered {status}: {}", text.trim())
            }
        });
    // The server's message is shown as text: control characters could drive the terminal.
    let message: String = message.chars().filter(|c| !c.is_control()).collect();
    CliError::new(kind, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_escape_what_would_change_the_path() {
        assert_eq!(segment("1.0.0+build"), "1.0.0+build");
        assert_eq!(segment("../x"), "..%2Fx");
        assert_eq!(segment("a?b#c"), "a%3Fb%23c");
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_millis(500));
        assert_eq!(backoff(3), Duration::from_secs(2));
        assert_eq!(backoff(30), backoff(7));
    }
}
