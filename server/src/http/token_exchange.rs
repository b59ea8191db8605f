//! `POST /v1/auth/token`: keyless access (issue 14). A workload trades an identity token (a
//! projected Kubernetes ServiceAccount token, a CI job's OIDC token) for a short-lived key; the
//! checks are `niso_registry::identity`'s.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::extract::Json;
use crate::http::error::Result;
use niso_registry::format_timestamp;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(exchange_token))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenExchangeRequest {
    /// The identity token (a JWT): its issuer must be trusted and its audience the registry's.
    #[schema(max_length = 16384)]
    pub token: String,
    /// The scope wanted, e.g. `push:@team/*`; by default everything granted to the identity.
    /// The key gets the intersection of this and the grants.
    #[schema(max_length = 4096, example = "push:@team/*")]
    pub scope: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct TokenExchangeResponse {
    /// The key; shown only here. Not renewable: exchange a fresh token for a new one.
    pub api_key: String,
    /// The key's scope.
    pub scope: String,
    /// When the key stops working (UTC, `2026-04-10T12:00:00`): the configured lifetime or the
    /// identity token's own expiry, whichever is first.
    pub expires_at: String,
}

/// Trade an identity token for a short-lived key.
///
/// 401 when the token fails a check (the message names it: issuer not trusted, wrong audience,
/// expired, not yet valid, bad signature, unknown signing key, algorithm not accepted); 403 when
/// nothing asked for is granted to the identity.
#[utoipa::path(post, path = "/v1/auth/token", request_body = TokenExchangeRequest,
    responses((status = 200, body = TokenExchangeResponse), (status = 400), (status = 401),
        (status = 403), (status = 413), (status = 503)))]
pub async fn exchange_token(
    State(state): State<AppState>,
    Json(request): Json<TokenExchangeRequest>,
) -> Result<axum::Json<TokenExchangeResponse>> {
    let minted = state
        .registry
        .exchange_identity_token(&request.token, request.scope.as_deref())
        .await?;
    tracing::info!(
        key_id = minted.id,
        issuer = %minted.issuer,
        subject = %minted.subject,
        scope = %minted.scope,
        "identity token exchanged for a key"
    );
    Ok(axum::Json(TokenExchangeResponse {
        api_key: minted.plaintext,
        scope: minted.scope,
        expires_at: format_timestamp(&minted.expires_at),
    }))
}
