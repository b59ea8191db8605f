//! Test support shared by the integration tests: a registry served over real HTTP on
//! 127.0.0.1, on either backend — embedded (SQLite + local files) or production (PostgreSQL +
//! an S3 protocol server) — plus archive builders and request helpers.
#![allow(dead_code)]

pub mod archives;
pub mod postgres;
pub mod s3_test_server;

use std::sync::Arc;

use niso_registry::chunking::ChunkingSettings;
use niso_registry::metrics::Metrics;
use niso_registry::permissions::SystemAuthority;
use niso_registry::storage::ObjectStore;
use niso_registry::storage::local::LocalStore;
use niso_registry::storage::s3::S3Store;
use niso_registry::{Registry, RegistrySettings};
use niso_server::http::AppState;
use reqwest::StatusCode;
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite + local chunk directory (the default deployment)
    Embedded,
    /// PostgreSQL + S3 over HTTP (the production deployment)
    Production,
}

/// Runs each listed `async fn name(backend: Backend)` once per backend, as
/// `embedded::name` and `production::name`.
#[macro_export]
macro_rules! for_each_backend {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Embedded).await
                }
            )*
        }
        mod production {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Production).await
                }
            )*
        }
    };
}

/// The registry operator's authority, as the CLI and the Kubernetes operator hold it: tests use
/// it to set up what only the operator may (keys with any scope, linked to any user).
pub fn test_authority() -> SystemAuthority {
    SystemAuthority::root_of_trust("tests")
}

pub fn test_settings() -> RegistrySettings {
    RegistrySettings {
        max_upload_bytes: 2 * 1024 * 1024 * 1024,
        chunking: ChunkingSettings::default(),
        upload_lease: std::time::Duration::from_secs(900),
        login_max_failures: 5,
        login_window: std::time::Duration::from_secs(300),
        chunk_budget_bytes: niso_registry::chunk_pipeline::DEFAULT_BUDGET_BYTES,
        decompression_budget_bytes: niso_registry::archive::DEFAULT_DECOMPRESSION_BUDGET_BYTES,
        json_body_limit_bytes: 64 * 1024,
        json_body_timeout: std::time::Duration::from_secs(15),
        trusted_proxies: niso_registry::proxies::TrustedProxies::none(),
        trusted_proxy_header: niso_registry::proxies::ForwardedHeader::XForwardedFor,
        password_hash_concurrency: 4,
        password_hash_wait: std::time::Duration::from_secs(60),
        // Every test client comes from loopback: registrations are limited in their own tests.
        registration_max_per_address: 100_000,
        registration_window: std::time::Duration::from_secs(3600),
        body_idle_timeout: std::time::Duration::from_secs(
            niso_registry::config::DEFAULT_BODY_IDLE_TIMEOUT_SECS,
        ),
        header_read_timeout: std::time::Duration::from_secs(
            niso_registry::config::DEFAULT_HEADER_READ_TIMEOUT_SECS,
        ),
        max_concurrent_uploads: niso_registry::config::DEFAULT_MAX_CONCURRENT_UPLOADS,
        max_uploads_per_principal: niso_registry::config::DEFAULT_MAX_UPLOADS_PER_PRINCIPAL,
    }
}

/// Where a test registry keeps its state; dropping it removes the local parts.
pub struct Storage {
    pub database_url: String,
    pub store: Arc<dyn ObjectStore>,
    _dir: tempfile::TempDir,
}

impl Storage {
    pub async fn new(backend: Backend) -> Storage {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().expect("temp dir");
        match backend {
            Backend::Embedded => Storage {
                database_url: format!("sqlite://{}?mode=rwc", dir.path().join("niso.db").display()),
                store: Arc::new(LocalStore::open(dir.path().join("chunks")).expect("local store")),
                _dir: dir,
            },
            Backend::Production => {
                let database_url = postgres::TestPostgres::get().fresh_database().await;
                let settings = s3_test_server::S3TestServer::get().fresh_bucket();
                let store = S3Store::connect(settings).await.expect("S3 store");
                Storage {
                    database_url,
                    store: Arc::new(store),
                    _dir: dir,
                }
            }
        }
    }

    /// A registry (one "replica") on this storage.
    pub async fn registry(&self, settings: RegistrySettings) -> Arc<Registry> {
        let db = niso_registry::db::connect(&self.database_url, 16)
            .await
            .expect("connect");
        niso_registry::db::migrate(&db).await.expect("migrate");
        Arc::new(Registry::new(
            db,
            self.store.clone(),
            settings,
            Arc::new(Metrics::new()),
        ))
    }
}

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub registry: Arc<Registry>,
    pub storage: Arc<Storage>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

impl TestApp {
    pub async fn start(backend: Backend) -> TestApp {
        TestApp::with_settings(backend, test_settings()).await
    }

