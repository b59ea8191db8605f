//! The orphan-object sweep: an object whose upload crashed between writing it and inserting its
//! row is deleted once older than the grace period (never before, never below
//! `ORPHAN_MIN_AGE`), while objects with a row and objects that are not ours stay, however old.
//! Time passing is simulated by backdating the objects' own dates in the store (the file mtime
//! that the local store and the S3 test server both report as the object's date).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::TryStreamExt;
use sea_orm::{EntityTrait, PaginatorTrait};

use niso_registry::Registry;
use niso_registry::gc::{GcOptions, ORPHAN_MIN_AGE};
use niso_registry::metrics::Metrics;
use niso_registry::storage::local::LocalStore;
use niso_registry::storage::s3::S3Store;
use niso_registry::storage::{ObjectStore, StorageError};
use niso_test_support::{Backend, postgres, s3::S3TestServer, test_settings};

use niso_test_support::injected_store::{InjectedStore, Injection};

niso_test_support::for_each_backend!(
    an_object_left_by_a_crash_before_its_row_is_swept_after_the_grace_period,
    the_sweep_spares_objects_with_rows_and_foreign_keys_across_pages,
);

const HOUR: Duration = Duration::from_secs(3600);
const MINUTE: Duration = Duration::from_secs(60);

/// Fault injection, not a mock: every call goes to the real store; when armed, `put` writes the
/// object for real and then the "process" dies (the task panics), so nothing the upload would
/// have done next — inserting the row, or cleaning up after a failed insert — ever runs.
struct CrashAfterPut {
    armed: AtomicBool,
}

#[async_trait::async_trait]
impl Injection for CrashAfterPut {
    async fn after_put(&self, key: &str) {
        if self.armed.swap(false, Ordering::SeqCst) {
            panic!("simulated crash right after writing {key}");
        }
    }
}

/// A registry on fresh storage whose objects the test can find on disk.
struct Fixture {
    registry: Arc<Registry>,
    store: Arc<InjectedStore<CrashAfterPut>>,
    /// The directory holding the objects as files named by their keys.
    objects_dir: PathBuf,
    _dir: tempfile::TempDir,
}

impl Fixture {
    /// One GC pass with `grace`, which must succeed.
    async fn gc(&self, grace: Duration) -> niso_registry::gc::GcReport {
        self.registry.collect_garbage(grace).await.unwrap()
    }

    async fn new(backend: Backend) -> Fixture {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let (database_url, inner, objects_dir): (String, Arc<dyn ObjectStore>, PathBuf) =
            match backend {
                Backend::Embedded => {
                    let root = dir.path().join("chunks");
                    (
                        format!("sqlite://{}?mode=rwc", dir.path().join("niso.db").display()),
                        Arc::new(LocalStore::open(root.clone()).unwrap()),
                        root,
                    )
                }
                Backend::Production => {
                    let server = S3TestServer::get();
                    let settings = server.fresh_bucket();
                    let objects_dir = server.bucket_dir(&settings.bucket);
                    (
                        postgres::TestPostgres::get().fresh_database().await,
                        Arc::new(S3Store::connect(settings).await.unwrap()),
                        objects_dir,
                    )
                }
            };
        let store = InjectedStore::new(
            inner,
            CrashAfterPut {
                armed: AtomicBool::new(false),
            },
        );
        let db = niso_registry::db::connect(&database_url, 8).await.unwrap();
        niso_registry::db::migrate(&db).await.unwrap();
        let registry = Arc::new(Registry::new(
            db,
            store.clone(),
            test_settings(),
            Arc::new(Metrics::new()),
        ));
        Fixture {
            registry,
            store,
            objects_dir,
            _dir: dir,
        }
    }

    /// Runs one chunk upload that crashes right after its object is written; returns the key.
    async fn crash_after_object_write(&self, data: Bytes) -> String {
        let before = self.keys().await;
        let lease = self
            .registry
            .begin_upload("@crash/app", "1.0.0", "x86_64")
            .await
            .unwrap();
        self.store.armed.store(true, Ordering::SeqCst);
        let registry = self.registry.clone();
        let outcome = tokio::spawn(async move { registry.store_chunk(lease.id, data).await }).await;
        assert!(
            outcome.as_ref().is_err_and(|error| error.is_panic()),
            "the upload crashed: {outcome:?}"
        );
        let mut written: Vec<String> = self
            .keys()
            .await
            .into_iter()
            .filter(|key| !before.contains(key))
            .collect();
        assert_eq!(written.len(), 1, "exactly one object was written");
        written.pop().unwrap()
    }

