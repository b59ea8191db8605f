//! A real S3 protocol server for tests: s3s + s3s-fs served over HTTP on 127.0.0.1, SigV4
//! enforced with static credentials, objects in a directory under cargo's `target/tmp`.
//!
//! One server per test process ([`S3TestServer::get`]), on its own thread and tokio runtime,
//! so it outlives the runtime of each `#[tokio::test]`; tests isolate themselves by taking a
//! fresh bucket ([`S3TestServer::fresh_bucket`]).

use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::error_handling::HandleError;
use axum::http::StatusCode;
use niso_registry::storage::s3::S3Settings;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;

use crate::scratch;

/// Region the clients sign for; s3s accepts any, it only has to be consistent.
pub const REGION: &str = "us-east-1";
/// Prefix of the server's data directories under `target/tmp`.
const DIR_PREFIX: &str = "s3-test-server-";

pub struct S3TestServer {
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
    /// Where s3s-fs keeps the buckets (one directory each).
    root: PathBuf,
    /// Never stopped: the server lives as long as the process.
    _running: RunningServer,
}

static SERVER: LazyLock<S3TestServer> = LazyLock::new(S3TestServer::start);
static NEXT_BUCKET: AtomicU64 = AtomicU64::new(0);

impl S3TestServer {
    /// The process-wide server, started on first use (~40 ms).
    pub fn get() -> &'static S3TestServer {
        &SERVER
    }

    fn start() -> S3TestServer {
        // Statics are never dropped, so a TempDir would never clean up: keep the directory
        // explicitly (named after our PID), and let the next run remove it once we are gone.
        let root = scratch::process_dir(&scratch::target_tmp(), DIR_PREFIX).keep();

        let (access_key, secret_key) = random_credentials();

        // Bound before the thread starts, so the port is known and connections made before
        // the server loop runs simply wait in the backlog: no readiness race.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the S3 test server");
        let addr = listener.local_addr().expect("listener address");
        let running = spawn_server(listener, &root, &access_key, &secret_key, "s3-test-server");

        S3TestServer {
            endpoint: format!("http://{addr}"),
            access_key,
            secret_key,
            root,
            _running: running,
        }
    }

    /// Creates bucket `name` (s3s-fs keeps a bucket as a directory of its root).
    pub fn create_bucket(&self, name: &str) {
        std::fs::create_dir(self.root.join(name))
            .unwrap_or_else(|e| panic!("create bucket {name}: {e}"));
    }

    /// A name no other test of this process uses, without creating the bucket.
    pub fn unique_bucket_name(&self) -> String {
        format!("niso-test-{}", NEXT_BUCKET.fetch_add(1, Ordering::Relaxed))
    }

    /// Settings for a new, empty bucket of its own: the usual way a test gets an S3 store.
    pub fn fresh_bucket(&self) -> S3Settings {
        let bucket = self.unique_bucket_name();
        self.create_bucket(&bucket);
        self.settings(&bucket)
    }

    /// Settings reaching `bucket` on this server with its credentials (path-style, since the
    /// endpoint is an IP address).
    pub fn settings(&self, bucket: &str) -> S3Settings {
        S3Settings {
            bucket: bucket.to_owned(),
            endpoint: Some(self.endpoint.clone()),
            region: Some(REGION.to_owned()),
            force_path_style: true,
            credentials: Some((self.access_key.clone(), self.secret_key.clone())),
        }
    }

    /// The process environment a child process (the niso-server binary in end-to-end tests)
    /// needs to use `bucket` through the standard AWS credential chain.
    pub fn env_for(&self, bucket: &str) -> Vec<(&'static str, String)> {
        env_for(&self.endpoint, &self.access_key, &self.secret_key, bucket)
    }

    /// Where bucket `bucket`'s objects are on disk, for tests that inspect or damage them.
    pub fn bucket_dir(&self, bucket: &str) -> PathBuf {
        self.root.join(bucket)
    }
}

fn env_for(
    endpoint: &str,
    access_key: &str,
    secret_key: &str,
    bucket: &str,
) -> Vec<(&'static str, String)> {
    vec![
        ("NISO_S3_BUCKET", bucket.to_owned()),
        ("NISO_S3_ENDPOINT", endpoint.to_owned()),
        ("NISO_S3_REGION", REGION.to_owned()),
        ("NISO_S3_FORCE_PATH_STYLE", "true".to_owned()),
        ("AWS_ACCESS_KEY_ID", access_key.to_owned()),
        ("AWS_SECRET_ACCESS_KEY", secret_key.to_owned()),
    ]
}

