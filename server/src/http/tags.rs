//! `/v1/packages/{name}/tags`: names for versions. `latest` is listed but maintained by the
//! registry.

use axum::extract::State;
use axum::http::StatusCode;
use niso_registry::names::{Tag, Version};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::extract::{Auth, Json, Path};
use super::packages::PackagePath;
use crate::http::error::Result;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_tags, set_tag))
}

#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TagBody {
    #[schema(value_type = Tag)]
    pub tag: String,
    #[schema(value_type = Version)]
    pub version: String,
}

/// The package's tags by name, with the registry-maintained `latest` last.
#[utoipa::path(get, path = "/v1/packages/{name}/tags", params(PackagePath),
    responses((status = 200, body = [TagBody]), (status = 400), (status = 404)))]
pub async fn list_tags(
    State(state): State<AppState>,
    Path(path): Path<PackagePath>,
) -> Result<axum::Json<Vec<TagBody>>> {
    let tags = state.registry.list_tags(&path.name).await?;
    Ok(axum::Json(
        tags.into_iter()
            .map(|t| TagBody {
                tag: t.tag,
                version: t.version,
            })
            .collect(),
    ))
}

/// Create a tag or move it to another existing version (`POST`; `PUT` is accepted too).
#[utoipa::path(method(post, put), path = "/v1/packages/{name}/tags", params(PackagePath),
    request_body = TagBody,
    responses((status = 201, body = TagBody), (status = 400), (status = 401), (status = 403),
        (status = 404)),
    security(("api_key" = [])))]
pub async fn set_tag(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(path): Path<PackagePath>,
    Json(body): Json<TagBody>,
) -> Result<(StatusCode, axum::Json<TagBody>)> {
    // Parsed here rather than by serde so a bad value gets the name rule's own message.
    let tag = Tag::parse(&body.tag)?;
    let version = Version::parse(&body.version)?;
    let permit = state
        .registry
        .authorize_package(&principal, &path.name)
        .await?;
    let tag = state.registry.set_tag(&permit, &tag, &version).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(TagBody {
            tag: tag.tag,
            version: tag.version,
        }),
    ))
}
