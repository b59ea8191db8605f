//! `/health` (liveness: the process answers) and `/metrics` (Prometheus text: the operator's
//! metrics, then the registry library's domain series) on `NISO_OPERATOR_LISTEN`.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

use niso_registry::Registry;

use crate::metrics::Metrics;

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    registry: Arc<Registry>,
}

pub fn router(metrics: Arc<Metrics>, registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(render))
        .with_state(AppState { metrics, registry })
}

async fn health() -> impl IntoResponse {
    axum::Json(serde_json::json!({ "status": "ok" }))
}

/// The text of `/metrics`: the operator's series, then its registry's domain series.
pub fn render_metrics(metrics: &Metrics, registry: &Registry) -> String {
    let mut text = metrics.render();
    text.push_str(&registry.metrics().render());
    text
}

async fn render(State(state): State<AppState>) -> impl IntoResponse {
    let text = render_metrics(&state.metrics, &state.registry);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
}

pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    registry: Arc<Registry>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(metrics, registry))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    #[tokio::test]
    async fn health_and_metrics() {
        let dir = tempfile::tempdir().unwrap();
        let config = niso_registry::config::Config::from_sources(None, |name| match name {
            "NISO_DATA_DIR" => Some(dir.path().display().to_string()),
            _ => None,
        })
        .unwrap();
        let registry = Arc::new(
            Registry::open(&config, crate::metrics::registry_metrics())
                .await
                .unwrap(),
        );
        let metrics = Arc::new(Metrics::new());
        metrics.reconciled(
            "apikey",
            std::time::Duration::from_millis(3),
            Some("UserNotFound"),
        );
        let app = router(metrics, registry);
        let response = app
            .clone()
            .oneshot(Request::get("/health").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let response = app
            .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let text = String::from_utf8(
            response
                .into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .to_vec(),
        )
        .unwrap();
        for expected in [
            "niso_operator_reconciles_total{controller=\"apikey\"} 1",
            "niso_operator_reconcile_failures_total{controller=\"apikey\",reason=\"UserNotFound\"} 1",
            "niso_operator_reconcile_duration_seconds_bucket",
            "niso_operator_leader 0",
        ] {
            assert!(text.contains(expected), "{expected} missing from:\n{text}");
        }
        for foreign in ["niso_http_", "niso_gc_"] {
            assert!(!text.contains(foreign), "{foreign} in:\n{text}");
        }
    }
}
