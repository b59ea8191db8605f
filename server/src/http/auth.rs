//! `/v1/auth/*`: register, login, the caller's profile and API keys.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::client_address::ClientAddress;
use super::extract::{Auth, Json, Pagination, Path, Query};
use crate::http::error::Result;
use niso_registry::accounts::{NewAccount, Profile};
use niso_registry::error::Error;
use niso_registry::format_timestamp;
use niso_registry::names::openapi::{Namespace, Username};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(login))
        .routes(routes!(me, update_me))
        .routes(routes!(list_keys, create_key))
        .routes(routes!(revoke_key))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// Also the name of the user's own namespace (`@username`).
    #[schema(value_type = Username)]
    pub username: String,
    #[schema(max_length = 254)]
    pub email: String,
    /// At least 8 characters, at most 1024 bytes.
    #[schema(min_length = 8, max_length = 1024)]
    pub password: String,
    #[schema(max_length = 128)]
    pub display_name: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct RegisterResponse {
    pub id: i64,
    pub username: String,
    /// A key with the user's full rights (`user:*`); shown only here.
    pub api_key: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    #[schema(value_type = Username)]
    pub username: String,
    #[schema(max_length = 1024)]
    pub password: String,
}

#[derive(Serialize, ToSchema)]
pub struct LoginResponse {
    pub api_key: String,
    pub username: String,
}

#[derive(Serialize, ToSchema)]
pub struct ProfileResponse {
    pub id: i64,
    pub username: String,
    pub email: String,
    pub display_name: Option<String>,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub verified: bool,
    /// The namespaces the user belongs to, their own first.
    #[schema(value_type = Vec<Namespace>)]
    pub namespaces: Vec<String>,
}

impl From<Profile> for ProfileResponse {
    fn from(profile: Profile) -> Self {
        ProfileResponse {
            id: profile.id,
            username: profile.username,
            email: profile.email,
            display_name: profile.display_name,
            created_at: format_timestamp(&profile.created_at),
            verified: profile.verified,
            namespaces: profile.namespaces,
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProfileRequest {
    #[schema(max_length = 128)]
    pub display_name: Option<String>,
    #[schema(max_length = 254)]
    pub email: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    /// A label for the key: 1-128 characters, no control characters.
    #[schema(min_length = 1, max_length = 128)]
    pub name: String,
    /// Comma-separated `action:pattern` items, e.g. `push:@team/*,pull:*` (DESIGN.md §5).
    #[schema(min_length = 1, max_length = 4096, example = "push:@alice/*,pull:*")]
    pub scope: String,
}

#[derive(Serialize, ToSchema)]
pub struct CreateKeyResponse {
    pub id: i64,
    /// The key itself; shown only here.
    pub key: String,
    pub name: String,
    pub scope: String,
}

#[derive(Serialize, ToSchema)]
pub struct KeyResponse {
    pub id: i64,
    pub name: String,
    pub scope: String,
    pub prefix: String,
    pub created_at: String,
    pub last_used_at: Option<String>,
    /// Only for keys that expire.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// `oidc` for a key minted from an identity token (`POST /v1/auth/token`), with the
    /// token's issuer and subject; absent for other keys.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
}

/// Create an account and its namespace; answers with the account's first key.
#[utoipa::path(post, path = "/v1/auth/register", request_body = RegisterRequest,
    responses((status = 201, body = RegisterResponse), (status = 400), (status = 409), (status = 413), (status = 429), (status = 503)))]
pub async fn register(
    State(state): State<AppState>,
    client: ClientAddress,
    Json(request): Json<RegisterRequest>,
) -> Result<Response> {
    let (user, key) = state
        .registry
        .register(
            NewAccount {
                username: request.username,
                email: request.email,
                password: request.password,
                display_name: request.display_name,
            },
            Some(client.0),
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(RegisterResponse {
            id: user.id,
            username: user.username,
            api_key: key.plaintext,
        }),
    )
        .into_response())
}

