//! Builders of `.niso` archives (tar, optionally gzip or zstd) and deterministic test data.

use rand::{Rng, SeedableRng};

pub fn manifest(name: &str, version: &str) -> String {
    format!(
        "[package]\nname = \"{name}\"\nversion = \"{version}\"\ndescription = \"test package {name}\"\nlicense = \"MIT\"\n"
    )
}

/// A plain tar with `manifest.toml` first, then the given files.
pub fn tar_with_manifest(manifest: &str, files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    append(&mut builder, "manifest.toml", manifest.as_bytes());
    for (path, data) in files {
        append(&mut builder, path, data);
    }
    builder.into_inner().expect("tar")
}

fn append(builder: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(1_700_000_000);
    header.set_entry_type(tar::EntryType::Regular);
    builder
        .append_data(&mut header, path, data)
        .expect("append tar entry");
}

pub fn niso(name: &str, version: &str, files: &[(&str, &[u8])]) -> Vec<u8> {
    tar_with_manifest(&manifest(name, version), files)
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).expect("gzip");
    encoder.finish().expect("gzip")
}

pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).expect("zstd")
}

pub fn random_bytes(length: usize, seed: u64) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut data = vec![0u8; length];
    rng.fill(&mut data[..]);
    data
}
