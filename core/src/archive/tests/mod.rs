//! Unit tests of the archive validator: `compat` keeps the intent of the tests written for the
//! tar-crate validator, `strict` covers the reader-dependent forms refused since issue 11.
//! Archives are built with the tar crate, and with raw header bytes where it refuses.

mod compat;
mod strict;

use std::io;

pub(super) use niso_test_archives::{
    append_file as add_file, gzip, pax_record, random_bytes, zstd,
};
use tar::{Builder, EntryType, Header};

use super::*;

pub(super) const MANIFEST: &str = r#"# shipped as is
[package]
name = "@hakob/my-app"
version = "1.1.0"
description = "A test app"
license = "MIT"
arch = "x86_64-linux"
homepage = "https://example.com" # unknown keys are ignored

[dependencies]
"@hakob/lib" = "1"
"#;

pub(super) fn expected_manifest() -> Manifest {
    Manifest {
        name: "@hakob/my-app".into(),
        version: "1.1.0".into(),
        description: Some("A test app".into()),
        license: Some("MIT".into()),
        arch: Some("x86_64-linux".into()),
        raw: MANIFEST.into(),
    }
}

/// Incompressible bytes, the same for the same length.
pub(super) fn random(len: usize) -> Vec<u8> {
    random_bytes(len, len as u64)
}

pub(super) fn add_dir(builder: &mut Builder<Vec<u8>>, path: &str) {
    let mut header = Header::new_gnu();
    header.set_entry_type(EntryType::Directory);
    header.set_size(0);
    header.set_mode(0o755);
    builder.append_data(&mut header, path, io::empty()).unwrap();
}

/// Appends an entry whose name and link target go into the header verbatim, bypassing the tar
/// crate's refusal to write unsafe paths.
pub(super) fn add_raw(
    builder: &mut Builder<Vec<u8>>,
    kind: EntryType,
    name: &[u8],
    link: &[u8],
    data: &[u8],
) {
    let mut header = Header::new_gnu();
    let gnu = header.as_gnu_mut().unwrap();
    gnu.name[..name.len()].copy_from_slice(name);
    gnu.linkname[..link.len()].copy_from_slice(link);
    header.set_entry_type(kind);
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    builder.append(&header, data).unwrap();
}

pub(super) fn add_pax(builder: &mut Builder<Vec<u8>>, records: &[u8]) {
    let mut header = Header::new_ustar();
    header.set_path("PaxHeaders/entry").unwrap();
    header.set_entry_type(EntryType::XHeader);
    header.set_size(records.len() as u64);
    header.set_cksum();
    builder.append(&header, records).unwrap();
}

pub(super) fn add_long_name(builder: &mut Builder<Vec<u8>>, name: &[u8]) {
    let mut data = name.to_vec();
    data.push(0);
    add_raw(
        builder,
        EntryType::GNULongName,
        b"././@LongLink",
        b"",
        &data,
    );
}

pub(super) fn tar_with(build: impl FnOnce(&mut Builder<Vec<u8>>)) -> Vec<u8> {
    let mut builder = Builder::new(Vec::new());
    build(&mut builder);
    builder.into_inner().unwrap()
}

/// A well-formed archive: the manifest, then `build`'s entries.
pub(super) fn package_with(build: impl FnOnce(&mut Builder<Vec<u8>>)) -> Vec<u8> {
    tar_with(|builder| {
        add_file(builder, "manifest.toml", MANIFEST.as_bytes());
        build(builder);
    })
}

pub(super) fn check(bytes: &[u8]) -> Result<Manifest, ArchiveError> {
    validate(bytes, &ArchiveLimits::default())
}

pub(super) fn validate(bytes: &[u8], limits: &ArchiveLimits) -> Result<Manifest, ArchiveError> {
    validate_archive(bytes, limits).map(|archive| archive.manifest)
}

/// Pushes `bytes` in pieces of awkward sizes (including empty ones), then finishes.
pub(super) fn push_in_pieces(
    bytes: &[u8],
    limits: ArchiveLimits,
) -> Result<ValidatedArchive, ArchiveError> {
    let mut validator = ArchiveValidator::new(limits);
    let sizes = [1, 511, 0, 4096, 65_536, 100_003, 7];
    let mut offset = 0;
    for &size in sizes.iter().cycle() {
        if offset == bytes.len() {
            break;
        }
        let end = (offset + size).min(bytes.len());
        validator.push(&bytes[offset..end])?;
        offset = end;
    }
    validator.finish()
}

#[track_caller]
pub(super) fn expect_invalid(result: Result<Manifest, ArchiveError>, needle: &str) {
    match result {
        Err(ArchiveError::Invalid(message)) if message.contains(needle) => {}
        other => panic!("expected Invalid containing {needle:?}, got {other:?}"),
    }
}

#[track_caller]
pub(super) fn expect_too_large(result: Result<Manifest, ArchiveError>, needle: &str) {
    match result {
        Err(ArchiveError::TooLarge(message)) if message.contains(needle) => {}
        other => panic!("expected TooLarge containing {needle:?}, got {other:?}"),
    }
}

/// Several MiB of random data, links, a directory and a GNU long name.
pub(super) fn big_package() -> Vec<u8> {
    package_with(|builder| {
        add_dir(builder, "bin/");
        add_file(builder, "bin/payload", &random(6 * MIB as usize + 123));
        add_raw(builder, EntryType::Symlink, b"bin/latest", b"payload", b"");
        add_raw(builder, EntryType::Link, b"bin/copy", b"bin/payload", b"");
        let long = format!("docs/{}/readme.md", "very-long-directory-name".repeat(6));
        add_file(builder, &long, b"# readme\n");
    })
}
