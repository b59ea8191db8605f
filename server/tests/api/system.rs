//! `/health`, `/ready`, the OpenAPI document and the error shape of unknown routes.

use reqwest::StatusCode;

use niso_test_support::{Backend, TestApp, assert_error};

niso_test_support::for_each_backend!(
    health_and_ready,
    openapi_lists_every_endpoint,
    unknown_routes_are_json_404s
);

async fn health_and_ready(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (status, body) = app.get("/health").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ok");
    let (status, body) = app.get("/ready").await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

async fn openapi_lists_every_endpoint(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (status, document) = app.get("/v1/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    let paths = document["paths"].as_object().expect("paths");
    for path in [
        "/v1/packages",
        "/v1/packages/{name}/versions",
        "/v1/packages/{name}/{version}/manifest",
        "/v1/packages/{name}/{version}/{arch}",
        "/v1/packages/{name}/tags",
        "/v1/packages/{name}/{version}/{arch}/chunks",
        "/v1/chunks/{hash}",
        "/v1/auth/register",
        "/v1/auth/login",
        "/v1/auth/me",
        "/v1/auth/keys",
        "/v1/auth/keys/{id}",
        "/v1/namespaces",
        "/v1/namespaces/{name}",
        "/v1/namespaces/{name}/members",
        "/v1/namespaces/{name}/members/{username}",
        "/health",
    ] {
        assert!(paths.contains_key(path), "OpenAPI document lacks {path}");
    }
    let upload = &paths["/v1/packages/{name}/{version}/{arch}"];
    assert!(
        upload.get("put").is_some()
            && upload.get("get").is_some()
            && upload.get("delete").is_some()
    );
}

async fn unknown_routes_are_json_404s(backend: Backend) {
    let app = TestApp::start(backend).await;
    assert_error(app.get("/v1/nothing-here").await, StatusCode::NOT_FOUND);
    assert_error(
        app.get("/v1/packages/@a/b/1/2/3/4").await,
        StatusCode::NOT_FOUND,
    );
}
