//! The process harness of the end-to-end tests: finds (or builds) the `niso-server` binary,
//! starts it as child processes on free ports, talks to them over HTTP, runs its subcommands,
//! and makes sure every child is killed and every directory removed when a test ends, however
//! it ends (the guards do it on `Drop`, which also runs while a failed test unwinds).
#![allow(dead_code)]

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use reqwest::{Method, StatusCode};
use serde_json::Value;

/// How long a server may take to come up (debug binary, migrations, a machine busy compiling).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(90);

/// The `niso-server` binary the tests run. `NISO_E2E_SERVER_BIN` names one explicitly;
/// otherwise it is the one cargo builds next to this test executable
/// (`target/<profile>/deps/<test>` → `target/<profile>/niso-server`). `cargo test --workspace`
/// builds it (niso-server has integration tests of its own); with `cargo test -p niso-e2e`
/// cargo does not, so when it is missing or older than the server's sources it is built here,
/// once per test process.
pub fn server_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(locate_binary)
}

fn locate_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("NISO_E2E_SERVER_BIN") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "NISO_E2E_SERVER_BIN={} is not a file",
            path.display()
        );
        return path;
    }
    let exe = std::env::current_exe().expect("the test executable's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .unwrap_or_else(|| panic!("unexpected test executable location {}", exe.display()))
        .to_owned();
    let binary = profile_dir.join(format!("niso-server{}", std::env::consts::EXE_SUFFIX));
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root");
    let built_at = modified(&binary);
    let sources_changed_at = newest_source(workspace);
    if built_at.is_none_or(|built| built < sources_changed_at) {
        build_binary(&profile_dir, workspace, built_at.is_some());
    }
    assert!(
        binary.is_file(),
        "the niso-server binary is missing at {}: build it with `cargo build -p niso-server` \
         (or run `cargo test --workspace`), or point NISO_E2E_SERVER_BIN at one",
        binary.display()
    );
    binary
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The latest modification among the files the binary is built from.
fn newest_source(workspace: &Path) -> SystemTime {
    fn walk(path: &Path, newest: &mut SystemTime) {
        let Ok(metadata) = std::fs::metadata(path) else {
            return;
        };
        if metadata.is_dir() {
            for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
                walk(&entry.path(), newest);
            }
        } else if let Ok(time) = metadata.modified() {
            *newest = (*newest).max(time);
        }
    }
    let mut newest = SystemTime::UNIX_EPOCH;
    for part in [
        "Cargo.toml",
        "Cargo.lock",
        "server/Cargo.toml",
        "server/src",
        "entity/Cargo.toml",
        "entity/src",
        "migration/Cargo.toml",
        "migration/src",
    ] {
        walk(&workspace.join(part), &mut newest);
    }
    newest
}

/// `cargo build -p niso-server --bin niso-server` into the profile directory the tests run
/// from. A failure with an older binary present only warns: the tests then run that one.
fn build_binary(profile_dir: &Path, workspace: &Path, have_old_binary: bool) {
    let profile = profile_dir
        .file_name()
        .and_then(|name| name.to_str())
        .unwrap_or("debug");
    let target_dir = profile_dir.parent().expect("the target directory");
    let mut command = Command::new(option_env!("CARGO").unwrap_or("cargo"));
    command
        .current_dir(workspace)
        .args(["build", "-p", "niso-server", "--bin", "niso-server"])
        .arg("--target-dir")
        .arg(target_dir);
    match profile {
        "debug" => {}
        "release" => {
            command.arg("--release");
        }
        other => {
            command.args(["--profile", other]);
        }
    }
    // Straight to the terminal: the test harness captures `eprintln!`, and a silent build of
    // a few minutes looks like a hung test.
    let _ = writeln!(
        std::io::stderr(),
        "niso-e2e: the niso-server binary is missing or older than its sources; building it \
         ({profile})"
    );
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("cannot run cargo to build niso-server: {error}"));
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail = tail_lines(&stderr, 30);
        if have_old_binary {
            eprintln!("niso-e2e: building niso-server failed; testing the existing binary\n{tail}");
        } else {
            panic!("building niso-server failed:\n{tail}");
        }
    }
}

fn tail_lines(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}

/// Settings every child process gets: a clean environment (nothing of the developer's
/// `NISO_*`/`AWS_*` leaks in), text logs, and no AWS profile files or instance metadata.
fn base_env(command: &mut Command, data_dir: &Path) {
    command.env_clear();
    for passed in ["PATH", "RUST_BACKTRACE"] {
        if let Some(value) = std::env::var_os(passed) {
            command.env(passed, value);
        }
    }
    command
        .env("NISO_DATA_DIR", data_dir)
        .env("NISO_LOG_FORMAT", "text")
        .env("NISO_LOG", "info")
        .env("NO_COLOR", "1")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_DISABLED", "true");
}

