//! `/health` (liveness: the process answers), `/ready` (readiness: see [`Readiness`]) and
//! `/metrics` (Prometheus text: the operator's metrics, then the registry library's domain
//! series) on `NISO_OPERATOR_LISTEN`.
//!
//! Three fixed GET routes do not need an HTTP framework: this is a few lines over tokio's
//! `TcpListener`, one request per connection (`Connection: close`). Scrapers and probes are
//! the only expected clients, but the port is reachable in the cluster, so a hostile client
//! is assumed: the request head is cut at [`MAX_HEAD`] bytes (431), must arrive within
//! [`HEAD_TIMEOUT`] (then the connection is dropped), the answer must be taken within
//! [`WRITE_TIMEOUT`], and at most [`MAX_CONNECTIONS`] connections are served at once (others
//! wait in the kernel's backlog), so slow or endless clients cannot pile up tasks or memory.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use niso_registry::Registry;

use crate::metrics::Metrics;

/// The largest request head (request line and headers) read.
pub const MAX_HEAD: usize = 8 * 1024;
/// How long a client has to send its request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client has to take the response.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 32;

/// Whether the operator does its job, for `/ready` and the `niso_operator_ready` gauge.
///
/// A replica that does not hold the Lease is ready (a hot standby has nothing to do). The one
/// that holds it is ready once every controller has listed its objects, and not while the last
/// thing a controller's watch reported was an error (a missing CRD, RBAC that forbids the
/// list or watch): the error is recorded until that controller reconciles successfully again.
#[derive(Debug, Default)]
pub struct Readiness {
    leading: AtomicBool,
    /// Controller → why it is not working (yet).
    problems: Mutex<BTreeMap<&'static str, String>>,
}

impl Readiness {
    pub fn new() -> Readiness {
        Readiness::default()
    }

