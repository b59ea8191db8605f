//! The GC candidate queue (`gc_candidates`): GC looks only at queued chunks, so every way a
//! chunk can become garbage must queue it, the queue must never make GC delete a referenced
//! chunk, and a chunk queued again while a pass works must not be lost. Run on both backends.

use std::time::Duration;

use bytes::Bytes;
use entity::{chunk, gc_candidate, upload};
use reqwest::{Method, StatusCode};
use sea_orm::{ActiveModelTrait, EntityTrait, PaginatorTrait, Set};
use serde_json::json;
use tokio::sync::Notify;

use niso_registry::{Registry, RegistrySettings};
use niso_test_support::archives::{self, sha256_hex};
use niso_test_support::{Backend, Storage, TestApp, small_chunk_settings, test_settings};

use niso_test_support::injected_store::{InjectedStore, Injection};

niso_test_support::for_each_backend!(
    a_chunk_put_but_never_used_is_collected,
    the_chunks_of_a_failed_upload_are_collected,
    aborted_and_expired_sessions_leave_their_chunks_to_gc,
    a_committed_session_leaves_nothing_queued_and_its_deleted_version_is_collected,
    a_queued_chunk_that_a_version_references_survives,
    a_chunk_queued_again_during_a_pass_is_not_lost,
    the_migration_queues_the_chunks_already_unreferenced,
);

async fn count_chunks(registry: &Registry) -> u64 {
    chunk::Entity::find()
        .count(registry.database())
        .await
        .unwrap()
}

async fn queued(registry: &Registry) -> u64 {
    gc_candidate::Entity::find()
        .count(registry.database())
        .await
        .unwrap()
}

