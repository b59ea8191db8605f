//! The batched chunk path (`Registry::store_hashed_chunks`, which every upload stores through)
//! keeps the GC protocol row by row: a batch leases the chunks that are live and stores fresh
//! copies of those GC is deleting, concurrent uploads of the same new chunks converge on one
//! stored copy, and a batch that fails halfway leaves no object without a row behind.
//!
//! The races are forced, not hoped for: a store wrapper (every call goes to the real store)
//! holds puts back until the interleaving under test has happened.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use reqwest::StatusCode;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use tokio::sync::oneshot;

use entity::{chunk, upload, upload_chunk};
use niso_registry::Registry;
use niso_registry::chunk_store::{STATE_DELETING, StoredChunk};
use niso_registry::chunking::StreamChunker;
use niso_registry::storage::{ObjectStore, StorageError};
use niso_test_support::archives::sha256_hex;
use niso_test_support::{Backend, HttpClient, Storage, archives, small_chunk_settings};

use niso_test_support::injected_store::{InjectedStore, Injection};

niso_test_support::for_each_backend!(
    a_batch_leases_live_chunks_and_stores_fresh_copies_of_those_gc_is_deleting,
    concurrent_batches_of_the_same_new_chunks_store_one_copy,
    concurrent_batches_in_opposite_orders_do_not_deadlock,
    concurrent_uploads_sharing_new_chunks_store_them_once_and_both_read_back,
    a_batch_whose_put_fails_halfway_leaves_no_object_and_no_lease,
    an_upload_failing_halfway_releases_its_leases_and_gc_leaves_nothing_behind,
);

/// What the wrapper does to puts.
#[derive(Default)]
struct Faults {
    /// Fail the put with this (1-based) number, counted from when the faults were set.
    fail_put: Option<usize>,
    /// Hold the first put of each of these hashes until a second put of the same hash arrives,
    /// so two uploads are both past their lookup before either inserts its row.
    pair_hashes: HashSet<String>,
}

/// Fault injection around the real store.
struct FaultyStore {
    faults: Mutex<Faults>,
    puts: AtomicUsize,
    /// A put of a paired hash waiting for its partner.
    waiting: Mutex<HashMap<String, oneshot::Sender<()>>>,
}

impl FaultyStore {
    fn new() -> FaultyStore {
        FaultyStore {
            faults: Mutex::new(Faults::default()),
            puts: AtomicUsize::new(0),
            waiting: Mutex::new(HashMap::new()),
        }
    }

    fn set(&self, faults: Faults) {
        self.puts.store(0, Ordering::SeqCst);
        *self.faults.lock().unwrap() = faults;
    }
}

/// The hash in an object key (`chunks/<2 hex>/<hash>-<16 hex>`).
fn hash_of(key: &str) -> &str {
    let name = key.rsplit('/').next().unwrap();
    name.split('-').next().unwrap()
}

#[async_trait::async_trait]
impl Injection for FaultyStore {
    async fn before_put(&self, key: &str) -> Result<(), StorageError> {
        let number = self.puts.fetch_add(1, Ordering::SeqCst) + 1;
        if self.faults.lock().unwrap().fail_put == Some(number) {
            return Err(StorageError::Unavailable(format!(
                "injected failure of put number {number} ({key})"
            )));
        }
        Ok(())
    }

    async fn after_put(&self, key: &str) {
        if !self
            .faults
            .lock()
            .unwrap()
            .pair_hashes
            .contains(hash_of(key))
        {
            return;
        }
        let partner = {
            let mut waiting = self.waiting.lock().unwrap();
            match waiting.remove(hash_of(key)) {
                Some(first) => {
                    let _ = first.send(());
                    None
                }
                None => {
                    let (sender, receiver) = oneshot::channel();
                    waiting.insert(hash_of(key).to_owned(), sender);
                    Some(receiver)
                }
            }
        };
        if let Some(partner) = partner {
            partner.await.expect("the partner put arrives");
        }
    }
}

/// A registry (optionally served over HTTP) on fresh storage behind a [`FaultyStore`].
struct Fixture {
    registry: Arc<Registry>,
    store: Arc<InjectedStore<FaultyStore>>,
    _storage: Storage,
}

