//! A throwaway PostgreSQL cluster for the test process, from the machine's `initdb`/`pg_ctl`
//! (run as the `postgres` user when the tests run as root, since PostgreSQL refuses root), and a
//! fresh database per test. `NISO_TEST_DATABASE_URL` (a server URL without a database name, or
//! with `/postgres`) points the tests at an existing server instead.
//!
//! A watchdog process stops the cluster when the test process exits, however it exits.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::LazyLock;

use crate::scratch::free_port;

pub struct TestPostgres {
    /// `postgres://user@127.0.0.1:port` (no database)
    base_url: String,
}

static CLUSTER: LazyLock<TestPostgres> = LazyLock::new(TestPostgres::start);

fn find_bin(name: &str) -> PathBuf {
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|dir| {
            dir.filter_map(|entry| entry.ok())
                .map(|entry| entry.path().join("bin").join(name))
                .filter(|path| path.exists())
                .collect()
        })
        .unwrap_or_default();
    candidates.sort();
    candidates.pop().unwrap_or_else(|| {
        panic!(
            "PostgreSQL's {name} was not found under /usr/lib/postgresql/*/bin: install the \
             postgresql package (the test suite needs a real PostgreSQL; .ci/run installs it)"
        )
    })
}

fn is_root() -> bool {
    // SAFETY-free check: /proc/self/status Uid line, first field.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("Uid:"))
                .and_then(|line| line.split_whitespace().nth(1).map(|uid| uid == "0"))
        })
        .unwrap_or(false)
}

/// Runs a PostgreSQL binary, as the `postgres` user when we are root.
fn pg_command(binary: &Path) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(binary);
        command
    } else {
        Command::new(binary)
    }
}

impl TestPostgres {
    fn start() -> TestPostgres {
        if let Ok(url) = std::env::var("NISO_TEST_DATABASE_URL") {
            let base_url = url
                .trim_end_matches("/postgres")
                .trim_end_matches('/')
                .to_owned();
            return TestPostgres { base_url };
        }
        let cluster = Cluster::init("niso-test-pg-");
        cluster.start();
        TestPostgres {
            base_url: cluster.base_url(),
        }
    }

    pub fn get() -> &'static TestPostgres {
        &CLUSTER
    }

    /// Creates an empty database and returns its URL.
    pub async fn fresh_database(&self) -> String {
        create_database(&self.base_url).await
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }
}

/// Creates an empty database on the server at `base_url` and returns its URL.
async fn create_database(base_url: &str) -> String {
    use sea_orm::ConnectionTrait;
    let name = format!("niso_test_{:016x}", rand::random::<u64>());
    let admin = sea_orm::Database::connect(format!("{base_url}/postgres"))
        .await
        .expect("connect to the test PostgreSQL");
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create test database");
    admin.close().await.ok();
    format!("{base_url}/{name}")
}

/// An initialised cluster directory and the port it serves on when started. A watchdog stops
/// it and removes the directory once the test process is gone, however it exits.
struct Cluster {
    pg_ctl: PathBuf,
    root: PathBuf,
    data: PathBuf,
    user: String,
    port: u16,
}

impl Cluster {
    fn init(prefix: &str) -> Cluster {
        let initdb = find_bin("initdb");
        let pg_ctl = find_bin("pg_ctl");
        let root = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in("/tmp")
            .expect("temp dir")
            .keep();
        let data = root.join("data");
        std::fs::create_dir(&data).expect("data dir");
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&root)
                .status()
                .expect("chown");
            assert!(status.success(), "chown of the test cluster dir failed");
        }
        let user = if is_root() {
            "postgres".to_owned()
        } else {
            whoami()
        };
        let output = pg_command(&initdb)
            .args(["-A", "trust", "-U", &user, "-E", "UTF8", "--no-sync", "-D"])
            .arg(&data)
            .output()
            .expect("run initdb");
        assert!(
            output.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        spawn_watchdog(&pg_ctl, &data, &root);
        Cluster {
            pg_ctl,
            root,
            data,
            user,
            port: free_port(),
        }
    }

    fn base_url(&self) -> String {
        format!("postgres://{}@127.0.0.1:{}", self.user, self.port)
    }

    /// Starts the server and waits until it accepts connections.
    fn start(&self) {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300",
            self.port,
            self.root.display()
        );
        let output = pg_command(&self.pg_ctl)
            .args(["-w", "-t", "60", "-D"])
            .arg(&self.data)
            .args(["-o", &options, "-l"])
            .arg(self.root.join("log"))
            .arg("start")
            .output()
            .expect("run pg_ctl");
        assert!(
            output.status.success(),
            "pg_ctl start failed: {}{}",
            String::from_utf8_lossy(&output.stderr),
            std::fs::read_to_string(self.root.join("log")).unwrap_or_default()
        );
    }

    /// Stops the server (`fast`: open sessions are terminated, as in a real outage or a
    /// failover) and waits until it is down.
    fn stop(&self, mode: &str) -> bool {
        pg_command(&self.pg_ctl)
            .args(["-w", "-t", "60", "-D"])
            .arg(&self.data)
            .args(["-m", mode, "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    }
}

/// A PostgreSQL cluster of a single test's own, which the test may stop and start again (on
/// the same port, with the same data) to simulate an outage. Dropping it stops the cluster
/// and removes its directory. Always a local cluster, even with `NISO_TEST_DATABASE_URL`.
pub struct DedicatedPostgres {
    cluster: Cluster,
}

impl DedicatedPostgres {
    pub fn start() -> DedicatedPostgres {
        let cluster = Cluster::init("niso-test-pg-dedicated-");
        cluster.start();
        DedicatedPostgres { cluster }
    }

    /// `postgres://user@127.0.0.1:port` (no database).
    pub fn base_url(&self) -> String {
        self.cluster.base_url()
    }

    /// Creates an empty database and returns its URL.
    pub async fn fresh_database(&self) -> String {
        create_database(&self.base_url()).await
    }

    /// Stops the server, terminating every open session; returns once it is down.
    pub fn stop(&self) {
        assert!(self.cluster.stop("fast"), "pg_ctl stop failed");
    }

    /// Starts the server again on the same port with the same data.
    pub fn restart(&self) {
        self.cluster.start();
    }
}

impl Drop for DedicatedPostgres {
    fn drop(&mut self) {
        self.cluster.stop("immediate");
        let _ = std::fs::remove_dir_all(&self.cluster.root);
    }
}

fn whoami() -> String {
    std::env::var("USER").unwrap_or_else(|_| "postgres".into())
}

/// Stops the cluster and removes its directory once this process is gone.
fn spawn_watchdog(pg_ctl: &Path, data: &Path, root: &Path) {
    let stop = if is_root() {
        format!(
            "runuser -u postgres -- {} -D {} -m immediate stop",
            pg_ctl.display(),
            data.display()
        )
    } else {
        format!(
            "{} -D {} -m immediate stop",
            pg_ctl.display(),
            data.display()
        )
    };
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; {stop} >/dev/null 2>&1; rm -rf {root}",
        pid = std::process::id(),
        root = root.display()
    );
    // Deliberately never waited for: the watchdog must outlive this process.
    #[allow(clippy::zombie_processes)]
    Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the cluster watchdog");
}