    pub async fn with_settings(backend: Backend, settings: RegistrySettings) -> TestApp {
        let storage = Arc::new(Storage::new(backend).await);
        TestApp::on_storage(storage, settings).await
    }

    /// Another server on the same storage (a second replica).
    pub async fn on_storage(storage: Arc<Storage>, settings: RegistrySettings) -> TestApp {
        let registry = storage.registry(settings).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let (sender, receiver) = tokio::sync::oneshot::channel::<()>();
        let state = AppState::new(registry.clone());
        tokio::spawn(async move {
            niso_server::http::serve(listener, state, async move {
                let _ = receiver.await;
            })
            .await
            .expect("serve");
        });
        TestApp {
            base,
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(8)
                .build()
                .expect("client"),
            registry,
            storage,
            shutdown: Some(sender),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `host:port` of the server, for raw connections.
    pub fn address(&self) -> &str {
        self.base.strip_prefix("http://").expect("http base")
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.client.request(method, self.url(path));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let text = response.text().await.expect("body");
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(reqwest::Method::GET, path, None, None).await
    }

    pub async fn post(&self, path: &str, key: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.send(reqwest::Method::POST, path, key, Some(body))
            .await
    }

    pub async fn delete(&self, path: &str, key: Option<&str>) -> (StatusCode, Value) {
        self.send(reqwest::Method::DELETE, path, key, None).await
    }

    /// Registers `username` (password `password-of-USERNAME`) and returns its API key.
    pub async fn register(&self, username: &str) -> String {
        let (status, body) = self
            .post(
                "/v1/auth/register",
                None,
                serde_json::json!({
                    "username": username,
                    "email": format!("{username}@example.com"),
                    "password": format!("password-of-{username}"),
                }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "register {username}: {body}");
        body["api_key"].as_str().expect("api_key").to_owned()
    }

    /// An unlinked `admin:*` key, as `niso-server keys create` makes.
    pub async fn admin_key(&self) -> String {
        self.system_key(None, "test-admin", "admin:*").await.1
    }

    /// A key made with the registry operator's authority (like `niso-server keys create
    /// [--user USER]`): any scope, linked to `user` if given. Returns its id and value.
    pub async fn system_key(&self, user: Option<&str>, name: &str, scope: &str) -> (i64, String) {
        let created = self
            .registry
            .create_key_by_authority(&test_authority(), user, name, scope, None)
            .await
            .unwrap_or_else(|error| panic!("system key {name} ({scope}): {error}"));
        (created.id, created.plaintext)
    }

    pub async fn upload(
        &self,
        key: &str,
        name: &str,
        version: &str,
        arch: &str,
        archive: Vec<u8>,
    ) -> (StatusCode, Value) {
        let response = self
            .client
            .put(self.url(&format!("/v1/packages/{name}/{version}/{arch}")))
            .bearer_auth(key)
            .header("content-type", "application/octet-stream")
            .body(archive)
            .send()
            .await
            .expect("upload request");
        let status = response.status();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    /// Uploads a small generated archive for `name@version`.
    pub async fn publish(&self, key: &str, name: &str, version: &str, arch: &str) -> Value {
        let archive = archives::niso(name, version, &[("bin/tool", b"#!/bin/sh\necho hi\n")]);
        let (status, body) = self.upload(key, name, version, arch, archive).await;
        assert_eq!(
            status,
            StatusCode::CREATED,
            "publish {name}@{version}: {body}"
        );
        body
    }

    pub async fn download(&self, path: &str) -> (StatusCode, reqwest::header::HeaderMap, Vec<u8>) {
        let response = self
            .client
            .get(self.url(path))
            .send()
            .await
            .expect("download");
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await.expect("body").to_vec();
        (status, headers, body)
    }
}

/// Asserts the registry's error shape: the status and a non-empty `error` message.
#[track_caller]
pub fn assert_error(actual: (StatusCode, Value), status: StatusCode) -> String {
    let (actual_status, body) = actual;
    assert_eq!(actual_status, status, "unexpected status; body: {body}");
    let message = body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("error body without an error message: {body}"));
    assert!(!message.is_empty());
    message.to_owned()
}

/// Opens a connection to `address` and sends a request whose body is announced as `announced`
/// bytes but only `sent` arrive; the rest never comes (a client that stalls).
pub async fn stalled_request(
    address: &str,
    method: &str,
    path: &str,
    key: Option<&str>,
    announced: usize,
    sent: &[u8],
) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    // JSON for the JSON endpoints, whose extractor refuses other types before reading.
    let content_type = if path.starts_with("/v1/auth/") {
        "application/json"
    } else {
        "application/octet-stream"
    };
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Length: {announced}\r\n\
         Content-Type: {content_type}\r\n"
    );
    if let Some(key) = key {
        head.push_str(&format!("Authorization: Bearer {key}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.expect("send head");
    stream.write_all(sent).await.expect("send the first bytes");
    stream.flush().await.expect("flush");
    stream
}