impl Fixture {
    async fn new(backend: Backend) -> Fixture {
        let mut storage = Storage::new(backend).await;
        let store = InjectedStore::new(storage.store.clone(), FaultyStore::new());
        storage.store = store.clone();
        let registry = storage.registry(small_chunk_settings()).await;
        Fixture {
            registry,
            store,
            _storage: storage,
        }
    }

    /// Serves the registry over HTTP; the server stops with the test's runtime.
    async fn serve(&self) -> HttpClient {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = niso_server::http::AppState::new(self.registry.clone());
        tokio::spawn(async move {
            niso_server::http::serve(listener, state, std::future::pending())
                .await
                .expect("serve");
        });
        HttpClient::new("faulty-store registry", base, reqwest::Client::new())
    }

    async fn object_keys(&self) -> HashSet<String> {
        let pages: Vec<_> = self.store.list("", 1000).try_collect().await.unwrap();
        pages
            .into_iter()
            .flatten()
            .map(|object| object.key)
            .collect()
    }

    async fn rows(&self) -> Vec<chunk::Model> {
        chunk::Entity::find()
            .all(self.registry.database())
            .await
            .unwrap()
    }

    async fn leases_of(&self, upload_id: i64) -> HashSet<i64> {
        upload_chunk::Entity::find()
            .filter(upload_chunk::Column::UploadId.eq(upload_id))
            .all(self.registry.database())
            .await
            .unwrap()
            .into_iter()
            .map(|lease| lease.chunk_id)
            .collect()
    }

    async fn upload_rows(&self) -> u64 {
        upload::Entity::find()
            .count(self.registry.database())
            .await
            .unwrap()
    }

    /// Every object has a row and every row its object: nothing for the orphan sweep, nothing
    /// missing.
    async fn assert_objects_match_rows(&self) {
        let rows: HashSet<String> = self
            .rows()
            .await
            .into_iter()
            .map(|row| row.object_key)
            .collect();
        assert_eq!(self.object_keys().await, rows, "objects and rows differ");
    }
}

fn random_chunks(count: usize, seed: u64) -> Vec<Bytes> {
    (0..count)
        .map(|i| Bytes::from(archives::random_bytes(8 * 1024 + i * 100, seed + i as u64)))
        .collect()
}

fn by_hash(stored: &[StoredChunk]) -> HashMap<String, i64> {
    stored
        .iter()
        .map(|chunk| (chunk.hash.clone(), chunk.chunk_id))
        .collect()
}

