//! The HTTP client under the S3 SDK: hyper over rustls, as the SDK's own, but with each
//! connection's read buffer capped at [`READ_BUFFER_LIMIT`].
//!
//! Why our own: hyper grows a connection's read buffer up to ~400 KiB while a body streams in,
//! and the connection keeps it while it waits in the pool. With a GET per chunk in flight across
//! many downloads, those buffers were the largest part of the server's heap (heaptrack, 16
//! uploads + 16 downloads on Garage: 35 MiB of a 94 MiB peak). The SDK builds its hyper client
//! privately and offers no setting for the limit, so the only way to cap it is to hand the SDK a
//! client of ours ([`S3HttpClient`], through the `aws-smithy-runtime-api` traits the SDK is
//! built on).
//!
//! What it keeps from the SDK's client: TCP_NODELAY, the connect (TCP and TLS handshake) and
//! read time limits the SDK passes in, the system's root certificates, a pool with an idle
//! timeout, and the mapping of transport failures onto the SDK's error kinds, so its retries see
//! the same transient errors.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::retry::ErrorKind;
use http::Uri;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector as TcpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

/// What a connection buffers of a response before the body's reader takes it. 64 KiB is what
/// our own HTTP server allows per connection too; a 1 MiB chunk arrives in 16 reads instead of 3,
/// which measured no slower against Garage. hyper checks the limit between reads, so a buffer
/// may pass it by one read, not grow to its ~400 KiB default.
pub const READ_BUFFER_LIMIT: usize = 64 * 1024;
/// How long an idle pooled connection is kept (hyper's default, which the SDK keeps): S3 servers
/// close idle connections after a while themselves, and a reused dead one costs a retry.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Gives the SDK one [`S3Connector`] per distinct set of time limits. The SDK asks for a
/// connector on every request attempt; handing out the same one keeps its connection pool.
#[derive(Debug)]
pub struct S3HttpClient {
    tls: Arc<rustls::ClientConfig>,
    connectors: Mutex<Vec<(ConnectorKey, SharedHttpConnector)>>,
}

type ConnectorKey = (Option<Duration>, Option<Duration>);

impl S3HttpClient {
    /// Trusts the system's root certificates, as the SDK's default client does. None found is
    /// not an error: plain-HTTP endpoints (a Garage in the cluster) still work, and an HTTPS one
    /// then fails at its handshake with the reason in the log.
    pub fn with_system_roots() -> S3HttpClient {
        let found = rustls_native_certs::load_native_certs();
        if !found.errors.is_empty() {
            tracing::warn!(errors = ?found.errors, "some system root certificates could not be read");
        }
        let mut roots = rustls::RootCertStore::empty();
        let (added, _) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            tracing::warn!("no system root certificates: HTTPS S3 endpoints will fail to connect");
        }
        S3HttpClient::with_roots(roots)
    }

    /// Trusts exactly `roots` (tests use their own certificate authority).
    pub fn with_roots(roots: rustls::RootCertStore) -> S3HttpClient {
        // ring, explicitly: the process-wide default provider is set by binaries, not libraries,
        // and this must not depend on which one ran first.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        S3HttpClient {
            tls: Arc::new(tls),
            connectors: Mutex::new(Vec::new()),
        }
    }

    fn connector(&self, settings: &HttpConnectorSettings) -> S3Connector {
        let mut tcp = TcpConnector::new();
        tcp.enforce_http(false);
        // Requests are written in more than one piece; Nagle would hold the last one back.
        tcp.set_nodelay(true);
        let https = HttpsConnectorBuilder::new()
            .with_tls_config((*self.tls).clone())
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp);
        let connect = ConnectWithin {
            inner: https,
            limit: settings.connect_timeout(),
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .http1_max_buf_size(READ_BUFFER_LIMIT)
            .build(connect);
        S3Connector {
            client,
            read_timeout: settings.read_timeout(),
        }
    }
}

impl HttpClient for S3HttpClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        _components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        let key = (settings.connect_timeout(), settings.read_timeout());
        let mut connectors = self
            .connectors
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((_, connector)) = connectors.iter().find(|(known, _)| *known == key) {
            return connector.clone();
        }
        let connector = SharedHttpConnector::new(self.connector(settings));
        connectors.push((key, connector.clone()));
        connector
    }
}

/// One connection pool and the time limits it was made for.
#[derive(Debug, Clone)]
struct S3Connector {
    client: Client<ConnectWithin, SdkBody>,
    /// From sending the request to the response headers (the SDK's meaning of a read timeout);
    /// the body is bounded by the store's operation timeout.
    read_timeout: Option<Duration>,
}

