//! The HTTP API: routing, the shared state, and the middleware every request goes through
//! (metrics, tracing, error shape). Handlers are thin: their extractors parse and validate
//! (names into their types, bodies within limits), they call the registry, and map the result.
//!
//! Each resource file declares its handlers' routes with `#[utoipa::path]` and registers them
//! in its `routes()`; [`api`] merges those, so one declaration gives the axum route, the
//! OpenAPI operation (`openapi.rs`) and the metrics' route template (`MatchedPath`).

pub mod archives;
pub mod auth;
pub mod body;
pub mod chunks;
pub mod client_address;
pub mod error;
pub mod extract;
pub mod metrics;
pub mod namespaces;
pub mod openapi;
pub mod package_path;
pub mod packages;
pub mod range;
pub mod serve;
pub mod system;
pub mod tags;
pub mod token_exchange;
pub mod upload_sessions;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tracing::Instrument as _;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;

use niso_registry::Registry;
use niso_registry::error::Error;

use self::error::ApiError;
use self::metrics::{HttpMetrics, InFlight};

/// What axum's own body extractors may read, should a handler use one: as small as a JSON
/// body. Our JSON and chunk extractors (`extract.rs`) enforce their own limits and deadlines,
/// and archive uploads stream under theirs.
const DEFAULT_BODY_LIMIT: usize = 64 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub registry: Arc<Registry>,
    pub http_metrics: Arc<HttpMetrics>,
}

impl AppState {
    /// The state of one API: its HTTP series join the registry's metrics (once per registry).
    pub fn new(registry: Arc<Registry>) -> AppState {
        let http_metrics = Arc::new(HttpMetrics::register(registry.metrics()));
        AppState {
            registry,
            http_metrics,
        }
    }
}

/// Every endpoint with its OpenAPI operation.
pub fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDocument::openapi())
        .merge(system::routes())
        .merge(auth::routes())
        .merge(namespaces::routes())
        .merge(chunks::routes())
        .merge(packages::routes())
        .merge(tags::routes())
        .merge(archives::routes())
        .merge(upload_sessions::routes())
        .merge(token_exchange::routes())
}

/// The API's router. Package paths must be normalised before they reach it (see
/// `package_path.rs`; `serve` does it).
pub fn router(state: AppState) -> Router {
    let (routes, document) = api().split_for_parts();
    let document = Arc::new(openapi::with_security(document));
    routes
        .route(
            "/v1/openapi.json",
            get(move || {
                let document = document.clone();
                async move { axum::Json(document.as_ref().clone()) }
            }),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(DEFAULT_BODY_LIMIT))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

async fn not_found() -> Response {
    ApiError::from(Error::NotFound("no such endpoint".into())).into_response()
}

async fn method_not_allowed() -> Response {
    let mut response = ApiError::from(Error::Invalid("method not allowed on this endpoint".into()))
        .into_response();
    *response.status_mut() = axum::http::StatusCode::METHOD_NOT_ALLOWED;
    response
}

/// Counts and times every request by route template and status, logs it, and traces it: one
/// server span per request, a child of the caller's trace when a W3C `traceparent` header
/// comes in, carrying the route template, the status and the package name.
///
/// Label values and the span name come only from closed sets (see `metrics.rs`): the method
/// a client sends is any token it likes.
async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let method_label = metrics::method_label(&method);
    let matched = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned());
    let span_route = matched.clone().unwrap_or_else(|| "unmatched".to_owned());
    // The package a request names, for the trace (already decoded by the router).
    let package_name = matched
        .as_deref()
        .filter(|route| route.starts_with("/v1/packages/{name}"))
        .and_then(|_| package_parameter(&request));
    let span_name = format!("{method_label} {span_route}");
    let span = tracing::info_span!(
        "request",
        otel.name = span_name.as_str(),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = method_label,
        http.route = span_route.as_str(),
        http.response.status_code = tracing::field::Empty,
        url.path = request.uri().path(),
        niso.package = package_name.as_deref(),
    );
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&opentelemetry_http::HeaderExtractor(request.headers()))
    });
    // Fails only when no OpenTelemetry layer is installed, and then there is nothing to join.
    let _ = tracing_opentelemetry::OpenTelemetrySpanExt::set_parent(&span, parent);
    let metrics = state.http_metrics.clone();
    // Given back when dropped: when the client goes away mid-request this future is dropped
    // here, and a panicking handler unwinds through it.
    let in_flight = InFlight::start(&metrics.in_flight);
    let sends_body = matches!(method, Method::PUT | Method::POST | Method::PATCH);
    let mut response = next.run(request).instrument(span.clone()).await;
    if sends_body && !response.status().is_success() {
        // A rejected request may leave its body unread (auth and size checks come first), after
        // which hyper closes the connection: say so, or a client reusing it from its pool sees
        // its next request fail.
        response.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
    let route = span_route;
    // Our handlers and axum emit a closed set of statuses, so the code itself is the label.
    let status = response.status().as_u16().to_string();
    let elapsed = started.elapsed();
    metrics
        .requests
        .with_label_values(&[route.as_str(), method_label, status.as_str()])
        .inc();
    metrics
        .request_seconds
        .with_label_values(&[route.as_str(), method_label, status.as_str()])
        .observe(elapsed.as_secs_f64());
    span.record("http.response.status_code", response.status().as_u16());
    if response.status().is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    span.in_scope(|| {
        tracing::info!(
            method = method_label,
            route = %route,
            status = response.status().as_u16(),
            elapsed_ms = elapsed.as_millis() as u64,
            "request"
        )
    });
    // A streamed response (a download) is still being served until its body is sent or
    // dropped: the body carries the in-flight count from here.
    response.map(|body| {
        axum::body::Body::new(InFlightBody {
            inner: body,
            _in_flight: in_flight,
        })
    })
}

/// The `{name}` path parameter of a package route, percent-decoded.
fn package_parameter(request: &Request) -> Option<String> {
    let path = request.uri().path().strip_prefix("/v1/packages/")?;
    let segment = path.split('/').next()?;
    percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .ok()
        .map(|name| name.into_owned())
}

/// A response body that holds the request's in-flight count until it is sent or dropped. It
/// passes the inner body's size hint on, so a response of known length keeps its
/// `Content-Length` (hyper would otherwise send it chunked).
struct InFlightBody {
    inner: axum::body::Body,
    _in_flight: InFlight,
}

impl hyper::body::Body for InFlightBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        // `axum::body::Body` is a boxed body, hence Unpin: no projection needed.
        std::pin::Pin::new(&mut self.get_mut().inner).poll_frame(context)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Serves the API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let timeouts = serve::ClientTimeouts::from_settings(state.registry.settings());
    serve::serve_router(listener, router(state), timeouts, shutdown).await
}

/// Serves `/metrics` on its own listener.
pub async fn serve_metrics(
    listener: TcpListener,
    metrics: Arc<niso_registry::metrics::Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let metrics = metrics.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4",
                    )],
                    metrics.render(),
                )
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
