//! `niso pack` and `niso push`: an archive built from a directory (or taken as given), checked
//! with the registry's validator before anything is sent, and uploaded as a stream.

use std::path::{Path, PathBuf};

use futures::StreamExt;
use niso_core::archive::{ArchiveLimits, Manifest, validate_archive};
use niso_core::names::PackageName;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio_util::io::ReaderStream;

use crate::api::{self, Api, Idempotency};
use crate::error::{CliError, Result};
use crate::output::Output;

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
        &format!("{}@{}", archive.manifest.name, archive.manifest.version),
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
