//! `/v1/chunks/{hash}`: content-addressed chunk download and (admin) upload.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::extract::Auth;
use crate::error::{Error, Result};

/// Largest chunk upload: fastcdc's bound on the maximum chunk size, so any chunk a niso
/// registry cuts (whatever its chunking settings) fits. The body is read whole (its hash is
/// checked before it is stored), so this bounds the memory of one chunk upload.
const MAX_CHUNK_UPLOAD_BYTES: usize = 16 * 1024 * 1024;

#[derive(Serialize, ToSchema)]
pub struct ChunkUploadResponse {
    pub hash: String,
    pub size: u64,
}

#[utoipa::path(get, path = "/v1/chunks/{hash}", params(("hash" = String, Path)),
    responses((status = 200, content_type = "application/octet-stream"), (status = 400), (status = 404)))]
pub async fn get_chunk(
    State(state): State<AppState>,
    Path(hash): Path<String>,
) -> Result<Response> {
    let chunk = state.registry.find_chunk(&hash).await?;
    let bytes = state.registry.read_chunk(&chunk).await?;
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

#[utoipa::path(put, path = "/v1/chunks/{hash}", params(("hash" = String, Path)),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 201, body = ChunkUploadResponse), (status = 400), (status = 401), (status = 403), (status = 413)),
    security(("api_key" = [])))]
pub async fn put_chunk(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(hash): Path<String>,
    body: Body,
) -> Result<Response> {
    if !principal
        .scope
        .allows_everywhere(crate::auth::scope::Action::Admin)
    {
        return Err(Error::Forbidden(
            "uploading chunks needs a key with the admin:* scope".into(),
        ));
    }
    // The body is taken raw (not as `Bytes`) so the upload limits apply before it is read;
    // held until the chunk is stored or the request ends.
    let _slot = state.registry.upload_slot(&principal)?;
    let body = axum::body::to_bytes(body, MAX_CHUNK_UPLOAD_BYTES)
        .await
        .map_err(super::serve::body_error)?;
    let stored = state.registry.put_chunk(&hash, body).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(ChunkUploadResponse {
            hash: stored.hash,
            size: stored.size,
        }),
    )
        .into_response())
}
