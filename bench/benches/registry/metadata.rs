//! Metadata under load: 10,000 packages × 5 versions seeded into the database, then `wrk` on
//! loopback against version listings, `latest/{arch}` resolution, the package list and search,
//! with one replica and (on PostgreSQL + Garage) two.

use crate::processes::{NisoServer, wrk};
use crate::{Backend, Bench, Report, seed};

/// Publishes `@bench/seed` 1.0.0, a tiny archive whose chunk list every seeded version shares.
pub async fn publish_seed(bench: &Bench, server: &NisoServer, key: &str) {
    let archive = b"seed archive".to_vec();
    let mut builder = tar::Builder::new(Vec::new());
    let manifest = "[package]\nname = \"@bench/seed\"\nversion = \"1.0.0\"\n";
    let mut header = tar::Header::new_gnu();
    header.set_size(manifest.len() as u64);
    header.set_mode(0o644);
    builder
        .append_data(&mut header, "manifest.toml", manifest.as_bytes())
        .unwrap();
    let mut header = tar::Header::new_gnu();
    header.set_size(archive.len() as u64);
    header.set_mode(0o644);
    builder
        .append_data(&mut header, "data", &archive[..])
        .unwrap();
    bench
        .upload_bytes(
            server,
            key,
            "/v1/packages/@bench/seed/1.0.0/x86_64-linux",
            builder.into_inner().unwrap(),
        )
        .await;
}

/// The metadata requests measured at a registry of `packages` packages: a version listing and
/// `latest/{arch}` of the middle package, the first page of the package list, and a search
/// that matches 10 packages at any size.
pub fn targets(packages: usize) -> Vec<(&'static str, String)> {
    let middle = packages / 2;
    vec![
        (
            "GET …/versions",
            format!("/v1/packages/@bench/pkg-{middle:06}/versions"),
        ),
        (
            "GET …/latest/{arch}",
            format!("/v1/packages/@bench/pkg-{middle:06}/latest/x86_64-linux"),
        ),
        (
            "GET /v1/packages?limit=100",
            "/v1/packages?limit=100".to_owned(),
        ),
        (
            "GET /v1/packages?q=",
            format!("/v1/packages?q=pkg-{:05}", middle / 10),
        ),
    ]
}

pub async fn metadata(bench: &Bench, backend: Backend, report: &mut Report) {
    let section = format!("{backend:?}").to_lowercase();
    let label = format!("metadata-{section}");
    let env = bench.server_env(backend, &label).await;
    let server = bench.start(&env, &label).await;
    let key = bench.register(&server, "bench").await;
    publish_seed(bench, &server, &key).await;
    let packages = if bench.quick { 1_000 } else { 10_000 };
    let started = std::time::Instant::now();
    seed::packages(&seed::connect(&env).await, 0, packages).await;
    eprintln!(
        "  seeded {packages} packages × 5 versions in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let seconds = if bench.quick { 3 } else { 10 };
    let targets = targets(packages);
    for (name, path) in &targets {
        let (rps, p50, p99) = wrk(&format!("{}{path}", server.base), seconds, 32, "GET");
        report.add(
            &section,
            format!("{name}, {packages}×5, 1 replica: req/s, p50, p99"),
            format!("{rps:.0} req/s, {p50:.2} ms, {p99:.2} ms"),
        );
    }
    if backend == Backend::Production {
        let second = bench.start(&env, &format!("{label}-2")).await;
        for (name, path) in &targets {
            let urls = [
                format!("{}{path}", server.base),
                format!("{}{path}", second.base),
            ];
            let results: Vec<(f64, f64, f64)> = std::thread::scope(|scope| {
                let handles: Vec<_> = urls
                    .iter()
                    .map(|url| scope.spawn(move || wrk(url, seconds, 16, "GET")))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("wrk"))
                    .collect()
            });
            let rps: f64 = results.iter().map(|r| r.0).sum();
            let p50 = results.iter().map(|r| r.1).fold(0.0, f64::max);
            let p99 = results.iter().map(|r| r.2).fold(0.0, f64::max);
            report.add(
                &section,
                format!("{name}, {packages}×5, 2 replicas: req/s, p50, p99"),
                format!("{rps:.0} req/s, {p50:.2} ms, {p99:.2} ms"),
            );
        }
    }
}
