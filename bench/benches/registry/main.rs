//! The niso benchmark: `cargo bench -p niso-bench` builds the server (its `production` profile),
//! starts what it needs on loopback and prints one table of figures, each ratio measured in the
//! same run so machine noise cancels: upload vs sha256sum, download vs nginx, on the production
//! backend (PostgreSQL + Garage) upload and download vs a direct PUT / GET of the same chunks into
//! the same Garage, peak RSS under 16+16 clients, dedup of next versions, metadata requests/s under
//! wrk with 10,000 packages × 5 versions, Verdaccio side by side, and how metadata, search and GC
//! costs grow with the registry. `NISO_BENCH_QUICK=1` shrinks every size for a smoke run;
//! `NISO_BENCH_BACKENDS=embedded` or `production` picks one backend; `NISO_BENCH_ONLY` picks
//! sections (throughput, memory, dedup, metadata, growth, peer); `NISO_BENCH_SIZES` (MiB) sets the
//! throughput and memory sizes; `NISO_BENCH_SERVER_BIN` skips the build.

mod data;
mod dedup;
mod garage;
mod growth;
mod memory;
mod metadata;
mod processes;
mod seed;
mod throughput;
mod verdaccio;

use std::path::{Path, PathBuf};
use std::time::Instant;

use futures::StreamExt;
use niso_test_support::http_client::metric_sum;
use niso_test_support::postgres;

use data::MIB;
use garage::Garage;
use processes::{NisoServer, start_niso};

/// One row of the result table.
pub struct Figure {
    pub section: String,
    pub name: String,
    pub value: String,
}

pub struct Report {
    figures: Vec<Figure>,
}

impl Report {
    pub fn add(&mut self, section: &str, name: impl Into<String>, value: impl Into<String>) {
        let figure = Figure {
            section: section.to_owned(),
            name: name.into(),
            value: value.into(),
        };
        eprintln!(
            "  {:<12} {:<64} {}",
            figure.section, figure.name, figure.value
        );
        self.figures.push(figure);
    }

