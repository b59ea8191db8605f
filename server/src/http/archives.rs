//! `/v1/packages/{name}/{version}/{arch}` and its `/chunks`: downloading, uploading and
//! deleting one archive, and the chunk manifest that lets a client fetch only the chunks it
//! lacks.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::{StreamExt, TryStreamExt};
use niso_registry::error::Error;
use niso_registry::names::{Arch, PackageName, Reference, Version};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::extract::{Auth, Path};
use super::range::{RangeRequest, parse_range};
use crate::http::error::{ApiError, Result};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(download_archive, upload_archive, delete_archive))
        .routes(routes!(chunk_manifest))
}

/// An archive to read: the version may be a tag or `latest`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ArchivePath {
    /// `@namespace/name`, as two path segments or percent-encoded as one.
    pub name: PackageName,
    /// A version, a tag, or `latest` (the latest version that has this arch).
    pub version: Reference,
    pub arch: Arch,
}

/// An archive to write or delete: an exact version.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct PublishedArchivePath {
    /// `@namespace/name`, as two path segments or percent-encoded as one.
    pub name: PackageName,
    pub version: Version,
    pub arch: Arch,
}

#[derive(Serialize, ToSchema)]
pub struct UploadResponse {
    #[schema(value_type = PackageName)]
    pub name: String,
    #[schema(value_type = Version)]
    pub version: String,
    #[schema(value_type = Arch)]
    pub arch: String,
    /// Archive size in bytes.
    pub size: u64,
    /// `sha256:` and the archive's SHA-256 in hex.
    pub checksum: String,
}

#[derive(Serialize, ToSchema)]
pub struct ChunkEntry {
    /// The chunk's SHA-256 in hex: fetch it from `/v1/chunks/{hash}`.
    pub hash: String,
    pub size: i64,
    /// Where the chunk starts in the archive.
    pub offset: i64,
}

#[derive(Serialize, ToSchema)]
pub struct ChunkManifestResponse {
    #[schema(value_type = PackageName)]
    pub name: String,
    #[schema(value_type = Version)]
    pub version: String,
    #[schema(value_type = Arch)]
    pub arch: String,
    pub size: i64,
    pub checksum: String,
    /// In archive order; concatenated they are the archive.
    pub chunks: Vec<ChunkEntry>,
}

/// Download an archive. Supports `Range` (one range), `If-None-Match` with the `ETag` (the
/// checksum), and `HEAD`; `X-Package-Version` names the version a tag or `latest` resolved to.
#[utoipa::path(get, path = "/v1/packages/{name}/{version}/{arch}", params(ArchivePath),
    responses(
        (status = 200, content_type = "application/octet-stream", body = Vec<u8>),
        (status = 206, description = "the requested range"),
        (status = 304, description = "the archive matches If-None-Match"),
        (status = 400), (status = 404), (status = 416), (status = 503)))]
pub async fn download_archive(
    State(state): State<AppState>,
    Path(path): Path<ArchivePath>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response> {
    let (package, version) = state
        .registry
        .resolve_version(&path.name, &path.version, Some(&path.arch))
        .await?;
    let etag = format!("\"{}\"", version.checksum);
    let size = version.size as u64;
    let mut response_headers = HeaderMap::new();
    response_headers.insert(header::ETAG, header_value(&etag)?);
    response_headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    response_headers.insert("x-package-version", header_value(&version.version)?);
    if if_none_match(&headers, &etag) {
        return Ok((StatusCode::NOT_MODIFIED, response_headers).into_response());
    }
    let filename = format!(
        "{}-{}-{}.niso",
        path.name.short_name(),
        version.version,
        version.arch
    );
    response_headers.insert(
        header::CONTENT_DISPOSITION,
        header_value(&format!("attachment; filename=\"{filename}\""))?,
    );
    response_headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(value) => parse_range(value, size),
        None => RangeRequest::Full,
    };
    let (status, byte_range) = match range {
        RangeRequest::Full => (StatusCode::OK, 0..size),
        RangeRequest::Partial(range) => {
            response_headers.insert(
                header::CONTENT_RANGE,
                header_value(&format!("bytes {}-{}/{size}", range.start, range.end - 1))?,
            );
            (StatusCode::PARTIAL_CONTENT, range)
        }
        RangeRequest::Unsatisfiable => {
            return Err(ApiError::RangeNotSatisfiable {
                message: format!("the range is outside the archive's {size} bytes"),
                size,
            });
        }
    };
    response_headers.insert(
        header::CONTENT_LENGTH,
        HeaderValue::from(byte_range.end - byte_range.start),
    );
    if method == Method::HEAD {
        return Ok((status, response_headers).into_response());
    }
    let (package_id, version_id) = (package.id, version.id);
    let download = state.registry.prepare_download(package, version).await?;
    let registry: Arc<_> = state.registry.clone();
    // The first piece is read before the status goes out: when the object store is down the
    // client gets a 503 it can retry, not a 200 whose body breaks off.
    let mut pieces = Box::pin(download.stream(registry, byte_range));
    let first = pieces.next().await.transpose()?;
    if status == StatusCode::OK {
        state.registry.record_download(package_id, version_id);
    }
    let stream = futures::stream::iter(first.map(Ok))
        .chain(pieces)
        .map_err(|error| {
            tracing::error!(%error, "download failed mid-stream");
            std::io::Error::other(error.public_message())
        });
    Ok((status, response_headers, Body::from_stream(stream)).into_response())
}

fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|candidate| {
            candidate == "*" || candidate == etag || candidate.strip_prefix("W/") == Some(etag)
        })
}

fn header_value(text: &str) -> Result<HeaderValue> {
    HeaderValue::from_str(text).map_err(|_| Error::internal("unrepresentable header value").into())
}

/// Publish an archive (`PUT`; `POST` is accepted too). The body is streamed: validated,
/// chunked and stored as it arrives, and published only when all of it was valid.
#[utoipa::path(method(put, post), path = "/v1/packages/{name}/{version}/{arch}",
    params(PublishedArchivePath),
    request_body(content = Vec<u8>, content_type = "application/octet-stream",
        description = "a .niso archive: a tar, optionally gzip or zstd compressed, with manifest.toml"),
    responses((status = 201, body = UploadResponse), (status = 400), (status = 401), (status = 403),
        (status = 408), (status = 409), (status = 413), (status = 429), (status = 503)),
    security(("api_key" = [])))]
pub async fn upload_archive(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(path): Path<PublishedArchivePath>,
    request: Request,
) -> Result<Response> {
    // Before anything is read from the body; held until the upload ends, however it ends.
    let _slot = state.registry.upload_slot(&principal)?;
    let permit = state
        .registry
        .authorize_package(&principal, &path.name)
        .await?;
    let content_length = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // A body that stops arriving ends as a 408 (see `serve::body_error`).
    let body = request
        .into_body()
        .into_data_stream()
        .map_err(super::serve::body_error);
    let uploaded = state
        .registry
        .upload_version(&permit, path.version, path.arch, body, content_length)
        .await?;
    tracing::info!(
        package = %uploaded.name,
        version = %uploaded.version,
        arch = %uploaded.arch,
        size = uploaded.size,
        new_chunks = uploaded.new_chunks,
        reused_chunks = uploaded.reused_chunks,
        "version uploaded"
    );
    Ok((
        StatusCode::CREATED,
        axum::Json(UploadResponse {
            name: uploaded.name,
            version: uploaded.version,
            arch: uploaded.arch,
            size: uploaded.size,
            checksum: uploaded.checksum,
        }),
    )
        .into_response())
}

/// Delete one version and arch. Tags left pointing at nothing go with it; its chunks are
/// reclaimed by GC unless another version uses them.
#[utoipa::path(delete, path = "/v1/packages/{name}/{version}/{arch}",
    params(PublishedArchivePath),
    responses((status = 204), (status = 400), (status = 401), (status = 403), (status = 404)),
    security(("api_key" = [])))]
pub async fn delete_archive(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(path): Path<PublishedArchivePath>,
) -> Result<StatusCode> {
    let permit = state
        .registry
        .authorize_package(&principal, &path.name)
        .await?;
    state
        .registry
        .delete_version(&permit, &path.version, &path.arch)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The chunks an archive is stored as, in order, for clients that fetch only the chunks they
/// do not have.
#[utoipa::path(get, path = "/v1/packages/{name}/{version}/{arch}/chunks", params(ArchivePath),
    responses((status = 200, body = ChunkManifestResponse), (status = 400), (status = 404)))]
pub async fn chunk_manifest(
    State(state): State<AppState>,
    Path(path): Path<ArchivePath>,
) -> Result<axum::Json<ChunkManifestResponse>> {
    let (_, version) = state
        .registry
        .resolve_version(&path.name, &path.version, Some(&path.arch))
        .await?;
    let chunks = state.registry.version_chunks(version.id).await?;
    Ok(axum::Json(ChunkManifestResponse {
        name: path.name.to_string(),
        version: version.version,
        arch: version.arch,
        size: version.size,
        checksum: version.checksum,
        chunks: chunks
            .into_iter()
            .map(|(reference, chunk)| ChunkEntry {
                hash: chunk.hash,
                size: reference.size,
                offset: reference.byte_offset,
            })
            .collect(),
    }))
}
