//! Runs the `niso-server` binary with `OTEL_EXPORTER_OTLP_ENDPOINT` pointing at an OTLP/HTTP
//! receiver inside this test (POST /v1/traces, protobuf bodies decoded with
//! opentelemetry-proto) and asserts that requests produced server spans carrying the route
//! template, the status and the package name, joined to the caller's `traceparent`.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use tokio::io::{AsyncBufReadExt, BufReader};

use niso_test_support::archives;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN_ID: &str = "00f067aa0ba902b7";
const ARCHIVE_ROUTE: &str = "/v1/packages/{name}/{version}/{arch}";

#[derive(Clone, Default)]
struct Received {
    requests: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
    content_types: Arc<Mutex<Vec<String>>>,
}

/// A received span with its resource's attributes.
struct ReceivedSpan {
    span: Span,
    resource: Vec<KeyValue>,
}

impl Received {
    fn spans(&self) -> Vec<ReceivedSpan> {
        let requests = self.requests.lock().unwrap();
        let mut spans = Vec::new();
        for request in requests.iter() {
            for resource_spans in &request.resource_spans {
                let resource = resource_spans
                    .resource
                    .as_ref()
                    .map(|r| r.attributes.clone())
                    .unwrap_or_default();
                for scope_spans in &resource_spans.scope_spans {
                    for span in &scope_spans.spans {
                        spans.push(ReceivedSpan {
                            span: span.clone(),
                            resource: resource.clone(),
                        });
                    }
                }
            }
        }
        spans
    }
}

async fn receive_traces(
    State(received): State<Received>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, HeaderMap, Vec<u8>) {
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    received.content_types.lock().unwrap().push(content_type);
    let mut response_headers = HeaderMap::new();
    response_headers.insert("content-type", "application/x-protobuf".parse().unwrap());
    match ExportTraceServiceRequest::decode(body) {
        Ok(request) => {
            received.requests.lock().unwrap().push(request);
            (
                StatusCode::OK,
                response_headers,
                ExportTraceServiceResponse::default().encode_to_vec(),
            )
        }
        Err(_) => (StatusCode::BAD_REQUEST, response_headers, Vec::new()),
    }
}

fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|value: &AnyValue| value.value.as_ref())
}

fn string_attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    match attribute(attributes, key)? {
        any_value::Value::StringValue(value) => Some(value.clone()),
        _ => None,
    }
}

fn int_attribute(attributes: &[KeyValue], key: &str) -> Option<i64> {
    match attribute(attributes, key)? {
        any_value::Value::IntValue(value) => Some(*value),
        any_value::Value::StringValue(value) => value.parse().ok(),
        _ => None,
    }
}

