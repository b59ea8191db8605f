//! The OpenAPI document, generated from the handlers' annotations (`/v1/openapi.json`). The
//! package routes are dispatched by hand (see `package_path.rs`), so their operations are
//! described by the stub functions below.

use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use super::{auth, chunks, namespaces, packages, system};

#[utoipa::path(get, path = "/v1/packages/{name}/versions", params(("name" = String, Path, description = "@ns/pkg, or %40ns%2Fpkg")),
    responses((status = 200, body = [packages::VersionResponse]), (status = 404)))]
#[allow(dead_code)]
fn list_versions() {}

#[utoipa::path(get, path = "/v1/packages/{name}/{version}/manifest", params(("name" = String, Path), ("version" = String, Path), ("arch" = Option<String>, Query)),
    responses((status = 200, content_type = "text/plain"), (status = 404)))]
#[allow(dead_code)]
fn get_manifest() {}

#[utoipa::path(get, path = "/v1/packages/{name}/{version}/{arch}", params(("name" = String, Path), ("version" = String, Path, description = "a version, a tag or latest"), ("arch" = String, Path)),
    responses((status = 200, content_type = "application/octet-stream"), (status = 206), (status = 304), (status = 404), (status = 416)))]
#[allow(dead_code)]
fn download_archive() {}

#[utoipa::path(put, path = "/v1/packages/{name}/{version}/{arch}", params(("name" = String, Path), ("version" = String, Path), ("arch" = String, Path)),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 201, body = packages::UploadResponse), (status = 400), (status = 401), (status = 403), (status = 409), (status = 413)),
    security(("api_key" = [])))]
#[allow(dead_code)]
fn upload_archive() {}

#[utoipa::path(delete, path = "/v1/packages/{name}/{version}/{arch}", params(("name" = String, Path), ("version" = String, Path), ("arch" = String, Path)),
    responses((status = 204), (status = 401), (status = 403), (status = 404)), security(("api_key" = [])))]
#[allow(dead_code)]
fn delete_archive() {}

#[utoipa::path(get, path = "/v1/packages/{name}/tags", params(("name" = String, Path)),
    responses((status = 200, body = [packages::TagBody]), (status = 404)))]
#[allow(dead_code)]
fn list_tags() {}

#[utoipa::path(post, path = "/v1/packages/{name}/tags", params(("name" = String, Path)), request_body = packages::TagBody,
    responses((status = 201, body = packages::TagBody), (status = 400), (status = 401), (status = 403), (status = 404)),
    security(("api_key" = [])))]
#[allow(dead_code)]
fn set_tag() {}

#[utoipa::path(get, path = "/v1/packages/{name}/{version}/{arch}/chunks", params(("name" = String, Path), ("version" = String, Path), ("arch" = String, Path)),
    responses((status = 200, body = packages::ChunkManifestResponse), (status = 404)))]
#[allow(dead_code)]
fn chunk_manifest() {}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "niso registry API",
        description = "Binary package registry: .niso archives per version and architecture."
    ),
    paths(
        packages::list_packages,
        list_versions,
        get_manifest,
        download_archive,
        upload_archive,
        delete_archive,
        list_tags,
        set_tag,
        chunk_manifest,
        chunks::get_chunk,
        chunks::put_chunk,
        auth::register,
        auth::login,
        auth::me,
        auth::update_me,
        auth::create_key,
        auth::list_keys,
        auth::revoke_key,
        namespaces::create_namespace,
        namespaces::get_namespace,
        namespaces::add_member,
        namespaces::remove_member,
        system::health,
        system::ready,
    )
)]
struct ApiDocument;

pub fn document() -> utoipa::openapi::OpenApi {
    let mut document = ApiDocument::openapi();
    let components = document.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "api_key",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("niso_…")
                .build(),
        ),
    );
    document
}
