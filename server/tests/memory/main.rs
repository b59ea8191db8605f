//! Memory stays bounded whatever the archive size: a 512 MiB archive is streamed up and back
//! down through the real HTTP server while a counting global allocator records the process's
//! peak heap use (server and client live in this process, so the figure covers both).

mod manifests;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use futures::StreamExt;
use rand::{Rng, SeedableRng};
use reqwest::StatusCode;
use sha2::{Digest, Sha256};

use niso_test_support::{Backend, TestApp};

struct CountingAllocator;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let pointer = unsafe { System.alloc(layout) };
        if !pointer.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        pointer
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        unsafe { System.dealloc(pointer, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new_pointer = unsafe { System.realloc(pointer, layout, new_size) };
        if !new_pointer.is_null() {
            if new_size > layout.size() {
                let grown = new_size - layout.size();
                let now = CURRENT.fetch_add(grown, Ordering::Relaxed) + grown;
                PEAK.fetch_max(now, Ordering::Relaxed);
            } else {
                CURRENT.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        new_pointer
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// The allocator's figures are process-wide: the tests of this binary take turns.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Starts a measurement: the peak is reset to the current figure, which is returned.
fn reset_peak() -> usize {
    let baseline = CURRENT.load(Ordering::Relaxed);
    PEAK.store(baseline, Ordering::Relaxed);
    baseline
}

/// Growth of the peak over `baseline` since `reset_peak`.
fn peak_growth(baseline: usize) -> usize {
    PEAK.load(Ordering::Relaxed).saturating_sub(baseline)
}

const ARCHIVE_PAYLOAD: u64 = 512 * 1024 * 1024;
const PIECE: usize = 64 * 1024;
const MIB: usize = 1024 * 1024;

fn tar_header(path: &str, size: u64) -> Vec<u8> {
    let mut header = tar::Header::new_gnu();
    header.set_path(path).expect("path");
    header.set_size(size);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    header.as_bytes().to_vec()
}

fn padding(size: u64) -> usize {
    ((512 - size % 512) % 512) as usize
}

/// A valid tar (manifest + one large random file) generated piece by piece, never held whole.
fn archive_stream(seed: u64) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    let manifest = "[package]\nname = \"@big/blob\"\nversion = \"1.0.0\"\n";
    let mut prefix = tar_header("manifest.toml", manifest.len() as u64);
    prefix.extend_from_slice(manifest.as_bytes());
    prefix.resize(prefix.len() + padding(manifest.len() as u64), 0);
    prefix.extend(tar_header("payload", ARCHIVE_PAYLOAD));
    let mut suffix = vec![0u8; padding(ARCHIVE_PAYLOAD)];
    suffix.extend_from_slice(&[0u8; 1024]);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let pieces = (ARCHIVE_PAYLOAD as usize).div_ceil(PIECE);
    let body = futures::stream::iter(0..pieces).map(move |index| {
        let length = PIECE.min(ARCHIVE_PAYLOAD as usize - index * PIECE);
        let mut piece = vec![0u8; length];
        rng.fill(&mut piece[..]);
        Ok(Bytes::from(piece))
    });
    futures::stream::once(async move { Ok(Bytes::from(prefix)) })
        .chain(body)
        .chain(futures::stream::once(
            async move { Ok(Bytes::from(suffix)) },
        ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_512_mib_archive_streams_up_and_down_in_bounded_memory() {
    let _serial = SERIAL.lock().await;
    let app = TestApp::start(Backend::Embedded).await;
    let key = app.register("big").await;
    // Hash what we send on the side, without keeping it.
    let sent_hash = {
        let mut hasher = Sha256::new();
        let mut stream = std::pin::pin!(archive_stream(42));
        while let Some(piece) = stream.next().await {
            hasher.update(piece.unwrap());
        }
        hex::encode(hasher.finalize())
    };

    let baseline = CURRENT.load(Ordering::Relaxed);
    PEAK.store(baseline, Ordering::Relaxed);
    let response = app
        .client
        .put(app.url("/v1/packages/@big/blob/1.0.0/x86_64"))
        .bearer_auth(&key)
        .body(reqwest::Body::wrap_stream(archive_stream(42)))
        .send()
        .await
        .expect("upload");
    assert_eq!(response.status(), StatusCode::CREATED);
    let uploaded: serde_json::Value = response.json().await.unwrap();
    assert_eq!(uploaded["checksum"], sent_hash);
    let upload_peak = PEAK.load(Ordering::Relaxed) - baseline;

    let baseline = CURRENT.load(Ordering::Relaxed);
    PEAK.store(baseline, Ordering::Relaxed);
    let response = app
        .client
        .get(app.url("/v1/packages/@big/blob/1.0.0/x86_64"))
        .send()
        .await
        .expect("download");
    assert_eq!(response.status(), StatusCode::OK);
    let mut hasher = Sha256::new();
    let mut received: u64 = 0;
    let mut body = response.bytes_stream();
    while let Some(piece) = body.next().await {
        let piece = piece.expect("body");
        received += piece.len() as u64;
        hasher.update(&piece);
    }
    let download_peak = PEAK.load(Ordering::Relaxed) - baseline;
    assert_eq!(received, uploaded["size"].as_u64().unwrap());
    assert_eq!(
        hex::encode(hasher.finalize()),
        sent_hash,
        "byte-for-byte round trip"
    );

    println!(
        "512 MiB archive: peak heap growth {:.1} MiB during upload, {:.1} MiB during download",
        upload_peak as f64 / MIB as f64,
        download_peak as f64 / MIB as f64
    );
    assert!(
        upload_peak < 48 * MIB,
        "upload used {upload_peak} bytes of heap"
    );
    assert!(
        download_peak < 48 * MIB,
        "download used {download_peak} bytes of heap"
    );
}
