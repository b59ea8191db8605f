//! Growth: whether the cost of a request or of a GC pass grows with the registry.
//!
//! * Metadata and search under wrk (req/s, p50, p99) at 10,000 and 100,000 packages × 5
//!   versions: one server, the registry grown in place between the two sizes.
//! * One `niso-server gc --once` pass, as its own process with the server's environment, over
//!   stores of 10,000 / 100,000 / 1,000,000 chunk rows of which 1% is garbage: wall time, the
//!   process's peak RSS, and the number deleted (asserted to be the garbage count).
//!
//! `NISO_BENCH_QUICK=1` uses 1,000 / 5,000 packages and 10,000 / 50,000 chunk rows.

use std::path::Path;
use std::time::Instant;

use futures::StreamExt;

use crate::data::MIB;
use crate::processes::{run_niso, wrk};
use crate::{Backend, Bench, Report, env_value, metadata, seed};

/// Object PUTs in flight while making the garbage chunks' objects in Garage.
const SEED_PUTS_IN_FLIGHT: usize = 32;

pub async fn growth(bench: &Bench, backend: Backend, report: &mut Report) {
    let package_counts: &[usize] = if bench.quick {
        &[1_000, 5_000]
    } else {
        &[10_000, 100_000]
    };
    metadata_growth(bench, backend, report, package_counts).await;
    let chunk_rows: &[usize] = if bench.quick {
        &[10_000, 50_000]
    } else {
        &[10_000, 100_000, 1_000_000]
    };
    for rows in chunk_rows {
        gc_pass(bench, backend, report, *rows).await;
    }
}

async fn metadata_growth(bench: &Bench, backend: Backend, report: &mut Report, sizes: &[usize]) {
    let section = format!("{backend:?}").to_lowercase();
    let label = format!("growth-{section}");
    let env = bench.server_env(backend, &label).await;
    let server = bench.start(&env, &label).await;
    let key = bench.register(&server, "bench").await;
    metadata::publish_seed(bench, &server, &key).await;
    let db = seed::connect(&env).await;
    let seconds = if bench.quick { 3 } else { 10 };
    let mut seeded = 0;
    for &packages in sizes {
        let started = Instant::now();
        seed::packages(&db, seeded, packages).await;
        report.add(
            &section,
            format!("growth: seeding packages {seeded}→{packages} (× 5 versions), raw SQL"),
            format!("{:.1} s", started.elapsed().as_secs_f64()),
        );
        seeded = packages;
        for (name, path) in metadata::targets(packages) {
            let (rps, p50, p99) = wrk(&format!("{}{path}", server.base), seconds, 32, "GET");
            report.add(
                &section,
                format!("growth: {name}, {packages}×5: req/s, p50, p99"),
                format!("{rps:.0} req/s, {p50:.2} ms, {p99:.2} ms"),
            );
        }
    }
}

/// Makes the objects of the garbage chunks in the store the server uses. Objects exist only
/// for the garbage rows: GC reads no object of a chunk it keeps, so the 99% referenced rows
/// need none, and a million real objects would measure the seeding, not the pass.
async fn make_garbage_objects(bench: &Bench, env: &[(String, String)], keys: &[String]) {
    let body = vec![0x5a_u8; seed::CHUNK_SIZE as usize];
    if env.iter().any(|(name, _)| name == "NISO_S3_BUCKET") {
        let bucket = env_value(env, "NISO_S3_BUCKET");
        let client = bench.garage().client();
        futures::stream::iter(keys)
            .map(|key| {
                let (bucket, body) = (bucket.clone(), body.clone());
                async move {
                    client
                        .put_object()
                        .bucket(bucket)
                        .key(key)
                        .body(body.into())
                        .send()
                        .await
                        .unwrap_or_else(|error| panic!("PUT {key}: {error}"));
                }
            })
            .buffer_unordered(SEED_PUTS_IN_FLIGHT)
            .collect::<Vec<()>>()
            .await;
    } else {
        // The embedded store: key `chunks/ab/x` is the file `$NISO_DATA_DIR/chunks/chunks/ab/x`.
        let root = Path::new(&env_value(env, "NISO_DATA_DIR")).join("chunks");
        let keys = keys.to_vec();
        tokio::task::spawn_blocking(move || {
            for key in keys {
                let path = root.join(&key);
                std::fs::create_dir_all(path.parent().expect("shard")).expect("shard dir");
                std::fs::write(&path, &body).expect("garbage object");
            }
        })
        .await
        .expect("write objects");
    }
}

async fn gc_pass(bench: &Bench, backend: Backend, report: &mut Report, rows: usize) {
    let section = format!("{backend:?}").to_lowercase();
    let label = format!("gc-{section}-{rows}");
    let env = bench.server_env(backend, &label).await;
    {
        // The server makes the schema and, through the API, the @bench namespace the seed
        // needs; it is stopped before the pass so GC has the machine to itself.
        let server = bench.start(&env, &label).await;
        bench.register(&server, "bench").await;
    }
    let started = Instant::now();
    let db = seed::connect(&env).await;
    let garbage = seed::chunk_store(&db, rows).await;
    db.close().await.expect("close");
    make_garbage_objects(bench, &env, &garbage).await;
    let seeding = started.elapsed().as_secs_f64();
    let binary = bench.binary.clone();
    let log = bench.work.join(format!("{label}-gc.log"));
    let gc_env = env.clone();
    // A small grace: every seeded row is a day old, so all the garbage is past it.
    let pass = tokio::task::spawn_blocking(move || {
        run_niso(&binary, &gc_env, &["gc", "--once", "--grace", "1h"], &log)
    })
    .await
    .expect("gc task");
    let outcome: serde_json::Value = serde_json::from_str(pass.stdout.trim())
        .unwrap_or_else(|error| panic!("gc --once printed no report ({error}): {}", pass.stdout));
    let deleted = outcome["chunks_deleted"].as_u64().expect("chunks_deleted");
    assert_eq!(
        deleted,
        garbage.len() as u64,
        "GC deleted exactly the garbage chunks: {outcome}"
    );
    report.add(
        &section,
        format!("growth: GC pass, {rows} chunk rows (1% garbage): time, peak RSS, deleted"),
        format!(
            "{:.2} s, {:.1} MiB, {deleted} deleted (seeded in {seeding:.1} s)",
            pass.seconds,
            pass.peak_rss as f64 / MIB as f64
        ),
    );
    // A million-row SQLite file and its objects are not needed past the figure.
    let _ = std::fs::remove_dir_all(env_value(&env, "NISO_DATA_DIR"));
}