    async fn keys(&self) -> Vec<String> {
        let pages: Vec<_> = self.store.list("", 1000).try_collect().await.unwrap();
        pages
            .into_iter()
            .flatten()
            .map(|object| object.key)
            .collect()
    }

    async fn exists(&self, key: &str) -> bool {
        match self.store.get(key).await {
            Ok(_) => true,
            Err(StorageError::NotFound(_)) => false,
            Err(error) => panic!("get {key}: {error}"),
        }
    }

    async fn chunk_rows(&self) -> u64 {
        entity::chunk::Entity::find()
            .count(self.registry.database())
            .await
            .unwrap()
    }

    /// Makes the object look `age` old to the store (and so to its listing).
    fn backdate(&self, key: &str, age: Duration) {
        std::fs::File::options()
            .write(true)
            .open(self.objects_dir.join(key))
            .unwrap_or_else(|error| panic!("open the file of {key}: {error}"))
            .set_modified(SystemTime::now() - age)
            .unwrap();
    }
}

fn chunk_shaped_key() -> String {
    let hash = hex::encode(rand::random::<[u8; 32]>());
    format!(
        "chunks/{}/{hash}-{}",
        &hash[..2],
        hex::encode(rand::random::<[u8; 8]>())
    )
}

async fn an_object_left_by_a_crash_before_its_row_is_swept_after_the_grace_period(
    backend: Backend,
) {
    let fixture = Fixture::new(backend).await;
    let data = Bytes::from(archives_bytes(50_000));
    let key = fixture.crash_after_object_write(data).await;
    assert_eq!(
        fixture.chunk_rows().await,
        0,
        "the crash came before the row"
    );

    // With the configured grace period (longer than the floor): kept until it is that old.
    let grace = 3 * HOUR;
    let report = fixture.gc(grace).await;
    assert_eq!(report.objects_examined, 1);
    assert_eq!(report.orphan_objects_deleted, 0, "a fresh object is kept");
    fixture.backdate(&key, grace - 5 * MINUTE);
    let report = fixture.gc(grace).await;
    assert_eq!(
        report.orphan_objects_deleted, 0,
        "younger than the grace period"
    );
    assert!(fixture.exists(&key).await);
    fixture.backdate(&key, grace + 5 * MINUTE);
    let report = fixture.gc(grace).await;
    assert_eq!(
        report.orphan_objects_deleted, 1,
        "older than the grace period"
    );
    let stored = fixture.chunk_rows().await;
    assert_eq!(stored, 0);
    assert!(report.orphan_bytes_reclaimed > 0);
    assert!(!fixture.exists(&key).await, "the orphan is gone");

    // A zero grace period (as tests and impatient operators use) still waits ORPHAN_MIN_AGE:
    // a younger object may belong to an upload about to insert its row.
    let key = fixture
        .crash_after_object_write(Bytes::from(archives_bytes(30_000)))
        .await;
    fixture.backdate(&key, ORPHAN_MIN_AGE - 5 * MINUTE);
    let report = fixture.gc(Duration::ZERO).await;
    assert_eq!(
        report.orphan_objects_deleted, 0,
        "younger than ORPHAN_MIN_AGE"
    );
    assert!(fixture.exists(&key).await);
    fixture.backdate(&key, ORPHAN_MIN_AGE + 5 * MINUTE);
    let report = fixture.gc(Duration::ZERO).await;
    assert_eq!(report.orphan_objects_deleted, 1);
    assert!(!fixture.exists(&key).await);
}

/// Incompressible bytes, so the stored size is the chunk size.
fn archives_bytes(len: usize) -> Vec<u8> {
    niso_test_support::archives::random_bytes(len, rand::random())
}