/// A fresh access key and secret, so no test reaches a server it was not given.
fn random_credentials() -> (String, String) {
    (
        format!("AKNISOTEST{}", hex::encode_upper(rand::random::<[u8; 5]>())),
        hex::encode(rand::random::<[u8; 20]>()),
    )
}

/// A running server: its thread, and the way to stop it.
struct RunningServer {
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

/// Serves s3s-fs on `root` over `listener` on a thread of its own with its own runtime, until
/// the returned server is stopped. Stopping drops the runtime, and with it every open
/// connection: to a client the server is simply gone.
fn spawn_server(
    listener: std::net::TcpListener,
    root: &Path,
    access_key: &str,
    secret_key: &str,
    thread_name: &str,
) -> RunningServer {
    let fs = s3s_fs::FileSystem::new(root).expect("open the s3s-fs root");
    let mut builder = S3ServiceBuilder::new(fs);
    builder.set_auth(SimpleAuth::from_single(
        access_key.to_owned(),
        secret_key.to_owned(),
    ));
    let service = builder.build();
    listener
        .set_nonblocking(true)
        .expect("set the listener non-blocking");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let runtime_name = thread_name.to_owned();
    let thread = std::thread::Builder::new()
        .name(thread_name.to_owned())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name(runtime_name)
                .enable_all()
                .build()
                .expect("build the S3 test server's runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener)
                    .expect("register the listener with tokio");
                // S3 errors are already S3 XML responses; only transport-level failures
                // reach this handler, and axum needs them turned into a response.
                let service = HandleError::new(service, |e: s3s::HttpError| async move {
                    (StatusCode::INTERNAL_SERVER_ERROR, format!("{e:?}"))
                });
                let app = axum::Router::new().fallback_service(service);
                tokio::select! {
                    served = axum::serve(listener, app) => served.expect("S3 test server failed"),
                    _ = stopped => {}
                }
            });
            // Dropping the runtime cancels the connection tasks: their sockets close now.
            runtime.shutdown_background();
        })
        .expect("spawn the S3 test server thread");
    RunningServer { stop, thread }
}

/// An S3 server of a single test's own, which the test may stop and restart (same port, same
/// directory, same credentials) to simulate an object-store outage. Dropping it stops the
/// server and removes its directory.
pub struct DedicatedS3Server {
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
    addr: std::net::SocketAddr,
    dir: tempfile::TempDir,
    running: Option<RunningServer>,
}

impl DedicatedS3Server {
    pub fn start() -> DedicatedS3Server {
        let dir = scratch::process_dir(&scratch::target_tmp(), DIR_PREFIX);
        let (access_key, secret_key) = random_credentials();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the S3 test server");
        let addr = listener.local_addr().expect("listener address");
        let running = spawn_server(
            listener,
            dir.path(),
            &access_key,
            &secret_key,
            "s3-dedicated",
        );
        DedicatedS3Server {
            endpoint: format!("http://{addr}"),
            access_key,
            secret_key,
            addr,
            dir,
            running: Some(running),
        }
    }

    /// Stops the server: the port refuses connections and open connections are closed.
    pub fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            let _ = running.stop.send(());
            let _ = running.thread.join();
        }
    }

    /// Serves again on the same port, from the same directory.
    pub fn restart(&mut self) {
        self.stop();
        // The port was ours a moment ago; retry briefly in case the kernel still holds it.
        let mut attempts = 0;
        let listener = loop {
            match std::net::TcpListener::bind(self.addr) {
                Ok(listener) => break listener,
                Err(_) if attempts < 50 => {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                Err(error) => panic!("rebind the S3 test server on {}: {error}", self.addr),
            }
        };
        self.running = Some(spawn_server(
            listener,
            self.dir.path(),
            &self.access_key,
            &self.secret_key,
            "s3-dedicated",
        ));
    }

    /// Creates an empty bucket and returns its name.
    pub fn fresh_bucket(&self) -> String {
        let bucket = format!("niso-test-{}", NEXT_BUCKET.fetch_add(1, Ordering::Relaxed));
        std::fs::create_dir(self.dir.path().join(&bucket))
            .unwrap_or_else(|e| panic!("create bucket {bucket}: {e}"));
        bucket
    }

    /// Where bucket `bucket`'s objects are on disk.
    pub fn bucket_dir(&self, bucket: &str) -> PathBuf {
        self.dir.path().join(bucket)
    }

    /// The environment a child process needs to use `bucket` (see [`S3TestServer::env_for`]).
    pub fn env_for(&self, bucket: &str) -> Vec<(&'static str, String)> {
        env_for(&self.endpoint, &self.access_key, &self.secret_key, bucket)
    }
}

impl Drop for DedicatedS3Server {
    fn drop(&mut self) {
        self.stop();
    }
}