    fn print(&self) {
        println!("\n| section | figure | value |\n|---|---|---|");
        for figure in &self.figures {
            println!(
                "| {} | {} | {} |",
                figure.section, figure.name, figure.value
            );
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Backend {
    Embedded,
    Production,
}

pub struct Bench {
    pub binary: PathBuf,
    pub work: PathBuf,
    pub quick: bool,
    pub client: reqwest::Client,
    /// The production backend's object store: one Garage per run (None if only the embedded
    /// backend runs).
    garage: Option<Garage>,
}

/// The value of `name` in a server environment.
pub fn env_value(env: &[(String, String)], name: &str) -> String {
    env.iter()
        .find(|(key, _)| key == name)
        .unwrap_or_else(|| panic!("{name} is not set"))
        .1
        .clone()
}

pub fn mb_per_s(bytes: u64, seconds: f64) -> f64 {
    bytes as f64 / 1e6 / seconds
}

impl Bench {
    /// Environment of a niso-server on `backend`, with fresh state: a new data directory, and
    /// on production a new PostgreSQL database and a new Garage bucket.
    async fn server_env(&self, backend: Backend, label: &str) -> Vec<(String, String)> {
        let data_dir = self.work.join(format!("data-{label}"));
        std::fs::create_dir_all(&data_dir).expect("data dir");
        let mut env = vec![("NISO_DATA_DIR".to_owned(), data_dir.display().to_string())];
        if backend == Backend::Production {
            env.push((
                "NISO_DATABASE_URL".into(),
                postgres::TestPostgres::get().fresh_database().await,
            ));
            let garage = self.garage();
            env.extend(garage.env_for(&garage.fresh_bucket().await));
        }
        env
    }

    pub fn garage(&self) -> &Garage {
        self.garage
            .as_ref()
            .expect("Garage runs whenever the production backend does")
    }

    pub async fn start(&self, env: &[(String, String)], label: &str) -> NisoServer {
        start_niso(&self.binary, env, &self.work.join(format!("{label}.log"))).await
    }

    pub async fn register(&self, server: &NisoServer, username: &str) -> String {
        let response: serde_json::Value = self
            .client
            .post(format!("{}/v1/auth/register", server.base))
            .json(&serde_json::json!({"username": username, "email": format!("{username}@example.com"), "password": "benchmark-password"}))
            .send()
            .await
            .expect("register")
            .json()
            .await
            .expect("register body");
        response["api_key"].as_str().expect("api_key").to_owned()
    }

    /// Uploads a file from disk (streamed) and returns the seconds it took.
    pub async fn upload_file(
        &self,
        server: &NisoServer,
        key: &str,
        path: &str,
        file: &Path,
    ) -> f64 {
        let started = Instant::now();
        let body = tokio::fs::File::open(file).await.expect("open archive");
        let response = self
            .client
            .put(format!("{}{path}", server.base))
            .bearer_auth(key)
            .body(reqwest::Body::wrap_stream(
                tokio_util::io::ReaderStream::with_capacity(body, 256 * 1024),
            ))
            .send()
            .await
            .expect("upload");
        assert_eq!(
            response.status().as_u16(),
            201,
            "upload {path}: {}",
            response.text().await.unwrap_or_default()
        );
        started.elapsed().as_secs_f64()
    }

    pub async fn upload_bytes(&self, server: &NisoServer, key: &str, path: &str, body: Vec<u8>) {
        let response = self
            .client
            .put(format!("{}{path}", server.base))
            .bearer_auth(key)
            .body(body)
            .send()
            .await
            .expect("upload");
        assert_eq!(response.status().as_u16(), 201, "upload {path}");
    }

    /// Downloads `url` (optionally with a Range header), discarding the body; (bytes, seconds).
    pub async fn download(&self, url: &str, range: Option<&str>) -> (u64, f64) {
        let started = Instant::now();
        let mut request = self.client.get(url);
        if let Some(range) = range {
            request = request.header("range", range);
        }
        let response = request.send().await.expect("download");
        assert!(
            response.status().is_success(),
            "download {url}: {}",
            response.status()
        );
        let mut stream = response.bytes_stream();
        let mut bytes = 0u64;
        while let Some(piece) = stream.next().await {
            bytes += piece.expect("body").len() as u64;
        }
        (bytes, started.elapsed().as_secs_f64())
    }

    pub async fn metric(&self, server: &NisoServer, name: &str) -> f64 {
        let text = self
            .client
            .get(&server.metrics)
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .unwrap_or_default();
        metric_sum(&text, name)
    }

    pub async fn chunk_manifest(&self, server: &NisoServer, path: &str) -> Vec<(String, u64)> {
        let manifest: serde_json::Value = self
            .client
            .get(format!("{}{path}/chunks", server.base))
            .send()
            .await
            .expect("chunks")
            .json()
            .await
            .expect("json");
        manifest["chunks"]
            .as_array()
            .expect("chunks")
            .iter()
            .map(|c| {
                (
                    c["hash"].as_str().unwrap().to_owned(),
                    c["size"].as_u64().unwrap(),
                )
            })
            .collect()
    }
}

/// The server binary as the image ships it: `NISO_BENCH_SERVER_BIN` if set, else `cargo build
/// --profile production -p niso-server` into its own target directory (`target/bench-server`). Built in the shared one,
/// the server and this bench (whose dependencies unify features differently) re-ran each
/// other's build scripts (ring, aws-lc) and rebuilt the whole stack on every run; apart, each is
/// built once.
fn build_release_server(workspace: &Path) -> PathBuf {
    if let Ok(binary) = std::env::var("NISO_BENCH_SERVER_BIN") {
        return PathBuf::from(binary);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace.join("target"))
        .join("bench-server");
    eprintln!(
        "building the production niso-server into {} …",
        target.display()
    );
    let status =
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "--profile", "production", "-p", "niso-server"])
            .arg("--target-dir")
            .arg(&target)
            .current_dir(workspace)
            .status()
            .expect("cargo build");
    assert!(status.success(), "production build failed");
    target.join("production").join("niso-server")
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines().next().map(|l| {
                l.split_whitespace()
                    .nth(1)
                    .unwrap_or("0")
                    .parse::<u64>()
                    .unwrap_or(0)
                    / 1024
                    / 1024
            })
        })
        .unwrap_or(0);
    format!(
        "{} cores, {memory} GiB, {cpu}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    )
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    if std::env::args().any(|arg| arg == "--list") {
        return; // `cargo bench -- --list` probes harness-less benches
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf();
    let quick = std::env::var("NISO_BENCH_QUICK").is_ok_and(|v| v != "0");
    let backends: Vec<Backend> = match std::env::var("NISO_BENCH_BACKENDS").as_deref() {
        Ok("embedded") => vec![Backend::Embedded],
        Ok("production") => vec![Backend::Production],
        _ => vec![Backend::Embedded, Backend::Production],
    };
    let binary = build_release_server(&workspace);
    let work = tempfile::Builder::new()
        .prefix("niso-bench-")
        .tempdir()
        .expect("work dir");
    let garage = if backends.contains(&Backend::Production) {
        Some(Garage::start(work.path()).await)
    } else {
        None
    };
    let bench = Bench {
        binary,
        work: work.path().to_path_buf(),
        quick,
        client: reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()
            .expect("client"),
        garage,
    };
    let mut report = Report {
        figures: Vec::new(),
    };
    let started = Instant::now();
    eprintln!("machine: {}", machine());
    // `NISO_BENCH_SIZES=256` (MiB, comma-separated) replaces the throughput and memory sizes:
    // an A/B of one change needs one size, not the whole table.
    let chosen_sizes: Option<Vec<u64>> = std::env::var("NISO_BENCH_SIZES").ok().map(|sizes| {
        sizes
            .split(',')
            .map(|size| {
                size.trim()
                    .parse::<u64>()
                    .expect("NISO_BENCH_SIZES: sizes in MiB, comma-separated")
                    * MIB
            })
            .collect()
    });
    let throughput_sizes: Vec<u64> = match (&chosen_sizes, quick) {
        (Some(sizes), _) => sizes.clone(),
        (None, true) => vec![16 * MIB, 64 * MIB],
        (None, false) => vec![16 * MIB, 256 * MIB, 1024 * MIB],
    };
    let memory_sizes: Vec<u64> = match (&chosen_sizes, quick) {
        (Some(sizes), _) => sizes.clone(),
        (None, true) => vec![16 * MIB, 32 * MIB],
        (None, false) => vec![64 * MIB, 256 * MIB],
    };
    let dedup_files = if quick { 32 } else { 256 };
    // `NISO_BENCH_ONLY=memory,dedup` runs a subset while profiling one figure.
    let only = std::env::var("NISO_BENCH_ONLY").unwrap_or_default();
    let selected = |section: &str| only.is_empty() || only.split(',').any(|s| s.trim() == section);
    for backend in &backends {
        if selected("throughput") {
            throughput::throughput(&bench, *backend, &mut report, &throughput_sizes).await;
        }
        if selected("memory") {
            memory::memory(&bench, *backend, &mut report, &memory_sizes).await;
        }
        if selected("dedup") {
            dedup::dedup(&bench, *backend, &mut report, dedup_files).await;
        }
        if selected("metadata") {
            metadata::metadata(&bench, *backend, &mut report).await;
        }
        if selected("growth") {
            growth::growth(&bench, *backend, &mut report).await;
        }
    }
    if selected("peer") {
        verdaccio::side_by_side(&bench, &mut report).await;
    }
    report.print();
    println!(
        "\nmachine: {}; {} s in all{}",
        machine(),
        started.elapsed().as_secs(),
        if quick { " (quick mode)" } else { "" }
    );
}
