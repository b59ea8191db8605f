//! Failures of real processes and real dependencies:
//! * a replica SIGKILLed in the middle of a large upload leaves no version; the retry through
//!   the other replica succeeds; once the dead upload's lease lapses, `niso-server gc --once
//!   --grace 0` reaps it and deletes its orphan chunks (objects included) while every chunk of
//!   the retried version stays, and it still downloads intact;
//! * PostgreSQL stopped under a serving process: API requests answer 503 with a JSON error
//!   within seconds (no hang, no 500), `/ready` is 503, `/health` 200; once PostgreSQL is back
//!   the same process serves normally again;
//! * the same for the S3 server: downloads, chunk reads and uploads answer 503 (metadata is
//!   still served from the database), and service resumes after the restart.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::SinkExt;
use niso_test_support::archives;
use niso_test_support::archives::sha256_hex;
use niso_test_support::assert_error;
use niso_test_support::postgres::DedicatedPostgres;
use niso_test_support::process::{Backing, Server, eventually};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::NISO_SERVER;

const ARCH: &str = "x86_64-linux";
const MIB: usize = 1 << 20;

/// How long a request may take to fail while a dependency is down. The database pool gives up
/// after 5 s; more than this is a hang.
const OUTAGE_ANSWER_BOUND: Duration = Duration::from_secs(10);

