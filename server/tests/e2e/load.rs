//! One client cannot starve everyone (issue 11): while 600 uploads stall (a few bytes sent,
//! then nothing) and 50 JSON bodies stall the same way, another client registers, logs in,
//! uploads and downloads normally against a real `niso-server` process (embedded backend, the
//! default deployment). Asserted: the normal client's requests all succeed while every stalled
//! connection is still held open (so it did not merely outlast them), the server ends every
//! stalled connection by itself through the body idle timeout (the uploads with 408), and the
//! server's peak RSS (`VmHWM`) stays under 300 MiB. The figures are printed.
//!
//! The upload limits are raised so that all 600 stalled uploads are admitted: the test is about
//! what admitted, idle uploads cost the server, not about the limits refusing them.
//!
//! Bounded in time: the stalled connections last one idle timeout, and every wait has a limit.

use std::time::{Duration, Instant};

use niso_test_support::archives::sha256_hex;
use niso_test_support::process::{Server, env, eventually};
use niso_test_support::stalled_request;
use reqwest::StatusCode;
use serde_json::json;

use crate::NISO_SERVER;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

const STALLED_UPLOADS: usize = 600;
const SLOW_JSON_BODIES: usize = 50;
/// Long enough for the normal client to finish well inside it on a busy machine, short enough
/// to keep the test under two minutes.
const IDLE_TIMEOUT_SECS: u64 = 45;
const PEAK_RSS_LIMIT_MIB: u64 = 300;
const ARCH: &str = "x86_64-linux";

/// Whether the server has neither answered nor closed this connection yet.
fn still_held(stream: &TcpStream) -> bool {
    let mut buffer = [0u8; 1];
    matches!(
        stream.try_read(&mut buffer),
        Err(error) if error.kind() == std::io::ErrorKind::WouldBlock
    )
}

/// Reads until the server closes the connection; the status it answered, if any.
async fn status_when_closed(mut stream: TcpStream) -> Option<u16> {
    let mut received = Vec::new();
    let _ = stream.read_to_end(&mut received).await;
    let text = String::from_utf8_lossy(&received);
    text.split(' ').nth(1).and_then(|code| code.parse().ok())
}

fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc status");
    kib / 1024
}

