//! `/v1/chunks/{hash}`: content-addressed chunk download and (admin) upload.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::extract::{Auth, Path};
use crate::http::error::Result;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_chunk, put_chunk))
}

#[derive(Serialize, ToSchema)]
pub struct ChunkUploadResponse {
    pub hash: String,
    pub size: u64,
}

/// One stored chunk by its SHA-256 (uncompressed), for clients that assemble archives from
/// the chunks they lack (see the chunk manifest).
#[utoipa::path(get, path = "/v1/chunks/{hash}",
    params(("hash" = String, Path, pattern = "^[0-9a-f]{64}$", description = "SHA-256 in lowercase hex")),
    responses((status = 200, content_type = "application/octet-stream"), (status = 400), (status = 404)))]
pub async fn get_chunk(
    State(state): State<AppState>,
    Path(hash): Path<String>,
) -> Result<Response> {
    let chunk = state.registry.find_chunk(&hash).await?;
    let bytes = state.registry.read_chunk_cached(&chunk).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (header::ETAG, format!("\"{hash}\"")),
            (
                header::CACHE_CONTROL,
                "public, max-age=31536000, immutable".to_owned(),
            ),
        ],
        bytes,
    )
        .into_response())
}

/// Store one chunk under its SHA-256 (admins; the hash is checked).
#[utoipa::path(put, path = "/v1/chunks/{hash}",
    params(("hash" = String, Path, pattern = "^[0-9a-f]{64}$", description = "SHA-256 in lowercase hex")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 201, body = ChunkUploadResponse), (status = 400), (status = 401), (status = 403), (status = 413)),
    security(("api_key" = [])))]
pub async fn put_chunk(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(hash): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let permit = state.registry.authorize_chunk_upload(&principal)?;
    // The body is taken raw (not through an extractor) so the permission and the upload limits
    // are checked before it is read; the slot is held until the chunk is stored or the request
    // ends. The body is read whole (its hash is checked before it is stored): at most
    // `MAX_CHUNK_BODY_BYTES`, fastcdc's bound on any chunk size.
    let _slot = state.registry.upload_slot(&principal)?;
    let settings = state.registry.settings();
    // 16 MiB at 64 KiB per JSON timeout: ample for any client that is really sending.
    let timeout = settings.json_body_timeout.saturating_mul(16);
    let body =
        super::body::read_limited(&headers, body, super::body::MAX_CHUNK_BODY_BYTES, timeout)
            .await?;
    let stored = state.registry.put_chunk(&permit, &hash, body).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(ChunkUploadResponse {
            hash: stored.hash,
            size: stored.size,
        }),
    )
        .into_response())
}