/// The keys of the objects s3s-fs keeps under `dir` (a bucket's directory).
fn object_keys(dir: &Path) -> Vec<String> {
    fn walk(dir: &Path, root: &Path, keys: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, root, keys);
            } else if let Ok(key) = path.strip_prefix(root) {
                keys.push(key.display().to_string());
            }
        }
    }
    let mut keys = Vec::new();
    walk(dir, dir, &mut keys);
    keys.sort();
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_upload_leaves_only_orphans_that_gc_collects() {
    let backing = Backing::new().await;
    let replica_env = backing.env(&[("NISO_UPLOAD_LEASE_SECS", "2")]);
    let mut servers = NISO_SERVER
        .start_all(&[("replica-a", &replica_env), ("replica-b", &replica_env)])
        .await;
    let b = servers.pop().expect("replica b");
    let mut a = servers.pop().expect("replica a");
    let key = a.register("grace").await;

    // 64 MiB. The first attempt and the retry share a 56 MiB payload; their leading 8 MiB
    // differ (a rebuilt binary), so the dead upload leaves orphan chunks *and* chunks that the
    // retry reuses — GC must delete the former and keep the latter.
    let name = "@grace/big";
    let manifest = archives::manifest(name, "2.0.0");
    let shared = archives::random_bytes(56 * MIB, 70);
    let build = |seed| {
        archives::tar_with_manifest(
            &manifest,
            &[
                ("bin/build", &archives::random_bytes(8 * MIB, seed)),
                ("lib/payload", &shared),
            ],
        )
    };
    let first = build(71);
    let retry = build(72);

    // Stream the first attempt to A, slowly, and stop feeding it once A has received 16 MiB.
    let (mut feed, body) = futures::channel::mpsc::channel::<Result<Bytes, std::io::Error>>(2);
    let request = a
        .client
        .put(a.url(&format!("/v1/packages/{name}/2.0.0/{ARCH}")))
        .bearer_auth(&key)
        .header("content-type", "application/octet-stream")
        .body(reqwest::Body::wrap_stream(body))
        .send();
    let upload = tokio::spawn(request);
    let mut sent = 0;
    for piece in first.chunks(256 * 1024) {
        feed.send(Ok(Bytes::copy_from_slice(piece)))
            .await
            .expect("the upload stopped reading early");
        sent += piece.len();
        if sent >= 16 * MIB {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // Received, chunked and stored: wait until the chunk count has not moved for 600 ms.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last_stored = -1.0;
    let mut unchanged = 0;
    loop {
        let received = a.metric("niso_upload_bytes_total").await;
        let stored = a.metric("niso_chunks_stored_total").await;
        unchanged = if stored == last_stored {
            unchanged + 1
        } else {
            0
        };
        if received >= (16 * MIB) as f64 && stored > 0.0 && unchanged >= 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "A did not receive and store 16 MiB: {received} bytes, {stored} chunks"
        );
        last_stored = stored;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("A stored {last_stored} chunks of the first attempt; killing it");
    let killed_at = Instant::now();
    a.kill();
    drop(feed);
    match tokio::time::timeout(Duration::from_secs(10), upload).await {
        Ok(Ok(Ok(response))) => panic!("the killed upload got a response: {}", response.status()),
        Ok(Ok(Err(_))) => {}
        Ok(Err(join_error)) => panic!("upload task: {join_error}"),
        Err(_) => panic!("the client did not notice that the server died"),
    }

    // No version appeared, on the surviving replica either.
    let (status, body) = b.get(&format!("/v1/packages/{name}/versions")).await;
    assert!(
        status == StatusCode::NOT_FOUND || body == json!([]),
        "versions after the killed upload: {status} {body}"
    );
    let (status, _, _) = b
        .download(&format!("/v1/packages/{name}/2.0.0/{ARCH}"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The retry through B succeeds and reads back intact.
    let (status, body) = b.upload(&key, name, "2.0.0", ARCH, retry.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["checksum"], sha256_hex(&retry));
    let download_path = format!("/v1/packages/{name}/2.0.0/{ARCH}");
    let (status, _, bytes) = b.download(&download_path).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        bytes == retry,
        "the retried version does not read back intact"
    );

    // Once the dead upload's lease (2 s) has lapsed, one GC pass with no grace period reaps it
    // and deletes its orphans.
    let lapsed = killed_at + Duration::from_secs(3);
    tokio::time::sleep_until(lapsed.into()).await;
    let gc_dir = tempfile::tempdir().expect("temp dir");
    let mut gc_env = backing.env(&[("NISO_UPLOAD_LEASE_SECS", "1")]);
    gc_env.push(("NISO_LOG".into(), "warn".into()));
    let gc = NISO_SERVER
        .run_cli(
            &["gc", "--once", "--grace", "0"],
            &gc_env,
            gc_dir.path(),
            Duration::from_secs(120),
        )
        .await;
    assert!(gc.status.success(), "gc failed: {}", gc.stderr);
    let report: Value = serde_json::from_str(gc.stdout.trim())
        .unwrap_or_else(|error| panic!("gc printed {:?}: {error}", gc.stdout));
    eprintln!("gc report: {report}");
    assert_eq!(report["uploads_reaped"], 1, "{report}");
    assert!(report["chunks_deleted"].as_u64() >= Some(1), "{report}");
    assert!(report["bytes_reclaimed"].as_u64() > Some(0), "{report}");

    // Every chunk of the retried version survived, objects included, and nothing else did.
    let (status, _, bytes) = b.download(&download_path).await;
    assert_eq!(status, StatusCode::OK);
    assert!(bytes == retry, "the retried version is damaged after GC");
    let (_, chunk_manifest) = b.get(&format!("{download_path}/chunks")).await;
    let mut hashes: Vec<&str> = chunk_manifest["chunks"]
        .as_array()
        .expect("chunks")
        .iter()
        .map(|chunk| chunk["hash"].as_str().expect("hash"))
        .collect();
    hashes.sort_unstable();
    hashes.dedup();
    let objects = object_keys(&backing.s3.bucket_dir(&backing.bucket));
    let extra: Vec<&String> = objects
        .iter()
        .filter(|key| !hashes.iter().any(|hash| key.contains(hash)))
        .collect();
    let missing: Vec<&&str> = hashes
        .iter()
        .filter(|hash| !objects.iter().any(|key| key.contains(**hash)))
        .collect();
    assert!(
        missing.is_empty(),
        "objects of live chunks are gone: {missing:?}"
    );
    assert!(
        extra.is_empty() && objects.len() == hashes.len(),
        "after GC the bucket should hold exactly the retried version's {} chunks; it has {} \
         objects, these not in the version: {extra:?}",
        hashes.len(),
        objects.len()
    );

    // A second pass finds nothing left to do.
    let again = NISO_SERVER
        .run_cli(
            &["gc", "--once", "--grace", "0"],
            &gc_env,
            gc_dir.path(),
            Duration::from_secs(120),
        )
        .await;
    assert!(again.status.success(), "gc failed: {}", again.stderr);
    let report: Value = serde_json::from_str(again.stdout.trim()).expect("gc JSON");
    assert_eq!(report["uploads_reaped"], 0, "{report}");
    assert_eq!(report["chunks_deleted"], 0, "{report}");
}

/// One request against a dependency that is down: its status, body and duration. Panics if it
/// takes longer than `bound` (a hang).
async fn timed(
    server: &Server,
    method: Method,
    path: &str,
    key: Option<&str>,
    body: Option<RequestBody>,
    bound: Duration,
) -> (StatusCode, Value, Duration) {
    let started = Instant::now();
    let mut request = server
        .client
        .request(method.clone(), server.url(path))
        .timeout(bound + Duration::from_secs(20));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    match body {
        Some(RequestBody::Json(json)) => request = request.json(&json),
        Some(RequestBody::Bytes(bytes)) => {
            request = request
                .header("content-type", "application/octet-stream")
                .body(bytes)
        }
        None => {}
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|error| panic!("{method} {path}: no answer: {error}"));
    let status = response.status();
    let text = response
        .text()
        .await
        .unwrap_or_else(|error| panic!("{method} {path}: body cut short: {error}"));
    let elapsed = started.elapsed();
    eprintln!("{method} {path} → {status} in {elapsed:?}");
    assert!(
        elapsed <= bound,
        "{method} {path} took {elapsed:?} (bound {bound:?}) to answer {status}"
    );
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value, elapsed)
}

enum RequestBody {
    Json(Value),
    Bytes(Vec<u8>),
}

#[track_caller]
fn assert_unavailable(answer: &(StatusCode, Value, Duration)) {
    assert_error(
        &(answer.0, answer.1.clone()),
        StatusCode::SERVICE_UNAVAILABLE,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgresql_outage_is_a_503_and_the_process_recovers() {
    let postgres = DedicatedPostgres::start();
    let backing = Backing::on_database(postgres.fresh_database().await);
    let server = NISO_SERVER.start("replica", &backing.env(&[])).await;
    let key = server.register("heidi").await;
    let name = "@heidi/app";
    let v1 = archives::niso(
        name,
        "1.0.0",
        &[("bin/app", &archives::random_bytes(MIB, 80))],
    );
    let (status, body) = server.upload(&key, name, "1.0.0", ARCH, v1.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let download_path = format!("/v1/packages/{name}/1.0.0/{ARCH}");
    assert_eq!(server.download(&download_path).await.0, StatusCode::OK);

    postgres.stop();
    let stopped_at = Instant::now();
    let bound = OUTAGE_ANSWER_BOUND;
    let health = timed(
        &server,
        Method::GET,
        "/health",
        None,
        None,
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(health.0, StatusCode::OK, "/health depends on nothing");
    assert_unavailable(&timed(&server, Method::GET, "/ready", None, None, bound).await);
    assert_unavailable(&timed(&server, Method::GET, "/v1/packages", None, None, bound).await);
    assert_unavailable(&timed(&server, Method::GET, &download_path, None, None, bound).await);
    let login = RequestBody::Json(json!({"username": "heidi", "password": "password-of-heidi"}));
    assert_unavailable(
        &timed(
            &server,
            Method::POST,
            "/v1/auth/login",
            None,
            Some(login),
            bound,
        )
        .await,
    );
    // Small: the answer comes before the body is read, and must not race a large send.
    let v2 = archives::niso(
        name,
        "1.1.0",
        &[("bin/app", &archives::random_bytes(50_000, 81))],
    );
    let upload_path = format!("/v1/packages/{name}/1.1.0/{ARCH}");
    let upload = RequestBody::Bytes(v2.clone());
    assert_unavailable(
        &timed(
            &server,
            Method::PUT,
            &upload_path,
            Some(&key),
            Some(upload),
            bound,
        )
        .await,
    );
    let health = timed(
        &server,
        Method::GET,
        "/health",
        None,
        None,
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(health.0, StatusCode::OK);
    eprintln!("outage checks took {:?}", stopped_at.elapsed());

    // PostgreSQL comes back: the same process serves again, without a restart.
    postgres.restart();
    let restarted_at = Instant::now();
    eventually(Duration::from_secs(20), "the API serves again", || async {
        (server.get("/v1/packages").await.0 == StatusCode::OK).then_some(())
    })
    .await;
    eprintln!(
        "serving again {:?} after PostgreSQL restarted",
        restarted_at.elapsed()
    );
    let (status, body) = server.get("/ready").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _, bytes) = server.download(&download_path).await;
    assert_eq!(status, StatusCode::OK);
    assert!(bytes == v1);
    let (status, body) = server.upload(&key, name, "1.1.0", ARCH, v2.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = server
        .post(
            "/v1/auth/login",
            None,
            json!({"username": "heidi", "password": "password-of-heidi"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_store_outage_is_a_503_and_the_process_recovers() {
    let mut backing = Backing::new().await;
    let server = NISO_SERVER.start("replica", &backing.env(&[])).await;
    let key = server.register("ivan").await;
    let name = "@ivan/app";
    let v1 = archives::niso(
        name,
        "1.0.0",
        &[("bin/app", &archives::random_bytes(MIB, 90))],
    );
    let (status, body) = server.upload(&key, name, "1.0.0", ARCH, v1.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let download_path = format!("/v1/packages/{name}/1.0.0/{ARCH}");
    let (_, chunk_manifest) = server.get(&format!("{download_path}/chunks")).await;
    let first_chunk = chunk_manifest["chunks"][0]["hash"]
        .as_str()
        .expect("a chunk")
        .to_owned();

    backing.s3.stop();
    // The SDK retries a refused connection with backoff before giving up.
    let bound = Duration::from_secs(30);
    let health = timed(
        &server,
        Method::GET,
        "/health",
        None,
        None,
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(health.0, StatusCode::OK, "/health depends on nothing");
    assert_unavailable(&timed(&server, Method::GET, "/ready", None, None, bound).await);
    // Metadata lives in the database and is still served.
    let versions_path = format!("/v1/packages/{name}/versions");
    let versions = timed(&server, Method::GET, &versions_path, None, None, bound).await;
    assert_eq!(versions.0, StatusCode::OK, "{}", versions.1);
    assert_unavailable(&timed(&server, Method::GET, &download_path, None, None, bound).await);
    let chunk_path = format!("/v1/chunks/{first_chunk}");
    assert_unavailable(&timed(&server, Method::GET, &chunk_path, None, None, bound).await);
    let v2 = archives::niso(
        name,
        "1.1.0",
        &[("bin/app", &archives::random_bytes(MIB, 91))],
    );
    let upload_path = format!("/v1/packages/{name}/1.1.0/{ARCH}");
    let upload = RequestBody::Bytes(v2.clone());
    assert_unavailable(
        &timed(
            &server,
            Method::PUT,
            &upload_path,
            Some(&key),
            Some(upload),
            bound,
        )
        .await,
    );
    // The failed upload left no version behind.
    let (_, versions) = server.get(&versions_path).await;
    assert_eq!(versions.as_array().map(Vec::len), Some(1), "{versions}");

    // The S3 server comes back: the same process serves again.
    backing.s3.restart();
    let restarted_at = Instant::now();
    eventually(Duration::from_secs(20), "downloads work again", || async {
        let (status, _, bytes) = server.download(&download_path).await;
        (status == StatusCode::OK && bytes == v1).then_some(())
    })
    .await;
    eprintln!(
        "serving again {:?} after S3 restarted",
        restarted_at.elapsed()
    );
    let (status, body) = server.get("/ready").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = server.upload(&key, name, "1.1.0", ARCH, v2.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, _, bytes) = server.download(&upload_path).await;
    assert_eq!(status, StatusCode::OK);
    assert!(bytes == v2);
}
