//! `niso pack` and `niso push`: an archive built from a directory (or taken as given), checked
//! with the registry's validator before anything is sent, then uploaded.
//!
//! The upload goes through an upload session when the registry offers them (`GET /v1/uploads`):
//! the archive is chunked locally with the registry's parameters, the session is opened with
//! the chunk list, and only the chunks the registry lacks are sent ([`PARALLEL_CHUNKS`] at a
//! time) before the commit. Opening the same session again resumes it, so rerunning a push that
//! was killed sends only what is still missing. A registry without sessions gets a streamed
//! `PUT` of the whole archive.

use std::path::{Path, PathBuf};

use futures::StreamExt;
use niso_core::archive::{ArchiveLimits, Manifest, validate_archive};
use niso_core::names::PackageName;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio_util::io::ReaderStream;

use crate::api::{self, Api, Idempotency};
use crate::error::{CliError, ErrorKind, Result};
use crate::output::Output;

/// Chunks sent at once in a session.
pub const PARALLEL_CHUNKS: usize = 4;
/// The largest chunking maximum accepted from a registry (bounds the memory of a chunk in flight).
const MAX_CHUNK_BYTES: u32 = 16 * 1024 * 1024;

/// A local archive, validated.
pub struct LocalArchive {
    pub path: PathBuf,
    pub manifest: Manifest,
    pub size: u64,
    pub checksum: String,
    /// Keeps a packed archive alive until it is uploaded.
    _temporary: Option<tempfile::TempPath>,
}

/// Packs `directory` into a temporary file in `into` (validated, not yet named).
pub fn pack_to_temporary(directory: &Path, into: &Path) -> Result<LocalArchive> {
    let file = tempfile::Builder::new()
        .prefix(".niso-pack-")
        .tempfile_in(into)
        .map_err(|error| CliError::io(format!("creating a file in {}", into.display()), error))?;
    let (std_file, path) = file.into_parts();
    let mut writer = std::io::BufWriter::new(std_file);
    niso_core::pack::pack_directory(directory, &mut writer).map_err(|error| {
        CliError::failed(format!("cannot pack {}: {error}", directory.display()))
    })?;
    let std_file = writer
        .into_inner()
        .map_err(|error| CliError::io("writing the archive", error.into_error()))?;
    std_file
        .sync_all()
        .map_err(|error| CliError::io("writing the archive", error))?;
    let mut archive = inspect(&path)?;
    archive._temporary = Some(path);
    Ok(archive)
}

/// Validates the archive at `path` as the registry will, and hashes it.
pub fn inspect(path: &Path) -> Result<LocalArchive> {
    let open = || {
        std::fs::File::open(path)
            .map(std::io::BufReader::new)
            .map_err(|error| CliError::io(format!("reading {}", path.display()), error))
    };
    let validated = validate_archive(open()?, &ArchiveLimits::default()).map_err(|error| {
        CliError::failed(format!(
            "{} is not a valid archive: {error}",
            path.display()
        ))
    })?;
    let mut hasher = Sha256::new();
    let mut reader = open()?;
    let mut buffer = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let read = std::io::Read::read(&mut reader, &mut buffer)
            .map_err(|error| CliError::io(format!("reading {}", path.display()), error))?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        size += read as u64;
    }
    Ok(LocalArchive {
        path: path.to_path_buf(),
        manifest: validated.manifest,
        size,
        checksum: hex::encode(hasher.finalize()),
        _temporary: None,
    })
}

/// The registry's answer to an upload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Published {
    pub name: String,
    pub version: String,
    pub arch: String,
    pub size: u64,
    pub checksum: String,
}

/// Streams the archive to `PUT /v1/packages/{name}/{version}/{arch}`.
pub async fn upload(
    api: &Api,
    archive: &LocalArchive,
    arch: &str,
    output: &Output,
) -> Result<Published> {
    let name = PackageName::parse(&archive.manifest.name).map_err(|error| {
        CliError::failed(format!("the manifest's package name is invalid: {error}"))
    })?;
    let path = format!(
        "{}/{}/{}",
        api::package_path(&name),
        api::segment(&archive.manifest.version),
        api::segment(arch)
    );
    let bar = output.bytes_bar(
        archive.size,
        &format!(
            "pushing {}@{} ({arch})",
            archive.manifest.name, archive.manifest.version
        ),
    );
    // The file is opened again for each attempt; the bar restarts with it.
    let attempt = || {
        let bar = bar.clone();
        bar.set_position(0);
        let file_path = archive.path.clone();
        let stream = futures::stream::once(async move { tokio::fs::File::open(file_path).await })
            .map(|file| match file {
                Ok(file) => ReaderStream::with_capacity(file, 256 * 1024).left_stream(),
                Err(error) => futures::stream::once(async move { Err(error) }).right_stream(),
            })
            .flatten()
            .inspect(move |piece| {
                if let Ok(piece) = piece {
                    bar.inc(piece.len() as u64);
                }
            });
        api.request(Method::PUT, &path)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .header(reqwest::header::CONTENT_LENGTH, archive.size)
            .body(reqwest::Body::wrap_stream(stream))
    };
    let response = api.send(Idempotency::Idempotent, attempt).await;
    bar.finish_and_clear();
    let body = api::read_limited(response?, 64 * 1024).await?;
    let published: Published = serde_json::from_slice(&body).map_err(|error| {
        CliError::server(format!(
            "the registry's response is not what niso expects: {error}"
        ))
    })?;
    if published.checksum != archive.checksum {
        return Err(CliError::server(format!(
            "the registry stored sha256 {}, but the archive's is {}",
            published.checksum, archive.checksum
        )));
    }
    Ok(published)
}

