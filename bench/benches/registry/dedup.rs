//! Deduplication: what a next version of a many-file tree stores and what a dedup-aware client
//! pulls, as a share of the archive, for plain tar and tar.zst.

use std::collections::HashSet;

use crate::data;
use crate::{Backend, Bench, Report};

pub async fn dedup(bench: &Bench, backend: Backend, report: &mut Report, files: usize) {
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
