//! Issue 11, item 6: an upload that sends a byte and stalls must hold no thread. The server
//! runs on a runtime with a blocking pool of 4 threads; with more stalled uploads than that
//! open (each past the point where the validator starts), a normal upload must still succeed.
//! With a validator on a blocking thread per upload, the normal upload waits for a thread that
//! never frees up.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use reqwest::StatusCode;

use niso_test_support::{Backend, TestApp, archives};

const BLOCKING_THREADS: usize = 4;
const STALLED: usize = 12;
const ARCH: &str = "x86_64-linux";

#[test]
fn stalled_uploads_hold_no_thread_embedded() {
    on_small_blocking_pool(Backend::Embedded);
}

#[test]
fn stalled_uploads_hold_no_thread_production() {
    on_small_blocking_pool(Backend::Production);
}

fn on_small_blocking_pool(backend: Backend) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(BLOCKING_THREADS)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(scenario(backend));
    // The stalled requests never end by themselves.
    runtime.shutdown_background();
}

/// Bytes the upload loops have read, from the registry's own counter.
fn upload_bytes_total(app: &TestApp) -> u64 {
    app.registry.metrics().upload_bytes.get()
}

async fn scenario(backend: Backend) {
    let app = TestApp::start(backend).await;
    let key = app.register("stall").await;
    let mut stalled = Vec::new();
    for index in 0..STALLED {
        // The first byte of a gzip stream, then nothing, forever.
        let body =
            futures::stream::once(async { Ok::<_, std::io::Error>(Bytes::from_static(b"\x1f")) })
                .chain(futures::stream::pending());
        let request = app
            .client
            .put(app.url(&format!("/v1/packages/@stall/slow/1.0.{index}/{ARCH}")))
            .bearer_auth(&key)
            .header("content-type", "application/octet-stream")
            .body(reqwest::Body::wrap_stream(body))
            .send();
        stalled.push(tokio::spawn(request));
    }
    // Every stalled upload has handed its byte to the upload loop (and so to the validator).
    let mut polls = 0;
    while upload_bytes_total(&app) < STALLED as u64 {
        polls += 1;
        assert!(polls < 600, "the stalled uploads never reached the server");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let archive = archives::niso("@stall/normal", "1.0.0", &[("bin/tool", b"#!/bin/sh\n")]);
    // A deadlock guard, not a timing assertion: the upload takes milliseconds when it works.
    let (status, body) = tokio::time::timeout(
        Duration::from_secs(60),
        app.upload(&key, "@stall/normal", "1.0.0", ARCH, archive),
    )
    .await
    .expect("a normal upload hangs while stalled uploads are open");
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert!(stalled.iter().all(|request| !request.is_finished()));
}
