//! Garage, the production backend's object store in this benchmark: one single-node server per
//! run (`garage server --single-node --default-bucket`) on loopback, a fresh bucket for every
//! niso-server environment, and an S3 client configured like niso's own (region `garage`,
//! path-style, static keys) for the direct baselines. The test suite keeps its in-process s3s
//! server; the figures come from a real store, because s3s-fs streams in 4 KiB pieces and
//! recomputes MD5 on every GET, which measured the test server instead of niso.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aws_config::BehaviorVersion;
use aws_sdk_s3::config::{Credentials, Region};

use crate::processes::free_port;

/// Clients must sign for this region: it is the one written into Garage's configuration.
const REGION: &str = "garage";
const INSTALL: &str = "cargo install garage@2.5.0 --locked";

pub struct Garage {
    child: Child,
    pub endpoint: String,
    access_key: String,
    secret_key: String,
    client: aws_sdk_s3::Client,
    buckets: AtomicUsize,
    log: PathBuf,
}

fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

/// `garage` on PATH, else cargo's bin directory; a missing binary fails the run (never a skip).
fn binary() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .map(|directory| directory.join("garage"))
                .find(|candidate| candidate.is_file())
        })
        .unwrap_or_default();
    let in_cargo = std::env::var_os("HOME")
        .map(|home| Path::new(&home).join(".cargo/bin/garage"))
        .filter(|candidate| candidate.is_file());
    on_path.or(in_cargo).unwrap_or_else(|| {
        panic!(
            "garage is not installed (neither on PATH nor in ~/.cargo/bin): the production \
             backend's figures need it; install it with `{INSTALL}`"
        )
    })
}

impl Garage {
    /// Starts Garage with its state under `work/garage` and waits until its S3 API answers.
    pub async fn start(work: &Path) -> Garage {
        let root = work.join("garage");
        std::fs::create_dir_all(&root).expect("garage dir");
        let (rpc_port, s3_port) = (free_port(), free_port());
        let config = root.join("garage.toml");
        std::fs::write(
            &config,
            format!(
                "metadata_dir = \"{root}/meta\"\n\
                 data_dir = \"{root}/data\"\n\
                 db_engine = \"sqlite\"\n\
                 replication_factor = 1\n\
                 rpc_bind_addr = \"127.0.0.1:{rpc_port}\"\n\
                 rpc_public_addr = \"127.0.0.1:{rpc_port}\"\n\
                 rpc_secret = \"{secret}\"\n\
                 [s3_api]\n\
                 s3_region = \"{REGION}\"\n\
                 api_bind_addr = \"127.0.0.1:{s3_port}\"\n",
                root = root.display(),
                secret = random_hex(32),
            ),
        )
        .expect("garage config");
        let access_key = format!("GK{}", random_hex(12));
        let secret_key = random_hex(32);
        let default_bucket = "niso-bench-default";
        let log = root.join("garage.log");
        let child = Command::new(binary())
            .arg("-c")
            .arg(&config)
            .args(["server", "--single-node", "--default-bucket"])
            .env("GARAGE_DEFAULT_ACCESS_KEY", &access_key)
            .env("GARAGE_DEFAULT_SECRET_KEY", &secret_key)
            .env("GARAGE_DEFAULT_BUCKET", default_bucket)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("garage log"))
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start garage: {error}"));
        let endpoint = format!("http://127.0.0.1:{s3_port}");
        let client = s3_client(&endpoint, &access_key, &secret_key).await;
        let mut garage = Garage {
            child,
            endpoint,
            access_key,
            secret_key,
            client,
            buckets: AtomicUsize::new(0),
            log,
        };
        garage.wait_until_up(default_bucket).await;
        garage
    }

    async fn wait_until_up(&mut self, bucket: &str) {
        let started = Instant::now();
        loop {
            if self
                .client
                .head_bucket()
                .bucket(bucket)
                .send()
                .await
                .is_ok()
            {
                eprintln!(
                    "garage up at {} in {:.2} s",
                    self.endpoint,
                    started.elapsed().as_secs_f64()
                );
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "garage exited with {status}: {}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "garage did not answer within 30 s: {}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (up to 60 s) until Garage has used under 1% of a core for half a second: deleted
    /// objects leave it work in the background (block and table GC) that would otherwise be
    /// counted against whatever the bench measures next.
    pub async fn wait_until_idle(&self) {
        let started = Instant::now();
        let mut before = crate::processes::cpu_seconds(self.pid());
        while started.elapsed() < Duration::from_secs(60) {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let now = crate::processes::cpu_seconds(self.pid());
            if now - before < 0.005 {
                return;
            }
            before = now;
        }
        eprintln!("garage still busy after 60 s; measuring anyway");
    }

    /// The client the direct baselines and object seeding use: the same SDK set-up as niso's
    /// S3 store (defaults of the latest behaviour version, static keys, path-style).
    pub fn client(&self) -> &aws_sdk_s3::Client {
        &self.client
    }

    /// Creates a new, empty bucket (the default key may create buckets) and returns its name.
    pub async fn fresh_bucket(&self) -> String {
        let number = self.buckets.fetch_add(1, Ordering::Relaxed);
        let bucket = format!("niso-bench-{number}");
        self.client
            .create_bucket()
            .bucket(&bucket)
            .send()
            .await
            .unwrap_or_else(|error| {
                panic!(
                    "create bucket {bucket}: {}",
                    aws_sdk_s3::error::DisplayErrorContext(error)
                )
            });
        bucket
    }

    /// niso's S3 settings for `bucket` (NISO_S3_* plus the AWS credential variables).
    pub fn env_for(&self, bucket: &str) -> Vec<(String, String)> {
        [
            ("NISO_S3_BUCKET", bucket.to_owned()),
            ("NISO_S3_ENDPOINT", self.endpoint.clone()),
            ("NISO_S3_REGION", REGION.to_owned()),
            ("NISO_S3_FORCE_PATH_STYLE", "true".to_owned()),
            ("AWS_ACCESS_KEY_ID", self.access_key.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_key.clone()),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect()
    }
}

async fn s3_client(endpoint: &str, access_key: &str, secret_key: &str) -> aws_sdk_s3::Client {
    let shared = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .credentials_provider(Credentials::new(
            access_key,
            secret_key,
            None,
            None,
            "niso-bench",
        ))
        .load()
        .await;
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&shared)
            .endpoint_url(endpoint)
            .force_path_style(true)
            .build(),
    )
}

impl Drop for Garage {
    /// SIGTERM, then wait for the pid: Garage needs more than 1.5 s to stop, and a run must
    /// not leave it behind (or its ports taken). SIGKILL only if it hangs.
    fn drop(&mut self) {
        // The pid is our own child, not yet reaped, so it cannot name another process.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("garage did not stop within 30 s of SIGTERM; killing it");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
