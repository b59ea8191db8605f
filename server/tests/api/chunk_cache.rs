//! Small chunks that downloads ask for again come from the server's small-chunk cache, not the
//! object store; large chunks, and every chunk when the cache is off, are read each time. Reads
//! are counted around the real store.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use reqwest::StatusCode;

use niso_test_support::for_each_backend;
use niso_test_support::injected_store::{InjectedStore, Injection};
use niso_test_support::{Backend, Storage, TestApp, test_settings};

use crate::packages::random_archive;

for_each_backend!(
    a_small_archive_is_read_from_the_store_once,
    large_chunks_are_read_from_the_store_every_time,
    with_the_cache_off_every_download_reads_the_store,
);

const ARCH: &str = "x86_64-linux";

#[derive(Default)]
struct CountedReads(AtomicUsize);

#[async_trait::async_trait]
impl Injection for CountedReads {
    async fn before_get(&self, _key: &str) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A registry (default chunking: 64 KiB to 1 MiB) on a store whose reads are counted, with
/// `archive` uploaded as `@alice/tool` 1.0.0; returns the app, the store and the download path.
async fn app_with(
    backend: Backend,
    small_chunk_cache_bytes: usize,
    archive: &[u8],
) -> (TestApp, Arc<InjectedStore<CountedReads>>, String) {
    let mut storage = Storage::new(backend).await;
    let store = InjectedStore::new(storage.store.clone(), CountedReads::default());
    storage.store = store.clone();
    let mut settings = test_settings();
    settings.small_chunk_cache_bytes = small_chunk_cache_bytes;
    let app = TestApp::on_storage(Arc::new(storage), settings).await;
    let key = app.register("alice").await;
    let (status, body) = app
        .upload(&key, "@alice/tool", "1.0.0", ARCH, archive.to_vec())
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    (app, store, format!("/v1/packages/@alice/tool/1.0.0/{ARCH}"))
}

async fn download_times(app: &TestApp, path: &str, archive: &[u8], times: usize) {
    for _ in 0..times {
        let (status, _, bytes) = app.download(path).await;
        assert_eq!(status, StatusCode::OK);
        assert!(bytes == archive, "the download came back different");
    }
}

/// A 3 KiB archive is one chunk: the first download reads it, the next four do not.
async fn a_small_archive_is_read_from_the_store_once(backend: Backend) {
    let archive = random_archive("@alice/tool", "1.0.0", 1000, 1);
    let (app, store, path) = app_with(backend, 4 * 1024 * 1024, &archive).await;
    let before = store.0.load(Ordering::SeqCst);
    download_times(&app, &path, &archive, 5).await;
    assert_eq!(store.0.load(Ordering::SeqCst) - before, 1, "store reads");
    assert_eq!(app.registry.metrics().chunk_cache_hits.get(), 4);
}

/// A 1 MiB random archive is chunks of 64 KiB and more: only a short last chunk may be kept,
/// so a second download reads all the others again.
async fn large_chunks_are_read_from_the_store_every_time(backend: Backend) {
    let archive = random_archive("@alice/tool", "1.0.0", 1024 * 1024, 2);
    let (app, store, path) = app_with(backend, 4 * 1024 * 1024, &archive).await;
    let before = store.0.load(Ordering::SeqCst);
    download_times(&app, &path, &archive, 1).await;
    let first = store.0.load(Ordering::SeqCst) - before;
    assert!(first >= 2, "{first} chunks");
    download_times(&app, &path, &archive, 1).await;
    let second = store.0.load(Ordering::SeqCst) - before - first;
    assert!(
        second + 1 >= first,
        "the second download read {second} of {first} chunks"
    );
}

async fn with_the_cache_off_every_download_reads_the_store(backend: Backend) {
    let archive = random_archive("@alice/tool", "1.0.0", 1000, 3);
    let (app, store, path) = app_with(backend, 0, &archive).await;
    let before = store.0.load(Ordering::SeqCst);
    download_times(&app, &path, &archive, 3).await;
    assert_eq!(store.0.load(Ordering::SeqCst) - before, 3, "store reads");
}
