//! Upload sessions (`/v1/uploads…`): dedup-aware pushes through the binary, a push killed
//! halfway and resumed, and the API under hostile use.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{Niso, package_tree, set_version};
use niso_test_support::{Backend, TestApp, archives, assert_error, test_settings};

const NAME: &str = "@alice/tool";
const ARCH: &str = "x86_64-linux";

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

async fn a_new_version_sends_only_changed_chunks(backend: Backend) {
    let app = TestApp::start(backend).await;
    app.register("alice").await;
    let niso = Niso::new(&app.base);
    niso.login("alice").await;
    let tree = niso.path("tree");
    package_tree(&tree, NAME, "1.0.0", 12, 512 * 1024);
    let first = niso
        .json(&["push", tree.to_str().unwrap(), "--arch", ARCH])
        .await;
    assert_eq!(first["session"], true);
    assert_eq!(
        first["chunks_sent"], first["chunks"],
        "an empty registry lacks all"
    );
    assert_eq!(first["bytes_sent"], first["size"]);

    set_version(&tree, NAME, "1.0.1");
    let blob = tree.join("data/blob-7.bin");
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[12_345] ^= 1;
    std::fs::write(&blob, bytes).unwrap();
    let second = niso
        .json(&["push", tree.to_str().unwrap(), "--arch", ARCH])
        .await;
    let size = second["size"].as_u64().unwrap();
    let sent = second["bytes_sent"].as_u64().unwrap();
    assert!(
        second["chunks_sent"].as_u64().unwrap() <= 4,
        "a 1-byte edit and a version bump: {second}"
    );
    // Two chunks of at most 1 MiB of a 6 MiB archive.
    assert!(sent * 4 < size, "sent {sent} of {size}");

    // What was published is exactly the archive: pulled back byte for byte.
    let pulled = niso
        .json(&[
            "pull",
            &format!("{NAME}@1.0.1"),
            "--arch",
            ARCH,
            "-o",
            "back.niso",
        ])
        .await;
    assert_eq!(pulled["checksum"], second["checksum"]);
}

/// Forwards requests to `upstream`, but after `pass` chunk uploads have gone through, holds every
/// further chunk upload forever (a client that will be killed). Counts what it let through.
#[derive(Clone)]
struct Choke {
    upstream: String,
    client: reqwest::Client,
    pass: u64,
    admitted: Arc<AtomicU64>,
    passed_chunks: Arc<AtomicU64>,
    passed_bytes: Arc<AtomicU64>,
    held: Arc<tokio::sync::Notify>,
}

async fn choke(State(choke): State<Choke>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let is_chunk = parts.method == axum::http::Method::PUT && parts.uri.path().contains("/chunks/");
    if is_chunk {
        // A ticket per chunk, taken atomically: exactly `pass` chunks get through, however
        // many the client sends at once.
        if choke.admitted.fetch_add(1, Ordering::SeqCst) >= choke.pass {
            choke.held.notify_one();
            std::future::pending::<()>().await;
        }
    }
    let url = format!("{}{}", choke.upstream, parts.uri);
    let mut forwarded = choke
        .client
        .request(parts.method.clone(), url)
        .body(body.clone());
    for (name, value) in &parts.headers {
        if name != axum::http::header::HOST {
            forwarded = forwarded.header(name, value);
        }
    }
    let answer = forwarded.send().await.unwrap();
    if is_chunk && answer.status() == StatusCode::CREATED {
        choke
            .passed_bytes
            .fetch_add(body.len() as u64, Ordering::SeqCst);
        choke.passed_chunks.fetch_add(1, Ordering::SeqCst);
    }
    let mut response = Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        response = response.header(name, value);
    }
    response
        .body(Body::from(answer.bytes().await.unwrap()))
        .unwrap()
}