    /// This replica starts leading: each of `controllers` is not ready until it has listed.
    pub fn start_leading(&self, controllers: &[&'static str]) {
        let mut problems = self.problems.lock().expect("readiness lock");
        problems.clear();
        for controller in controllers {
            problems.insert(controller, "not listed yet".to_owned());
        }
        self.leading.store(true, Ordering::SeqCst);
    }

    /// This replica stopped leading (a standby again).
    pub fn stop_leading(&self) {
        self.leading.store(false, Ordering::SeqCst);
        self.problems.lock().expect("readiness lock").clear();
    }

    /// `controller` lists and watches fine (its cache is loaded, or it reconciled something).
    pub fn working(&self, controller: &'static str) {
        self.problems
            .lock()
            .expect("readiness lock")
            .remove(controller);
    }

    /// `controller`'s watch failed with `error`.
    pub fn failing(&self, controller: &'static str, error: String) {
        if self.leading.load(Ordering::SeqCst) {
            self.problems
                .lock()
                .expect("readiness lock")
                .insert(controller, error);
        }
    }

    /// None when ready; else what is wrong, one line per controller.
    pub fn problems(&self) -> Option<String> {
        if !self.leading.load(Ordering::SeqCst) {
            return None;
        }
        let problems = self.problems.lock().expect("readiness lock");
        if problems.is_empty() {
            None
        } else {
            Some(
                problems
                    .iter()
                    .map(|(controller, problem)| format!("{controller}: {problem}"))
                    .collect::<Vec<_>>()
                    .join("\n"),
            )
        }
    }
}

/// What the server needs to answer.
#[derive(Clone)]
pub struct Endpoints {
    pub metrics: Arc<Metrics>,
    pub registry: Arc<Registry>,
    pub readiness: Arc<Readiness>,
}

/// The text of `/metrics`: the operator's series, then its registry's domain series.
pub fn render_metrics(metrics: &Metrics, registry: &Registry) -> String {
    let mut text = metrics.render();
    text.push_str(&registry.metrics().render());
    text
}

/// A response: status line, content type, body.
struct Response {
    status: &'static str,
    content_type: &'static str,
    body: String,
}

impl Response {
    fn text(status: &'static str, body: impl Into<String>) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }
}

/// The answer to a request head (the bytes before the blank line).
fn respond(endpoints: &Endpoints, head: &[u8]) -> Response {
    let Some(line) = head
        .split(|byte| *byte == b'\n')
        .next()
        .and_then(|line| std::str::from_utf8(line).ok())
    else {
        return Response::text("400 Bad Request", "bad request\n");
    };
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Response::text("400 Bad Request", "bad request\n");
    };
    if !version.starts_with("HTTP/1.") || parts.next().is_some() {
        return Response::text("400 Bad Request", "bad request\n");
    }
    if method != "GET" && method != "HEAD" {
        return Response::text("405 Method Not Allowed", "only GET\n");
    }
    let path = target.split('?').next().unwrap_or_default();
    match path {
        "/health" => Response {
            status: "200 OK",
            content_type: "application/json",
            body: "{\"status\":\"ok\"}".into(),
        },
        "/ready" => match endpoints.readiness.problems() {
            None => Response::text("200 OK", "ready\n"),
            Some(problems) => Response::text("503 Service Unavailable", format!("{problems}\n")),
        },
        "/metrics" => {
            endpoints
                .metrics
                .ready
                .set(i64::from(endpoints.readiness.problems().is_none()));
            Response {
                status: "200 OK",
                content_type: "text/plain; version=0.0.4; charset=utf-8",
                body: render_metrics(&endpoints.metrics, &endpoints.registry),
            }
        }
        _ => Response::text("404 Not Found", "not found\n"),
    }
}

/// Reads the request head: Ok(None) when the client closed before sending one.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<Result<Vec<u8>, ()>>> {
    let mut head = Vec::with_capacity(512);
    let mut buffer = [0u8; 1024];
    loop {
        let read = stream.read(&mut buffer).await?;
        if read == 0 {
            return Ok(None);
        }
        head.extend_from_slice(&buffer[..read]);
        if let Some(end) = head.windows(4).position(|window| window == b"\r\n\r\n") {
            head.truncate(end);
            return Ok(Some(Ok(head)));
        }
        if head.len() > MAX_HEAD {
            return Ok(Some(Err(())));
        }
    }
}

