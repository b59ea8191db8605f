//! GC under concurrency: the invariant of DESIGN.md §4 (a chunk referenced by a committed
//! version is never deleted) exercised by randomized interleavings of uploads sharing chunks,
//! deletes and GC passes with a zero grace period across two replicas, plus the expired-lease
//! and orphan paths, and the candidate queue that tells GC where to look. Run on both backends.

mod batches;
mod candidates;
mod orphans;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use entity::chunk;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::StatusCode;
use sea_orm::{EntityTrait, PaginatorTrait};
use tokio::sync::Mutex;

use niso_registry::RegistrySettings;
use niso_test_support::archives::sha256_hex;
use niso_test_support::{Backend, TestApp, archives, small_chunk_settings};

niso_test_support::for_each_backend!(
    gc_keeps_shared_chunks_and_reclaims_orphans,
    gc_never_deletes_a_committed_chunk_under_random_interleavings,
    an_upload_whose_lease_expired_cannot_commit,
);

async fn chunk_rows(app: &TestApp) -> u64 {
    chunk::Entity::find()
        .count(app.registry.database())
        .await
        .expect("count chunks")
}

async fn gc_keeps_shared_chunks_and_reclaims_orphans(backend: Backend) {
    let app = TestApp::with_settings(backend, small_chunk_settings()).await;
    let key = app.register("gcuser").await;
    let shared = archives::random_bytes(400 * 1024, 1);
    let first = archives::niso(
        "@gcuser/app",
        "1.0.0",
        &[
            ("shared", &shared),
            ("one", &archives::random_bytes(100 * 1024, 2)),
        ],
    );
    let second = archives::niso(
        "@gcuser/app",
        "1.0.1",
        &[
            ("shared", &shared),
            ("two", &archives::random_bytes(100 * 1024, 3)),
        ],
    );
    assert_eq!(
        app.upload(&key, "@gcuser/app", "1.0.0", "x86_64", first.clone())
            .await
            .0,
        StatusCode::CREATED
    );
    assert_eq!(
        app.upload(&key, "@gcuser/app", "1.0.1", "x86_64", second.clone())
            .await
            .0,
        StatusCode::CREATED
    );
    let before = chunk_rows(&app).await;

    // Nothing is orphaned yet: GC with a zero grace period deletes nothing.
    let report = app.registry.collect_garbage(Duration::ZERO).await.unwrap();
    assert_eq!(report.chunks_deleted, 0);
    assert_eq!(chunk_rows(&app).await, before);

    // Deleting 1.0.0 orphans only the chunks 1.0.1 does not share.
    assert_eq!(
        app.delete("/v1/packages/@gcuser/app/1.0.0/x86_64", Some(&key))
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    // A grace period longer than the chunks' age protects them.
    let report = app
        .registry
        .collect_garbage(Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(report.chunks_deleted, 0);
    let report = app.registry.collect_garbage(Duration::ZERO).await.unwrap();
    assert!(
        report.chunks_deleted > 0,
        "the chunks only 1.0.0 used are reclaimed"
    );
    assert!(report.bytes_reclaimed > 0);
    assert!(chunk_rows(&app).await < before);
    let (status, _, body) = app.download("/v1/packages/@gcuser/app/1.0.1/x86_64").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, second, "1.0.1 survives GC byte for byte");

    assert_eq!(
        app.delete("/v1/packages/@gcuser/app/1.0.1/x86_64", Some(&key))
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    app.registry.collect_garbage(Duration::ZERO).await.unwrap();
    assert_eq!(chunk_rows(&app).await, 0, "every orphan is gone");
}

fn stress_seed() -> u64 {
    std::env::var("NISO_TEST_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(rand::random)
}

fn stress_operations() -> usize {
    std::env::var("NISO_GC_STRESS_OPERATIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(300)
}

/// Workers upload archives assembled from a small pool of blocks (so versions share many
/// chunks) and delete random versions, through two replicas, while GC runs in a tight loop with
/// a zero grace period. Every committed version must download intact at every moment.
async fn gc_never_deletes_a_committed_chunk_under_random_interleavings(backend: Backend) {
    let seed = stress_seed();
    let operations = stress_operations();
    println!(
        "GC stress: backend {backend:?}, seed {seed} (rerun with NISO_TEST_SEED={seed}), {operations} operations"
    );
    let first = TestApp::with_settings(backend, small_chunk_settings()).await;
    let second = TestApp::on_storage(first.storage.clone(), small_chunk_settings()).await;
    let replicas = Arc::new([first, second]);
    let key = Arc::new(replicas[0].register("stress").await);
    let blocks: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..10)
            .map(|i| archives::random_bytes(24 * 1024, seed ^ i))
            .collect(),
    );
    let committed: Arc<Mutex<HashMap<String, String>>> = Arc::new(Mutex::new(HashMap::new()));
    // Versions being read back are never picked for deletion, so a failed read can only mean a
    // lost chunk, not a race with a delete.
    let reading: Arc<Mutex<HashSet<String>>> = Arc::new(Mutex::new(HashSet::new()));
    let next_version = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));

    let gc_passes = Arc::new(AtomicU64::new(0));
    let gc = {
        let replicas = replicas.clone();
        let stop = stop.clone();
        let gc_passes = gc_passes.clone();
        tokio::spawn(async move {
            let mut turn = 0usize;
            while !stop.load(Ordering::Relaxed) {
                replicas[turn % 2]
                    .registry
                    .collect_garbage(Duration::ZERO)
                    .await
                    .expect("gc pass");
                gc_passes.fetch_add(1, Ordering::Relaxed);
                turn += 1;
                tokio::task::yield_now().await;
            }
        })
    };

    let workers = 4;
    let mut handles = Vec::new();
    for worker in 0..workers {
        let replicas = replicas.clone();
        let key = key.clone();
        let blocks = blocks.clone();
        let committed = committed.clone();
        let reading = reading.clone();
        let next_version = next_version.clone();
        handles.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed.wrapping_add(worker as u64 * 7919));
            for _ in 0..operations / workers {
                let replica = &replicas[rng.random_range(0..2)];
                if rng.random_bool(0.3) {
                    let victim = {
                        let mut versions = committed.lock().await;
                        let busy = reading.lock().await;
                        let names: Vec<String> = versions
                            .keys()
                            .filter(|version| !busy.contains(*version))
                            .cloned()
                            .collect();
                        let victim = (!names.is_empty())
                            .then(|| names[rng.random_range(0..names.len())].clone());
                        if let Some(version) = &victim {
                            versions.remove(version);
                        }
                        victim
                    };
                    if let Some(version) = victim {
                        let (status, body) = replica
                            .delete(
                                &format!("/v1/packages/@stress/app/{version}/x86_64"),
                                Some(&key),
                            )
                            .await;
                        assert_eq!(
                            status,
                            StatusCode::NO_CONTENT,
                            "delete {version}: {body} (seed {seed})"
                        );
                        continue;
                    }
                }
                let version = format!("1.0.{}", next_version.fetch_add(1, Ordering::Relaxed));
                let mut payload = Vec::new();
                for _ in 0..rng.random_range(3..9) {
                    payload.extend_from_slice(&blocks[rng.random_range(0..blocks.len())]);
                }
                let archive = archives::niso("@stress/app", &version, &[("payload", &payload)]);
                let checksum = sha256_hex(&archive);
                let (status, body) = replica
                    .upload(&key, "@stress/app", &version, "x86_64", archive)
                    .await;
                assert_eq!(
                    status,
                    StatusCode::CREATED,
                    "upload {version}: {body} (seed {seed})"
                );
                {
                    let mut versions = committed.lock().await;
                    reading.lock().await.insert(version.clone());
                    versions.insert(version.clone(), checksum.clone());
                }
                // Read it back through either replica while GC keeps running.
                let other = &replicas[rng.random_range(0..2)];
                let (status, _, bytes) = other
                    .download(&format!("/v1/packages/@stress/app/{version}/x86_64"))
                    .await;
                assert_eq!(status, StatusCode::OK, "download {version} (seed {seed})");
                assert_eq!(
                    sha256_hex(&bytes),
                    checksum,
                    "{version} corrupted (seed {seed})"
                );
                reading.lock().await.remove(&version);
            }
        }));
    }
    for handle in handles {
        handle.await.expect("worker");
    }
    stop.store(true, Ordering::Relaxed);
    gc.await.expect("gc loop");
    assert!(
        gc_passes.load(Ordering::Relaxed) > 0,
        "GC ran during the test"
    );

    // Every version still committed downloads intact after the last GC pass.
    replicas[0]
        .registry
        .collect_garbage(Duration::ZERO)
        .await
        .unwrap();
    let survivors = committed.lock().await.clone();
    for (version, checksum) in &survivors {
        let (status, _, bytes) = replicas[1]
            .download(&format!("/v1/packages/@stress/app/{version}/x86_64"))
            .await;
        assert_eq!(status, StatusCode::OK, "{version} (seed {seed})");
        assert_eq!(
            &sha256_hex(&bytes),
            checksum,
            "{version} corrupted (seed {seed})"
        );
    }
    // Delete everything: GC reclaims every chunk.
    for version in survivors.keys() {
        let (status, _) = replicas[0]
            .delete(
                &format!("/v1/packages/@stress/app/{version}/x86_64"),
                Some(&key),
            )
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
    }
    replicas[1]
        .registry
        .collect_garbage(Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(
        chunk_rows(&replicas[0]).await,
        0,
        "orphans remain (seed {seed})"
    );
}