/// Prefix of the servers' directories in the system temp dir, followed by the test's PID.
const DIR_PREFIX: &str = "niso-e2e-";

/// Removes server directories left by test processes that were killed before their
/// destructors ran (a normal or panicking end removes them itself).
fn remove_dirs_of_dead_processes() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|name| name.strip_prefix(DIR_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() && Path::new("/proc/self").exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A command for `program` that also dies if this test process dies without running its
/// destructors (killed, or aborted by a timeout): `setpriv --pdeathsig KILL`, when available,
/// arranges SIGKILL for it when the thread that spawned it goes away.
fn orphan_proof_command(program: &Path) -> Command {
    static SETPRIV: OnceLock<Option<PathBuf>> = OnceLock::new();
    let setpriv = SETPRIV.get_or_init(|| {
        ["/usr/bin/setpriv", "/bin/setpriv"]
            .iter()
            .map(PathBuf::from)
            .find(|path| path.is_file())
    });
    match setpriv {
        Some(setpriv) => {
            let mut command = Command::new(setpriv);
            command.args(["--pdeathsig", "KILL", "--"]).arg(program);
            command
        }
        None => Command::new(program),
    }
}

/// Environment variables as the tests pass them around.
pub type Env = Vec<(String, String)>;

pub fn env(pairs: &[(&str, &str)]) -> Env {
    pairs
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

/// One `niso-server serve` child process. Dropping it kills the process (SIGKILL) and removes
/// its directory (data dir and log).
pub struct Server {
    pub name: String,
    /// `http://127.0.0.1:<port>` of the API.
    pub base: String,
    /// `http://127.0.0.1:<port>` of `/metrics`.
    pub metrics_base: String,
    child: Child,
    env: Env,
    log_path: PathBuf,
    dir: tempfile::TempDir,
    pub http: reqwest::Client,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- last lines of {}'s log ----\n{}",
                self.name,
                tail_lines(&self.log(), 40)
            );
        }
    }
}

pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(120))
        .pool_max_idle_per_host(4)
        .build()
        .expect("HTTP client")
}

impl Server {
    /// Starts a server and waits until it answers `/health`.
    pub async fn start(name: &str, env: &Env) -> Server {
        Server::start_all(&[(name, env)])
            .await
            .pop()
            .expect("one server")
    }

    /// Starts several servers at the same moment (as a rollout does), then waits for each.
    pub async fn start_all(specs: &[(&str, &Env)]) -> Vec<Server> {
        let mut servers: Vec<Server> = specs
            .iter()
            .map(|(name, env)| Server::spawn(name, env))
            .collect();
        for server in &mut servers {
            // A free port can be taken by somebody else between our probe and the child's bind:
            // then start that one again on new ports.
            for attempt in 0.. {
                match server.wait_healthy().await {
                    Ok(()) => break,
                    Err(log) if attempt < 3 && log.contains("cannot listen") => {
                        *server = Server::spawn(&server.name.clone(), &server.env.clone());
                    }
                    Err(log) => {
                        panic!("{} did not come up:\n{}", server.name, tail_lines(&log, 40))
                    }
                }
            }
        }
        servers
    }