async fn serve_connection(endpoints: Endpoints, mut stream: TcpStream) {
    let response = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut stream)).await {
        Ok(Ok(Some(Ok(head)))) => {
            let is_head = head.starts_with(b"HEAD ");
            let mut response = respond(&endpoints, &head);
            if is_head {
                response.body.clear();
            }
            response
        }
        Ok(Ok(Some(Err(())))) => Response::text(
            "431 Request Header Fields Too Large",
            "request head too large\n",
        ),
        // Closed, failed or too slow: nobody to answer.
        Ok(Ok(None)) | Ok(Err(_)) | Err(_) => return,
    };
    let bytes = format!(
        "HTTP/1.1 {}\r\ncontent-type: {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
        response.status,
        response.content_type,
        response.body.len(),
        response.body
    );
    let _ = tokio::time::timeout(WRITE_TIMEOUT, async {
        stream.write_all(bytes.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
}

/// Serves until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    endpoints: Endpoints,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        let (stream, _) = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let endpoints = endpoints.clone();
        tokio::spawn(async move {
            serve_connection(endpoints, stream).await;
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn endpoints() -> (Endpoints, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let config = niso_registry::config::Config::from_sources(None, |name| match name {
            "NISO_DATA_DIR" => Some(dir.path().display().to_string()),
            _ => None,
        })
        .unwrap();
        let registry = Arc::new(
            Registry::open(&config, crate::metrics::registry_metrics())
                .await
                .unwrap(),
        );
        let endpoints = Endpoints {
            metrics: Arc::new(Metrics::new()),
            registry,
            readiness: Arc::new(Readiness::new()),
        };
        (endpoints, dir)
    }

    /// Sends `request` raw and returns the whole response.
    async fn exchange(address: std::net::SocketAddr, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream.write_all(request).await.unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.unwrap();
        String::from_utf8(response).unwrap()
    }

    #[tokio::test]
    async fn health_ready_and_metrics() {
        let (endpoints, _dir) = endpoints().await;
        endpoints.metrics.reconciled(
            "apikey",
            std::time::Duration::from_millis(3),
            Some("UserNotFound"),
        );
        let readiness = endpoints.readiness.clone();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, endpoints, async move {
            let _ = stopped.await;
        }));

        let response = exchange(address, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        assert!(response.ends_with("{\"status\":\"ok\"}"), "{response}");

        // A standby is ready; the leader only once its controllers list and watch.
        let ready = || exchange(address, b"GET /ready HTTP/1.1\r\n\r\n");
        assert!(ready().await.starts_with("HTTP/1.1 200 "));
        readiness.start_leading(&["apikey", "registrynamespace"]);
        let response = ready().await;
        assert!(response.starts_with("HTTP/1.1 503 "), "{response}");
        assert!(response.contains("apikey: not listed yet"), "{response}");
        readiness.working("apikey");
        readiness.working("registrynamespace");
        assert!(ready().await.starts_with("HTTP/1.1 200 "));
        readiness.failing("apikey", "403 Forbidden: cannot watch apikeys".into());
        let response = ready().await;
        assert!(response.starts_with("HTTP/1.1 503 "), "{response}");
        assert!(response.contains("cannot watch apikeys"), "{response}");
        let metrics = exchange(address, b"GET /metrics HTTP/1.1\r\n\r\n").await;
        assert!(metrics.contains("niso_operator_ready 0"), "{metrics}");
        readiness.working("apikey");

        let text = exchange(address, b"GET /metrics?x=1 HTTP/1.0\r\n\r\n").await;
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(
            text.contains("content-type: text/plain; version=0.0.4"),
            "{text}"
        );
        for expected in [
            "niso_operator_reconciles_total{controller=\"apikey\"} 1",
            "niso_operator_reconcile_failures_total{controller=\"apikey\",reason=\"UserNotFound\"} 1",
            "niso_operator_reconcile_duration_seconds_bucket",
            "niso_operator_leader 0",
            "niso_operator_ready 1",
        ] {
            assert!(text.contains(expected), "{expected} missing from:\n{text}");
        }
        for foreign in ["niso_http_", "niso_gc_"] {
            assert!(!text.contains(foreign), "{foreign} in:\n{text}");
        }
        let _ = stop.send(());
        server.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn hostile_requests_get_short_answers() {
        let (endpoints, _dir) = endpoints().await;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, endpoints, std::future::pending()));

        // A header that does not end: cut after MAX_HEAD bytes, answered 431, closed. (The
        // request is exactly one byte too long, so the server has read all of it when it
        // answers and closing does not reset the connection.)
        let mut request = b"GET /health HTTP/1.1\r\nX-Filler: ".to_vec();
        request.resize(MAX_HEAD + 1, b'a');
        let response = exchange(address, &request).await;
        assert!(response.starts_with("HTTP/1.1 431 "), "{response}");

        for (request, status) in [
            (&b"POST /health HTTP/1.1\r\n\r\n"[..], "405"),
            (b"GET /admin HTTP/1.1\r\n\r\n", "404"),
            (b"GET /health\r\n\r\n", "400"),
            (b"\xff\xfe HTTP/1.1\r\n\r\n", "400"),
        ] {
            let response = exchange(address, request).await;
            assert!(
                response.starts_with(&format!("HTTP/1.1 {status} ")),
                "{request:?}: {response}"
            );
        }
        let response = exchange(address, b"HEAD /health HTTP/1.1\r\n\r\n").await;
        assert!(response.starts_with("HTTP/1.1 200 "), "{response}");
        assert!(
            response.ends_with("\r\n\r\n"),
            "no body for HEAD: {response}"
        );
    }
}
