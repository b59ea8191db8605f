//! The operator against kube's scripted mock API (`tower_test::mock::pair`) and a real registry
//! (embedded: SQLite + local files; production: PostgreSQL + S3), through niso-test-support
//! (imported as `common` and with its `for_each_backend!` at the root, so every module here
//! names the harness the same way).

mod apikeys;
mod claims;
mod gc;
mod grants;
mod lease;
mod metrics;
mod mock;
mod namespaces;
mod scoping;

use std::sync::Arc;

use niso_test_support as common;
use niso_test_support::for_each_backend;
use serde_json::Value;

use common::{Backend, TestApp, test_settings};
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use niso_operator::context::{Context, Settings};
use niso_operator::crd::RegistryNamespace;
use niso_operator::metrics::Metrics;

pub const REGISTRY_URL: &str = "https://niso.example.com";
/// The Kubernetes namespace the fixture's operator trusts with registry-wide keys.
pub const PRIVILEGED: &str = "apps";

/// A registry served over HTTP (for uploads and API checks) and an operator context on the
/// same registry, talking to a scripted API.
pub struct Fixture {
    pub app: TestApp,
    pub ctx: Arc<Context>,
    pub api: mock::MockApi,
}

impl Fixture {
    pub async fn new(backend: Backend) -> Fixture {
        Fixture::with_settings(backend, |settings| settings).await
    }

    /// A fixture whose operator settings `adjust` changes.
    pub async fn with_settings(
        backend: Backend,
        adjust: impl FnOnce(Settings) -> Settings,
    ) -> Fixture {
        let app = TestApp::with_settings(backend, test_settings()).await;
        let (client, api) = mock::client();
        let settings = adjust(Settings {
            privileged_namespaces: vec![PRIVILEGED.into()],
            ..Settings::new(REGISTRY_URL)
        });
        let ctx = Arc::new(Context::new(
            client,
            app.registry.clone(),
            Arc::new(Metrics::new()),
            settings,
            Some("test".into()),
        ));
        ctx.use_namespace_store(listed(&[]));
        Fixture { app, ctx, api }
    }

    /// The operator now sees these RegistryNamespaces (and their grants).
    pub fn set_namespaces(&self, resources: &[RegistryNamespace]) {
        self.ctx.use_namespace_store(listed(resources));
    }
}

/// A RegistryNamespace cache that has listed `resources`.
pub fn listed(resources: &[RegistryNamespace]) -> Store<RegistryNamespace> {
    let (store, mut writer) = reflector::store();
    writer.apply_watcher_event(&watcher::Event::Init);
    for resource in resources {
        writer.apply_watcher_event(&watcher::Event::InitApply(resource.clone()));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    store
}

/// `object` with `status` from an apply patch of the status subresource.
pub fn with_status(object: &Value, patch: &Value) -> Value {
    let mut object = object.clone();
    object["status"] = patch["status"].clone();
    object
}

/// `object` with the finalizers a JSON patch adds.
pub fn with_finalizer(object: &Value) -> Value {
    let mut object = object.clone();
    object["metadata"]["finalizers"] = serde_json::json!([niso_operator::context::FINALIZER]);
    object
}

/// `object` without finalizers (what the API returns after the finalizer is removed).
pub fn without_finalizer(object: &Value) -> Value {
    let mut object = object.clone();
    object["metadata"]["finalizers"] = serde_json::json!([]);
    object
}

/// Asserts that a JSON patch adds our finalizer.
#[track_caller]
pub fn assert_adds_finalizer(body: &Value) {
    let text = body.to_string();
    assert!(
        text.contains("\"add\"") && text.contains(niso_operator::context::FINALIZER),
        "not a finalizer patch: {body}"
    );
}

/// Asserts that a JSON patch removes a finalizer.
#[track_caller]
pub fn assert_removes_finalizer(body: &Value) {
    let text = body.to_string();
    assert!(
        text.contains("\"remove\"") && text.contains("/metadata/finalizers/0"),
        "not a finalizer removal: {body}"
    );
}

/// The Ready condition of a status patch body.
pub fn ready_of(patch: &Value) -> (String, String, String) {
    let condition = patch["status"]["conditions"]
        .as_array()
        .and_then(|conditions| conditions.iter().find(|c| c["type"] == "Ready"))
        .unwrap_or_else(|| panic!("no Ready condition in {patch}"));
    (
        condition["status"].as_str().unwrap_or_default().to_owned(),
        condition["reason"].as_str().unwrap_or_default().to_owned(),
        condition["message"].as_str().unwrap_or_default().to_owned(),
    )
}
