//! `/v1/packages/*`: listings, manifests, downloads, uploads, deletes, tags and chunk
//! manifests. One dispatcher parses the package path (see `package_path.rs`) and hands the
//! request to the endpoint's handler.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{OriginalUri, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::extract::{Json, Limit, Offset, Pagination, Query, authenticate};
use super::package_path::{PackageRoute, parse_package_path};
use super::range::{RangeRequest, parse_range};
use crate::http::error::{ApiError, Result};
use niso_registry::error::Error;
use niso_registry::format_timestamp;
use niso_registry::names::{PackageName, parse_version, validate_arch};
use niso_registry::packages::LATEST;

/// Marks a response with its route template (the dispatcher's routes are not axum routes).
#[derive(Clone, Copy)]
pub struct RouteTemplate(pub &'static str);

#[derive(Deserialize)]
pub struct ListQuery {
    pub q: Option<String>,
    pub limit: Option<Limit>,
    pub offset: Option<Offset>,
}

#[derive(Serialize, ToSchema)]
pub struct PackageResponse {
    pub name: String,
    pub latest_version: String,
    pub description: Option<String>,
    pub updated_at: String,
    pub download_count: i64,
}

#[derive(Serialize, ToSchema)]
pub struct VersionResponse {
    pub name: String,
    pub version: String,
    pub arch: String,
    pub size: i64,
    pub checksum: String,
    pub uploaded_at: String,
    pub download_count: i64,
}

#[derive(Serialize, ToSchema)]
pub struct UploadResponse {
    pub name: String,
    pub version: String,
    pub arch: String,
    pub size: u64,
    pub checksum: String,
}

#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TagBody {
    pub tag: String,
    pub version: String,
}

#[derive(Serialize, ToSchema)]
pub struct ChunkEntry {
    pub hash: String,
    pub size: i64,
    pub offset: i64,
}

#[derive(Serialize, ToSchema)]
pub struct ChunkManifestResponse {
    pub name: String,
    pub version: String,
    pub arch: String,
    pub size: i64,
    pub checksum: String,
    pub chunks: Vec<ChunkEntry>,
}

#[utoipa::path(get, path = "/v1/packages", params(("q" = Option<String>, Query), ("limit" = Option<u64>, Query), ("offset" = Option<u64>, Query)),
    responses((status = 200, body = [PackageResponse])))]
pub async fn list_packages(
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> Result<axum::Json<Vec<PackageResponse>>> {
    let pagination = Pagination {
        limit: query.limit,
        offset: query.offset,
    };
    let packages = state
        .registry
        .list_packages(query.q.as_deref(), pagination.limit(), pagination.offset())
        .await?;
    Ok(axum::Json(
        packages
            .into_iter()
            .map(|p| PackageResponse {
                name: p.name,
                latest_version: p.latest_version,
                description: p.description,
                updated_at: format_timestamp(&p.updated_at),
                download_count: p.download_count,
            })
            .collect(),
    ))
}

/// Every `/v1/packages/{name}/…` request.
pub async fn dispatch(
    State(state): State<AppState>,
    OriginalUri(uri): OriginalUri,
    request: Request,
) -> Response {
    let raw = uri.path().strip_prefix("/v1/packages/").unwrap_or_default();
    let (name, route) = match parse_package_path(raw) {
        Ok(Some(parsed)) => parsed,
        Ok(None) => {
            return ApiError::from(Error::NotFound("no such endpoint".into())).into_response();
        }
        Err(error) => return error.into_response(),
    };
    let template = route.template();
    let method = request.method().clone();
    let result = match (&method, route) {
        (&Method::GET | &Method::HEAD, PackageRoute::Versions) => {
            versions(&state, &name, request).await
        }
        (&Method::GET | &Method::HEAD, PackageRoute::Tags) => list_tags(&state, &name).await,
        (&Method::POST | &Method::PUT, PackageRoute::Tags) => set_tag(&state, &name, request).await,
        (&Method::GET | &Method::HEAD, PackageRoute::Manifest { version }) => {
            manifest(&state, &name, &version, request).await
        }
        (&Method::GET | &Method::HEAD, PackageRoute::Archive { version, arch }) => {
            download(&state, &name, &version, &arch, request).await
        }
        (&Method::PUT | &Method::POST, PackageRoute::Archive { version, arch }) => {
            upload(&state, name, version, arch, request).await
        }
        (&Method::DELETE, PackageRoute::Archive { version, arch }) => {
            delete(&state, &name, &version, &arch, request.headers()).await
        }
        (&Method::GET | &Method::HEAD, PackageRoute::ChunkManifest { version, arch }) => {
            chunk_manifest(&state, &name, &version, &arch).await
        }
        _ => Err(Error::NotFound(format!("no {method} endpoint at this path")).into()),
    };
    let mut response = result.unwrap_or_else(IntoResponse::into_response);
    response.extensions_mut().insert(RouteTemplate(template));
    response
}

async fn versions(state: &AppState, name: &PackageName, request: Request) -> Result<Response> {
    let (mut parts, _) = request.into_parts();
    let Query(pagination) =
        <Query<Pagination> as axum::extract::FromRequestParts<AppState>>::from_request_parts(
            &mut parts, state,
        )
        .await?;
    let versions = state
        .registry
        .list_versions(name, pagination.limit(), pagination.offset())
        .await?;
    Ok(axum::Json(
        versions
            .into_iter()
            .map(|v| VersionResponse {
                name: name.to_string(),
                version: v.version,
                arch: v.arch,
                size: v.size,
                checksum: v.checksum,
                uploaded_at: format_timestamp(&v.uploaded_at),
                download_count: v.download_count,
            })
            .collect::<Vec<_>>(),
    )
    .into_response())
}

async fn list_tags(state: &AppState, name: &PackageName) -> Result<Response> {
    let tags = state.registry.list_tags(name).await?;
    Ok(axum::Json(
        tags.into_iter()
            .map(|t| TagBody {
                tag: t.tag,
                version: t.version,
            })
            .collect::<Vec<_>>(),
    )
    .into_response())
}

async fn set_tag(state: &AppState, name: &PackageName, request: Request) -> Result<Response> {
    let principal = authenticate(state, request.headers()).await?;
    let Json(body) =
        <Json<TagBody> as axum::extract::FromRequest<AppState>>::from_request(request, state)
            .await?;
    let permit = state.registry.authorize_package(&principal, name).await?;
    let tag = state
        .registry
        .set_tag(&permit, &body.tag, &body.version)
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(TagBody {
            tag: tag.tag,
            version: tag.version,
        }),
    )
        .into_response())
}

