//! Delta pulls: an archive assembled from its chunk manifest, reusing every chunk the cache
//! holds and downloading only the others.
//!
//! The manifest comes from the registry, so it is checked before it is used: chunk names are
//! hashes, chunks are contiguous from offset 0, each at most [`MAX_CHUNK_BYTES`], and they add
//! up to the archive's size. Chunks are fetched [`PARALLEL_CHUNKS`] at a time but written in
//! order (so memory is bounded by that many chunks), each verified against its hash before it
//! is used or cached; the whole archive is verified against its checksum before the temporary
//! file is renamed to the output, so a failed or tampered pull never leaves a file behind.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::{StreamExt, TryStreamExt};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::api::{self, Api, Idempotency};
use crate::cache::{ChunkCache, is_chunk_hash, sha256_hex};
use crate::error::{CliError, Result};
use crate::output::Output;

/// Chunks downloaded at once.
pub const PARALLEL_CHUNKS: usize = 8;
/// The largest chunk accepted from a registry (FastCDC's own bound on any chunk size).
pub const MAX_CHUNK_BYTES: u64 = 16 * 1024 * 1024;

#[derive(Debug, Clone, Deserialize)]
pub struct ChunkManifest {
    pub name: String,
    pub version: String,
    pub arch: String,
    pub size: u64,
    pub checksum: String,
    pub chunks: Vec<ChunkRef>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ChunkRef {
    pub hash: String,
    pub size: u64,
    pub offset: u64,
}

/// What a pull did (the `--json` output of `niso pull`).
#[derive(Debug, Clone, Serialize)]
pub struct PullSummary {
    pub name: String,
    pub version: String,
    pub arch: String,
    pub path: PathBuf,
    pub size: u64,
    pub checksum: String,
    pub chunks: u64,
    pub chunks_reused: u64,
    pub chunks_downloaded: u64,
    pub bytes_downloaded: u64,
}

impl ChunkManifest {
    fn check(&self) -> Result<()> {
        let invalid = |what: String| {
            Err(CliError::server(format!(
                "the registry sent an invalid chunk manifest: {what}"
            )))
        };
        if !is_chunk_hash(&self.checksum) {
            return invalid("the checksum is not a sha256".into());
        }
        let mut offset = 0u64;
        for chunk in &self.chunks {
            if !is_chunk_hash(&chunk.hash) {
                return invalid(format!("`{}` is not a chunk hash", chunk.hash));
            }
            if chunk.offset != offset {
                return invalid(format!("chunk at {} expected at {offset}", chunk.offset));
            }
            if chunk.size == 0 || chunk.size > MAX_CHUNK_BYTES {
                return invalid(format!("chunk of {} bytes", chunk.size));
            }
            offset += chunk.size;
        }
        if offset != self.size {
            return invalid(format!(
                "chunks add up to {offset} bytes, not {}",
                self.size
            ));
        }
        Ok(())
    }
}

/// Fetches the chunk manifest of `name@reference` for `arch`.
pub async fn chunk_manifest(
    api: &Api,
    name: &niso_core::names::PackageName,
    reference: &str,
    arch: &str,
) -> Result<ChunkManifest> {
    let path = format!(
        "{}/{}/{}/chunks",
        api::package_path(name),
        api::segment(reference),
        api::segment(arch)
    );
    let manifest: ChunkManifest = api.get_json(&path).await?;
    manifest.check()?;
    Ok(manifest)
}

/// Pulls `name@reference` for `arch` into `output` through `cache`.
pub async fn pull(
    api: &Api,
    cache: &ChunkCache,
    name: &niso_core::names::PackageName,
    reference: &str,
    arch: &str,
    output_path: &Path,
    output: &Output,
) -> Result<PullSummary> {
    let manifest = chunk_manifest(api, name, reference, arch).await?;
    let directory = match output_path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let temporary = tempfile::Builder::new()
        .prefix(".niso-pull-")
        .tempfile_in(&directory)
        .map_err(|error| {
            CliError::io(format!("creating a file in {}", directory.display()), error)
        })?;
    let (std_file, temporary_path) = temporary.into_parts();
    let mut file = tokio::fs::File::from_std(std_file);

    let bar = output.bytes_bar(
        manifest.size,
        &format!(
            "pulling {}@{} ({}, {} chunks)",
            manifest.name,
            manifest.version,
            manifest.arch,
            manifest.chunks.len()
        ),
    );
    let reused = Arc::new(AtomicU64::new(0));
    let downloaded = Arc::new(AtomicU64::new(0));
    let downloaded_bytes = Arc::new(AtomicU64::new(0));
    let mut hasher = Sha256::new();
    let mut chunks = futures::stream::iter(manifest.chunks.iter().cloned())
        .map(|chunk| {
            let (reused, downloaded, downloaded_bytes) =
                (reused.clone(), downloaded.clone(), downloaded_bytes.clone());
            async move {
                let (bytes, was_downloaded) =
                    fetch_chunk(api, cache, &chunk, &reused, &downloaded).await?;
                if was_downloaded {
                    downloaded_bytes.fetch_add(chunk.size, Ordering::Relaxed);
                }
                Ok::<_, CliError>(bytes)
            }
        })
        .buffered(PARALLEL_CHUNKS);
    while let Some(bytes) = chunks.try_next().await? {
        hasher.update(&bytes);
        file.write_all(&bytes).await.map_err(|error| {
            CliError::io(format!("writing {}", temporary_path.display()), error)
        })?;
        bar.inc(bytes.len() as u64);
        bar.set_message(format!(
            "{} cached, {} fetched",
            reused.load(Ordering::Relaxed),
            downloaded.load(Ordering::Relaxed)
        ));
    }
    drop(chunks);
    bar.finish_and_clear();
    let checksum = hex::encode(hasher.finalize());
    if checksum != manifest.checksum {
        return Err(CliError::server(format!(
            "the assembled archive's sha256 is {checksum}, the registry said {}; nothing was \
             written",
            manifest.checksum
        )));
    }
    file.sync_all()
        .await
        .map_err(|error| CliError::io(format!("writing {}", temporary_path.display()), error))?;
    drop(file);
    temporary_path
        .persist(output_path)
        .map_err(|error| CliError::io(format!("writing {}", output_path.display()), error.error))?;

    let cache = cache.clone();
    let eviction = tokio::task::spawn_blocking(move || cache.evict())
        .await
        .expect("eviction does not panic");
    if let Err(error) = eviction {
        output.note(&format!("warning: could not trim the chunk cache: {error}"));
    }
    Ok(PullSummary {
        name: manifest.name,
        version: manifest.version,
        arch: manifest.arch,
        path: output_path.to_path_buf(),
        size: manifest.size,
        checksum,
        chunks: manifest.chunks.len() as u64,
        chunks_reused: reused.load(Ordering::Relaxed),
        chunks_downloaded: downloaded.load(Ordering::Relaxed),
        bytes_downloaded: downloaded_bytes.load(Ordering::Relaxed),
    })
}

/// One chunk, from the cache or the registry; `true` with the bytes when it was downloaded.
async fn fetch_chunk(
    api: &Api,
    cache: &ChunkCache,
    chunk: &ChunkRef,
    reused: &AtomicU64,
    downloaded: &AtomicU64,
) -> Result<(Vec<u8>, bool)> {
    let cached = {
        let (cache, hash) = (cache.clone(), chunk.hash.clone());
        tokio::task::spawn_blocking(move || cache.get(&hash))
            .await
            .expect("cache reads do not panic")
    };
    match cached {
        Ok(Some(bytes)) if bytes.len() as u64 == chunk.size => {
            reused.fetch_add(1, Ordering::Relaxed);
            return Ok((bytes, false));
        }
        // An unreadable cache slows the pull down but does not fail it.
        Ok(_) | Err(_) => {}
    }
    let path = format!("/v1/chunks/{}", chunk.hash);
    let response = api
        .send(Idempotency::Idempotent, || api.request(Method::GET, &path))
        .await?;
    let bytes = api::read_limited(response, chunk.size as usize).await?;
    let bytes = tokio::task::spawn_blocking(move || {
        let hash = sha256_hex(&bytes);
        (bytes, hash)
    })
    .await
    .expect("hashing does not panic");
    let (bytes, hash) = bytes;
    if hash != chunk.hash || bytes.len() as u64 != chunk.size {
        return Err(CliError::server(format!(
            "chunk {} from the registry does not match its hash ({} bytes, sha256 {hash})",
            chunk.hash,
            bytes.len()
        )));
    }
    downloaded.fetch_add(1, Ordering::Relaxed);
    let (cache, hash) = (cache.clone(), chunk.hash.clone());
    let bytes = tokio::task::spawn_blocking(move || {
        // A full or read-only cache only costs the next pull a download.
        let _ = cache.put(&hash, &bytes);
        bytes
    })
    .await
    .expect("cache writes do not panic");
    Ok((bytes, true))
}
