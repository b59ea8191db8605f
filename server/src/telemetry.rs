//! Logs and traces.
//!
//! Logs are JSON lines on stderr by default (`NISO_LOG_FORMAT=text` for human-readable ones),
//! filtered by `NISO_LOG` (default `info`). When `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, spans are also exported over OTLP/HTTP with
//! protobuf bodies (the collector's port 4318; the base URL gets `/v1/traces` appended), and
//! trace context is taken from incoming W3C `traceparent` headers (see `http::observe`).
//! The standard `OTEL_*` variables apply: `OTEL_SERVICE_NAME` (default: the binary's name),
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT`,
//! `OTEL_BSP_SCHEDULE_DELAY`, `OTEL_TRACES_SAMPLER`, `OTEL_SDK_DISABLED`… Only the HTTP/protobuf
//! protocol is built in.
//!
//! The exporter sends through the workspace's reqwest client (rustls) on the process's tokio
//! runtime, so no second HTTP stack or TLS library is compiled in.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

/// The variables that turn span export on.
const ENDPOINT_VARIABLES: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

/// Keeps the span exporter alive; `shutdown` flushes the spans still buffered.
#[must_use = "dropping the telemetry guard without `shutdown` loses buffered spans"]
pub struct Telemetry {
    tracer_provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Installs the global `tracing` subscriber (logs, and spans to OTLP when configured) for
    /// a process named `service_name`. Must run inside a tokio runtime.
    pub fn init(service_name: &str) -> anyhow::Result<Telemetry> {
        let env = |name: &str| std::env::var(name).ok();
        let filter = || {
            EnvFilter::try_new(env("NISO_LOG").unwrap_or_else(|| "info".into()))
                .unwrap_or_else(|_| EnvFilter::new("info"))
        };
        let json = env("NISO_LOG_FORMAT").is_none_or(|format| format != "text");
        // Logs go to stderr so subcommands' JSON output on stdout stays machine-readable.
        let logs = if json {
            tracing_subscriber::fmt::layer()
                .json()
                .with_writer(std::io::stderr)
                .with_filter(filter())
                .boxed()
        } else {
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(filter())
                .boxed()
        };
        let export = ENDPOINT_VARIABLES
            .iter()
            .any(|name| env(name).is_some_and(|value| !value.trim().is_empty()))
            && env("OTEL_SDK_DISABLED").is_none_or(|value| !value.eq_ignore_ascii_case("true"));
        let (spans, tracer_provider) = if export {
            let provider = tracer_provider(service_name, env("OTEL_SERVICE_NAME").is_none())?;
            let tracer = provider.tracer(service_name.to_owned());
            opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
            let layer = tracing_opentelemetry::layer()
                .with_tracer(tracer)
                // The exporter's own HTTP client must not trace into itself.
                .with_filter(
                    filter()
                        .add_directive("hyper=off".parse()?)
                        .add_directive("reqwest=off".parse()?),
                )
                .boxed();
            (Some(layer), Some(provider))
        } else {
            (None, None)
        };
        tracing_subscriber::registry()
            .with(logs)
            .with(spans)
            .try_init()
            .map_err(|error| anyhow::anyhow!("cannot install the tracing subscriber: {error}"))?;
        if tracer_provider.is_some() {
            tracing::info!("exporting spans over OTLP/HTTP");
        }
        Ok(Telemetry { tracer_provider })
    }

    /// Whether spans are exported.
    pub fn exports_spans(&self) -> bool {
        self.tracer_provider.is_some()
    }

    /// Flushes and stops the span exporter.
    pub async fn shutdown(self) {
        if let Some(provider) = self.tracer_provider {
            // Shutting down blocks until the batch is exported, and the export runs on this
            // runtime: block a thread that is not one of its workers.
            let result = tokio::task::spawn_blocking(move || provider.shutdown()).await;
            if let Ok(Err(error)) = result {
                eprintln!("could not flush spans at shutdown: {error}");
            }
        }
    }
}

fn tracer_provider(service_name: &str, set_name: bool) -> anyhow::Result<SdkTracerProvider> {
    let client = TokioHttpClient {
        client: reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()?,
        runtime: tokio::runtime::Handle::try_current()
            .map_err(|_| anyhow::anyhow!("telemetry must be initialised inside a tokio runtime"))?,
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_http_client(client)
        .build()
        .map_err(|error| anyhow::anyhow!("invalid OTLP exporter settings: {error}"))?;
    let mut resource = Resource::builder().with_attribute(opentelemetry::KeyValue::new(
        "service.version",
        env!("CARGO_PKG_VERSION"),
    ));
    if set_name {
        resource = resource.with_service_name(service_name.to_owned());
    }
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build())
}

/// Largest collector response read (they are tiny; this bounds a misbehaving endpoint).
const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// The OTLP exporter's HTTP client: the batch span processor exports from its own thread
/// without a runtime, so each request is spawned onto the process's tokio runtime.
#[derive(Debug)]
struct TokioHttpClient {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl HttpClient for TokioHttpClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let task = self.runtime.spawn(async move {
            let request = reqwest::Request::try_from(request)?;
            let mut response = client.execute(request).await?;
            let mut builder = Response::builder().status(response.status());
            for (name, value) in response.headers() {
                builder = builder.header(name, value);
            }
            let mut body = Vec::new();
            while let Some(piece) = response.chunk().await? {
                if body.len() + piece.len() > MAX_RESPONSE_BYTES {
                    return Err::<Response<Bytes>, HttpError>(
                        "OTLP collector response too large".into(),
                    );
                }
                body.extend_from_slice(&piece);
            }
            Ok(builder.body(Bytes::from(body))?)
        });
        task.await?
    }
}