impl HttpConnector for S3Connector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let request = match request.try_into_http1x() {
            Ok(request) => request,
            Err(error) => {
                return HttpConnectorFuture::ready(Err(ConnectorError::user(error.into())));
            }
        };
        let response = self.client.request(request);
        let read_timeout = self.read_timeout;
        HttpConnectorFuture::new(async move {
            let response = match read_timeout {
                Some(limit) => tokio::time::timeout(limit, response)
                    .await
                    .map_err(|elapsed| ConnectorError::timeout(elapsed.into()))?,
                None => response.await,
            }
            .map_err(connector_error)?;
            HttpResponse::try_from(response.map(SdkBody::from_body_1_x))
                .map_err(|error| ConnectorError::other(error.into(), None))
        })
    }
}

/// Opens a connection, TLS handshake included, within the SDK's connect timeout (hyper's own
/// limit covers only the TCP connect, so a server that accepts and then never answers the TLS
/// handshake would hold the attempt until its much longer timeout).
#[derive(Debug, Clone)]
struct ConnectWithin {
    inner: HttpsConnector<TcpConnector>,
    limit: Option<Duration>,
}

type Connection = <HttpsConnector<TcpConnector> as tower::Service<Uri>>::Response;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower::Service<Uri> for ConnectWithin {
    type Response = Connection;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Connection, BoxError>> + Send>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        let limit = self.limit;
        Box::pin(async move {
            match limit {
                Some(limit) => match tokio::time::timeout(limit, connecting).await {
                    Ok(connected) => connected,
                    Err(_) => Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no connection (TCP and TLS) within {limit:?}"),
                    )
                    .into()),
                },
                None => connecting.await,
            }
        })
    }
}

/// Classifies a transport failure the way the SDK's own client does, so its retry policy treats
/// the same failures as transient: no connection, a connection that closed or broke, a response
/// cut short.
fn connector_error(error: hyper_util::client::legacy::Error) -> ConnectorError {
    enum Kind {
        Timeout,
        User,
        Transient,
        Io,
        Other,
    }
    let kind = match find_source::<hyper::Error>(&error) {
        Some(hyper_error) if hyper_error.is_timeout() => Kind::Timeout,
        Some(hyper_error) if hyper_error.is_user() => Kind::User,
        Some(hyper_error) if hyper_error.is_incomplete_message() => Kind::Transient,
        Some(hyper_error) if hyper_error.is_closed() || hyper_error.is_canceled() => Kind::Io,
        _ if find_source::<std::io::Error>(&error).is_some() => Kind::Io,
        _ => Kind::Other,
    };
    let error = error.into();
    match kind {
        Kind::Timeout => ConnectorError::timeout(error),
        Kind::User => ConnectorError::user(error),
        Kind::Transient => ConnectorError::other(error, Some(ErrorKind::TransientError)),
        Kind::Io => ConnectorError::io(error),
        Kind::Other => ConnectorError::other(error, None),
    }
}

fn find_source<'a, E: std::error::Error + 'static>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a E> {
    std::iter::successors(Some(error), |error| error.source())
        .find_map(|error| error.downcast_ref::<E>())
}

#[cfg(test)]
mod tests {
    //! Against small servers of their own: a TLS one with a test certificate authority
    //! (`registry/testdata/tls`, made with `openssl req -x509` / `openssl x509 -req`, valid for a
    //! century), and plain ones that misbehave on purpose.

    use std::sync::atomic::{AtomicUsize, Ordering};

    use aws_sdk_s3::config::retry::RetryConfig;
    use aws_sdk_s3::config::timeout::TimeoutConfig;
    use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

    use super::*;

    const CA: &[u8] = include_bytes!("../../testdata/tls/ca.pem");
    const SERVER_CERTIFICATE: &[u8] = include_bytes!("../../testdata/tls/server.pem");
    const SERVER_KEY: &[u8] = include_bytes!("../../testdata/tls/server.key");