async fn the_sweep_spares_objects_with_rows_and_foreign_keys_across_pages(backend: Backend) {
    let fixture = Fixture::new(backend).await;
    // Chunks with rows, leased by an upload still in progress.
    let lease = fixture
        .registry
        .begin_upload("@keep/app", "1.0.0", "x86_64")
        .await
        .unwrap();
    let mut recorded = Vec::new();
    for _ in 0..5 {
        let data = Bytes::from(archives_bytes(20_000));
        fixture
            .registry
            .store_chunk(lease.id, data.clone())
            .await
            .unwrap();
        recorded.push(data);
    }
    let recorded_keys = fixture.keys().await;
    assert_eq!(recorded_keys.len(), 5);
    // Orphans: objects of the registry's shape that no row names.
    let mut orphans = Vec::new();
    for size in 0..5 {
        let key = chunk_shaped_key();
        fixture
            .store
            .put(&key, Bytes::from(vec![1u8; 1000 + size]))
            .await
            .unwrap();
        orphans.push(key);
    }
    // Not ours: other shapes, inside and outside the chunk prefix.
    let shaped = chunk_shaped_key();
    let foreign = vec![
        "chunks/readme.txt".to_owned(),
        format!("{shaped}.bak"),
        format!("backup/{shaped}"),
        format!("other/{}", &shaped["chunks/".len()..]),
    ];
    for key in &foreign {
        fixture
            .store
            .put(key, Bytes::from_static(b"someone else's"))
            .await
            .unwrap();
    }
    // Everything is ten years old.
    for key in fixture.keys().await {
        fixture.backdate(&key, 10 * 365 * 24 * HOUR);
    }

    let options = GcOptions {
        listing_page_size: 2,
        ..GcOptions::new(Duration::ZERO)
    };
    let report = fixture
        .registry
        .collect_garbage_with(options)
        .await
        .unwrap();
    assert_eq!(report.chunks_deleted, 0, "the chunks are leased");
    assert_eq!(
        report.objects_examined, 10,
        "5 recorded + 5 orphans, in pages of 2"
    );
    assert_eq!(report.orphan_objects_deleted, 5);
    assert_eq!(report.orphan_bytes_reclaimed, (1000..1005).sum::<u64>());
    for key in &orphans {
        assert!(!fixture.exists(key).await, "orphan {key} is gone");
    }
    for key in recorded_keys.iter().chain(&foreign) {
        assert!(fixture.exists(key).await, "{key} survives");
    }
    // The recorded chunks read back intact.
    let rows = entity::chunk::Entity::find()
        .all(fixture.registry.database())
        .await
        .unwrap();
    assert_eq!(rows.len(), 5);
    for row in rows {
        let data = fixture.registry.read_chunk(&row).await.unwrap();
        assert!(recorded.contains(&data));
    }
    // A second pass finds nothing more to do.
    let report = fixture
        .registry
        .collect_garbage_with(options)
        .await
        .unwrap();
    assert_eq!(report.orphan_objects_deleted, 0);
}

/// A crash between creating a local temp file and renaming it leaves debris that is not an
/// object: swept by the same pass once older than the orphan age.
#[tokio::test]
async fn stale_temp_files_of_interrupted_local_writes_are_swept() {
    let fixture = Fixture::new(Backend::Embedded).await;
    let shard = fixture.objects_dir.join("chunks/ab");
    std::fs::create_dir_all(&shard).unwrap();
    let temp = "chunks/ab/.niso-tmp-0123456789abcdef";
    std::fs::write(fixture.objects_dir.join(temp), vec![0u8; 777]).unwrap();
    fixture.backdate(temp, ORPHAN_MIN_AGE - 5 * MINUTE);
    let report = fixture.gc(Duration::ZERO).await;
    assert_eq!(report.orphan_objects_deleted, 0);
    assert!(fixture.objects_dir.join(temp).exists());
    fixture.backdate(temp, ORPHAN_MIN_AGE + 5 * MINUTE);
    let report = fixture.gc(Duration::ZERO).await;
    assert_eq!(report.orphan_objects_deleted, 1);
    assert_eq!(report.orphan_bytes_reclaimed, 777);
    assert!(!fixture.objects_dir.join(temp).exists());
}
