//! A hostile registry: it serves a chunk manifest and chunks of its choosing. The client must
//! refuse an archive that escapes the install directory, and chunks or archives whose bytes do
//! not match their hashes, leaving nothing behind.

use axum::Router;
use axum::extract::Path;
use axum::routing::get;
use serde_json::json;

use crate::Niso;
use niso_test_support::archives;

const ARCH: &str = "x86_64-linux";

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Serves `archive` as `@evil/pkg@1.0.0` in one chunk; the chunk endpoint answers `served`.
async fn registry(archive: Vec<u8>, served: Vec<u8>) -> String {
    let hash = sha256(&archive);
    let manifest = json!({
        "name": "@evil/pkg", "version": "1.0.0", "arch": ARCH,
        "size": archive.len(), "checksum": hash,
        "chunks": [{"hash": hash, "size": archive.len(), "offset": 0}],
    });
    let app = Router::new()
        .route(
            "/v1/packages/{*rest}",
            get(move || {
                let manifest = manifest.clone();
                async move { axum::Json(manifest) }
            }),
        )
        .route(
            "/v1/chunks/{hash}",
            get(move |Path(_hash): Path<String>| {
                let served = served.clone();
                async move { served }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

/// `escape -> ../..` then `escape/pwned`, written with raw headers as an attacker would.
fn escaping_archive() -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let manifest = archives::manifest("@evil/pkg", "1.0.0");
    let mut header = tar::Header::new_gnu();
    header.set_size(manifest.len() as u64);
    header.set_mode(0o644);
    builder
        .append_data(&mut header, "manifest.toml", manifest.as_bytes())
        .unwrap();
    let mut link = tar::Header::new_gnu();
    link.set_entry_type(tar::EntryType::Symlink);
    link.set_size(0);
    builder.append_link(&mut link, "escape", "../..").unwrap();
    let mut file = tar::Header::new_gnu();
    file.set_size(5);
    file.set_mode(0o644);
    let name = b"escape/pwned";
    file.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name);
    file.set_cksum();
    builder.append(&file, &b"owned"[..]).unwrap();
    builder.into_inner().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_refuses_an_archive_that_escapes() {
    let archive = escaping_archive();
    let base = registry(archive.clone(), archive).await;
    let niso = Niso::new(&base);
    let run = niso
        .run(&["install", "@evil/pkg", "--arch", ARCH, "--into", "deep/opt"])
        .await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("the archive is refused"), "{run:?}");
    assert!(!niso.path("pwned").exists());
    assert!(!niso.path("deep/pwned").exists());
    assert!(!niso.path("deep/opt/@evil/pkg").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_that_does_not_match_its_hash_is_refused() {
    let archive = archives::niso("@evil/pkg", "1.0.0", &[("a", b"a")]);
    let mut tampered = archive.clone();
    let last = tampered.len() - 700;
    tampered[last] ^= 1;
    let base = registry(archive, tampered).await;
    let niso = Niso::new(&base);
    let run = niso
        .run(&["pull", "@evil/pkg", "--arch", ARCH, "-o", "out.niso"])
        .await;
    assert_eq!(run.code, 5, "{run:?}");
    assert!(run.stderr.contains("does not match its hash"), "{run:?}");
    assert!(!niso.path("out.niso").exists());
    let leftovers: Vec<_> = std::fs::read_dir(niso.home.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.starts_with(".niso"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert!(
        !niso
            .cache_dir()
            .join("chunks")
            .read_dir()
            .unwrap()
            .any(|shard| { shard.unwrap().path().read_dir().unwrap().next().is_some() })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_chunk_is_not_read_whole() {
    let archive = archives::niso("@evil/pkg", "1.0.0", &[("a", b"a")]);
    let mut oversized = archive.clone();
    oversized.extend(std::iter::repeat_n(0u8, 8 * 1024 * 1024));
    let base = registry(archive, oversized).await;
    let niso = Niso::new(&base);
    let run = niso
        .run(&["pull", "@evil/pkg", "--arch", ARCH, "-o", "out.niso"])
        .await;
    assert_eq!(run.code, 5, "{run:?}");
    assert!(run.stderr.contains("larger than"), "{run:?}");
}

/// Answers 503 (`Retry-After: 0`) then 429 before serving: the client retries and succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_answers_are_retried() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    let archive = archives::niso("@evil/pkg", "1.0.0", &[("a", b"a")]);
    let hash = sha256(&archive);
    let manifest = json!({
        "name": "@evil/pkg", "version": "1.0.0", "arch": ARCH,
        "size": archive.len(), "checksum": hash,
        "chunks": [{"hash": hash, "size": archive.len(), "offset": 0}],
    });
    let calls = Arc::new(AtomicU64::new(0));
    let counter = calls.clone();
    let app = Router::new()
        .route(
            "/v1/packages/{*rest}",
            get(move || {
                let (manifest, calls) = (manifest.clone(), counter.clone());
                async move {
                    use axum::response::IntoResponse;
                    match calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
                        0 => (
                            axum::http::StatusCode::SERVICE_UNAVAILABLE,
                            [("retry-after", "0")],
                            axum::Json(json!({"error": "busy"})),
                        )
                            .into_response(),
                        1 => (
                            axum::http::StatusCode::TOO_MANY_REQUESTS,
                            axum::Json(json!({"error": "slow down"})),
                        )
                            .into_response(),
                        _ => axum::Json(manifest).into_response(),
                    }
                }
            }),
        )
        .route(
            "/v1/chunks/{hash}",
            get(move || {
                let archive = archive.clone();
                async move { archive }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let niso = Niso::new(&base);
    let run = niso
        .run(&[
            "pull",
            "@evil/pkg@1.0.0",
            "--arch",
            ARCH,
            "-o",
            "out.niso",
            "--json",
        ])
        .await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert!(niso.path("out.niso").exists());
}
