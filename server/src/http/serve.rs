//! The connection loop: accepts TCP connections and serves the router on each with hyper's
//! HTTP/1 server, then shuts down gracefully (no new connections, in-flight requests finish).
//! It also bounds how long a client may keep the server waiting: for a request's head
//! (hyper's header read timeout, which also ends a keep-alive connection left idle between
//! requests) and between two pieces of a request body (the body idle timeout, applied to every
//! request body here so no handler can forget it; [`body_error`] turns its expiry into a 408).
//!
//! Our own loop rather than `axum::serve` for one setting: hyper's per-connection buffer limit.
//! At its default (~400 KiB) an uploading connection grows its read buffer to that size, and
//! the body pieces handed on pin it while the next one is read; a downloading connection
//! queues as much response body. Under the memory benchmark (16 uploads + 16 downloads) those
//! buffers were a tenth of the heap. 64 KiB still reads and writes in large syscalls.

use std::net::SocketAddr;
use std::pin::pin;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceExt as _;
use tower_http::timeout::{TimeoutBody, TimeoutError};

use niso_registry::RegistrySettings;
use niso_registry::error::Error;

/// Largest read buffer and response queue per connection.
const CONNECTION_BUFFER_BYTES: usize = 64 * 1024;

/// How long a client may keep the server waiting (see the module doc).
#[derive(Debug, Clone, Copy)]
pub struct ClientTimeouts {
    /// To send a request's head, and between requests on a keep-alive connection.
    pub header_read: Duration,
    /// Between two pieces of a request body, counted only while the server waits for one.
    pub body_idle: Duration,
}

impl ClientTimeouts {
    pub fn from_settings(settings: &RegistrySettings) -> ClientTimeouts {
        ClientTimeouts {
            header_read: settings.header_read_timeout,
            body_idle: settings.body_idle_timeout,
        }
    }
}

/// The error a handler reports for a request body that could not be read: 408 when the client
/// stopped sending for the idle timeout, 413 when a length limit cut it off, else 400 (the
/// client went away or sent a malformed body; the handler's response is then moot).
pub fn body_error(error: axum::Error) -> Error {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(cause) = source {
        if cause.is::<TimeoutError>() {
            return Error::Stalled(
                "the request body stopped arriving: nothing was received for longer than the \
                 idle timeout"
                    .into(),
            );
        }
        if cause.is::<http_body_util::LengthLimitError>() {
            return Error::TooLarge("the request body is too large".into());
        }
        source = cause.source();
    }
    Error::Invalid(format!("the request body was interrupted: {error}"))
}

/// Serves `app` on `listener` until `shutdown` resolves, then waits for open requests.
pub async fn serve_router(
    listener: TcpListener,
    app: Router,
    timeouts: ClientTimeouts,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.max_buf_size(CONNECTION_BUFFER_BYTES)
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.header_read);
    let graceful = GracefulShutdown::new();
    let mut shutdown = pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, or a connection reset before it was accepted:
                    // transient, but retrying at once would spin.
                    tracing::warn!(%error, "could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Responses are written whole; waiting for more to coalesce only adds latency.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
        let body_idle = timeouts.body_idle;
        let service = app.clone().map_request(move |request: Request<Incoming>| {
            let mut request =
                request.map(|incoming| Body::new(TimeoutBody::new(body_idle, incoming)));
            // Before routing: a package name sent as two segments becomes one.
            if let Some(uri) = super::package_path::normalize(request.uri()) {
                *request.uri_mut() = uri;
            }
            request
                .extensions_mut()
                .insert(ConnectInfo::<SocketAddr>(remote));
            request
        });
        let connection =
            http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, %remote, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