async fn a_chunk_put_but_never_used_is_collected(backend: Backend) {
    let app = TestApp::start(backend).await;
    let admin = app.admin_key().await;
    let data = archives::random_bytes(100 * 1024, 21);
    let hash = sha256_hex(&data);
    let (status, body) = app
        .send_bytes(
            Method::PUT,
            &format!("/v1/chunks/{hash}"),
            Some(&admin),
            data,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(count_chunks(&app.registry).await, 1);
    assert!(
        queued(&app.registry).await >= 1,
        "releasing its lease queued it"
    );

    let report = app
        .registry
        .collect_garbage(Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(report.chunks_deleted, 0, "younger than the grace period");
    assert!(
        queued(&app.registry).await >= 1,
        "a chunk too young stays queued"
    );
    let report = app.registry.collect_garbage(Duration::ZERO).await.unwrap();
    assert_eq!(report.chunks_deleted, 1);
    assert_eq!(count_chunks(&app.registry).await, 0);
    assert_eq!(queued(&app.registry).await, 0);
    assert_eq!(
        app.get(&format!("/v1/chunks/{hash}")).await.0,
        StatusCode::NOT_FOUND
    );
}

async fn the_chunks_of_a_failed_upload_are_collected(backend: Backend) {
    let app = TestApp::with_settings(backend, small_chunk_settings()).await;
    let key = app.register("failer").await;
    // Every chunk is stored before the manifest check refuses the upload.
    let archive = archives::niso(
        "@failer/other",
        "1.0.0",
        &[("data", &archives::random_bytes(300 * 1024, 22))],
    );
    let (status, body) = app
        .upload(&key, "@failer/app", "1.0.0", "x86_64", archive)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // The failed upload releases its leases from a task of its own.
    for _ in 0..100 {
        let open = upload::Entity::find()
            .count(app.registry.database())
            .await
            .unwrap();
        if open == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(count_chunks(&app.registry).await > 1, "chunks were stored");
    app.registry.collect_garbage(Duration::ZERO).await.unwrap();
    assert_eq!(
        count_chunks(&app.registry).await,
        0,
        "every chunk collected"
    );
    assert_eq!(queued(&app.registry).await, 0);
}

/// An archive small enough to be one chunk, and the body that opens a session for it.
fn one_chunk_session(name: &str, version: &str, seed: u64) -> (Vec<u8>, serde_json::Value) {
    let archive = archives::niso(
        name,
        version,
        &[("data", &archives::random_bytes(2 * 1024, seed))],
    );
    let hash = sha256_hex(&archive);
    let body = json!({
        "name": name,
        "version": version,
        "arch": "x86_64",
        "size": archive.len(),
        "checksum": hash,
        "chunks": [{"hash": hash, "size": archive.len()}],
    });
    (archive, body)
}

/// Opens a session for a one-chunk archive and sends the chunk; returns the session's id.
async fn open_and_send(app: &TestApp, key: &str, archive: &[u8], open: serde_json::Value) -> i64 {
    let (status, session) = app.post("/v1/uploads", Some(key), open).await;
    assert_eq!(status, StatusCode::CREATED, "{session}");
    let id = session["id"].as_i64().unwrap();
    assert_eq!(session["missing"].as_array().unwrap().len(), 1);
    let hash = sha256_hex(archive);
    let (status, body) = app
        .send_bytes(
            Method::PUT,
            &format!("/v1/uploads/{id}/chunks/{hash}"),
            Some(key),
            archive.to_vec(),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    id
}

async fn aborted_and_expired_sessions_leave_their_chunks_to_gc(backend: Backend) {
    let settings = RegistrySettings {
        upload_lease: Duration::from_secs(1),
        ..test_settings()
    };
    let app = TestApp::with_settings(backend, settings).await;
    let key = app.register("sessions").await;

    let (archive, open) = one_chunk_session("@sessions/app", "1.0.0", 23);
    let id = open_and_send(&app, &key, &archive, open).await;
    let (status, body) = app.delete(&format!("/v1/uploads/{id}"), Some(&key)).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let report = app.registry.collect_garbage(Duration::ZERO).await.unwrap();
    assert_eq!(report.chunks_deleted, 1, "the aborted session's chunk");

    // A session nobody touches past its lease is reaped, and its leases with it (by cascade).
    let (archive, open) = one_chunk_session("@sessions/app", "1.0.1", 24);
    open_and_send(&app, &key, &archive, open).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let report = app.registry.collect_garbage(Duration::ZERO).await.unwrap();
    assert_eq!(report.uploads_reaped, 1);
    assert_eq!(report.chunks_deleted, 1, "the expired session's chunk");
    assert_eq!(count_chunks(&app.registry).await, 0);
    assert_eq!(queued(&app.registry).await, 0);
}

async fn a_committed_session_leaves_nothing_queued_and_its_deleted_version_is_collected(
    backend: Backend,
) {
    let app = TestApp::start(backend).await;
    let key = app.register("committer").await;
    let (archive, open) = one_chunk_session("@committer/app", "1.0.0", 25);
    let id = open_and_send(&app, &key, &archive, open).await;
    let (status, body) = app
        .post(&format!("/v1/uploads/{id}/commit"), Some(&key), json!({}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // The commit dropped the session's leases, which queued the chunk: a pass drops it again.
    let report = app.registry.collect_garbage(Duration::ZERO).await.unwrap();
    assert_eq!(report.chunks_deleted, 0);
    assert_eq!(
        queued(&app.registry).await,
        0,
        "a referenced chunk leaves the queue"
    );
    let (status, _, bytes) = app
        .download("/v1/packages/@committer/app/1.0.0/x86_64")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(bytes == archive);

    let (status, _) = app
        .delete("/v1/packages/@committer/app/1.0.0/x86_64", Some(&key))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let report = app.registry.collect_garbage(Duration::ZERO).await.unwrap();
    assert_eq!(report.chunks_deleted, 1);
    assert_eq!(count_chunks(&app.registry).await, 0);
}

/// Queue rows for referenced chunks (as a buggy or duplicated enqueue would leave) make GC look,
/// never delete.
async fn a_queued_chunk_that_a_version_references_survives(backend: Backend) {
    let app = TestApp::with_settings(backend, small_chunk_settings()).await;
    let key = app.register("keeper").await;
    let archive = archives::niso(
        "@keeper/app",
        "1.0.0",
        &[("data", &archives::random_bytes(200 * 1024, 26))],
    );
    let (status, body) = app
        .upload(&key, "@keeper/app", "1.0.0", "x86_64", archive.clone())
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let chunks = chunk::Entity::find()
        .all(app.registry.database())
        .await
        .unwrap();
    assert!(chunks.len() > 1);
    for chunk in &chunks {
        gc_candidate::ActiveModel {
            chunk_id: Set(chunk.id),
            since: Set(niso_registry::now()),
            ..Default::default()
        }
        .insert(app.registry.database())
        .await
        .unwrap();
    }
    let report = app.registry.collect_garbage(Duration::ZERO).await.unwrap();
    assert_eq!(report.chunks_deleted, 0);
    assert_eq!(count_chunks(&app.registry).await, chunks.len() as u64);
    assert_eq!(queued(&app.registry).await, 0, "the rows were examined");
    let (status, _, bytes) = app.download("/v1/packages/@keeper/app/1.0.0/x86_64").await;
    assert_eq!(status, StatusCode::OK);
    assert!(bytes == archive, "the version survives byte for byte");
}

/// The real store, with a gate: when armed, the next `delete` (GC deleting a marked chunk's
/// object, between reading its page of candidates and deleting their rows) waits until the test
/// opens it.
struct PauseOnDelete {
    armed: std::sync::atomic::AtomicBool,
    paused: Notify,
    resume: Notify,
}

#[async_trait::async_trait]
impl Injection for PauseOnDelete {
    async fn before_delete(&self, _key: &str) {
        if self.armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
            self.paused.notify_one();
            self.resume.notified().await;
        }
    }
}

/// Chunk B is queued, then leased by an upload in progress; chunk A is queued after it. A pass
/// reads both, drops B (leased) and pauses while deleting A's object. Meanwhile the upload
/// releases B, which queues it again. The pass then deletes the rows it examined: B's new row
/// must survive, so that B is collected (by this pass's next page or by the next pass).
async fn a_chunk_queued_again_during_a_pass_is_not_lost(backend: Backend) {
    let mut storage = Storage::new(backend).await;
    let store = InjectedStore::new(
        storage.store.clone(),
        PauseOnDelete {
            armed: false.into(),
            paused: Notify::new(),
            resume: Notify::new(),
        },
    );
    storage.store = store.clone();
    let registry = storage.registry(test_settings()).await;
    let b = Bytes::from(archives::random_bytes(20_000, 27));
    let a = Bytes::from(archives::random_bytes(20_000, 28));

    let first = registry.begin_upload("@q/app", "1", "x").await.unwrap();
    let b_id = registry
        .store_chunk(first.id, b.clone())
        .await
        .unwrap()
        .chunk_id;
    registry.release_upload(first.id).await.unwrap();
    let holder = registry.begin_upload("@q/app", "2", "x").await.unwrap();
    let reused = registry.store_chunk(holder.id, b.clone()).await.unwrap();
    assert_eq!(
        reused.chunk_id, b_id,
        "the holder leases the stored copy of B"
    );
    let other = registry.begin_upload("@q/app", "3", "x").await.unwrap();
    let a_id = registry.store_chunk(other.id, a).await.unwrap().chunk_id;
    registry.release_upload(other.id).await.unwrap();

    store.armed.store(true, std::sync::atomic::Ordering::SeqCst);
    let pass = tokio::spawn({
        let registry = registry.clone();
        async move { registry.collect_garbage(Duration::ZERO).await.unwrap() }
    });
    store.paused.notified().await;
    // GC is between reading the page and deleting its rows: B goes back on the queue.
    registry.release_upload(holder.id).await.unwrap();
    store.resume.notify_one();
    let first_pass = pass.await.unwrap();
    assert!(first_pass.chunks_deleted >= 1, "A at least");
    // B's new row is read by this pass's next page or by the next pass: either way it survived
    // the deletion of the rows the first page examined.
    let second_pass = registry.collect_garbage(Duration::ZERO).await.unwrap();
    assert_eq!(
        first_pass.chunks_deleted + second_pass.chunks_deleted,
        2,
        "B was collected once its holder released it"
    );
    assert_ne!(a_id, b_id);
    assert_eq!(count_chunks(&registry).await, 0);
    assert_eq!(queued(&registry).await, 0);
}

/// Chunks that were unreferenced before the queue existed are queued by the migration; a chunk
/// leased then is queued when its lease goes.
async fn the_migration_queues_the_chunks_already_unreferenced(backend: Backend) {
    use migration::MigratorTrait;
    let storage = Storage::new(backend).await;
    let db = niso_registry::db::connect(&storage.database_url, 8)
        .await
        .unwrap();
    let before_queue = migration::Migrator::migrations()
        .iter()
        .position(|step| step.name() == "m20261130_000010_gc_candidates")
        .expect("the queue's migration");
    migration::Migrator::up(&db, Some(before_queue as u32))
        .await
        .unwrap();
    let mut stored = Vec::new();
    for seed in [29, 30] {
        let data = archives::random_bytes(10_000, seed);
        let hash = sha256_hex(&data);
        let key = format!("chunks/{}/{hash}-00000000000000{seed:02}", &hash[..2]);
        storage
            .store
            .put(&key, Bytes::from(data.clone()))
            .await
            .unwrap();
        let row = chunk::ActiveModel {
            hash: Set(hash),
            object_key: Set(key),
            size: Set(data.len() as i64),
            stored_size: Set(data.len() as i64),
            compression: Set("none".into()),
            state: Set("live".into()),
            lease_version: Set(1),
            created_at: Set(niso_registry::now()),
            ..Default::default()
        }
        .insert(&db)
        .await
        .unwrap();
        stored.push(row.id);
    }
    let upload = upload::ActiveModel {
        package_name: Set("@old/app".into()),
        version: Set("1.0.0".into()),
        arch: Set("x86_64".into()),
        started_at: Set(niso_registry::now()),
        expires_at: Set(niso_registry::now() + chrono::Duration::hours(1)),
        ..Default::default()
    }
    .insert(&db)
    .await
    .unwrap();
    entity::upload_chunk::ActiveModel {
        upload_id: Set(upload.id),
        chunk_id: Set(stored[1]),
    }
    .insert(&db)
    .await
    .unwrap();

    let registry = storage.registry(test_settings()).await;
    let report = registry.collect_garbage(Duration::ZERO).await.unwrap();
    assert_eq!(
        report.chunks_deleted, 1,
        "the unreferenced chunk, not the leased one"
    );
    assert!(
        chunk::Entity::find_by_id(stored[1])
            .one(registry.database())
            .await
            .unwrap()
            .is_some()
    );
    registry.release_upload(upload.id).await.unwrap();
    let report = registry.collect_garbage(Duration::ZERO).await.unwrap();
    assert_eq!(report.chunks_deleted, 1, "the lease's release queued it");
    assert_eq!(count_chunks(&registry).await, 0);
}
