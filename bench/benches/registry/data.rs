//! Benchmark inputs: incompressible `.niso` archives written straight to disk, and the
//! "next version" variants of the dedup figures, built from real tar archives of many files.

use std::io::Write;
use std::path::Path;

use rand::{Rng, SeedableRng};

pub const MIB: u64 = 1024 * 1024;

fn manifest(name: &str, version: &str) -> String {
    format!(
        "[package]\nname = \"{name}\"\nversion = \"{version}\"\ndescription = \"benchmark archive\"\n"
    )
}

fn header(path: &str, size: u64, mtime: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_path(path).expect("path");
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(mtime);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    header
}

/// A tar with the manifest and one `payload_size` file of random bytes, streamed to `path`.
pub fn write_incompressible_archive(
    path: &Path,
    name: &str,
    version: &str,
    payload_size: u64,
    seed: u64,
) {
    let file = std::io::BufWriter::with_capacity(
        1 << 20,
        std::fs::File::create(path).expect("archive file"),
    );
    write_archive(file, name, version, payload_size, seed).expect("write archive");
}

/// The same archive to any writer (an upload body generated on the fly).
pub fn write_archive(
    writer: impl Write,
    name: &str,
    version: &str,
    payload_size: u64,
    seed: u64,
) -> std::io::Result<()> {
    let mut builder = tar::Builder::new(writer);
    let text = manifest(name, version);
    builder.append(
        &header("manifest.toml", text.len() as u64, 1_700_000_000),
        text.as_bytes(),
    )?;
    let reader = RandomReader {
        rng: rand::rngs::StdRng::seed_from_u64(seed),
        remaining: payload_size,
    };
    builder.append(&header("payload.bin", payload_size, 1_700_000_000), reader)?;
    builder.into_inner()?.flush()
}

struct RandomReader {
    rng: rand::rngs::StdRng,
    remaining: u64,
}

impl std::io::Read for RandomReader {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let length = (buffer.len() as u64).min(self.remaining) as usize;
        self.rng.fill(&mut buffer[..length]);
        self.remaining -= length as u64;
        Ok(length)
    }
}

/// A package's file tree for the dedup figures: `count` files of 1 MiB of random bytes.
#[derive(Clone)]
pub struct Tree {
    pub files: Vec<(String, Vec<u8>)>,
    pub mtime: u64,
}

pub fn random_vec(length: usize, seed: u64) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut data = vec![0u8; length];
    rng.fill(&mut data[..]);
    data
}

impl Tree {
    pub fn new(count: usize, seed: u64) -> Tree {
        Tree {
            files: (0..count)
                .map(|i| {
                    (
                        format!("lib/file-{i:04}.bin"),
                        random_vec(MIB as usize, seed ^ (i as u64) << 8),
                    )
                })
                .collect(),
            mtime: 1_700_000_000,
        }
    }

    pub fn tar(&self, name: &str, version: &str) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let text = manifest(name, version);
        builder
            .append(
                &header("manifest.toml", text.len() as u64, self.mtime),
                text.as_bytes(),
            )
            .expect("manifest");
        for (path, data) in &self.files {
            builder
                .append(&header(path, data.len() as u64, self.mtime), &data[..])
                .expect("file");
        }
        builder.into_inner().expect("tar")
    }
}

/// The four "next version" edits of the dedup figures.
pub fn variants(base: &Tree) -> Vec<(&'static str, Tree)> {
    let middle = base.files.len() / 2;
    let mut one_byte = base.clone();
    one_byte.files[middle].1[MIB as usize / 2] ^= 0xff;
    let mut insertion = base.clone();
    let position = MIB as usize / 2;
    let inserted = random_vec(4096, 99);
    insertion.files[middle]
        .1
        .splice(position..position, inserted);
    let mut append = base.clone();
    let extra = base.files.len().div_ceil(10);
    for i in 0..extra {
        append.files.push((
            format!("lib/extra-{i:04}.bin"),
            random_vec(MIB as usize, 7_000 + i as u64),
        ));
    }
    let mut rebuilt = base.clone();
    rebuilt.mtime += 3600; // a fresh build stamps every header
    rebuilt.files[middle].1 = random_vec(MIB as usize, 4242);
    vec![
        ("(a) 1-byte edit", one_byte),
        ("(b) 4 KiB insertion in the middle", insertion),
        ("(c) 10% append", append),
        ("(d) rebuilt tar, one file changed", rebuilt),
    ]
}

pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for group in data.chunks(3) {
        let bytes = [
            group[0],
            *group.get(1).unwrap_or(&0),
            *group.get(2).unwrap_or(&0),
        ];
        let value = (bytes[0] as u32) << 16 | (bytes[1] as u32) << 8 | bytes[2] as u32;
        for index in 0..4 {
            if index <= group.len() {
                out.push(ALPHABET[(value >> (18 - 6 * index) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