async fn a_batch_leases_live_chunks_and_stores_fresh_copies_of_those_gc_is_deleting(
    backend: Backend,
) {
    let fixture = Fixture::new(backend).await;
    let registry = &fixture.registry;
    let chunks = random_chunks(5, 10);
    let [a, b, c, d, e] = [0, 1, 2, 3, 4].map(|i| chunks[i].clone());

    // A, B, C and D stored by an upload that then went away: unreferenced and unleased.
    let first = registry
        .begin_upload("@batch/app", "1.0.0", "x86_64")
        .await
        .unwrap();
    let old = by_hash(
        &registry
            .store_chunks(first.id, vec![a.clone(), b.clone(), c.clone(), d.clone()])
            .await
            .unwrap(),
    );
    registry.release_upload(first.id).await.unwrap();
    let old_id = |data: &Bytes| old[&sha256_hex(data)];
    // GC picked A and B and marked them (it deletes their objects and rows next).
    chunk::Entity::update_many()
        .col_expr(chunk::Column::State, Expr::value(STATE_DELETING))
        .filter(chunk::Column::Id.is_in([old_id(&a), old_id(&b)]))
        .exec(registry.database())
        .await
        .unwrap();
    let lease_version = |rows: &[chunk::Model], id: i64| {
        rows.iter()
            .find(|row| row.id == id)
            .map(|row| row.lease_version)
            .unwrap()
    };
    let before = fixture.rows().await;

    // One batch with all of them (C twice), plus the new E.
    let second = registry
        .begin_upload("@batch/app", "1.0.1", "x86_64")
        .await
        .unwrap();
    let batch = vec![
        a.clone(),
        c.clone(),
        b.clone(),
        e.clone(),
        d.clone(),
        c.clone(),
    ];
    let stored = registry
        .store_chunks(second.id, batch.clone())
        .await
        .unwrap();
    assert_eq!(stored.len(), batch.len());
    for (chunk, data) in stored.iter().zip(&batch) {
        assert_eq!(chunk.hash, sha256_hex(data), "results in batch order");
        assert_eq!(chunk.size, data.len() as u64);
    }
    let (sa, sc, sb, se, sd, sc2) = (
        &stored[0], &stored[1], &stored[2], &stored[3], &stored[4], &stored[5],
    );
    for (fresh, data) in [(sa, &a), (sb, &b)] {
        assert!(
            fresh.newly_stored,
            "a chunk GC is deleting gets a fresh copy"
        );
        assert_ne!(
            fresh.chunk_id,
            old_id(data),
            "a new row, not the marked one"
        );
    }
    for (reused, data) in [(sc, &c), (sd, &d)] {
        assert!(
            !reused.newly_stored,
            "a live chunk is leased, not stored again"
        );
        assert_eq!(reused.chunk_id, old_id(data));
    }
    assert!(se.newly_stored);
    assert_eq!(sc2.chunk_id, sc.chunk_id);
    assert!(!sc2.newly_stored, "a chunk twice in a batch is stored once");

    let after = fixture.rows().await;
    for data in [&c, &d] {
        assert_eq!(
            lease_version(&after, old_id(data)),
            lease_version(&before, old_id(data)) + 1,
            "leasing bumps lease_version once per batch"
        );
    }
    for data in [&a, &b] {
        let row = after.iter().find(|row| row.id == old_id(data)).unwrap();
        assert_eq!(row.state, STATE_DELETING, "the marked rows are left to GC");
        assert_eq!(
            row.lease_version,
            lease_version(&before, old_id(data)),
            "a row GC marked is not bumped"
        );
    }
    let expected: HashSet<i64> = [sa, sb, sc, sd, se].iter().map(|s| s.chunk_id).collect();
    assert_eq!(
        fixture.leases_of(second.id).await,
        expected,
        "every chunk is leased"
    );

    // GC finishes the marked rows; everything the batch leased survives and reads back.
    let report = registry.collect_garbage(Duration::ZERO).await.unwrap();
    assert_eq!(report.chunks_deleted, 2, "{report:?}");
    let rows = fixture.rows().await;
    for (chunk, data) in stored.iter().zip(&batch) {
        let row = rows.iter().find(|row| row.id == chunk.chunk_id).unwrap();
        assert_eq!(registry.read_chunk(row).await.unwrap(), *data);
    }
    fixture.assert_objects_match_rows().await;
}

async fn concurrent_batches_of_the_same_new_chunks_store_one_copy(backend: Backend) {
    let fixture = Fixture::new(backend).await;
    let registry = &fixture.registry;
    let chunks = random_chunks(6, 20);
    // Every put waits for the other upload's put of the same chunk: both uploads are past
    // their lookup (a miss) and have written their object before either inserts a row.
    fixture.store.set(Faults {
        pair_hashes: chunks.iter().map(|data| sha256_hex(data)).collect(),
        ..Faults::default()
    });
    let first = registry
        .begin_upload("@race/app", "1.0.0", "x86_64")
        .await
        .unwrap();
    let second = registry
        .begin_upload("@race/app", "1.0.1", "x86_64")
        .await
        .unwrap();
    let (one, two) = tokio::join!(
        registry.store_chunks(first.id, chunks.clone()),
        registry.store_chunks(second.id, chunks.clone()),
    );
    let (one, two) = (one.unwrap(), two.unwrap());
    for ((x, y), data) in one.iter().zip(&two).zip(&chunks) {
        assert_eq!(x.chunk_id, y.chunk_id, "both uploads use the one row");
        assert_eq!(
            x.newly_stored as u8 + y.newly_stored as u8,
            1,
            "exactly one of them stored it"
        );
        assert_eq!(x.hash, sha256_hex(data));
    }
    let rows = fixture.rows().await;
    assert_eq!(rows.len(), chunks.len(), "one row per chunk");
    let ids: HashSet<i64> = one.iter().map(|chunk| chunk.chunk_id).collect();
    assert_eq!(fixture.leases_of(first.id).await, ids);
    assert_eq!(fixture.leases_of(second.id).await, ids);
    // The loser removed its copies.
    fixture.assert_objects_match_rows().await;
    for (chunk, data) in one.iter().zip(&chunks) {
        let row = rows.iter().find(|row| row.id == chunk.chunk_id).unwrap();
        assert_eq!(registry.read_chunk(row).await.unwrap(), *data);
    }
}