/// The server process; killed if the test fails before stopping it.
struct ServerProcess {
    child: tokio::process::Child,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_exports_request_spans_over_otlp() {
    // The receiver.
    let received = Received::default();
    let app = axum::Router::new()
        .route("/v1/traces", post(receive_traces))
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    // The server, on ports of its choosing (read back from its start-up log line).
    let data_dir = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_niso-server"))
        .arg("serve")
        .env("NISO_LISTEN", "127.0.0.1:0")
        .env("NISO_METRICS_LISTEN", "127.0.0.1:0")
        .env("NISO_DATA_DIR", data_dir.path())
        .env("NISO_LOG", "info")
        .env("NISO_LOG_FORMAT", "json")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &collector)
        .env("OTEL_BSP_SCHEDULE_DELAY", "200")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env_remove("OTEL_SERVICE_NAME")
        .env_remove("OTEL_TRACES_SAMPLER")
        .env_remove("OTEL_SDK_DISABLED")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start niso-server");
    let stderr = child.stderr.take().unwrap();
    let server = ServerProcess { child };
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let (address_sender, address_receiver) = tokio::sync::oneshot::channel::<String>();
    {
        let log = log.clone();
        tokio::spawn(async move {
            let mut address_sender = Some(address_sender);
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line)
                    && entry["fields"]["message"] == "niso-server ready"
                    && let Some(sender) = address_sender.take()
                {
                    let _ = sender.send(entry["fields"]["listen"].as_str().unwrap().to_owned());
                }
                log.lock().unwrap().push(line);
            }
        });
    }
    let address = tokio::time::timeout(Duration::from_secs(60), address_receiver)
        .await
        .unwrap_or_else(|_| panic!("niso-server did not start: {:?}", log.lock().unwrap()))
        .unwrap_or_else(|_| panic!("niso-server exited: {:?}", log.lock().unwrap()));
    let base = format!("http://{address}");
    let client = reqwest::Client::new();
    let traceparent = format!("00-{TRACE_ID}-{PARENT_SPAN_ID}-01");

    // Requests: two joined to the caller's trace, two starting their own.
    let response = client
        .get(format!("{base}/health"))
        .header("traceparent", &traceparent)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = client
        .post(format!("{base}/v1/auth/register"))
        .json(&serde_json::json!({
            "username": "otel",
            "email": "otel@example.com",
            "password": "password-of-otel",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let api_key = response.json::<serde_json::Value>().await.unwrap()["api_key"]
        .as_str()
        .unwrap()
        .to_owned();
    let archive = archives::niso("@otel/tool", "1.0.0", &[("bin/tool", b"#!/bin/sh\n")]);
    let response = client
        .put(format!("{base}/v1/packages/@otel/tool/1.0.0/x86_64-linux"))
        .bearer_auth(&api_key)
        .header("traceparent", &traceparent)
        .body(archive)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let response = client
        .get(format!(
            "{base}/v1/packages/%40otel%2Ftool/1.0.0/x86_64-linux"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // Wait for the batch exporter (200 ms schedule) to deliver the upload's span.
    let is_upload = |span: &ReceivedSpan| {
        string_attribute(&span.span.attributes, "http.route").as_deref() == Some(ARCHIVE_ROUTE)
            && int_attribute(&span.span.attributes, "http.response.status_code") == Some(201)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !received.spans().iter().any(is_upload) {
        assert!(
            Instant::now() < deadline,
            "no upload span arrived; received {} span(s); server log: {:?}",
            received.spans().len(),
            log.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Stop the server gracefully: it flushes the spans still buffered and exits cleanly.
    let pid = server.child.id().expect("running").to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    let mut server = server;
    let exit = tokio::time::timeout(Duration::from_secs(30), server.child.wait())
        .await
        .expect("niso-server did not stop after SIGTERM")
        .unwrap();
    assert!(exit.success(), "{exit}; log: {:?}", log.lock().unwrap());

    let content_types = received.content_types.lock().unwrap().clone();
    assert!(
        content_types.iter().all(|t| t == "application/x-protobuf"),
        "{content_types:?}"
    );
    let spans = received.spans();
    let trace_id = hex::decode(TRACE_ID).unwrap();
    let parent_span_id = hex::decode(PARENT_SPAN_ID).unwrap();

    let upload = spans.iter().find(|s| is_upload(s)).unwrap();
    assert_eq!(upload.span.name, format!("PUT {ARCHIVE_ROUTE}"));
    assert_eq!(upload.span.kind, SpanKind::Server as i32);
    assert_eq!(
        string_attribute(&upload.span.attributes, "http.request.method").as_deref(),
        Some("PUT")
    );
    assert_eq!(
        string_attribute(&upload.span.attributes, "niso.package").as_deref(),
        Some("@otel/tool")
    );
    assert_eq!(upload.span.trace_id, trace_id, "joined the caller's trace");
    assert_eq!(upload.span.parent_span_id, parent_span_id);
    assert!(upload.span.end_time_unix_nano > upload.span.start_time_unix_nano);
    assert_eq!(
        string_attribute(&upload.resource, "service.name").as_deref(),
        Some("niso-server")
    );

    let health = spans
        .iter()
        .find(|s| string_attribute(&s.span.attributes, "http.route").as_deref() == Some("/health"))
        .expect("a /health span");
    assert_eq!(
        int_attribute(&health.span.attributes, "http.response.status_code"),
        Some(200)
    );
    assert_eq!(health.span.trace_id, trace_id);
    assert_eq!(health.span.name, "GET /health");

    // The download came without a traceparent: a new trace, a root span. The percent-encoded
    // name is reported decoded.
    let download = spans
        .iter()
        .find(|s| {
            string_attribute(&s.span.attributes, "http.route").as_deref() == Some(ARCHIVE_ROUTE)
                && int_attribute(&s.span.attributes, "http.response.status_code") == Some(200)
        })
        .expect("a download span");
    assert_ne!(download.span.trace_id, trace_id);
    assert!(download.span.parent_span_id.is_empty());
    assert_eq!(
        string_attribute(&download.span.attributes, "niso.package").as_deref(),
        Some("@otel/tool")
    );

    // Secrets never reach the traces.
    for span in &spans {
        for kv in &span.span.attributes {
            let text = format!("{:?}", kv.value);
            assert!(
                !text.contains(&api_key),
                "the API key leaked into {}",
                kv.key
            );
            assert!(
                !text.contains("password-of-otel"),
                "a password leaked into {}",
                kv.key
            );
        }
    }
}