async fn a_killed_push_resumes_sending_only_what_is_missing(backend: Backend) {
    let app = TestApp::start(backend).await;
    let key = app.register("alice").await;
    let tree = tempfile::tempdir().unwrap();
    package_tree(tree.path(), NAME, "1.0.0", 16, 512 * 1024);

    let state = Choke {
        upstream: app.base.clone(),
        client: reqwest::Client::new(),
        pass: 5,
        admitted: Arc::default(),
        passed_chunks: Arc::default(),
        passed_bytes: Arc::default(),
        held: Arc::default(),
    };
    let proxy = Router::new().fallback(choke).with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, proxy).await.unwrap() });

    let through_proxy = Niso::new(&proxy_url);
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_niso"))
        .args(["push", tree.path().to_str().unwrap(), "--arch", ARCH, "-q"])
        .args(["--registry", &proxy_url])
        .env("NISO_TOKEN", &key)
        .env("NISO_CONFIG_DIR", through_proxy.config_dir())
        .env("NISO_CACHE_DIR", through_proxy.cache_dir())
        .env_remove("NISO_REGISTRY")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Five chunks are stored; the sixth is held: kill the client there.
    state.held.notified().await;
    // The five admitted ones may still be on their way to the registry: let them land.
    while state.passed_chunks.load(Ordering::SeqCst) < 5 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.kill().await.unwrap();
    assert_eq!(state.passed_chunks.load(Ordering::SeqCst), 5);
    let (status, _) = app
        .get(&format!("/v1/packages/{NAME}/1.0.0/{ARCH}/chunks"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing is published yet");

    let niso = Niso::new(&app.base);
    let resumed = niso
        .run_with(
            &[
                "push",
                tree.path().to_str().unwrap(),
                "--arch",
                ARCH,
                "--json",
            ],
            "",
            &[("NISO_TOKEN", &key)],
        )
        .await;
    assert_eq!(resumed.code, 0, "{resumed:?}");
    let resumed = resumed.json();
    let chunks = resumed["chunks"].as_u64().unwrap();
    let size = resumed["size"].as_u64().unwrap();
    assert_eq!(resumed["chunks_sent"], chunks - 5, "{resumed}");
    assert_eq!(
        resumed["bytes_sent"],
        size - state.passed_bytes.load(Ordering::SeqCst),
        "{resumed}"
    );
    let (status, manifest) = app
        .get(&format!("/v1/packages/{NAME}/1.0.0/{ARCH}/chunks"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(manifest["checksum"], resumed["checksum"]);
}

/// The archive's chunks as the registry cuts them.
fn cut(archive: &[u8]) -> Vec<bytes::Bytes> {
    let mut chunker = niso_registry::chunking::StreamChunker::new(
        niso_registry::chunking::ChunkingSettings::default(),
    );
    let mut chunks = chunker.push(archive);
    chunks.extend(chunker.finish());
    chunks
}

/// Opens a session for `archive` with `key` (the chunks as the registry cuts them).
async fn open(app: &TestApp, key: &str, archive: &[u8], version: &str) -> (StatusCode, Value) {
    let chunks = cut(archive);
    let declared: Vec<Value> = chunks
        .iter()
        .map(|chunk| json!({"hash": sha256(chunk), "size": chunk.len()}))
        .collect();
    app.post(
        "/v1/uploads",
        Some(key),
        json!({"name": NAME, "version": version, "arch": ARCH, "size": archive.len(),
               "checksum": sha256(archive), "chunks": declared}),
    )
    .await
}

async fn put_chunk(
    app: &TestApp,
    key: &str,
    id: i64,
    hash: &str,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let response = app
        .client
        .put(app.url(&format!("/v1/uploads/{id}/chunks/{hash}")))
        .bearer_auth(key)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn sessions_refuse_hostile_use(backend: Backend) {
    let app = TestApp::start(backend).await;
    let key = app.register("alice").await;
    let other = app.register("mallory").await;

    // The declaration is checked before anything is stored.
    let base = json!({"name": NAME, "version": "1.0.0", "arch": ARCH, "size": 10,
                      "checksum": "a".repeat(64)});
    let mut bad_sum = base.clone();
    bad_sum["chunks"] = json!([{"hash": "b".repeat(64), "size": 9}]);
    let message = assert_error(
        app.post("/v1/uploads", Some(&key), bad_sum).await,
        StatusCode::BAD_REQUEST,
    );
    assert!(message.contains("add up"), "{message}");
    let mut tiny = base.clone();
    tiny["chunks"] =
        json!([{"hash": "b".repeat(64), "size": 5}, {"hash": "c".repeat(64), "size": 5}]);
    assert_error(
        app.post("/v1/uploads", Some(&key), tiny).await,
        StatusCode::BAD_REQUEST,
    );
    let mut huge = base.clone();
    huge["size"] = json!(u64::MAX);
    huge["chunks"] = json!([]);
    assert_error(
        app.post("/v1/uploads", Some(&key), huge).await,
        StatusCode::PAYLOAD_TOO_LARGE,
    );
    let mut elsewhere = base.clone();
    elsewhere["name"] = json!("@mallory/tool");
    elsewhere["chunks"] = json!([{"hash": "b".repeat(64), "size": 10}]);
    assert_error(
        app.post("/v1/uploads", Some(&key), elsewhere).await,
        StatusCode::FORBIDDEN,
    );

    // A session for an archive whose manifest names another version.
    let archive = archives::niso(
        NAME,
        "9.9.9",
        &[("data", &archives::random_bytes(300_000, 1))],
    );
    let (status, session) = open(&app, &key, &archive, "1.0.0").await;
    assert_eq!(status, StatusCode::CREATED, "{session}");
    let id = session["id"].as_i64().unwrap();
    let missing: Vec<String> = serde_json::from_value(session["missing"].clone()).unwrap();
    assert!(!missing.is_empty());

    // Commit before the chunks: 409. Another key: 404. An undeclared or wrong chunk: 400.
    assert_error(
        app.post(&format!("/v1/uploads/{id}/commit"), Some(&key), Value::Null)
            .await,
        StatusCode::CONFLICT,
    );
    assert_error(
        put_chunk(&app, &other, id, &missing[0], vec![0; 10]).await,
        StatusCode::NOT_FOUND,
    );
    assert_error(
        put_chunk(&app, &key, id, &"d".repeat(64), vec![0; 10]).await,
        StatusCode::BAD_REQUEST,
    );

    let chunks = cut(&archive);
    let mut wrong = chunks[0].to_vec();
    wrong[0] ^= 1;
    let message = assert_error(
        put_chunk(&app, &key, id, &sha256(&chunks[0]), wrong).await,
        StatusCode::BAD_REQUEST,
    );
    assert!(message.contains("sha256"), "{message}");
    for chunk in &chunks {
        let (status, body) = put_chunk(&app, &key, id, &sha256(chunk), chunk.to_vec()).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    assert_error(
        app.post(
            &format!("/v1/uploads/{id}/commit"),
            Some(&other),
            Value::Null,
        )
        .await,
        StatusCode::NOT_FOUND,
    );
    // The same refusal as a streamed upload of the same bytes.
    let committed = assert_error(
        app.post(&format!("/v1/uploads/{id}/commit"), Some(&key), Value::Null)
            .await,
        StatusCode::BAD_REQUEST,
    );
    let streamed = assert_error(
        app.upload(&key, NAME, "1.0.0", ARCH, archive.clone()).await,
        StatusCode::BAD_REQUEST,
    );
    assert_eq!(committed, streamed);

    // Abandoning: the owner only, once; ids that are not numbers are a 400.
    assert_error(
        app.delete(&format!("/v1/uploads/{id}"), Some(&other)).await,
        StatusCode::NOT_FOUND,
    );
    let (status, _) = app.delete(&format!("/v1/uploads/{id}"), Some(&key)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_error(
        app.delete(&format!("/v1/uploads/{id}"), Some(&key)).await,
        StatusCode::NOT_FOUND,
    );
    assert_error(
        app.delete("/v1/uploads/abc", Some(&key)).await,
        StatusCode::BAD_REQUEST,
    );
}

async fn open_sessions_per_key_are_bounded(backend: Backend) {
    let app = TestApp::start(backend).await;
    let key = app.register("alice").await;
    let mut ids = Vec::new();
    for minor in 0..niso_registry::upload_sessions::MAX_OPEN_SESSIONS_PER_KEY {
        let version = format!("1.{minor}.0");
        let archive = archives::niso(NAME, &version, &[("a", b"a")]);
        let (status, session) = open(&app, &key, &archive, &version).await;
        assert_eq!(status, StatusCode::CREATED, "{session}");
        ids.push(session["id"].as_i64().unwrap());
    }
    let archive = archives::niso(NAME, "2.0.0", &[("a", b"a")]);
    let refused = assert_error(
        open(&app, &key, &archive, "2.0.0").await,
        StatusCode::TOO_MANY_REQUESTS,
    );
    assert!(refused.contains("open upload sessions"), "{refused}");
    // Resuming an open one is not a new session.
    let again = archives::niso(NAME, "1.0.0", &[("a", b"a")]);
    let (status, resumed) = open(&app, &key, &again, "1.0.0").await;
    assert_eq!(status, StatusCode::CREATED, "{resumed}");
    assert_eq!(resumed["id"], ids[0]);
    let (status, _) = app
        .delete(&format!("/v1/uploads/{}", ids[0]), Some(&key))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = open(&app, &key, &archive, "2.0.0").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

async fn an_abandoned_session_is_reaped_by_gc(backend: Backend) {
    let mut settings = test_settings();
    settings.upload_lease = Duration::from_secs(1);
    let app = TestApp::with_settings(backend, settings).await;
    let key = app.register("alice").await;
    let archive = archives::niso(
        NAME,
        "1.0.0",
        &[("data", &archives::random_bytes(200_000, 2))],
    );
    let (status, session) = open(&app, &key, &archive, "1.0.0").await;
    assert_eq!(status, StatusCode::CREATED, "{session}");
    let id = session["id"].as_i64().unwrap();
    let chunks = cut(&archive);
    for chunk in &chunks {
        let (status, _) = put_chunk(&app, &key, id, &sha256(chunk), chunk.to_vec()).await;
        assert_eq!(status, StatusCode::CREATED);
    }

    // Still leased: GC keeps the chunk while the session lives.
    let report = app.registry.collect_garbage(Duration::ZERO).await.unwrap();
    assert_eq!(report.chunks_deleted, 0);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let report = app.registry.collect_garbage(Duration::ZERO).await.unwrap();
    assert_eq!(report.uploads_reaped, 1);
    assert_eq!(
        report.chunks_deleted,
        chunks.len() as u64,
        "its chunks became orphans"
    );
    assert_error(
        app.post(&format!("/v1/uploads/{id}/commit"), Some(&key), Value::Null)
            .await,
        StatusCode::NOT_FOUND,
    );
}

/// The GC invariant across a session: chunks a session leased at open (declared, already
/// stored, never sent) survive the deletion of the only version that referenced them and a GC
/// pass with no grace period, and the commit publishes a complete archive.
async fn chunks_leased_at_open_survive_gc(backend: Backend) {
    let app = TestApp::start(backend).await;
    let key = app.register("alice").await;
    let data = archives::random_bytes(2 * 1024 * 1024, 3);
    let first = archives::niso(NAME, "1.0.0", &[("data", &data)]);
    let (status, body) = app.upload(&key, NAME, "1.0.0", ARCH, first.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let second = archives::niso(NAME, "2.0.0", &[("data", &data)]);
    let (status, session) = open(&app, &key, &second, "2.0.0").await;
    assert_eq!(status, StatusCode::CREATED, "{session}");
    let id = session["id"].as_i64().unwrap();
    let missing: Vec<String> = serde_json::from_value(session["missing"].clone()).unwrap();
    let chunks = cut(&second);
    assert!(
        missing.len() < chunks.len(),
        "most chunks are shared with 1.0.0"
    );

    let (status, _) = app
        .delete(&format!("/v1/packages/{NAME}/1.0.0/{ARCH}"), Some(&key))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let report = app.registry.collect_garbage(Duration::ZERO).await.unwrap();
    // Only 1.0.0's own chunks (the one with its manifest) go; the declared ones are leased.
    let declared: std::collections::HashSet<String> = chunks.iter().map(|c| sha256(c)).collect();
    let only_first = cut(&first)
        .iter()
        .filter(|chunk| !declared.contains(&sha256(chunk)))
        .count() as u64;
    assert!(only_first >= 1);
    assert_eq!(report.chunks_deleted, only_first);

    for chunk in chunks
        .iter()
        .filter(|chunk| missing.contains(&sha256(chunk)))
    {
        let (status, body) = put_chunk(&app, &key, id, &sha256(chunk), chunk.to_vec()).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (status, committed) = app
        .post(&format!("/v1/uploads/{id}/commit"), Some(&key), Value::Null)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{committed}");
    assert_eq!(committed["checksum"], sha256(&second));
    app.registry.collect_garbage(Duration::ZERO).await.unwrap();
    let (status, _, downloaded) = app
        .download(&format!("/v1/packages/{NAME}/2.0.0/{ARCH}"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(downloaded, second);
}

niso_test_support::for_each_backend!(
    a_new_version_sends_only_changed_chunks,
    a_killed_push_resumes_sending_only_what_is_missing,
    sessions_refuse_hostile_use,
    an_abandoned_session_is_reaped_by_gc,
    open_sessions_per_key_are_bounded,
    chunks_leased_at_open_survive_gc
);
