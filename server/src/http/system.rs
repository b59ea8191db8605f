//! `/health` (liveness: the process answers), `/ready` (the database and the object store
//! answer).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use crate::http::error::ApiError;
use niso_registry::error::Error;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(ready))
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/health", responses((status = 200)))]
pub async fn health() -> Response {
    axum::Json(json!({ "status": "ok" })).into_response()
}

/// Readiness: the database and the object store answer (within 5 s).
#[utoipa::path(get, path = "/ready", responses((status = 200), (status = 503)))]
pub async fn ready(State(state): State<AppState>) -> Response {
    let check = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        state.registry.check_ready(),
    );
    match check.await {
        Ok(Ok(())) => axum::Json(json!({ "status": "ready" })).into_response(),
        Ok(Err(error)) => {
            tracing::warn!(%error, "not ready");
            ApiError::from(Error::Unavailable(error.to_string())).into_response()
        }
        Err(_) => {
            ApiError::from(Error::Unavailable("readiness check timed out".into())).into_response()
        }
    }
}
