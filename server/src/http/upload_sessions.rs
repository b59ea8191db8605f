//! `/v1/uploads…`: upload sessions, the dedup-aware and resumable push (domain and protocol in
//! `niso_registry::upload_sessions`).
//!
//! - `GET /v1/uploads`: the chunking parameters and upload limit (public);
//! - `POST /v1/uploads`: open (or resume) a session; answers the chunks the registry lacks;
//! - `PUT /v1/uploads/{id}/chunks/{hash}`: one missing chunk, checked against its hash;
//! - `POST /v1/uploads/{id}/commit`: validate and publish;
//! - `DELETE /v1/uploads/{id}`: abandon.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::extract::{Auth, Path};
use crate::http::error::Result;
use niso_registry::auth::Principal;
use niso_registry::error::Error;
use niso_registry::names::{Arch, PackageName, Version};
use niso_registry::permissions::{PackagePermit, Push};
use niso_registry::upload_sessions::{DeclaredChunk, SessionRequest};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(parameters, open))
        .routes(routes!(abort))
        .routes(routes!(put_chunk))
        .routes(routes!(commit))
}

/// Bytes of JSON per declared chunk, generously (`{"hash":"<64>","size":1048576},`).
const JSON_BYTES_PER_CHUNK: u64 = 96;

#[derive(Serialize, ToSchema)]
pub struct ChunkingResponse {
    pub min_size: u32,
    pub avg_size: u32,
    pub max_size: u32,
}

#[derive(Serialize, ToSchema)]
pub struct UploadParametersResponse {
    /// FastCDC 2020 (normalisation level 1) parameters: chunk with exactly these.
    pub chunking: ChunkingResponse,
    pub max_upload_bytes: u64,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeclaredChunkBody {
    /// SHA-256 of the chunk's bytes, lowercase hex.
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub hash: String,
    /// Every chunk but the last is `min_size..=max_size` bytes.
    #[schema(minimum = 1, maximum = 16777216)]
    pub size: u64,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenSessionBody {
    #[schema(value_type = PackageName)]
    pub name: String,
    #[schema(value_type = Version)]
    pub version: String,
    #[schema(value_type = Arch)]
    pub arch: String,
    /// The archive's size: the chunks' sizes add up to it.
    pub size: u64,
    /// SHA-256 of the whole archive, lowercase hex.
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub checksum: String,
    /// In archive order.
    pub chunks: Vec<DeclaredChunkBody>,
}

#[derive(Serialize, ToSchema)]
pub struct SessionResponse {
    pub id: i64,
    pub missing: Vec<String>,
    pub expires_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct SessionChunkResponse {
    pub hash: String,
    pub size: u64,
}

#[derive(Serialize, ToSchema)]
pub struct CommittedResponse {
    pub name: String,
    pub version: String,
    pub arch: String,
    pub size: u64,
    pub checksum: String,
}

/// The chunking parameters and the upload limit, for clients that cut archives themselves:
/// chunk with exactly these (FastCDC 2020, normalisation level 1) for dedup to work.
#[utoipa::path(get, path = "/v1/uploads", responses((status = 200, body = UploadParametersResponse)))]
pub async fn parameters(State(state): State<AppState>) -> axum::Json<UploadParametersResponse> {
    let parameters = state.registry.upload_parameters();
    axum::Json(UploadParametersResponse {
        chunking: ChunkingResponse {
            min_size: parameters.chunking.min_size,
            avg_size: parameters.chunking.avg_size,
            max_size: parameters.chunking.max_size,
        },
        max_upload_bytes: parameters.max_upload_bytes,
    })
}

/// Open an upload session (push permission on the package), or resume the open one with the
/// same key, target, checksum and chunk list; answers the declared chunks the registry lacks.
/// At most 16 live sessions per key (429).
#[utoipa::path(post, path = "/v1/uploads", request_body = OpenSessionBody,
    responses((status = 201, body = SessionResponse), (status = 400), (status = 401), (status = 403),
        (status = 409), (status = 413), (status = 429)),
    security(("api_key" = [])))]
pub async fn open(
    State(state): State<AppState>,
    Auth(principal): Auth,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let parameters = state.registry.upload_parameters();
    // The declared list is bounded by the upload limit over the smallest chunk.
    let most_chunks = parameters.max_upload_bytes / u64::from(parameters.chunking.min_size) + 1;
    let limit = (most_chunks * JSON_BYTES_PER_CHUNK + 4096).min(64 * 1024 * 1024) as usize;
    let timeout = state
        .registry
        .settings()
        .json_body_timeout
        .saturating_mul(16);
    let bytes = super::body::read_limited(&headers, body, limit, timeout).await?;
    let request: OpenSessionBody = serde_json::from_slice(&bytes)
        .map_err(|error| Error::Invalid(format!("invalid upload session: {error}")))?;
    let name = PackageName::parse(&request.name)?;
    let version = Version::parse(&request.version)?;
    let arch = Arch::parse(&request.arch)?;
    let permit = state.registry.authorize_package(&principal, &name).await?;
    let status = state
        .registry
        .open_upload_session(
            &permit,
            principal.key_id,
            SessionRequest {
                version,
                arch,
                size: request.size,
                checksum: request.checksum,
                chunks: request
                    .chunks
                    .into_iter()
                    .map(|chunk| DeclaredChunk {
                        hash: chunk.hash,
                        size: chunk.size,
                    })
                    .collect(),
            },
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(SessionResponse {
            id: status.id,
            missing: status.missing,
            expires_at: status.expires_at.format("%Y-%m-%dT%H:%M:%S").to_string(),
        }),
    )
        .into_response())
}

