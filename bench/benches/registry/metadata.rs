//! Metadata under load: 10,000 packages × 5 versions seeded into the database, then `wrk` on
//! loopback against version listings, search and `latest/{arch}` resolution, with one replica
//! and (on PostgreSQL + S3) two.

use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};

use entity::{namespace, package, package_version, version_chunk};

use crate::processes::wrk;
use crate::{Backend, Bench, Report};

fn database_url(env: &[(String, String)]) -> String {
    if let Some((_, url)) = env.iter().find(|(name, _)| name == "NISO_DATABASE_URL") {
        return url.clone();
    }
    let data_dir = &env
        .iter()
        .find(|(name, _)| name == "NISO_DATA_DIR")
        .expect("data dir")
        .1;
    format!("sqlite://{data_dir}/niso.db?mode=rwc")
}

/// Inserts `packages` × 5 versions sharing the seed archive's chunk, so every one downloads.
async fn seed(url: &str, packages: usize) {
    let db = niso_registry::db::connect(url, 4).await.expect("connect");
    let namespace = namespace::Entity::find()
        .filter(namespace::Column::Name.eq("@bench"))
        .one(&db)
        .await
        .unwrap()
        .expect("@bench");
    let seed_package = package::Entity::find()
        .filter(package::Column::Name.eq("@bench/seed"))
        .one(&db)
        .await
        .unwrap()
        .expect("seed package");
    let seed_version = package_version::Entity::find()
        .filter(package_version::Column::PackageId.eq(seed_package.id))
        .one(&db)
        .await
        .unwrap()
        .expect("seed version");
    let seed_chunks = version_chunk::Entity::find()
        .filter(version_chunk::Column::VersionId.eq(seed_version.id))
        .all(&db)
        .await
        .unwrap();
    let now = chrono::Utc::now().naive_utc();
    for batch in (0..packages).collect::<Vec<_>>().chunks(500) {
        let rows: Vec<package::ActiveModel> = batch
            .iter()
            .map(|i| package::ActiveModel {
                namespace_id: Set(namespace.id),
                name: Set(format!("@bench/pkg-{i:05}")),
                latest_version: Set(Some("1.0.4".into())),
                description: Set(Some(format!("benchmark package {i}"))),
                updated_at: Set(Some(now)),
                download_count: Set(0),
                created_at: Set(now),
                ..Default::default()
            })
            .collect();
        package::Entity::insert_many(rows)
            .exec_without_returning(&db)
            .await
            .expect("insert packages");
        let names: Vec<String> = batch.iter().map(|i| format!("@bench/pkg-{i:05}")).collect();
        let ids: Vec<i64> = package::Entity::find()
            .filter(package::Column::Name.is_in(names))
            .all(&db)
            .await
            .unwrap()
            .into_iter()
            .map(|p| p.id)
            .collect();
        let versions: Vec<package_version::ActiveModel> = ids
            .iter()
            .flat_map(|id| {
                let seed_version = seed_version.clone();
                (0..5).map(move |minor| package_version::ActiveModel {
                    package_id: Set(*id),
                    version: Set(format!("1.0.{minor}")),
                    arch: Set("x86_64-linux".into()),
                    size: Set(seed_version.size),
                    checksum: Set(seed_version.checksum.clone()),
                    manifest: Set(seed_version.manifest.clone()),
                    description: Set(None),
                    license: Set(None),
                    uploaded_at: Set(now),
                    download_count: Set(0),
                    ..Default::default()
                })
            })
            .collect();
        package_version::Entity::insert_many(versions)
            .exec_without_returning(&db)
            .await
            .expect("insert versions");
        let version_ids: Vec<i64> = package_version::Entity::find()
            .filter(package_version::Column::PackageId.is_in(ids))
            .all(&db)
            .await
            .unwrap()
            .into_iter()
            .map(|v| v.id)
            .collect();
        let references: Vec<version_chunk::ActiveModel> = version_ids
            .iter()
            .flat_map(|version_id| {
                seed_chunks
                    .iter()
                    .map(move |chunk| version_chunk::ActiveModel {
                        version_id: Set(*version_id),
                        position: Set(chunk.position),
                        chunk_id: Set(chunk.chunk_id),
                        byte_offset: Set(chunk.byte_offset),
                        size: Set(chunk.size),
                    })
            })
            .collect();
        version_chunk::Entity::insert_many(references)
            .exec_without_returning(&db)
            .await
            .expect("insert chunk lists");
    }
}

pub async fn metadata(bench: &Bench, backend: Backend, report: &mut Report) {
    let section = format!("{backend:?}").to_lowercase();
    let label = format!("metadata-{section}");
    let env = bench.server_env(backend, &label).await;
    let server = bench.start(&env, &label).await;
    let key = bench.register(&server, "bench").await;
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
            &server,
            &key,
            "/v1/packages/@bench/seed/1.0.0/x86_64-linux",
            builder.into_inner().unwrap(),
        )
        .await;
    let packages = if bench.quick { 1_000 } else { 10_000 };
    let started = std::time::Instant::now();
    seed(&database_url(&env), packages).await;
    eprintln!(
        "  seeded {packages} packages × 5 versions in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let seconds = if bench.quick { 3 } else { 10 };
    let middle = packages / 2;
    let targets = [
        (
            "GET …/versions",
            format!("/v1/packages/@bench/pkg-{middle:05}/versions"),
        ),
        (
            "GET /v1/packages?q=",
            format!("/v1/packages?q=pkg-{:04}", middle / 10),
        ),
        (
            "GET …/latest/{arch}",
            format!("/v1/packages/@bench/pkg-{middle:05}/latest/x86_64-linux"),
        ),
    ];
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