/// Sets `tag` on `name` to `version`.
pub async fn set_tag(api: &Api, name: &PackageName, tag: &str, version: &str) -> Result<()> {
    let _: serde_json::Value = api
        .send_json(
            Method::POST,
            &format!("{}/tags", api::package_path(name)),
            &serde_json::json!({ "tag": tag, "version": version }),
            Idempotency::Idempotent,
        )
        .await?;
    Ok(())
}

/// What a push sent.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Transfer {
    /// Whether an upload session was used (else the archive was streamed whole).
    pub session: bool,
    pub chunks: u64,
    pub chunks_sent: u64,
    pub bytes_sent: u64,
}

#[derive(Deserialize)]
struct UploadParameters {
    chunking: ChunkingParameters,
}

#[derive(Deserialize)]
struct ChunkingParameters {
    min_size: u32,
    avg_size: u32,
    max_size: u32,
}

#[derive(Deserialize)]
struct SessionAnswer {
    id: i64,
    missing: Vec<String>,
}

/// One chunk of the local archive.
#[derive(Debug, Clone)]
struct LocalChunk {
    hash: String,
    offset: u64,
    size: u64,
}

/// Publishes the archive: through an upload session when the registry has them, else streamed.
pub async fn publish(
    api: &Api,
    archive: &LocalArchive,
    arch: &str,
    output: &Output,
) -> Result<(Published, Transfer)> {
    let parameters = match api.get_json::<UploadParameters>("/v1/uploads").await {
        Ok(parameters) => Some(parameters),
        // An older registry: no sessions.
        Err(error) if error.kind == ErrorKind::NotFound => None,
        Err(error) => return Err(error),
    };
    match parameters {
        Some(parameters) => upload_in_session(api, archive, arch, &parameters, output).await,
        None => {
            let published = upload(api, archive, arch, output).await?;
            let transfer = Transfer {
                session: false,
                chunks: 0,
                chunks_sent: 0,
                bytes_sent: archive.size,
            };
            Ok((published, transfer))
        }
    }
}

/// Cuts the archive the way the registry will (FastCDC with its parameters) and hashes each chunk.
fn chunk_file(path: &Path, parameters: &ChunkingParameters) -> Result<Vec<LocalChunk>> {
    use niso_core::chunking::{ChunkingSettings, StreamChunker};
    let settings = ChunkingSettings {
        min_size: parameters.min_size,
        avg_size: parameters.avg_size,
        max_size: parameters.max_size,
    };
    let sane = 0 < settings.min_size
        && settings.min_size <= settings.avg_size
        && settings.avg_size <= settings.max_size
        && settings.max_size <= MAX_CHUNK_BYTES;
    if !sane {
        return Err(CliError::server(format!(
            "the registry's chunking parameters are unusable: {settings:?}"
        )));
    }
    let mut chunker = StreamChunker::new(settings);
    let mut file = std::fs::File::open(path)
        .map_err(|error| CliError::io(format!("reading {}", path.display()), error))?;
    let mut buffer = vec![0u8; 1024 * 1024];
    let mut chunks = Vec::new();
    let mut offset = 0u64;
    let mut record = |pieces: Vec<bytes::Bytes>, chunks: &mut Vec<LocalChunk>| {
        for piece in pieces {
            chunks.push(LocalChunk {
                hash: crate::cache::sha256_hex(&piece),
                offset,
                size: piece.len() as u64,
            });
            offset += piece.len() as u64;
        }
    };
    loop {
        let read = std::io::Read::read(&mut file, &mut buffer)
            .map_err(|error| CliError::io(format!("reading {}", path.display()), error))?;
        if read == 0 {
            break;
        }
        record(chunker.push(&buffer[..read]), &mut chunks);
    }
    record(chunker.finish(), &mut chunks);
    Ok(chunks)
}