/// A session id from the path (parsed here so a bad one gets the API's JSON 400).
fn session_id(id: &str) -> Result<i64> {
    Ok(id
        .parse()
        .map_err(|_| Error::Invalid(format!("invalid upload session id {id:?}")))?)
}

/// The push permit for the session's package (404 for a session of another key).
async fn session_permit(
    state: &AppState,
    principal: &Principal,
    id: i64,
) -> Result<PackagePermit<Push>> {
    let package = state
        .registry
        .upload_session_package(id, principal.key_id)
        .await?;
    let name = PackageName::parse(&package)?;
    Ok(state.registry.authorize_package(principal, &name).await?)
}

/// Upload one declared chunk: its SHA-256 must be `{hash}` and its length the declared size.
#[utoipa::path(put, path = "/v1/uploads/{id}/chunks/{hash}",
    params(("id" = i64, Path), ("hash" = String, Path, pattern = "^[0-9a-f]{64}$")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 201, body = SessionChunkResponse), (status = 400), (status = 401), (status = 404), (status = 413)),
    security(("api_key" = [])))]
pub async fn put_chunk(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path((id, hash)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    // Before the body is read, as for every upload.
    let id = session_id(&id)?;
    let _slot = state.registry.upload_slot(&principal)?;
    let permit = session_permit(&state, &principal, id).await?;
    let timeout = state
        .registry
        .settings()
        .json_body_timeout
        .saturating_mul(16);
    let body =
        super::body::read_limited(&headers, body, super::body::MAX_CHUNK_BODY_BYTES, timeout)
            .await?;
    let stored = state
        .registry
        .put_session_chunk(&permit, principal.key_id, id, &hash, body)
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(SessionChunkResponse {
            hash: stored.hash,
            size: stored.size,
        }),
    )
        .into_response())
}

/// Validate the session's archive exactly as a streamed upload is validated and publish it;
/// 409 while declared chunks are missing.
#[utoipa::path(post, path = "/v1/uploads/{id}/commit", params(("id" = i64, Path)),
    responses((status = 201, body = CommittedResponse), (status = 400), (status = 401), (status = 404),
        (status = 409), (status = 413)),
    security(("api_key" = [])))]
pub async fn commit(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(id): Path<String>,
) -> Result<Response> {
    let id = session_id(&id)?;
    let _slot = state.registry.upload_slot(&principal)?;
    let permit = session_permit(&state, &principal, id).await?;
    let committed = state
        .registry
        .commit_upload_session(&permit, principal.key_id, id)
        .await?;
    tracing::info!(
        package = %committed.name,
        version = %committed.version,
        arch = %committed.arch,
        size = committed.size,
        "version uploaded through a session"
    );
    Ok((
        StatusCode::CREATED,
        axum::Json(CommittedResponse {
            name: committed.name,
            version: committed.version,
            arch: committed.arch,
            size: committed.size,
            checksum: committed.checksum,
        }),
    )
        .into_response())
}

/// Abandon a session; its leases go with it (an untouched session is reaped by GC).
#[utoipa::path(delete, path = "/v1/uploads/{id}", params(("id" = i64, Path)),
    responses((status = 204), (status = 401), (status = 404)),
    security(("api_key" = [])))]
pub async fn abort(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(id): Path<String>,
) -> Result<Response> {
    let id = session_id(&id)?;
    let permit = session_permit(&state, &principal, id).await?;
    state
        .registry
        .abort_upload_session(&permit, principal.key_id, id)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