#[derive(Deserialize)]
struct ArchQuery {
    arch: Option<String>,
}

async fn manifest(
    state: &AppState,
    name: &PackageName,
    version: &str,
    request: Request,
) -> Result<Response> {
    let (mut parts, _) = request.into_parts();
    let Query(query) =
        <Query<ArchQuery> as axum::extract::FromRequestParts<AppState>>::from_request_parts(
            &mut parts, state,
        )
        .await?;
    if let Some(arch) = &query.arch {
        validate_arch(arch)?;
    }
    let (_, version) = state
        .registry
        .resolve_version(name, version, query.arch.as_deref())
        .await?;
    let manifest = state.registry.version_manifest(&version).await?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        manifest,
    )
        .into_response())
}

fn check_reference(version: &str) -> Result<()> {
    if version == LATEST {
        return Ok(());
    }
    // A version or a tag; both are validated by their own rules when resolved.
    if parse_version(version).is_ok() || niso_registry::names::validate_tag(version).is_ok() {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "invalid version {version:?}: expected a SemVer version, a tag or \"latest\""
        ))
        .into())
    }
}

async fn download(
    state: &AppState,
    name: &PackageName,
    reference: &str,
    arch: &str,
    request: Request,
) -> Result<Response> {
    check_reference(reference)?;
    validate_arch(arch)?;
    let (package, version) = state
        .registry
        .resolve_version(name, reference, Some(arch))
        .await?;
    let etag = format!("\"{}\"", version.checksum);
    let size = version.size as u64;
    let headers = request.headers();
    let mut response_headers = HeaderMap::new();
    response_headers.insert(header::ETAG, header_value(&etag)?);
    response_headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    response_headers.insert("x-package-version", header_value(&version.version)?);
    if if_none_match(headers, &etag) {
        return Ok((StatusCode::NOT_MODIFIED, response_headers).into_response());
    }
    let filename = format!(
        "{}-{}-{}.niso",
        name.short_name(),
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
    if request.method() == Method::HEAD {
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

async fn upload(
    state: &AppState,
    name: PackageName,
    version: String,
    arch: String,
    request: Request,
) -> Result<Response> {
    let principal = authenticate(state, request.headers()).await?;
    // Before anything is read from the body; held until the upload ends, however it ends.
    let _slot = state.registry.upload_slot(&principal)?;
    parse_version(&version)?;
    validate_arch(&arch)?;
    let permit = state.registry.authorize_package(&principal, &name).await?;
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
        .upload_version(&permit, version, arch, body, content_length)
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

async fn delete(
    state: &AppState,
    name: &PackageName,
    version: &str,
    arch: &str,
    headers: &HeaderMap,
) -> Result<Response> {
    let principal = authenticate(state, headers).await?;
    parse_version(version)?;
    validate_arch(arch)?;
    let permit = state.registry.authorize_package(&principal, name).await?;
    state
        .registry
        .delete_version(&permit, version, arch)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn chunk_manifest(
    state: &AppState,
    name: &PackageName,
    reference: &str,
    arch: &str,
) -> Result<Response> {
    check_reference(reference)?;
    validate_arch(arch)?;
    let (_, version) = state
        .registry
        .resolve_version(name, reference, Some(arch))
        .await?;
    let chunks = state.registry.version_chunks(version.id).await?;
    Ok(axum::Json(ChunkManifestResponse {
        name: name.to_string(),
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
    })
    .into_response())
}
