//! `/v1/namespaces/*`: organisation namespaces and their members.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::extract::{Auth, Json, Path};
use crate::http::error::Result;
use niso_registry::format_timestamp;
use niso_registry::names::openapi::{Namespace, Username};
use niso_registry::namespaces::NamespaceView;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_namespace))
        .routes(routes!(get_namespace))
        .routes(routes!(add_member))
        .routes(routes!(remove_member))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateNamespaceRequest {
    #[schema(value_type = Namespace)]
    pub name: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMemberRequest {
    #[schema(value_type = Username)]
    pub username: String,
    #[schema(value_type = MemberRole)]
    pub role: String,
}

/// A member's role in an organisation.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)] // a schema only: the role is parsed by the registry
pub enum MemberRole {
    Member,
    Admin,
    Owner,
}

#[derive(Serialize, ToSchema)]
pub struct MemberResponse {
    pub username: String,
    #[schema(value_type = MemberRole)]
    pub role: String,
}

#[derive(Serialize, ToSchema)]
pub struct NamespaceResponse {
    pub name: String,
    pub owner_id: i64,
    pub ns_type: String,
    pub created_at: String,
    pub members: Vec<MemberResponse>,
}

impl From<NamespaceView> for NamespaceResponse {
    fn from(view: NamespaceView) -> Self {
        NamespaceResponse {
            name: view.name,
            owner_id: view.owner_id,
            ns_type: view.ns_type,
            created_at: format_timestamp(&view.created_at),
            members: view
                .members
                .into_iter()
                .map(|member| MemberResponse {
                    username: member.username,
                    role: member.role,
                })
                .collect(),
        }
    }
}

fn created(view: NamespaceView) -> Response {
    (
        StatusCode::CREATED,
        axum::Json(NamespaceResponse::from(view)),
    )
        .into_response()
}

/// Create an organisation namespace owned by the caller.
#[utoipa::path(post, path = "/v1/namespaces", request_body = CreateNamespaceRequest,
    responses((status = 201, body = NamespaceResponse), (status = 400), (status = 401), (status = 403), (status = 409)),
    security(("api_key" = [])))]
pub async fn create_namespace(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Json(request): Json<CreateNamespaceRequest>,
) -> Result<Response> {
    let permit = state.registry.authorize_user(&principal)?;
    Ok(created(
        state.registry.create_org(&permit, &request.name).await?,
    ))
}

/// A namespace and its members.
#[utoipa::path(get, path = "/v1/namespaces/{name}", params(("name" = Namespace, Path)),
    responses((status = 200, body = NamespaceResponse), (status = 404)))]
pub async fn get_namespace(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<axum::Json<NamespaceResponse>> {
    Ok(axum::Json(
        state.registry.namespace_view(&name).await?.into(),
    ))
}

/// Add a member to an organisation, or change a member's role (owners and admins).
#[utoipa::path(post, path = "/v1/namespaces/{name}/members", params(("name" = Namespace, Path)),
    request_body = AddMemberRequest,
    responses((status = 201, body = NamespaceResponse), (status = 400), (status = 403), (status = 404), (status = 409)),
    security(("api_key" = [])))]
pub async fn add_member(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(name): Path<String>,
    Json(request): Json<AddMemberRequest>,
) -> Result<Response> {
    let permit = state
        .registry
        .authorize_member_management(&principal, &name)
        .await?;
    Ok(created(
        state
            .registry
            .add_member(&permit, &request.username, &request.role)
            .await?,
    ))
}

/// Remove a member from an organisation (owners and admins; the last owner stays).
#[utoipa::path(delete, path = "/v1/namespaces/{name}/members/{username}",
    params(("name" = Namespace, Path), ("username" = Username, Path)),
    responses((status = 204), (status = 403), (status = 404), (status = 409)),
    security(("api_key" = [])))]
pub async fn remove_member(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path((name, username)): Path<(String, String)>,
) -> Result<StatusCode> {
    let permit = state
        .registry
        .authorize_member_management(&principal, &name)
        .await?;
    state.registry.remove_member(&permit, &username).await?;
    Ok(StatusCode::NO_CONTENT)
}