    fn test_roots() -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        for certificate in CertificateDer::pem_slice_iter(CA) {
            roots.add(certificate.unwrap()).unwrap();
        }
        roots
    }

    fn s3_client(http: S3HttpClient, endpoint: &str, max_attempts: u32) -> aws_sdk_s3::Client {
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .http_client(http)
            .endpoint_url(endpoint)
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("id", "secret", None, None, "test"))
            .force_path_style(true)
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(max_attempts)
                    .with_initial_backoff(Duration::from_millis(1)),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_millis(300))
                    .build(),
            )
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    fn response(extra_header: &str, body: &[u8]) -> Vec<u8> {
        let mut response = format!(
            "HTTP/1.1 200 OK\r\n{extra_header}Content-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        response.extend_from_slice(body);
        response
    }

    /// Reads one request head and answers it with `answer(n)` for the server's n-th connection
    /// (from 0), or hangs up without a word when that is `None`.
    async fn serve_one<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, answer: Option<Vec<u8>>) {
        let mut request = Vec::new();
        let mut buffer = [0u8; 4096];
        while !request.windows(4).any(|window| window == b"\r\n\r\n") {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => request.extend_from_slice(&buffer[..n]),
            }
        }
        if let Some(answer) = answer {
            let _ = stream.write_all(&answer).await;
            let _ = stream.shutdown().await;
        }
    }

    /// A plain-HTTP server; returns its address and how many connections it accepted.
    async fn plain_server(
        answer: impl Fn(usize) -> Option<Vec<u8>> + Send + Sync + 'static,
    ) -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let answer = answer(counted.fetch_add(1, Ordering::SeqCst));
                tokio::spawn(serve_one(stream, answer));
            }
        });
        (address, connections)
    }

    async fn tls_server(answer: Vec<u8>) -> String {
        let certificates = CertificateDer::pem_slice_iter(SERVER_CERTIFICATE)
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(SERVER_KEY).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certificates, key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!(
            "https://localhost:{}",
            listener.local_addr().unwrap().port()
        );
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (acceptor, answer) = (acceptor.clone(), answer.clone());
                tokio::spawn(async move {
                    if let Ok(stream) = acceptor.accept(stream).await {
                        serve_one(stream, Some(answer)).await;
                    }
                });
            }
        });
        address
    }

    async fn get(client: &aws_sdk_s3::Client) -> Result<Vec<u8>, String> {
        let output = client
            .get_object()
            .bucket("bucket")
            .key("chunk")
            .send()
            .await
            .map_err(|error| format!("{}", aws_sdk_s3::error::DisplayErrorContext(error)))?;
        let body = output
            .body
            .collect()
            .await
            .map_err(|error| error.to_string())?;
        Ok(body.into_bytes().to_vec())
    }

    #[tokio::test]
    async fn https_endpoints_are_verified_against_the_trusted_roots() {
        // Larger than the read buffer: the body arrives over several reads.
        let body: Vec<u8> = (0..300 * 1024).map(|i| (i % 251) as u8).collect();
        let endpoint = tls_server(response("", &body)).await;

        let trusting = s3_client(S3HttpClient::with_roots(test_roots()), &endpoint, 1);
        assert_eq!(get(&trusting).await.unwrap(), body);

        let untrusting = s3_client(
            S3HttpClient::with_roots(rustls::RootCertStore::empty()),
            &endpoint,
            1,
        );
        let error = get(&untrusting).await.unwrap_err();
        assert!(error.contains("certificate"), "{error}");
    }

    #[tokio::test]
    async fn a_connection_dropped_before_the_response_is_retried() {
        // The first connection hangs up after the request (hyper: an incomplete message), the
        // second answers: the SDK retries only failures classified as transient, so this passes
        // only if a response cut short is one.
        let (endpoint, connections) =
            plain_server(|n| (n > 0).then(|| response("", b"second try"))).await;
        let client = s3_client(S3HttpClient::with_roots(test_roots()), &endpoint, 3);
        assert_eq!(get(&client).await.unwrap(), b"second try");
        assert_eq!(connections.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_response_head_larger_than_the_read_buffer_is_refused() {
        // hyper refuses a head once what it has buffered of it, still incomplete, reaches the
        // limit, which makes the limit observable: hyper's default (~400 KiB) would take the
        // 300 KiB header. (The check runs between reads, so a head only a little over the limit
        // can slip through in one read; 300 KiB cannot.)
        let header = |size: usize| format!("x-padding: {}\r\n", "a".repeat(size));
        let (small, _) = plain_server(move |_| Some(response(&header(32 * 1024), b"fits"))).await;
        let (large, _) =
            plain_server(move |_| Some(response(&header(300 * 1024), b"too large"))).await;
        let http = || S3HttpClient::with_roots(test_roots());
        assert_eq!(get(&s3_client(http(), &small, 1)).await.unwrap(), b"fits");
        let error = get(&s3_client(http(), &large, 1)).await.unwrap_err();
        assert!(error.contains("too large"), "{error}");
    }

    #[tokio::test]
    async fn a_tls_handshake_that_never_completes_ends_at_the_connect_timeout() {
        // Accepts the connection and never answers the ClientHello: hyper's TCP connect limit
        // has passed by then, and no attempt timeout is set, so only ours can end it.
        let (address, _) = plain_server(|_| None).await;
        let endpoint = address.replace("http://", "https://");
        let client = s3_client(S3HttpClient::with_roots(test_roots()), &endpoint, 1);
        let started = std::time::Instant::now();
        let error = tokio::time::timeout(Duration::from_secs(10), get(&client))
            .await
            .expect("the request hung past the connect timeout")
            .unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert!(error.contains("within 300ms"), "{error}");
    }
}
