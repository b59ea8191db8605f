//! Throughput: upload of one incompressible archive against `sha256sum` of the same file,
//! download against nginx serving the same file, and on the production backend both against a
//! direct multi-object PUT / GET of the same chunk bytes into the same Garage, so niso's
//! overhead over its object store is a ratio measured in the same run.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use aws_sdk_s3::primitives::ByteStream;
use futures::StreamExt;

use crate::data::{self, MIB};
use crate::garage::Garage;
use crate::processes::{cpu_seconds, start_nginx};
use crate::{Backend, Bench, Report, env_value, mb_per_s};

/// Requests the direct baselines keep in flight (pipelined, like niso's chunk PUTs).
pub const DIRECT_IN_FLIGHT: usize = 8;

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

/// CPU seconds used so far by niso, Garage (production only) and this bench process, the
/// client: differences between two samples say where a step's time went on these shared cores.
#[derive(Debug, Default, Clone, Copy)]
struct CpuUse {
    niso: f64,
    garage: f64,
    client: f64,
}

impl CpuUse {
    fn sample(niso: Option<u32>, garage: Option<u32>) -> CpuUse {
        CpuUse {
            niso: niso.map(cpu_seconds).unwrap_or(0.0),
            garage: garage.map(cpu_seconds).unwrap_or(0.0),
            client: cpu_seconds(std::process::id()),
        }
    }

    /// Adds what was used since `before` to `self`.
    fn add_since(&mut self, before: CpuUse, now: CpuUse) {
        self.niso += now.niso - before.niso;
        self.garage += now.garage - before.garage;
        self.client += now.client - before.client;
    }

    /// "niso / Garage / client" CPU seconds per GiB moved.
    fn per_gib(&self, bytes: u64, with_niso: bool, with_garage: bool) -> String {
        let gib = bytes as f64 / (1024.0 * MIB as f64);
        let mut parts = vec![];
        if with_niso {
            parts.push(format!("niso {:.2}", self.niso / gib));
        }
        if with_garage {
            parts.push(format!("Garage {:.2}", self.garage / gib));
        }
        parts.push(format!("client {:.2}", self.client / gib));
        parts.join(", ")
    }
}

/// A "CPU s per GiB" figure: niso's step (niso, Garage on production, the client), then the
/// direct baseline's (Garage, the client), `moved` bytes in all.
fn cpu_figure(step: &CpuUse, direct: Option<(&str, &CpuUse)>, moved: u64) -> String {
    let mut figure = step.per_gib(moved, true, direct.is_some());
    if let Some((request, baseline)) = direct {
        figure.push_str(&format!(
            "; direct {request}: {}",
            baseline.per_gib(moved, false, true)
        ));
    }
    figure
}

/// Runs per throughput figure; the median is reported, so one hiccup does not move a figure.
const THROUGHPUT_RUNS: usize = 3;

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The direct baselines of one archive: MB/s of a PUT of each chunk's byte range of `file` as
/// its own object, then of a GET of all of them back (bytes counted and discarded), both with
/// [`DIRECT_IN_FLIGHT`] requests in flight. The objects are deleted afterwards (untimed).
async fn direct_put_get(
    garage: &Garage,
    bucket: &str,
    file: &Path,
    chunks: &[(String, u64)],
    run: usize,
    (put_cpu, get_cpu): (&mut CpuUse, &mut CpuUse),
) -> (f64, f64) {
    let client = garage.client();
    let sample = || CpuUse::sample(None, Some(garage.pid()));
    let file = Arc::new(std::fs::File::open(file).expect("archive"));
    let mut offset = 0;
    let mut pieces = Vec::with_capacity(chunks.len());
    for (position, (hash, size)) in chunks.iter().enumerate() {
        pieces.push((format!("direct/{run}/{position:06}-{hash}"), offset, *size));
        offset += size;
    }
    let length = offset;
    garage.wait_until_idle().await;
    let cpu_before = sample();
    let started = Instant::now();
    futures::stream::iter(pieces.iter().cloned())
        .map(|(key, offset, size)| {
            let file = file.clone();
            async move {
                // The archive was just written and hashed: these reads come from the page
                // cache, as niso's upload body did.
                let bytes = tokio::task::spawn_blocking(move || {
                    let mut buffer = vec![0; size as usize];
                    file.read_exact_at(&mut buffer, offset).expect("read chunk");
                    buffer
                })
                .await
                .expect("read task");
                client
                    .put_object()
                    .bucket(bucket)
                    .key(&key)
                    .content_length(size as i64)
                    .body(ByteStream::from(bytes))
                    .send()
                    .await
                    .unwrap_or_else(|error| panic!("direct PUT {key}: {error}"));
            }
        })
        .buffer_unordered(DIRECT_IN_FLIGHT)
        .collect::<Vec<()>>()
        .await;
    let put_seconds = started.elapsed().as_secs_f64();
    put_cpu.add_since(cpu_before, sample());
    garage.wait_until_idle().await;
    let cpu_before = sample();
    let started = Instant::now();
    let fetched: u64 = futures::stream::iter(pieces.iter())
        .map(|(key, _, _)| async move {
            let mut body = client
                .get_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .unwrap_or_else(|error| panic!("direct GET {key}: {error}"))
                .body;
            let mut bytes = 0u64;
            while let Some(piece) = body.next().await {
                bytes += piece.expect("direct GET body").len() as u64;
            }
            bytes
        })
        .buffer_unordered(DIRECT_IN_FLIGHT)
        .fold(0, |total, bytes| async move { total + bytes })
        .await;
    let get_seconds = started.elapsed().as_secs_f64();
    get_cpu.add_since(cpu_before, sample());
    assert_eq!(fetched, length, "direct GET returned every byte");
    futures::stream::iter(pieces.iter())
        .map(|(key, _, _)| async move {
            client
                .delete_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .unwrap_or_else(|error| panic!("delete {key}: {error}"));
        })
        .buffer_unordered(DIRECT_IN_FLIGHT)
        .collect::<Vec<()>>()
        .await;
    (mb_per_s(length, put_seconds), mb_per_s(length, get_seconds))
}