async fn upload_in_session(
    api: &Api,
    archive: &LocalArchive,
    arch: &str,
    parameters: &UploadParameters,
    output: &Output,
) -> Result<(Published, Transfer)> {
    let chunks = tokio::task::block_in_place(|| chunk_file(&archive.path, &parameters.chunking))?;
    let declaration = serde_json::json!({
        "name": archive.manifest.name,
        "version": archive.manifest.version,
        "arch": arch,
        "size": archive.size,
        "checksum": archive.checksum,
        "chunks": chunks
            .iter()
            .map(|chunk| serde_json::json!({"hash": chunk.hash, "size": chunk.size}))
            .collect::<Vec<_>>(),
    });
    // Opening is idempotent: the registry resumes the session this key has for the same list.
    let session: SessionAnswer = api
        .send_json(
            Method::POST,
            "/v1/uploads",
            &declaration,
            Idempotency::Idempotent,
        )
        .await?;
    let by_hash: std::collections::HashMap<&str, &LocalChunk> = chunks
        .iter()
        .rev()
        .map(|chunk| (chunk.hash.as_str(), chunk))
        .collect();
    let mut to_send = Vec::with_capacity(session.missing.len());
    for hash in &session.missing {
        let chunk = by_hash.get(hash.as_str()).ok_or_else(|| {
            CliError::server(format!(
                "the registry asked for chunk {hash}, which is not ours"
            ))
        })?;
        to_send.push((*chunk).clone());
    }
    let bytes_to_send: u64 = to_send.iter().map(|chunk| chunk.size).sum();
    if chunks.len() > to_send.len() {
        output.note(&format!(
            "{} of {} chunks already in the registry; sending {}",
            chunks.len() - to_send.len(),
            chunks.len(),
            crate::output::human_bytes(bytes_to_send)
        ));
    }
    let bar = output.bytes_bar(
        bytes_to_send,
        &format!(
            "pushing {}@{} ({arch})",
            archive.manifest.name, archive.manifest.version
        ),
    );
    let file = std::sync::Arc::new(
        std::fs::File::open(&archive.path)
            .map_err(|error| CliError::io(format!("reading {}", archive.path.display()), error))?,
    );
    let sent = futures::stream::iter(to_send.iter().cloned())
        .map(|chunk| {
            let (file, bar) = (file.clone(), bar.clone());
            async move {
                let bytes = tokio::task::spawn_blocking(move || read_at(&file, &chunk))
                    .await
                    .expect("reads do not panic")?;
                let path = format!("/v1/uploads/{}/chunks/{}", session.id, bytes.0.hash);
                let body = bytes::Bytes::from(bytes.1);
                api.send(Idempotency::Idempotent, || {
                    api.request(Method::PUT, &path)
                        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                        .body(body.clone())
                })
                .await?;
                bar.inc(body.len() as u64);
                Ok::<_, CliError>(())
            }
        })
        .buffer_unordered(PARALLEL_CHUNKS)
        .collect::<Vec<_>>()
        .await;
    bar.finish_and_clear();
    sent.into_iter().collect::<Result<Vec<()>>>()?;
    let published: Published = api
        .send_json(
            Method::POST,
            &format!("/v1/uploads/{}/commit", session.id),
            &serde_json::Value::Null,
            Idempotency::Once,
        )
        .await?;
    if published.checksum != archive.checksum {
        return Err(CliError::server(format!(
            "the registry stored sha256 {}, but the archive's is {}",
            published.checksum, archive.checksum
        )));
    }
    let transfer = Transfer {
        session: true,
        chunks: chunks.len() as u64,
        chunks_sent: to_send.len() as u64,
        bytes_sent: bytes_to_send,
    };
    Ok((published, transfer))
}

fn read_at(file: &std::fs::File, chunk: &LocalChunk) -> Result<(LocalChunk, Vec<u8>)> {
    let mut bytes = vec![0u8; chunk.size as usize];
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileExt;
        file.read_exact_at(&mut bytes, chunk.offset)
            .map_err(|error| CliError::io("reading the archive", error))?;
    }
    #[cfg(not(unix))]
    {
        use std::io::{Read, Seek, SeekFrom};
        let mut file = file
            .try_clone()
            .map_err(|error| CliError::io("reading the archive", error))?;
        file.seek(SeekFrom::Start(chunk.offset))
            .and_then(|_| file.read_exact(&mut bytes))
            .map_err(|error| CliError::io("reading the archive", error))?;
    }
    // The file may have changed since it was chunked: what is sent must be what was declared.
    if crate::cache::sha256_hex(&bytes) != chunk.hash {
        return Err(CliError::failed(
            "the archive changed while it was being pushed",
        ));
    }
    Ok((chunk.clone(), bytes))
}