/// An upload that stalls past its lease is reaped by GC, its chunks are collected, and it
/// cannot commit afterwards: no version appears, and a retry succeeds.
async fn an_upload_whose_lease_expired_cannot_commit(backend: Backend) {
    let settings = RegistrySettings {
        upload_lease: Duration::from_secs(1),
        ..small_chunk_settings()
    };
    let app = TestApp::with_settings(backend, settings).await;
    let key = app.register("staller").await;
    let archive = archives::niso(
        "@staller/app",
        "1.0.0",
        &[("data", &archives::random_bytes(600 * 1024, 5))],
    );
    let (head, tail) = archive.split_at(300 * 1024);
    let (head, tail) = (
        bytes::Bytes::copy_from_slice(head),
        bytes::Bytes::copy_from_slice(tail),
    );
    let registry = app.registry.clone();
    let stalled_body = futures::stream::iter(vec![Ok::<_, std::io::Error>(head)]).chain(
        futures::stream::once(async move {
            // Stall past the lease (the server may still be renewing it while it works through
            // the head on a loaded machine) until GC reaps the upload and collects its chunks.
            let (mut reaped, mut deleted) = (0, 0);
            for _ in 0..60 {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let report = registry.collect_garbage(Duration::ZERO).await.expect("gc");
                reaped += report.uploads_reaped;
                deleted += report.chunks_deleted;
                if reaped > 0 {
                    break;
                }
            }
            assert_eq!(reaped, 1, "the stalled upload is reaped");
            assert!(deleted > 0, "its chunks are collected");
            Ok(tail)
        }),
    );
    let response = app
        .client
        .put(app.url("/v1/packages/@staller/app/1.0.0/x86_64"))
        .bearer_auth(&key)
        .body(reqwest::Body::wrap_stream(stalled_body))
        .send()
        .await
        .expect("request");
    assert_eq!(
        response.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "an expired upload must not commit"
    );
    let (status, _) = app.get("/v1/packages/@staller/app/versions").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "no version appeared");
    // The retry succeeds and downloads intact.
    let (status, body) = app
        .upload(&key, "@staller/app", "1.0.0", "x86_64", archive.clone())
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    app.registry.collect_garbage(Duration::ZERO).await.unwrap();
    let (status, _, downloaded) = app.download("/v1/packages/@staller/app/1.0.0/x86_64").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(downloaded, archive);
}

use futures::StreamExt;
