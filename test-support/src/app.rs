//! A registry served in-process over real HTTP on 127.0.0.1, on either backend — embedded
//! (SQLite + local files) or production (PostgreSQL + an S3 protocol server) — with the
//! settings the tests start from and the macro that runs a test on both backends.

use std::ops::Deref;
use std::sync::Arc;

use niso_registry::chunking::ChunkingSettings;
use niso_registry::metrics::Metrics;
use niso_registry::permissions::SystemAuthority;
use niso_registry::storage::ObjectStore;
use niso_registry::storage::local::LocalStore;
use niso_registry::storage::s3::S3Store;
use niso_registry::{Registry, RegistrySettings};
use niso_server::http::AppState;

use crate::http_client::HttpClient;
use crate::{postgres, s3};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite + local chunk directory (the default deployment)
    Embedded,
    /// PostgreSQL + S3 over HTTP (the production deployment)
    Production,
}

/// Runs each listed `async fn name(backend: Backend)` once per backend, as
/// `embedded::name` and `production::name` (the calling crate needs tokio).
#[macro_export]
macro_rules! for_each_backend {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::Backend::Embedded).await
                }
            )*
        }
        mod production {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::Backend::Production).await
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
        // The login limit is exercised by its own tests; a lower one keeps them short.
        login_max_failures: 5,
        password_hash_concurrency: 4,
        password_hash_wait: std::time::Duration::from_secs(60),
        // Every test client comes from loopback: registrations are limited in their own tests.
        registration_max_per_address: 100_000,
        ..RegistrySettings::default()
    }
}

/// [`test_settings`] with small chunks (4–64 KiB), so that a few hundred KiB make many chunks
/// for uploads, deletes and GC to race on.
pub fn small_chunk_settings() -> RegistrySettings {
    RegistrySettings {
        chunking: ChunkingSettings {
            min_size: 4 * 1024,
            avg_size: 16 * 1024,
            max_size: 64 * 1024,
        },
        ..test_settings()
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
                let settings = s3::S3TestServer::get().fresh_bucket();
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

/// An in-process server on a [`Storage`]; it speaks HTTP through the [`HttpClient`] it
/// dereferences to. Dropping it stops the server.
pub struct TestApp {
    pub http: HttpClient,
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
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(8)
            .build()
            .expect("client");
        TestApp {
            http: HttpClient::new("in-process registry", base, client),
            registry,
            storage,
            shutdown: Some(sender),
        }
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
}

impl Deref for TestApp {
    type Target = HttpClient;

    fn deref(&self) -> &HttpClient {
        &self.http
    }
}
