//! The niso benchmark: `cargo bench -p niso-bench` builds the release server, starts what it
//! needs on loopback and prints one table of figures, each ratio measured in the same run so
//! machine noise cancels: upload vs sha256sum, download vs nginx, peak RSS under 16+16 clients,
//! dedup of next versions, metadata requests/s under wrk with 10,000 packages × 5 versions, and
//! Verdaccio side by side. `NISO_BENCH_QUICK=1` shrinks every size for a smoke run;
//! `NISO_BENCH_BACKENDS=embedded` or `production` picks one backend; `NISO_BENCH_ONLY` picks
//! sections (throughput, memory, dedup, metadata, peer); `NISO_BENCH_SERVER_BIN` skips the build.

mod data;
mod metadata;
mod processes;
mod verdaccio;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use futures::StreamExt;
use niso_test_support::http_client::metric_sum;
use niso_test_support::{postgres, s3};

use data::MIB;
use processes::{NisoServer, start_nginx, start_niso};

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
}

pub fn mb_per_s(bytes: u64, seconds: f64) -> f64 {
    bytes as f64 / 1e6 / seconds
}

impl Bench {
    /// Environment of a niso-server on `backend`, with fresh state.
    async fn server_env(&self, backend: Backend, label: &str) -> Vec<(String, String)> {
        let data_dir = self.work.join(format!("data-{label}"));
        std::fs::create_dir_all(&data_dir).expect("data dir");
        let mut env = vec![("NISO_DATA_DIR".to_owned(), data_dir.display().to_string())];
        if backend == Backend::Production {
            env.push((
                "NISO_DATABASE_URL".into(),
                postgres::TestPostgres::get().fresh_database().await,
            ));
            let server = s3::S3TestServer::get();
            let bucket = server.unique_bucket_name();
            server.create_bucket(&bucket);
            env.extend(
                server
                    .env_for(&bucket)
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v)),
            );
        }
        env
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

fn sha256sum_seconds(file: &Path) -> f64 {
    let started = Instant::now();
    let status = std::process::Command::new("sha256sum")
        .arg(file)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("sha256sum");
    assert!(status.success());
    started.elapsed().as_secs_f64()
}

/// Runs per throughput figure; the median is reported, so one hiccup does not move a figure.
const THROUGHPUT_RUNS: usize = 3;

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

async fn throughput(bench: &Bench, backend: Backend, report: &mut Report, sizes: &[u64]) {
    let section = format!("{backend:?}").to_lowercase();
    let env = bench
        .server_env(backend, &format!("throughput-{section}"))
        .await;
    let server = bench.start(&env, &format!("throughput-{section}")).await;
    let key = bench.register(&server, "bench").await;
    let files = bench.work.join("files");
    std::fs::create_dir_all(&files).expect("files dir");
    let (_nginx, nginx_base) = start_nginx(&files, &bench.work).await;
    for (index, size) in sizes.iter().enumerate() {
        let label = format!("{} MiB", size / MIB);
        let package = format!("@bench/blob-{}", size / MIB);
        let (mut hashing, mut uploads, mut downloads, mut nginx) = (vec![], vec![], vec![], vec![]);
        let mut length = 0;
        for run in 0..THROUGHPUT_RUNS {
            // Fresh random content per run, so every upload stores new chunks.
            let version = format!("1.0.{run}");
            let file_name = format!("upload-{}-{run}.niso", size / MIB);
            let file = files.join(&file_name);
            let seed = 1_000 * (index as u64 + 1) + run as u64;
            data::write_incompressible_archive(&file, &package, &version, *size, seed);
            length = std::fs::metadata(&file).expect("archive").len();
            hashing.push(mb_per_s(length, sha256sum_seconds(&file)));
            let path = format!("/v1/packages/{package}/{version}/x86_64-linux");
            let seconds = bench.upload_file(&server, &key, &path, &file).await;
            uploads.push(mb_per_s(length, seconds));
            let (bytes, seconds) = bench
                .download(&format!("{}{path}", server.base), None)
                .await;
            assert_eq!(bytes, length, "downloaded size");
            downloads.push(mb_per_s(bytes, seconds));
            let (bytes, seconds) = bench
                .download(&format!("{nginx_base}/{file_name}"), None)
                .await;
            nginx.push(mb_per_s(bytes, seconds));
            let _ = std::fs::remove_file(&file);
        }
        let (floor, upload) = (median(hashing), median(uploads));
        report.add(
            &section,
            format!("upload {label}: MB/s (× sha256sum)"),
            format!(
                "{upload:.0} ({:.2}×, sha256sum {floor:.0} MB/s)",
                upload / floor
            ),
        );
        let (download, nginx) = (median(downloads), median(nginx));
        report.add(
            &section,
            format!("download {label}: MB/s (× nginx)"),
            format!(
                "{download:.0} ({:.2}×, nginx {nginx:.0} MB/s)",
                download / nginx
            ),
        );
        if index + 1 == sizes.len() {
            let latest = format!("{}/v1/packages/{package}/latest/x86_64-linux", server.base);
            let mut runs = vec![];
            for _ in 0..THROUGHPUT_RUNS {
                let (bytes, seconds) = bench.download(&latest, None).await;
                runs.push(mb_per_s(bytes, seconds));
            }
            report.add(
                &section,
                format!("download {label} via latest/{{arch}}: MB/s"),
                format!("{:.0}", median(runs)),
            );
            let url = format!("{}/v1/packages/{package}/1.0.0/x86_64-linux", server.base);
            let range = format!("bytes={}-{}", length / 4, length * 3 / 4);
            let mut runs = vec![];
            for _ in 0..THROUGHPUT_RUNS {
                let (bytes, seconds) = bench.download(&url, Some(&range)).await;
                runs.push(mb_per_s(bytes, seconds));
            }
            report.add(
                &section,
                format!("download {label} middle-half Range: MB/s"),
                format!("{:.0}", median(runs)),
            );
        }
    }
}