pub async fn throughput(bench: &Bench, backend: Backend, report: &mut Report, sizes: &[u64]) {
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
        let (mut direct_puts, mut direct_gets) = (vec![], vec![]);
        let mut length = 0;
        let garage_pid = (backend == Backend::Production).then(|| bench.garage().pid());
        let niso_pid = Some(server.process.pid());
        let (mut upload_cpu, mut download_cpu) = (CpuUse::default(), CpuUse::default());
        let (mut put_cpu, mut get_cpu) = (CpuUse::default(), CpuUse::default());
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
            if backend == Backend::Production {
                bench.garage().wait_until_idle().await;
            }
            let cpu_before = CpuUse::sample(niso_pid, garage_pid);
            let seconds = bench.upload_file(&server, &key, &path, &file).await;
            upload_cpu.add_since(cpu_before, CpuUse::sample(niso_pid, garage_pid));
            uploads.push(mb_per_s(length, seconds));
            if backend == Backend::Production {
                bench.garage().wait_until_idle().await;
            }
            let cpu_before = CpuUse::sample(niso_pid, garage_pid);
            let (bytes, seconds) = bench
                .download(&format!("{}{path}", server.base), None)
                .await;
            download_cpu.add_since(cpu_before, CpuUse::sample(niso_pid, garage_pid));
            assert_eq!(bytes, length, "downloaded size");
            downloads.push(mb_per_s(bytes, seconds));
            let (bytes, seconds) = bench
                .download(&format!("{nginx_base}/{file_name}"), None)
                .await;
            nginx.push(mb_per_s(bytes, seconds));
            if backend == Backend::Production {
                let chunks = bench.chunk_manifest(&server, &path).await;
                let bucket = env_value(&env, "NISO_S3_BUCKET");
                let (put, get) = direct_put_get(
                    bench.garage(),
                    &bucket,
                    &file,
                    &chunks,
                    run,
                    (&mut put_cpu, &mut get_cpu),
                )
                .await;
                direct_puts.push(put);
                direct_gets.push(get);
            }
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
        if backend == Backend::Production {
            let put = median(direct_puts);
            report.add(
                &section,
                format!("upload {label}: MB/s (× direct PUT, {DIRECT_IN_FLIGHT} in flight)"),
                format!(
                    "{upload:.0} ({:.2}×, direct PUT {put:.0} MB/s)",
                    upload / put
                ),
            );
        }
        let moved = length * THROUGHPUT_RUNS as u64;
        let production = backend == Backend::Production;
        report.add(
            &section,
            format!("upload {label}: CPU s per GiB"),
            cpu_figure(&upload_cpu, production.then_some(("PUT", &put_cpu)), moved),
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
        if backend == Backend::Production {
            let get = median(direct_gets);
            report.add(
                &section,
                format!("download {label}: MB/s (× direct GET, {DIRECT_IN_FLIGHT} in flight)"),
                format!(
                    "{download:.0} ({:.2}×, direct GET {get:.0} MB/s)",
                    download / get
                ),
            );
        }
        report.add(
            &section,
            format!("download {label}: CPU s per GiB"),
            cpu_figure(
                &download_cpu,
                production.then_some(("GET", &get_cpu)),
                moved,
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