/// Two uploads storing, then leasing, the same chunks in opposite orders at the same time: on
/// PostgreSQL each batch's transaction takes row locks on all of them, so unless both take
/// them in one order they can deadlock (and one upload fails).
async fn concurrent_batches_in_opposite_orders_do_not_deadlock(backend: Backend) {
    let fixture = Fixture::new(backend).await;
    let registry = &fixture.registry;
    // No more chunks than a batch writes at once (four): each paired put waits for the other
    // upload's put of the same chunk, which must not be queued behind it.
    let chunks = random_chunks(4, 60);
    let reversed: Vec<Bytes> = chunks.iter().rev().cloned().collect();
    // Both uploads have written every object before either inserts a row.
    fixture.store.set(Faults {
        pair_hashes: chunks.iter().map(|data| sha256_hex(data)).collect(),
        ..Faults::default()
    });
    let uploads = [
        registry
            .begin_upload("@order/app", "1.0.0", "x86_64")
            .await
            .unwrap(),
        registry
            .begin_upload("@order/app", "1.0.1", "x86_64")
            .await
            .unwrap(),
    ];
    let (one, two) = tokio::join!(
        registry.store_chunks(uploads[0].id, chunks.clone()),
        registry.store_chunks(uploads[1].id, reversed.clone()),
    );
    let stored = by_hash(&one.expect("first upload"));
    assert_eq!(by_hash(&two.expect("second upload")), stored);
    fixture.store.set(Faults::default());
    // Now all of them are stored: two more uploads lease them, in opposite orders.
    let uploads = [
        registry
            .begin_upload("@order/app", "1.0.2", "x86_64")
            .await
            .unwrap(),
        registry
            .begin_upload("@order/app", "1.0.3", "x86_64")
            .await
            .unwrap(),
    ];
    for _ in 0..5 {
        let (one, two) = tokio::join!(
            registry.store_chunks(uploads[0].id, chunks.clone()),
            registry.store_chunks(uploads[1].id, reversed.clone()),
        );
        assert_eq!(by_hash(&one.expect("first lease")), stored);
        assert_eq!(by_hash(&two.expect("second lease")), stored);
    }
    assert_eq!(fixture.rows().await.len(), chunks.len());
    fixture.assert_objects_match_rows().await;
}

/// The chunk hashes the registry will cut `archive` into.
fn chunk_hashes(archive: &[u8]) -> Vec<String> {
    let mut chunker = StreamChunker::new(small_chunk_settings().chunking);
    let mut chunks = chunker.push(archive);
    chunks.extend(chunker.finish());
    chunks.iter().map(|chunk| sha256_hex(chunk)).collect()
}

