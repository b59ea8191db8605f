//! Resource governance of request bodies: the idle timeout that ends a client which stops
//! sending (uploads, chunk uploads, JSON bodies, request heads), and the server-wide and
//! per-principal limits on concurrent uploads. Stalling clients are written by hand over TCP:
//! an HTTP client library always finishes the body it was given.

use std::time::Duration;

use futures::StreamExt;
use reqwest::{Method, StatusCode};
use sea_orm::{EntityTrait, PaginatorTrait};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::packages::random_archive;
use niso_test_support::archives::sha256_hex;
use niso_test_support::for_each_backend;
use niso_test_support::{Backend, TestApp, archives, stalled_request, test_settings};

for_each_backend!(
    a_stalled_upload_is_aborted_with_408_and_its_lease_released,
    a_stalled_chunk_upload_is_aborted_with_408,
    a_stalled_json_body_is_cut_off,
    a_slow_request_head_is_cut_off,
    an_upload_that_keeps_sending_is_not_cut_off,
    concurrent_uploads_per_principal_are_limited_with_429,
    server_wide_concurrent_uploads_are_limited_with_503,
);

const ARCH: &str = "x86_64-linux";

/// Longest a test waits for the server to end a stalled connection. The configured timeouts
/// in these tests are 1–2 s; without them the server would wait forever (or 30 s for heads).
const CUT_OFF_WAIT: Duration = Duration::from_secs(15);

async fn app_with(
    backend: Backend,
    idle_timeout_secs: u64,
    max_uploads: usize,
    per_principal: usize,
) -> TestApp {
    let mut settings = test_settings();
    settings.body_idle_timeout = Duration::from_secs(idle_timeout_secs);
    settings.max_concurrent_uploads = max_uploads;
    settings.max_uploads_per_principal = per_principal;
    TestApp::with_settings(backend, settings).await
}

/// A response read off a raw connection up to the server closing it.
struct RawResponse {
    status: u16,
    head: String,
    body: Value,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
    }
}

