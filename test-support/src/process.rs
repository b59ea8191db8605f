//! `niso-server` binaries run as child processes: servers on free ports, spoken to over HTTP,
//! and subcommands run to completion. Every child is killed and every directory removed when a
//! test ends, however it ends (the guards do it on `Drop`, which also runs while a failed test
//! unwinds). The binary is the caller's: an integration test of niso-server names it with
//! `env!("CARGO_BIN_EXE_niso-server")`, which cargo builds before the test runs.

use std::fs::File;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::http_client::{HttpClient, metric_sum};
use crate::s3::DedicatedS3Server;
use crate::scratch::{self, free_port};

/// How long a server may take to come up (debug binary, migrations, a machine busy compiling).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(90);

/// A `niso-server` executable: what starts [`Server`]s and runs subcommands.
#[derive(Debug, Clone, Copy)]
pub struct ServerBinary(&'static str);

impl ServerBinary {
    /// `path` is usually `env!("CARGO_BIN_EXE_niso-server")`.
    pub const fn new(path: &'static str) -> ServerBinary {
        ServerBinary(path)
    }

    pub fn path(self) -> &'static Path {
        Path::new(self.0)
    }

    /// Starts a server and waits until it answers `/health`.
    pub async fn start(self, name: &str, env: &Env) -> Server {
        self.start_all(&[(name, env)])
            .await
            .pop()
            .expect("one server")
    }

    /// Starts several servers at the same moment (as a rollout does), then waits for each.
    pub async fn start_all(self, specs: &[(&str, &Env)]) -> Vec<Server> {
        let mut servers: Vec<Server> = specs
            .iter()
            .map(|(name, env)| Server::spawn(self, name, env))
            .collect();
        for server in &mut servers {
            // A free port can be taken by somebody else between our probe and the child's bind:
            // then start that one again on new ports.
            for attempt in 0.. {
                match server.wait_healthy().await {
                    Ok(()) => break,
                    Err(log) if attempt < 3 && log.contains("cannot listen") => {
                        *server =
                            Server::spawn(self, &server.http.name.clone(), &server.env.clone());
                    }
                    Err(log) => {
                        panic!(
                            "{} did not come up:\n{}",
                            server.http.name,
                            tail_lines(&log, 40)
                        )
                    }
                }
            }
        }
        servers
    }

    /// Runs `niso-server ARGS` to completion (killed if it outlives `timeout`) with `env` and
    /// `data_dir` as its data directory.
    pub async fn run_cli(
        self,
        args: &[&str],
        env: &Env,
        data_dir: &Path,
        timeout: Duration,
    ) -> CliOutput {
        let mut command = Command::new(self.path());
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
}

fn tail_lines(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
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
/// The server's stdout and stderr, in its directory.
const LOG_FILE: &str = "server.log";

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
    /// The API at `http://127.0.0.1:<port>`, named after the server.
    pub http: HttpClient,
    /// `http://127.0.0.1:<port>` of `/metrics`.
    pub metrics_base: String,
    child: Child,
    env: Env,
    /// Holds the data directory and the log; removed on drop.
    dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- last lines of {}'s log ----\n{}",
                self.http.name,
                tail_lines(&self.log(), 40)
            );
        }
    }
}

/// The client the tests talk to a spawned server with: bounded waits, so a hung server fails
/// the test instead of hanging it.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(120))
        .pool_max_idle_per_host(4)
        .build()
        .expect("HTTP client")
}

impl Server {
    fn spawn(binary: ServerBinary, name: &str, env: &Env) -> Server {
        let dir = scratch::process_dir(&std::env::temp_dir(), DIR_PREFIX);
        let data_dir = dir.path().join("data");
        let log = File::create(dir.path().join(LOG_FILE)).expect("log file");
        let port = free_port();
        let metrics_port = free_port();
        let mut command = orphan_proof_command(binary.path());
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
            .unwrap_or_else(|error| panic!("cannot start {}: {error}", binary.path().display()));
        Server {
            http: HttpClient::new(name, format!("http://127.0.0.1:{port}"), http_client()),
            metrics_base: format!("http://127.0.0.1:{metrics_port}"),
            child,
            env: env.clone(),
            dir,
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
                .client
                .get(self.http.url("/health"))
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
        std::fs::read_to_string(self.dir.path().join(LOG_FILE)).unwrap_or_default()
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

    /// The value of a counter or gauge on `/metrics` (summed over its labels).
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self
            .http
            .client
            .get(format!("{}/metrics", self.metrics_base))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text");
        metric_sum(&text, name)
    }
}

impl Deref for Server {
    type Target = HttpClient;

    fn deref(&self) -> &HttpClient {
        &self.http
    }
}

/// The output of a finished subcommand.
pub struct CliOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
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
    pub s3: DedicatedS3Server,
    pub bucket: String,
}

impl Backing {
    pub async fn new() -> Backing {
        let database_url = crate::postgres::TestPostgres::get().fresh_database().await;
        Backing::on_database(database_url)
    }

    pub fn on_database(database_url: String) -> Backing {
        let s3 = DedicatedS3Server::start();
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
