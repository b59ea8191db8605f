//! `/v1/packages`, `…/{name}/versions` and `…/{name}/{version}/manifest`: what is published.
//! The package name arrives as one path segment (see `package_path.rs`) and is parsed into a
//! `PackageName` by the path extractor, like every other name.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use niso_registry::format_timestamp;
use niso_registry::names::{Arch, PackageName, Reference};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::extract::{Limit, Offset, Pagination, Path, Query};
use crate::http::error::Result;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_packages))
        .routes(routes!(list_versions))
        .routes(routes!(get_manifest))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Keeps packages whose name contains this text (case-insensitive).
    #[param(max_length = 256)]
    pub q: Option<String>,
    pub limit: Option<Limit>,
    pub offset: Option<Offset>,
}

#[derive(Serialize, ToSchema)]
pub struct PackageResponse {
    #[schema(value_type = PackageName)]
    pub name: String,
    #[schema(value_type = niso_registry::names::Version)]
    pub latest_version: String,
    pub description: Option<String>,
    /// RFC 3339, UTC.
    pub updated_at: String,
    pub download_count: i64,
}

#[derive(Serialize, ToSchema)]
pub struct VersionResponse {
    #[schema(value_type = PackageName)]
    pub name: String,
    #[schema(value_type = niso_registry::names::Version)]
    pub version: String,
    #[schema(value_type = Arch)]
    pub arch: String,
    /// Archive size in bytes.
    pub size: i64,
    /// `sha256:` and the archive's SHA-256 in hex.
    pub checksum: String,
    /// RFC 3339, UTC.
    pub uploaded_at: String,
    pub download_count: i64,
}

/// The package a request names.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct PackagePath {
    /// `@namespace/name`, as two path segments or percent-encoded as one.
    pub name: PackageName,
}

/// A version (or tag, or `latest`) of a package.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ReferencePath {
    /// `@namespace/name`, as two path segments or percent-encoded as one.
    pub name: PackageName,
    /// A version, a tag, or `latest`.
    pub version: Reference,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ManifestQuery {
    /// Resolve `latest` (or a tag) among the versions that have this arch.
    pub arch: Option<Arch>,
}

/// List packages with at least one version, in name order; `q` filters by name.
#[utoipa::path(get, path = "/v1/packages", params(ListQuery),
    responses((status = 200, body = [PackageResponse]), (status = 400)))]
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

/// List a package's published versions, one entry per version and arch.
#[utoipa::path(get, path = "/v1/packages/{name}/versions", params(PackagePath, Pagination),
    responses((status = 200, body = [VersionResponse]), (status = 400), (status = 404)))]
pub async fn list_versions(
    State(state): State<AppState>,
    Path(path): Path<PackagePath>,
    Query(pagination): Query<Pagination>,
) -> Result<axum::Json<Vec<VersionResponse>>> {
    let versions = state
        .registry
        .list_versions(&path.name, pagination.limit(), pagination.offset())
        .await?;
    Ok(axum::Json(
        versions
            .into_iter()
            .map(|v| VersionResponse {
                name: path.name.to_string(),
                version: v.version,
                arch: v.arch,
                size: v.size,
                checksum: v.checksum,
                uploaded_at: format_timestamp(&v.uploaded_at),
                download_count: v.download_count,
            })
            .collect(),
    ))
}

/// The `manifest.toml` of a version, as it was uploaded.
#[utoipa::path(get, path = "/v1/packages/{name}/{version}/manifest",
    params(ReferencePath, ManifestQuery),
    responses((status = 200, content_type = "text/plain", body = String), (status = 400), (status = 404)))]
pub async fn get_manifest(
    State(state): State<AppState>,
    Path(path): Path<ReferencePath>,
    Query(query): Query<ManifestQuery>,
) -> Result<Response> {
    let (_, version) = state
        .registry
        .resolve_version(&path.name, &path.version, query.arch.as_ref())
        .await?;
    let manifest = state.registry.version_manifest(&version).await?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        manifest,
    )
        .into_response())
}
