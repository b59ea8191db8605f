//! Builders of `.niso` archives (tar, optionally gzip or zstd), deterministic test data and the
//! digest the registry names content by. Plain bytes in, plain bytes out: no niso type appears
//! here, so niso-core's own unit tests can build with it without linking a second copy of
//! niso-core (which niso-test-support, depending on the server, would bring).
//!
//! Archives that the tar crate refuses to write (unsafe paths, conflicting PAX records,
//! malformed headers) are crafted by the tests that need them, from [`pax_record`] and raw
//! header bytes.

use rand::{Rng, SeedableRng};

pub fn manifest(name: &str, version: &str) -> String {
    format!(
        "[package]\nname = \"{name}\"\nversion = \"{version}\"\ndescription = \"test package {name}\"\nlicense = \"MIT\"\n"
    )
}

/// A plain tar of exactly these regular files, in this order (no manifest added).
pub fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, data) in files {
        append_file(&mut builder, path, data);
    }
    builder.into_inner().expect("tar")
}

/// A plain tar with `manifest.toml` first, then the given files.
pub fn tar_with_manifest(manifest: &str, files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut all = vec![("manifest.toml", manifest.as_bytes())];
    all.extend_from_slice(files);
    tar_of(&all)
}

/// Appends a regular file (mode 0644, a fixed mtime, so equal inputs give equal bytes).
pub fn append_file(builder: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(1_700_000_000);
    header.set_entry_type(tar::EntryType::Regular);
    builder
        .append_data(&mut header, path, data)
        .expect("append tar entry");
}

/// A package archive of `name@version`: its manifest, then the given files.
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

/// `length` incompressible bytes, the same for the same seed.
pub fn random_bytes(length: usize, seed: u64) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut data = vec![0u8; length];
    rng.fill(&mut data[..]);
    data
}

/// A PAX extended-header record, `"<length> <key>=<value>\n"`, the length counting itself.
pub fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body = key.len() + value.len() + 3;
    let mut length = body + 1;
    while body + length.to_string().len() != length {
        length += 1;
    }
    let mut record = format!("{length} {key}=").into_bytes();
    record.extend_from_slice(value);
    record.push(b'\n');
    record
}

/// The lowercase hex SHA-256 of `data`, as the registry reports checksums and names chunks.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}