    fn spawn(name: &str, env: &Env) -> Server {
        static SWEPT: OnceLock<()> = OnceLock::new();
        SWEPT.get_or_init(remove_dirs_of_dead_processes);
        let dir = tempfile::Builder::new()
            .prefix(&format!("{DIR_PREFIX}{}-", std::process::id()))
            .tempdir()
            .expect("temp dir");
        let data_dir = dir.path().join("data");
        let log_path = dir.path().join("server.log");
        let log = File::create(&log_path).expect("log file");
        let port = free_port();
        let metrics_port = free_port();
        let mut command = orphan_proof_command(server_binary());
        command.arg("serve");
        base_env(&mut command, &data_dir);
        command
            .env("NISO_LISTEN", format!("127.0.0.1:{port}"))
            .env("NISO_METRICS_LISTEN", format!("127.0.0.1:{metrics_port}"));
        for (name, value) in env {
            command.env(name, value);
        }
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log);
        let child = command
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {}: {error}", server_binary().display()));
        Server {
            name: name.to_owned(),
            base: format!("http://127.0.0.1:{port}"),
            metrics_base: format!("http://127.0.0.1:{metrics_port}"),
            child,
            env: env.clone(),
            log_path,
            dir,
            http: http_client(),
        }
    }

    /// Polls `/health` until it answers 200; the log if the process exits or time runs out.
    async fn wait_healthy(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("exited with {status}\n{}", self.log()));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "not healthy after {STARTUP_TIMEOUT:?}\n{}",
                    self.log()
                ));
            }
            let probe = self
                .http
                .get(self.url("/health"))
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if probe.is_ok_and(|response| response.status() == StatusCode::OK) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: the process dies on the spot, in the middle of whatever it was doing.
    pub fn kill(&mut self) -> ExitStatus {
        let _ = self.child.kill();
        self.child.wait().expect("wait for the killed server")
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request with an optional bearer key and JSON body; the status and the body as JSON
    /// (a non-JSON body becomes a JSON string, an empty one `null`).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.http.request(method.clone(), self.url(path));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|error| panic!("{method} {path} on {}: {error}", self.name));
        let status = response.status();
        let text = response.text().await.expect("response body");
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(Method::GET, path, None, None).await
    }

    pub async fn get_with(&self, path: &str, key: &str) -> (StatusCode, Value) {
        self.send(Method::GET, path, Some(key), None).await
    }

    pub async fn post(&self, path: &str, key: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.send(Method::POST, path, key, Some(body)).await
    }

    pub async fn delete(&self, path: &str, key: &str) -> (StatusCode, Value) {
        self.send(Method::DELETE, path, Some(key), None).await
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
        assert_eq!(
            status,
            StatusCode::CREATED,
            "register {username} on {}: {body}",
            self.name
        );
        body["api_key"].as_str().expect("api_key").to_owned()
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
            .http
            .put(self.url(&format!("/v1/packages/{name}/{version}/{arch}")))
            .bearer_auth(key)
            .header("content-type", "application/octet-stream")
            .body(archive)
            .send()
            .await
            .unwrap_or_else(|error| panic!("upload to {}: {error}", self.name));
        let status = response.status();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    /// A GET of binary content: status, headers and body.
    pub async fn download(&self, path: &str) -> (StatusCode, reqwest::header::HeaderMap, Vec<u8>) {
        let response = self
            .http
            .get(self.url(path))
            .send()
            .await
            .unwrap_or_else(|error| panic!("GET {path} on {}: {error}", self.name));
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .bytes()
            .await
            .unwrap_or_else(|error| panic!("body of GET {path} on {}: {error}", self.name))
            .to_vec();
        (status, headers, body)
    }

    /// The value of a counter or gauge on `/metrics` (summed over its labels).
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self
            .http
            .get(format!("{}/metrics", self.metrics_base))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text");
        text.lines()
            .filter(|line| {
                line.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
            })
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

/// The output of a finished subcommand.
pub struct CliOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `niso-server ARGS` to completion (killed if it outlives `timeout`) with `env` and
/// `data_dir` as its data directory.
pub async fn run_cli(args: &[&str], env: &Env, data_dir: &Path, timeout: Duration) -> CliOutput {
    let mut command = Command::new(server_binary());
    command.args(args);
    base_env(&mut command, data_dir);
    for (name, value) in env {
        command.env(name, value);
    }
    command.stdin(Stdio::null());
    let mut command = tokio::process::Command::from(command);
    command.kill_on_drop(true);
    let output = tokio::time::timeout(timeout, command.output())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "`niso-server {}` did not finish in {timeout:?}",
                args.join(" ")
            )
        })
        .expect("run niso-server");
    CliOutput {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// Asserts the registry's error shape: the status and a non-empty `error` message.
#[track_caller]
pub fn assert_error(actual: &(StatusCode, Value), status: StatusCode) {
    let (actual_status, body) = actual;
    assert_eq!(*actual_status, status, "unexpected status; body: {body}");
    let message = body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("error body without an error message: {body}"));
    assert!(!message.is_empty(), "empty error message");
}

/// Polls `check` every 100 ms until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The shared state of a production deployment for one test: a fresh database on the test
/// PostgreSQL cluster and a bucket on an S3 server of the test's own (so its directory goes
/// when the test ends). Declare it after the servers that use it, so they stop first.
pub struct Backing {
    pub database_url: String,
    pub s3: crate::common::s3_test_server::DedicatedS3Server,
    pub bucket: String,
}

impl Backing {
    pub async fn new() -> Backing {
        let database_url = crate::common::postgres::TestPostgres::get()
            .fresh_database()
            .await;
        Backing::on_database(database_url)
    }

    pub fn on_database(database_url: String) -> Backing {
        let s3 = crate::common::s3_test_server::DedicatedS3Server::start();
        let bucket = s3.fresh_bucket();
        Backing {
            database_url,
            s3,
            bucket,
        }
    }

    /// The environment of a replica: this database and bucket, download counts flushed every
    /// second, plus `extra`.
    pub fn env(&self, extra: &[(&str, &str)]) -> Env {
        let mut env = vec![
            ("NISO_DATABASE_URL".to_owned(), self.database_url.clone()),
            ("NISO_DOWNLOAD_COUNT_FLUSH_SECS".to_owned(), "1".to_owned()),
        ];
        env.extend(
            self.s3
                .env_for(&self.bucket)
                .into_iter()
                .map(|(name, value)| (name.to_owned(), value)),
        );
        for (name, value) in extra {
            env.retain(|(existing, _)| existing != name);
            env.push((name.to_string(), value.to_string()));
        }
        env
    }
}