async fn concurrent_uploads_sharing_new_chunks_store_them_once_and_both_read_back(
    backend: Backend,
) {
    let fixture = Fixture::new(backend).await;
    let http = fixture.serve().await;
    let key = http.register("racer").await;
    let shared = archives::random_bytes(500 * 1024, 30);
    let archive = |version: &str, own: u64| {
        archives::niso(
            "@racer/app",
            version,
            &[
                ("shared", &shared),
                ("own", &archives::random_bytes(50 * 1024, own)),
            ],
        )
    };
    let (first, second) = (archive("1.0.0", 31), archive("1.0.1", 32));
    let (first_hashes, second_hashes) = (chunk_hashes(&first), chunk_hashes(&second));
    let both: HashSet<String> = first_hashes
        .iter()
        .filter(|hash| second_hashes.contains(hash))
        .cloned()
        .collect();
    assert!(
        both.len() >= 10,
        "the archives share many chunks: {}",
        both.len()
    );
    // Each chunk both archives have is put by both uploads before either commits its row
    // (a chunk that appears twice in one archive is leased the second time, so pair only
    // chunks that occur once in each).
    let once = |hashes: &[String], hash: &String| hashes.iter().filter(|h| *h == hash).count() == 1;
    fixture.store.set(Faults {
        pair_hashes: both
            .iter()
            .filter(|hash| once(&first_hashes, hash) && once(&second_hashes, hash))
            .cloned()
            .collect(),
        ..Faults::default()
    });
    let (one, two) = tokio::join!(
        http.upload(&key, "@racer/app", "1.0.0", "x86_64", first.clone()),
        http.upload(&key, "@racer/app", "1.0.1", "x86_64", second.clone()),
    );
    assert_eq!(one.0, StatusCode::CREATED, "{}", one.1);
    assert_eq!(two.0, StatusCode::CREATED, "{}", two.1);
    let distinct = first_hashes
        .iter()
        .chain(&second_hashes)
        .collect::<HashSet<_>>()
        .len();
    assert_eq!(
        fixture.registry.metrics().chunks_stored.get(),
        distinct as u64,
        "every distinct chunk was stored by exactly one of them"
    );
    let rows = fixture.rows().await;
    assert_eq!(rows.len(), distinct);
    let mut per_hash: HashMap<&str, usize> = HashMap::new();
    for row in &rows {
        *per_hash.entry(row.hash.as_str()).or_default() += 1;
    }
    assert!(
        per_hash.values().all(|n| *n == 1),
        "one stored copy per chunk"
    );
    fixture.assert_objects_match_rows().await;
    for (version, archive) in [("1.0.0", &first), ("1.0.1", &second)] {
        let (status, _, body) = http
            .download(&format!("/v1/packages/@racer/app/{version}/x86_64"))
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(&body, archive, "{version} reads back byte for byte");
    }
    // Nothing is garbage: both versions hold every chunk.
    let report = fixture
        .registry
        .collect_garbage(Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(report.chunks_deleted, 0);
}

async fn a_batch_whose_put_fails_halfway_leaves_no_object_and_no_lease(backend: Backend) {
    let fixture = Fixture::new(backend).await;
    let registry = &fixture.registry;
    let lease = registry
        .begin_upload("@fail/app", "1.0.0", "x86_64")
        .await
        .unwrap();
    fixture.store.set(Faults {
        fail_put: Some(3),
        ..Faults::default()
    });
    let result = registry.store_chunks(lease.id, random_chunks(6, 40)).await;
    assert!(
        matches!(result, Err(niso_registry::Error::Unavailable(_))),
        "{result:?}"
    );
    assert!(fixture.rows().await.is_empty(), "no row was inserted");
    assert!(
        fixture.object_keys().await.is_empty(),
        "the objects written before and after the failure were removed"
    );
    assert!(fixture.leases_of(lease.id).await.is_empty());
}

async fn an_upload_failing_halfway_releases_its_leases_and_gc_leaves_nothing_behind(
    backend: Backend,
) {
    let fixture = Fixture::new(backend).await;
    let http = fixture.serve().await;
    let key = http.register("failer").await;
    let archive = archives::niso(
        "@failer/app",
        "1.0.0",
        &[("data", &archives::random_bytes(800 * 1024, 50))],
    );
    let chunks = chunk_hashes(&archive).len();
    assert!(chunks > 30, "{chunks} chunks");
    // A put in the middle of the upload fails: some batches are stored, one fails, and more
    // may be in flight.
    fixture.store.set(Faults {
        fail_put: Some(chunks / 2),
        ..Faults::default()
    });
    let (status, body) = http
        .upload(&key, "@failer/app", "1.0.0", "x86_64", archive.clone())
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    // The upload's row and leases are released (by a task the failure spawns).
    niso_test_support::process::eventually(
        Duration::from_secs(30),
        "the leases released",
        || async { (fixture.upload_rows().await == 0).then_some(()) },
    )
    .await;
    let leases = upload_chunk::Entity::find()
        .count(fixture.registry.database())
        .await
        .unwrap();
    assert_eq!(leases, 0);
    // The failed batch removed its objects; the batches stored before it have rows.
    fixture.assert_objects_match_rows().await;
    let report = fixture
        .registry
        .collect_garbage(Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(report.orphan_objects_deleted, 0);
    assert!(
        fixture.rows().await.is_empty(),
        "the stored chunks were garbage"
    );
    assert!(
        fixture.object_keys().await.is_empty(),
        "no object is left behind"
    );
    // Nothing was published; a retry succeeds.
    let (status, _) = http.get("/v1/packages/@failer/app/versions").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    fixture.store.set(Faults::default());
    let (status, body) = http
        .upload(&key, "@failer/app", "1.0.0", "x86_64", archive.clone())
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (_, _, downloaded) = http.download("/v1/packages/@failer/app/1.0.0/x86_64").await;
    assert_eq!(downloaded, archive);
}