/// Streams a generated archive (never on disk) as an upload body.
fn generated_archive(package: &str, version: &str, payload: u64, seed: u64) -> reqwest::Body {
    let (sender, mut receiver) =
        tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(4);
    let package = package.to_owned();
    let version = version.to_owned();
    std::thread::spawn(move || {
        let writer = std::io::BufWriter::with_capacity(256 * 1024, ChannelWriter(sender));
        let _ = data::write_archive(writer, &package, &version, payload, seed);
    });
    reqwest::Body::wrap_stream(futures::stream::poll_fn(move |context| {
        receiver.poll_recv(context)
    }))
}

struct ChannelWriter(tokio::sync::mpsc::Sender<Result<bytes::Bytes, std::io::Error>>);

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buffer: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Ok(bytes::Bytes::copy_from_slice(buffer)))
            .map_err(std::io::Error::other)?;
        Ok(buffer.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn memory(bench: &Bench, backend: Backend, report: &mut Report, sizes: &[u64]) {
    let section = format!("{backend:?}").to_lowercase();
    for size in sizes {
        let label = format!("memory-{section}-{}", size / MIB);
        let env = bench.server_env(backend, &label).await;
        let server = bench.start(&env, &label).await;
        let key = bench.register(&server, "bench").await;
        let download_path = "/v1/packages/@bench/shared/1.0.0/x86_64-linux";
        let response = bench
            .client
            .put(format!("{}{download_path}", server.base))
            .bearer_auth(&key)
            .body(generated_archive("@bench/shared", "1.0.0", *size, 1))
            .send()
            .await
            .expect("upload");
        assert_eq!(response.status().as_u16(), 201);
        let baseline = server.process.peak_rss();
        let mut tasks = Vec::new();
        for client in 0..16u64 {
            let http = bench.client.clone();
            let base = server.base.clone();
            let key = key.clone();
            let size = *size;
            tasks.push(tokio::spawn(async move {
                let package = format!("@bench/up-{client}");
                let response = http
                    .put(format!("{base}/v1/packages/{package}/1.0.0/x86_64-linux"))
                    .bearer_auth(key)
                    .body(generated_archive(&package, "1.0.0", size, 100 + client))
                    .send()
                    .await
                    .expect("upload");
                assert_eq!(response.status().as_u16(), 201);
            }));
            let http = bench.client.clone();
            let url = format!("{}{download_path}", server.base);
            tasks.push(tokio::spawn(async move {
                let response = http.get(url).send().await.expect("download");
                let mut stream = response.bytes_stream();
                while let Some(piece) = stream.next().await {
                    piece.expect("body");
                }
            }));
        }
        let started = Instant::now();
        for task in tasks {
            task.await.expect("client");
        }
        let seconds = started.elapsed().as_secs_f64();
        let peak = server.process.peak_rss();
        report.add(
            &section,
            format!("peak RSS, 16 uploads + 16 downloads of {} MiB", size / MIB),
            format!(
                "{:.1} MiB (idle {:.1} MiB; {:.0} MB/s aggregate)",
                peak as f64 / MIB as f64,
                baseline as f64 / MIB as f64,
                mb_per_s(32 * size, seconds)
            ),
        );
    }
}

async fn dedup(bench: &Bench, backend: Backend, report: &mut Report, files: usize) {
    let section = format!("{backend:?}").to_lowercase();
    let label = format!("dedup-{section}");
    let env = bench.server_env(backend, &label).await;
    let server = bench.start(&env, &label).await;
    let key = bench.register(&server, "bench").await;
    let base = data::Tree::new(files, 5);
    for (form, compress) in [("tar", false), ("tar.zst", true)] {
        let package = if compress {
            "@bench/dedup-zst"
        } else {
            "@bench/dedup-tar"
        };
        let encode = |tar: Vec<u8>| {
            if compress {
                zstd::encode_all(&tar[..], 3).expect("zstd")
            } else {
                tar
            }
        };
        let first = encode(base.tar(package, "1.0.0"));
        let path = format!("/v1/packages/{package}/1.0.0/x86_64-linux");
        bench.upload_bytes(&server, &key, &path, first).await;
        let previous: HashSet<String> = bench
            .chunk_manifest(&server, &path)
            .await
            .into_iter()
            .map(|(hash, _)| hash)
            .collect();
        for (index, (name, tree)) in data::variants(&base).into_iter().enumerate() {
            let version = format!("1.0.{}", index + 1);
            let archive = encode(tree.tar(package, &version));
            let size = archive.len() as f64;
            let before = bench.metric(&server, "niso_chunk_stored_bytes_total").await;
            let path = format!("/v1/packages/{package}/{version}/x86_64-linux");
            bench.upload_bytes(&server, &key, &path, archive).await;
            let stored = bench.metric(&server, "niso_chunk_stored_bytes_total").await - before;
            let transfer: u64 = bench
                .chunk_manifest(&server, &path)
                .await
                .into_iter()
                .filter(|(hash, _)| !previous.contains(hash))
                .map(|(_, size)| size)
                .sum();
            report.add(
                &section,
                format!("dedup {form} {} MiB, {name}: stored / pulled", files),
                format!(
                    "{:.2}% / {:.2}%",
                    100.0 * stored / size,
                    100.0 * transfer as f64 / size
                ),
            );
        }
    }
}

/// The release server binary: `NISO_BENCH_SERVER_BIN` if set, else `cargo build --release -p
/// niso-server` into its own target directory (`target/bench-server`). Built in the shared one,
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
        "building the release niso-server into {} …",
        target.display()
    );
    let status =
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "--release", "-p", "niso-server", "--target-dir"])
            .arg(&target)
            .current_dir(workspace)
            .status()
            .expect("cargo build");
    assert!(status.success(), "release build failed");
    target.join("release").join("niso-server")
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
    let bench = Bench {
        binary,
        work: work.path().to_path_buf(),
        quick,
        client: reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()
            .expect("client"),
    };
    let mut report = Report {
        figures: Vec::new(),
    };
    let started = Instant::now();
    eprintln!("machine: {}", machine());
    let throughput_sizes: Vec<u64> = if quick {
        vec![16 * MIB, 64 * MIB]
    } else {
        vec![16 * MIB, 256 * MIB, 1024 * MIB]
    };
    let memory_sizes: Vec<u64> = if quick {
        vec![16 * MIB, 32 * MIB]
    } else {
        vec![64 * MIB, 256 * MIB]
    };
    let dedup_files = if quick { 32 } else { 256 };
    // `NISO_BENCH_ONLY=memory,dedup` runs a subset while profiling one figure.
    let only = std::env::var("NISO_BENCH_ONLY").unwrap_or_default();
    let selected = |section: &str| only.is_empty() || only.split(',').any(|s| s.trim() == section);
    for backend in &backends {
        if selected("throughput") {
            throughput(&bench, *backend, &mut report, &throughput_sizes).await;
        }
        if selected("memory") {
            memory(&bench, *backend, &mut report, &memory_sizes).await;
        }
        if selected("dedup") {
            dedup(&bench, *backend, &mut report, dedup_files).await;
        }
        if selected("metadata") {
            metadata::metadata(&bench, *backend, &mut report).await;
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