/// Reads until the server closes the connection (panics if it has not within
/// [`CUT_OFF_WAIT`]); the response it sent first, if any.
async fn read_until_closed(mut stream: TcpStream) -> Option<RawResponse> {
    let mut received = Vec::new();
    let read = tokio::time::timeout(CUT_OFF_WAIT, async {
        let mut buffer = [0u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(count) => received.extend_from_slice(&buffer[..count]),
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "the server kept the stalled connection open for {CUT_OFF_WAIT:?}; received so far: {:?}",
        String::from_utf8_lossy(&received)
    );
    if received.is_empty() {
        return None;
    }
    let text = String::from_utf8_lossy(&received).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    Some(RawResponse {
        status,
        head: head.to_owned(),
        body: serde_json::from_str(body).unwrap_or(Value::String(body.to_owned())),
    })
}

/// Upload rows open (each one holds its leases).
async fn open_uploads(app: &TestApp) -> u64 {
    entity::upload::Entity::find()
        .count(app.registry.database())
        .await
        .expect("count uploads")
}

/// Polls until `open_uploads` is `expected`.
async fn wait_for_open_uploads(app: &TestApp, expected: u64) {
    let deadline = tokio::time::Instant::now() + CUT_OFF_WAIT;
    loop {
        let open = open_uploads(app).await;
        if open == expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{open} uploads open, expected {expected}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[track_caller]
fn assert_error_with_retry_after(
    response: &(StatusCode, Value, Option<String>),
    status: StatusCode,
) {
    let (actual, body, retry_after) = response;
    assert_eq!(*actual, status, "body: {body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|message| !message.is_empty()),
        "error body without a message: {body}"
    );
    let seconds: u64 = retry_after
        .as_deref()
        .unwrap_or_else(|| panic!("{status} without Retry-After"))
        .parse()
        .expect("Retry-After in seconds");
    assert!(seconds >= 1, "Retry-After: {seconds}");
}

/// An archive upload; the status, the body and the Retry-After header.
async fn upload_with_retry_after(
    app: &TestApp,
    key: &str,
    name: &str,
    version: &str,
) -> (StatusCode, Value, Option<String>) {
    let archive = archives::niso(name, version, &[("bin/tool", b"#!/bin/sh\n")]);
    put_with_retry_after(
        app,
        key,
        &format!("/v1/packages/{name}/{version}/{ARCH}"),
        archive,
    )
    .await
}

/// A chunk upload; the status, the body and the Retry-After header.
async fn chunk_upload_with_retry_after(
    app: &TestApp,
    key: &str,
    data: Vec<u8>,
) -> (StatusCode, Value, Option<String>) {
    let path = format!("/v1/chunks/{}", sha256_hex(&data));
    put_with_retry_after(app, key, &path, data).await
}

async fn put_with_retry_after(
    app: &TestApp,
    key: &str,
    path: &str,
    body: Vec<u8>,
) -> (StatusCode, Value, Option<String>) {
    let response = app
        .client
        .put(app.url(path))
        .bearer_auth(key)
        .body(body)
        .send()
        .await
        .expect("upload");
    let status = response.status();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|value| value.to_str().expect("ASCII").to_owned());
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body, retry_after)
}

async fn a_stalled_upload_is_aborted_with_408_and_its_lease_released(backend: Backend) {
    let app = app_with(backend, 1, 8, 8).await;
    let key = app.register("alice").await;
    let name = "@alice/app";
    // The upload stores chunks before it stalls, so it holds leases.
    let archive = random_archive(name, "1.0.0", 3 * 1024 * 1024, 11);
    let sent = &archive[..2 * 1024 * 1024];
    let stream = stalled_request(
        app.address(),
        "PUT",
        &format!("/v1/packages/{name}/1.0.0/{ARCH}"),
        Some(&key),
        archive.len(),
        sent,
    )
    .await;
    let response = read_until_closed(stream)
        .await
        .expect("an answer before the connection closes");
    assert_eq!(response.status, 408, "{}", response.head);
    assert!(
        response.body["error"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{}",
        response.body
    );
    assert_eq!(
        response.header("connection").as_deref(),
        Some("close"),
        "{}",
        response.head
    );
    // The upload row and its leases go with the aborted upload.
    wait_for_open_uploads(&app, 0).await;
    let upload_chunks = entity::upload_chunk::Entity::find()
        .count(app.registry.database())
        .await
        .expect("count leases");
    assert_eq!(upload_chunks, 0, "leases left behind");
    // Nothing of the aborted upload is visible, and the same version can be uploaded.
    let (status, body) = app.upload(&key, name, "1.0.0", ARCH, archive).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

async fn a_stalled_chunk_upload_is_aborted_with_408(backend: Backend) {
    let app = app_with(backend, 1, 8, 8).await;
    let admin = app.admin_key().await;
    let data = archives::random_bytes(256 * 1024, 3);
    let stream = stalled_request(
        app.address(),
        "PUT",
        &format!("/v1/chunks/{}", sha256_hex(&data)),
        Some(&admin),
        data.len(),
        &data[..1000],
    )
    .await;
    let response = read_until_closed(stream)
        .await
        .expect("an answer before the connection closes");
    assert_eq!(response.status, 408, "{}", response.head);
    assert!(response.body["error"].is_string(), "{}", response.body);
    wait_for_open_uploads(&app, 0).await;
    // The limits' slot went with it: a chunk upload still works.
    let (status, body) = app
        .send_bytes(
            Method::PUT,
            &format!("/v1/chunks/{}", sha256_hex(&data)),
            Some(&admin),
            data,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

async fn a_stalled_json_body_is_cut_off(backend: Backend) {
    let app = app_with(backend, 1, 8, 8).await;
    app.register("alice").await;
    let stream = stalled_request(
        app.address(),
        "POST",
        "/v1/auth/login",
        None,
        10_000,
        br#"{"username": "alice", "#,
    )
    .await;
    // The JSON extractor owns the status of a body it could not read (4xx either way); what
    // matters here is that the connection ends.
    if let Some(response) = read_until_closed(stream).await {
        assert!(
            (400..500).contains(&response.status),
            "{} {}",
            response.head,
            response.body
        );
    }
}

async fn a_slow_request_head_is_cut_off(backend: Backend) {
    let mut settings = test_settings();
    settings.header_read_timeout = Duration::from_secs(1);
    let app = TestApp::with_settings(backend, settings).await;
    let address = app.base.strip_prefix("http://").expect("http base");
    let mut stream = TcpStream::connect(address).await.expect("connect");
    stream
        .write_all(format!("GET /health HTTP/1.1\r\nHost: {address}\r\nX-Slow: ").as_bytes())
        .await
        .expect("send part of a head");
    // hyper may answer 408 or just close; either way the connection must end.
    if let Some(response) = read_until_closed(stream).await {
        assert_eq!(response.status, 408, "{}", response.head);
    }
    // The server still serves others.
    let (status, _) = app.get("/health").await;
    assert_eq!(status, StatusCode::OK);
}

async fn an_upload_that_keeps_sending_is_not_cut_off(backend: Backend) {
    let app = app_with(backend, 2, 8, 8).await;
    let key = app.register("alice").await;
    let name = "@alice/slow";
    let archive = random_archive(name, "1.0.0", 64 * 1024, 5);
    let checksum = sha256_hex(&archive);
    // Twice the idle timeout in total, but never idle for more than a tenth of it.
    let pieces: Vec<Vec<u8>> = archive
        .chunks(archive.len() / 20 + 1)
        .map(<[u8]>::to_vec)
        .collect();
    let body = futures::stream::iter(pieces).then(|piece| async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        Ok::<_, std::io::Error>(piece)
    });
    let response = app
        .client
        .put(app.url(&format!("/v1/packages/{name}/1.0.0/{ARCH}")))
        .bearer_auth(&key)
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .expect("upload");
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["checksum"], checksum);
}

async fn concurrent_uploads_per_principal_are_limited_with_429(backend: Backend) {
    let app = app_with(backend, 60, 10, 1).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let archive = archives::niso("@alice/app", "1.0.0", &[("bin/tool", b"#!/bin/sh\n")]);
    let stalled = stalled_request(
        app.address(),
        "PUT",
        &format!("/v1/packages/@alice/app/1.0.0/{ARCH}"),
        Some(&alice),
        archive.len(),
        &archive[..100],
    )
    .await;
    wait_for_open_uploads(&app, 1).await;

    let refused = upload_with_retry_after(&app, &alice, "@alice/app", "2.0.0").await;
    assert_error_with_retry_after(&refused, StatusCode::TOO_MANY_REQUESTS);
    // Another key of the same user shares the user's limit (minting keys does not lift it).
    let (status, created) = app
        .post(
            "/v1/auth/keys",
            Some(&alice),
            json!({ "name": "ci", "scope": "push:@alice/*" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let second_key = created["key"].as_str().expect("key").to_owned();
    let refused = upload_with_retry_after(&app, &second_key, "@alice/app", "2.0.0").await;
    assert_error_with_retry_after(&refused, StatusCode::TOO_MANY_REQUESTS);
    // Other principals are not affected.
    let (status, body, _) = upload_with_retry_after(&app, &bob, "@bob/app", "1.0.0").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // The slot is released when the stalled client goes away.
    drop(stalled);
    wait_for_open_uploads(&app, 0).await;
    let deadline = tokio::time::Instant::now() + CUT_OFF_WAIT;
    loop {
        let (status, body, _) = upload_with_retry_after(&app, &alice, "@alice/app", "2.0.0").await;
        if status == StatusCode::CREATED {
            break;
        }
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slot was never released"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn server_wide_concurrent_uploads_are_limited_with_503(backend: Backend) {
    let app = app_with(backend, 60, 2, 5).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let admin = app.admin_key().await;
    let archive = archives::niso("@alice/app", "1.0.0", &[("bin/tool", b"#!/bin/sh\n")]);
    let mut stalled = Vec::new();
    for version in ["1.0.0", "1.0.1"] {
        stalled.push(
            stalled_request(
                app.address(),
                "PUT",
                &format!("/v1/packages/@alice/app/{version}/{ARCH}"),
                Some(&alice),
                archive.len(),
                &archive[..100],
            )
            .await,
        );
    }
    wait_for_open_uploads(&app, 2).await;

    let refused = upload_with_retry_after(&app, &bob, "@bob/app", "1.0.0").await;
    assert_error_with_retry_after(&refused, StatusCode::SERVICE_UNAVAILABLE);
    let refused =
        chunk_upload_with_retry_after(&app, &admin, archives::random_bytes(1024, 1)).await;
    assert_error_with_retry_after(&refused, StatusCode::SERVICE_UNAVAILABLE);
    // Reads go on.
    let (status, _) = app.get("/v1/packages").await;
    assert_eq!(status, StatusCode::OK);

    drop(stalled.pop());
    let deadline = tokio::time::Instant::now() + CUT_OFF_WAIT;
    loop {
        let (status, body, _) = upload_with_retry_after(&app, &bob, "@bob/app", "1.0.0").await;
        if status == StatusCode::CREATED {
            break;
        }
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slot was never released"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