/// What the normal client did, step by step, with how long each step took.
async fn normal_client(server: &Server) -> Vec<(&'static str, bool, Duration)> {
    let mut steps = Vec::new();
    let started = Instant::now();
    let (status, registered) = server
        .post(
            "/v1/auth/register",
            None,
            json!({
                "username": "normal",
                "email": "normal@example.com",
                "password": "password-of-normal",
            }),
        )
        .await;
    steps.push(("register", status == StatusCode::CREATED, started.elapsed()));
    let key = registered["api_key"]
        .as_str()
        .unwrap_or_default()
        .to_owned();

    let started = Instant::now();
    let (status, _) = server
        .post(
            "/v1/auth/login",
            None,
            json!({ "username": "normal", "password": "password-of-normal" }),
        )
        .await;
    steps.push(("login", status == StatusCode::OK, started.elapsed()));

    let payload = niso_test_support::archives::random_bytes(2 * 1024 * 1024, 9);
    let archive =
        niso_test_support::archives::niso("@normal/app", "1.0.0", &[("data/blob", &payload)]);
    let started = Instant::now();
    let (status, _) = server
        .upload(&key, "@normal/app", "1.0.0", ARCH, archive.clone())
        .await;
    steps.push(("upload", status == StatusCode::CREATED, started.elapsed()));

    let started = Instant::now();
    let (status, _, body) = server
        .download(&format!("/v1/packages/@normal/app/latest/{ARCH}"))
        .await;
    let same = status == StatusCode::OK && sha256_hex(&body) == sha256_hex(&archive);
    steps.push(("download", same, started.elapsed()));
    steps
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_normal_client_is_served_while_hundreds_of_uploads_stall() {
    let test_started = Instant::now();
    let idle = IDLE_TIMEOUT_SECS.to_string();
    let server = NISO_SERVER
        .start(
            "loaded",
            &env(&[
                ("NISO_BODY_IDLE_TIMEOUT_SECS", &idle),
                ("NISO_HEADER_READ_TIMEOUT_SECS", &idle),
                ("NISO_MAX_CONCURRENT_UPLOADS", "1000"),
                ("NISO_MAX_UPLOADS_PER_PRINCIPAL", "1000"),
            ]),
        )
        .await;
    let address = server
        .base
        .strip_prefix("http://")
        .expect("http base")
        .to_owned();
    let staller = server.register("staller").await;
    // A real archive's first bytes: the upload starts (row, validator, chunker) and waits.
    let archive =
        niso_test_support::archives::niso("@staller/app", "1.0.0", &[("bin/tool", b"#!/bin/sh\n")]);

    let mut uploads = Vec::with_capacity(STALLED_UPLOADS);
    for batch in 0..STALLED_UPLOADS.div_ceil(50) {
        let opened = (batch * 50..STALLED_UPLOADS.min(batch * 50 + 50)).map(|index| {
            let path = format!("/v1/packages/@staller/app/1.0.{index}/{ARCH}");
            let (address, staller, archive) = (&address, &staller, &archive);
            async move {
                stalled_request(
                    address,
                    "PUT",
                    &path,
                    Some(staller),
                    1024 * 1024,
                    &archive[..512],
                )
                .await
            }
        });
        uploads.extend(futures::future::join_all(opened).await);
    }
    let mut json_bodies = Vec::with_capacity(SLOW_JSON_BODIES);
    for _ in 0..SLOW_JSON_BODIES {
        json_bodies.push(
            stalled_request(
                &address,
                "POST",
                "/v1/auth/login",
                None,
                4096,
                br#"{"username": "staller", "pass"#,
            )
            .await,
        );
    }
    // Every stalled request has reached a handler (the in-flight gauge counts them), and every
    // stalled upload has begun and consumed its first bytes (the upload byte counter).
    let stalled_total = (STALLED_UPLOADS + SLOW_JSON_BODIES) as f64;
    let first_bytes = (STALLED_UPLOADS * 512) as f64;
    eventually(
        Duration::from_secs(120),
        "all stalled requests in flight and every upload started",
        || async {
            let in_flight = server.metric("niso_http_requests_in_flight").await;
            let received = server.metric("niso_upload_bytes_total").await;
            (in_flight >= stalled_total && received >= first_bytes).then_some(())
        },
    )
    .await;
    let stalls_opened_after = test_started.elapsed();

    let normal_started = Instant::now();
    let steps = tokio::time::timeout(
        Duration::from_secs(IDLE_TIMEOUT_SECS * 3),
        normal_client(&server),
    )
    .await
    .expect("the normal client finished (it may be served only once the stalls end)");
    let normal_duration = normal_started.elapsed();
    let uploads_held = uploads.iter().filter(|s| still_held(s)).count();
    let json_held = json_bodies.iter().filter(|s| still_held(s)).count();

    // The server ends every stalled connection by itself.
    let ended = tokio::time::timeout(Duration::from_secs(IDLE_TIMEOUT_SECS * 3), async {
        let uploads = futures::future::join_all(uploads.into_iter().map(status_when_closed));
        let json = futures::future::join_all(json_bodies.into_iter().map(status_when_closed));
        futures::future::join(uploads, json).await
    })
    .await;
    let stalls_ended_after = normal_started.elapsed();
    let peak_rss = peak_rss_mib(server.pid());

    println!(
        "load test ({STALLED_UPLOADS} stalled uploads, {SLOW_JSON_BODIES} stalled JSON bodies, idle timeout {IDLE_TIMEOUT_SECS} s):"
    );
    println!("  stalled requests open and in flight after {stalls_opened_after:.1?}");
    for (step, ok, took) in &steps {
        println!(
            "  normal client: {step}: {} in {took:.2?}",
            if *ok { "ok" } else { "FAILED" }
        );
    }
    println!("  normal client total: {normal_duration:.2?}");
    println!(
        "  still held when the normal client finished: {uploads_held}/{STALLED_UPLOADS} uploads, \
         {json_held}/{SLOW_JSON_BODIES} JSON bodies"
    );
    println!(
        "  all stalled connections ended {stalls_ended_after:.1?} after the normal client started"
    );
    println!("  server peak RSS (VmHWM): {peak_rss} MiB");
    println!("  test duration: {:.1?}", test_started.elapsed());

    for (step, ok, _) in &steps {
        assert!(ok, "the normal client's {step} failed");
    }
    assert_eq!(
        (uploads_held, json_held),
        (STALLED_UPLOADS, SLOW_JSON_BODIES),
        "the normal client was served only after stalled connections had ended"
    );
    let (upload_statuses, json_statuses) =
        ended.expect("the server did not end every stalled connection");
    let timed_out = upload_statuses
        .iter()
        .filter(|status| **status == Some(408))
        .count();
    assert_eq!(
        timed_out, STALLED_UPLOADS,
        "stalled uploads' answers: {upload_statuses:?}"
    );
    assert!(
        json_statuses
            .iter()
            .all(|status| status.is_none_or(|status| (400..500).contains(&status))),
        "stalled JSON bodies' answers: {json_statuses:?}"
    );
    assert!(
        peak_rss < PEAK_RSS_LIMIT_MIB,
        "server peak RSS {peak_rss} MiB ≥ {PEAK_RSS_LIMIT_MIB} MiB"
    );
}