/// Trade a username and password for a new key with the user's full rights.
#[utoipa::path(post, path = "/v1/auth/login", request_body = LoginRequest,
    responses((status = 200, body = LoginResponse), (status = 401), (status = 413), (status = 429), (status = 503)))]
pub async fn login(
    State(state): State<AppState>,
    client: ClientAddress,
    Json(request): Json<LoginRequest>,
) -> Result<axum::Json<LoginResponse>> {
    let key = state
        .registry
        .login(&request.username, &request.password, Some(client.0))
        .await?;
    Ok(axum::Json(LoginResponse {
        api_key: key.plaintext,
        username: request.username,
    }))
}

/// The caller's profile.
#[utoipa::path(get, path = "/v1/auth/me", responses((status = 200, body = ProfileResponse), (status = 401), (status = 403)),
    security(("api_key" = [])))]
pub async fn me(
    State(state): State<AppState>,
    Auth(principal): Auth,
) -> Result<axum::Json<ProfileResponse>> {
    let permit = state.registry.authorize_user(&principal)?;
    Ok(axum::Json(state.registry.profile(&permit).await?.into()))
}

/// Change the caller's display name or e-mail address.
#[utoipa::path(patch, path = "/v1/auth/me", request_body = UpdateProfileRequest,
    responses((status = 200, body = ProfileResponse), (status = 400), (status = 401), (status = 403)),
    security(("api_key" = [])))]
pub async fn update_me(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Json(request): Json<UpdateProfileRequest>,
) -> Result<axum::Json<ProfileResponse>> {
    let permit = state.registry.authorize_user(&principal)?;
    let profile = state
        .registry
        .update_profile(&permit, request.display_name, request.email)
        .await?;
    Ok(axum::Json(profile.into()))
}

/// Create a key; the caller must hold every right the scope grants.
#[utoipa::path(post, path = "/v1/auth/keys", request_body = CreateKeyRequest,
    responses((status = 201, body = CreateKeyResponse), (status = 400), (status = 401), (status = 403)),
    security(("api_key" = [])))]
pub async fn create_key(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Json(request): Json<CreateKeyRequest>,
) -> Result<Response> {
    let key = state
        .registry
        .create_key_for(&principal, &request.name, &request.scope)
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(CreateKeyResponse {
            id: key.id,
            key: key.plaintext,
            name: key.name,
            scope: key.scope,
        }),
    )
        .into_response())
}

/// The caller's own live keys, without their secrets.
#[utoipa::path(get, path = "/v1/auth/keys", params(Pagination), responses((status = 200, body = [KeyResponse]), (status = 401)),
    security(("api_key" = [])))]
pub async fn list_keys(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Query(pagination): Query<Pagination>,
) -> Result<axum::Json<Vec<KeyResponse>>> {
    let keys = state
        .registry
        .list_keys(&principal, pagination.limit(), pagination.offset())
        .await?;
    Ok(axum::Json(
        keys.into_iter()
            .map(|key| KeyResponse {
                id: key.id,
                name: key.name,
                scope: key.scope,
                prefix: key.prefix,
                created_at: format_timestamp(&key.created_at),
                last_used_at: key.last_used_at.as_ref().map(format_timestamp),
                expires_at: key.expires_at.as_ref().map(format_timestamp),
                origin: key.minted_for.as_ref().map(|_| "oidc".to_owned()),
                issuer: key.minted_for.as_ref().map(|m| m.issuer.clone()),
                subject: key.minted_for.map(|m| m.subject),
            })
            .collect(),
    ))
}

/// Revoke one of the caller's own keys: it stops working at once.
#[utoipa::path(delete, path = "/v1/auth/keys/{id}", params(("id" = i64, Path, minimum = 1)),
    responses((status = 204), (status = 401), (status = 404)), security(("api_key" = [])))]
pub async fn revoke_key(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    let id: i64 = id
        .parse()
        .map_err(|_| Error::Invalid(format!("invalid key id {id:?}")))?;
    state.registry.revoke_key_for(&principal, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
