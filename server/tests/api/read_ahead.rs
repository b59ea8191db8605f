//! Downloads read chunks ahead of the one they send: as far as the store asks
//! (`ObjectStore::read_ahead`) when the server is quiet, within the server-wide read-ahead
//! budget when many download at once, always at least the next chunk, and the budget comes back
//! whether a download finishes or its client goes away. Reads are slowed down so that they
//! overlap, and counted around the real store.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use reqwest::StatusCode;

use niso_test_support::for_each_backend;
use niso_test_support::injected_store::{InjectedStore, Injection};
use niso_test_support::{Backend, Storage, TestApp, small_chunk_settings};

use crate::packages::random_archive;

for_each_backend!(
    one_download_reads_as_far_ahead_as_the_store_asks,
    concurrent_downloads_read_ahead_within_the_server_budget,
    an_abandoned_download_gives_its_budget_back,
);

const ARCH: &str = "x86_64-linux";

/// Counts reads in flight (and the most at once); each read waits `delay` first.
struct CountedReads {
    in_flight: AtomicUsize,
    most: AtomicUsize,
    delay: Duration,
}

#[async_trait::async_trait]
impl Injection for CountedReads {
    async fn before_get(&self, _key: &str) {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
    }
    async fn after_get(&self, _key: &str) {
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A registry with small chunks (4–64 KiB) on a store whose reads are counted, and one
/// 2 MiB archive (about 128 chunks) uploaded.
async fn app_with_counted_reads(
    backend: Backend,
    read_ahead_budget_bytes: usize,
) -> (TestApp, Arc<InjectedStore<CountedReads>>, Vec<u8>, String) {
    let mut storage = Storage::new(backend).await;
    let store = InjectedStore::new(
        storage.store.clone(),
        CountedReads {
            in_flight: AtomicUsize::new(0),
            most: AtomicUsize::new(0),
            delay: Duration::from_millis(20),
        },
    );
    storage.store = store.clone();
    let mut settings = small_chunk_settings();
    settings.read_ahead_budget_bytes = read_ahead_budget_bytes;
    let app = TestApp::on_storage(Arc::new(storage), settings).await;
    let key = app.register("alice").await;
    let archive = random_archive("@alice/big", "1.0.0", 2 * 1024 * 1024, 7);
    let (status, body) = app
        .upload(&key, "@alice/big", "1.0.0", ARCH, archive.clone())
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let path = format!("/v1/packages/@alice/big/1.0.0/{ARCH}");
    (app, store, archive, path)
}

/// Alone on the server, a download keeps as many reads in flight as the store asks for (the
/// reads overlap: each waits 20 ms), and no more.
async fn one_download_reads_as_far_ahead_as_the_store_asks(backend: Backend) {
    let (app, store, archive, path) = app_with_counted_reads(backend, 8 * 1024 * 1024).await;
    let depth = app.registry.object_store().read_ahead();
    let (status, _, bytes) = app.download(&path).await;
    assert_eq!(status, StatusCode::OK);
    assert!(bytes == archive, "the download came back different");
    assert_eq!(
        store.most.load(Ordering::SeqCst),
        depth,
        "reads in flight at most, for a depth of {depth}"
    );
    assert_eq!(app.registry.read_ahead_budget().reserved_bytes(), 0);
}

/// With a budget of one byte, four downloads at once read their next chunk each plus one
/// chunk ahead between them (a reservation larger than the budget passes alone), however deep
/// the store would go; all four complete intact and the budget is whole again.
async fn concurrent_downloads_read_ahead_within_the_server_budget(backend: Backend) {
    let (app, store, archive, path) = app_with_counted_reads(backend, 1).await;
    let downloads = futures::future::join_all((0..4).map(|_| app.download(&path)));
    let results = tokio::time::timeout(Duration::from_secs(120), downloads)
        .await
        .expect("downloads stalled on the read-ahead budget");
    for (status, _, bytes) in results {
        assert_eq!(status, StatusCode::OK);
        assert!(bytes == archive, "a download came back different");
    }
    let most = store.most.load(Ordering::SeqCst);
    assert!(
        most <= 4 + 1,
        "{most} reads in flight: four downloads' next chunks and one read ahead at most"
    );
    assert!(most >= 2, "the downloads overlapped ({most} reads at most)");
    assert_eq!(app.registry.read_ahead_budget().reserved_bytes(), 0);
}

/// A client that reads a little and hangs up leaves no share of the budget behind.
async fn an_abandoned_download_gives_its_budget_back(backend: Backend) {
    let (app, _store, _archive, path) = app_with_counted_reads(backend, 8 * 1024 * 1024).await;
    let response = app.client.get(app.url(&path)).send().await.expect("get");
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.bytes_stream();
    body.next().await.expect("a first piece").expect("body");
    assert!(
        app.registry.read_ahead_budget().reserved_bytes() > 0,
        "the download was reading ahead"
    );
    drop(body);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while app.registry.read_ahead_budget().reserved_bytes() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} bytes of read-ahead budget still held after the client left",
            app.registry.read_ahead_budget().reserved_bytes()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
