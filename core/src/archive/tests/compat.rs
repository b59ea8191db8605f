use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use flate2::Compression;
use flate2::write::GzEncoder;
use tar::{EntryType, Header};

use super::*;

#[test]
fn accepts_plain_gzip_and_zstd_archives_pushed_in_pieces() {
    let plain = big_package();
    for (form, bytes) in [
        ("plain", plain.clone()),
        ("gzip", gzip(&plain)),
        ("zstd", zstd(&plain)),
    ] {
        let archive = push_in_pieces(&bytes, ArchiveLimits::default()).unwrap();
        assert_eq!(archive.manifest, expected_manifest(), "{form}");
    }
}

#[test]
fn accepts_a_minimal_manifest() {
    let raw = "[package]\nname = \"@a/b\"\nversion = \"0.1.0-rc.1\"\n";
    let bytes = tar_with(|builder| add_file(builder, "manifest.toml", raw.as_bytes()));
    let manifest = check(&bytes).unwrap();
    assert_eq!(manifest.name, "@a/b");
    assert_eq!(manifest.version, "0.1.0-rc.1");
    assert_eq!(manifest.description, None);
    assert_eq!(manifest.license, None);
    assert_eq!(manifest.arch, None);
    assert_eq!(manifest.raw, raw);
}

#[test]
fn accepts_dot_slash_manifest() {
    let bytes = tar_with(|builder| {
        add_dir(builder, "./");
        add_file(builder, "./manifest.toml", MANIFEST.as_bytes());
        add_file(builder, "./lib/a.txt", b"a");
    });
    assert_eq!(check(&bytes).unwrap(), expected_manifest());
}

#[test]
fn manifest_in_a_subdirectory_is_not_the_manifest() {
    let only_nested = tar_with(|builder| {
        add_file(builder, "sub/manifest.toml", MANIFEST.as_bytes());
    });
    expect_invalid(
        check(&only_nested),
        "archive has no manifest.toml at its root",
    );

    let other = "[package]\nname = \"@x/nested\"\nversion = \"9.9.9\"\n";
    let both = tar_with(|builder| {
        add_file(builder, "sub/manifest.toml", other.as_bytes());
        add_file(builder, "manifest.toml", MANIFEST.as_bytes());
        add_file(builder, "a/b/manifest.toml", other.as_bytes());
    });
    assert_eq!(check(&both).unwrap(), expected_manifest());
}

#[test]
fn rejects_archives_without_manifest() {
    let message = "archive has no manifest.toml at its root";
    expect_invalid(check(b""), message);
    expect_invalid(check(&tar_with(|_| {})), message);
    expect_invalid(
        check(&tar_with(|builder| add_file(builder, "README.md", b"hi"))),
        message,
    );
    match check(b"") {
        Err(ArchiveError::Invalid(m)) => assert_eq!(m, message),
        other => panic!("{other:?}"),
    }
}

#[test]
fn rejects_a_second_manifest() {
    let bytes = package_with(|builder| {
        add_file(builder, "./manifest.toml", MANIFEST.as_bytes());
    });
    expect_invalid(check(&bytes), "more than one manifest.toml");
}

#[test]
fn manifest_size_is_bounded() {
    let bytes = tar_with(|builder| add_file(builder, "manifest.toml", MANIFEST.as_bytes()));
    let at_limit = ArchiveLimits {
        max_manifest_bytes: MANIFEST.len() as u64,
        ..ArchiveLimits::default()
    };
    assert_eq!(
        validate(&bytes[..], &at_limit).unwrap(),
        expected_manifest()
    );
    let below = ArchiveLimits {
        max_manifest_bytes: MANIFEST.len() as u64 - 1,
        ..ArchiveLimits::default()
    };
    expect_too_large(validate(&bytes[..], &below), "manifest.toml is");

    // A 2 MiB manifest against the default 1 MiB limit.
    let mut huge = MANIFEST.to_owned();
    huge.push_str(&"# padding\n".repeat(210_000));
    let bytes = tar_with(|builder| add_file(builder, "manifest.toml", huge.as_bytes()));
    expect_too_large(check(&bytes), "over the limit of 1048576 bytes");

    // The header's size is trusted before any data is read: this archive has none at all.
    let mut header = Header::new_gnu();
    header.set_path("manifest.toml").unwrap();
    header.set_size(GIB);
    header.set_cksum();
    expect_too_large(
        check(header.as_bytes()),
        "manifest.toml is 1073741824 bytes",
    );
}

#[test]
fn rejects_bad_manifest_contents() {
    let cases: &[(&[u8], &str)] = &[
        (
            b"[package]\nname = \"\xff\"\nversion = \"1.0.0\"\n",
            "not valid UTF-8",
        ),
        (b"[package\nname = \"@a/b\"\n", "manifest.toml is invalid"),
        (b"name = \"@a/b\"\nversion = \"1.0.0\"\n", "package"),
        (b"[package]\nname = \"@a/b\"\n", "version"),
        (b"[package]\nversion = \"1.0.0\"\n", "name"),
        (
            b"[package]\nname = \"@a/b\"\nversion = 1\n",
            "manifest.toml is invalid",
        ),
        (
            b"[package]\nname = \"@a/b\"\nversion = \"1.0.0\"\narch = [\"x\"]\n",
            "arch",
        ),
        (b"package = \"@a/b\"\n", "manifest.toml is invalid"),
    ];
    for (raw, needle) in cases {
        let bytes = tar_with(|builder| add_file(builder, "manifest.toml", raw));
        expect_invalid(check(&bytes), needle);
    }
}

#[test]
fn manifest_must_be_a_regular_file() {
    let symlink = tar_with(|builder| {
        add_file(builder, "real.toml", MANIFEST.as_bytes());
        add_raw(
            builder,
            EntryType::Symlink,
            b"manifest.toml",
            b"real.toml",
            b"",
        );
    });
    expect_invalid(check(&symlink), "manifest.toml must be a regular file");
    let directory = tar_with(|builder| add_dir(builder, "manifest.toml/"));
    expect_invalid(check(&directory), "manifest.toml must be a regular file");
}

#[test]
fn rejects_unsafe_paths() {
    for name in [
        &b"/etc/passwd"[..],
        b"../evil",
        b"a/../../evil",
        b"a/../b",
        b"a/..",
        b"..\\evil",
        b"a\\..\\..\\evil",
        b"\\evil",
        b"C:/evil",
        b"c:evil",
    ] {
        let bytes = package_with(|builder| add_raw(builder, EntryType::Regular, name, b"", b"x"));
        let result = check(&bytes);
        assert!(
            matches!(&result, Err(ArchiveError::Invalid(m)) if m.contains("absolute") || m.contains("`..`")),
            "{}: {result:?}",
            name.escape_ascii()
        );
    }
    // Also on a directory, and through the names unpackers actually use: PAX `path` and GNU
    // long names override the header's own name.
    let bytes = package_with(|builder| add_raw(builder, EntryType::Directory, b"../d/", b"", b""));
    expect_invalid(check(&bytes), "`..`");
    let bytes = package_with(|builder| {
        add_pax(builder, &pax_record("path", b"../../etc/cron.d/evil"));
        add_file(builder, "innocent.txt", b"x");
    });
    expect_invalid(
        check(&bytes),
        "entry `../../etc/cron.d/evil` has a `..` component",
    );
    let bytes = package_with(|builder| {
        add_long_name(builder, format!("/{}", "x".repeat(200)).as_bytes());
        add_file(builder, "innocent.txt", b"x");
    });
    expect_invalid(check(&bytes), "has an absolute path");
    let bytes = package_with(|builder| add_raw(builder, EntryType::Regular, b"./", b"", b"x"));
    expect_invalid(check(&bytes), "empty path");
}

#[test]
fn link_targets_stay_inside_the_archive() {
    let cases: &[(EntryType, &str, &str, bool)] = &[
        (EntryType::Symlink, "l", "target", true),
        (EntryType::Symlink, "l", "./d/./f", true),
        (EntryType::Symlink, "d/l", "../f", true),
        (EntryType::Symlink, "d/e/l", "../../f", true),
        (EntryType::Symlink, "d/l", "x/../../f", true),
        (EntryType::Symlink, "l", "/etc/passwd", false),
        (EntryType::Symlink, "l", "../f", false),
        (EntryType::Symlink, "l", "d/../../f", false),
        (EntryType::Symlink, "d/l", "../../f", false),
        (EntryType::Symlink, "d/e/l", "../../../f", false),
        // Lexical resolution: climbing out and back in still passes through the outside.
        (EntryType::Symlink, "d/l", "../../root/f", false),
        (EntryType::Symlink, "d/l", "..\\..\\f", false),
        (EntryType::Symlink, "l", "C:\\f", false),
        (EntryType::Symlink, "l", "", false),
        // Hard link targets are named from the archive root (`d/f` exists in every case).
        (EntryType::Link, "h", "d/f", true),
        (EntryType::Link, "d/h", "d/f", true),
        (EntryType::Link, "d/h", "./d//f", true),
        (EntryType::Link, "h", "f", false),
        (EntryType::Link, "d/h", "../f", false),
        (EntryType::Link, "h", "/etc/shadow", false),
        (EntryType::Link, "h", "", false),
    ];
    for &(kind, name, target, ok) in cases {
        let bytes = package_with(|builder| {
            add_file(builder, "d/f", b"f");
            add_raw(builder, kind, name.as_bytes(), target.as_bytes(), b"");
        });
        let result = check(&bytes);
        if ok {
            assert_eq!(result.unwrap(), expected_manifest(), "{name} -> {target}");
        } else {
            assert!(
                matches!(&result, Err(ArchiveError::Invalid(m)) if m.starts_with("link `")),
                "{name} -> {target}: {result:?}"
            );
        }
    }
    // A PAX `linkpath` overrides the header's link target.
    let bytes = package_with(|builder| {
        add_pax(builder, &pax_record("linkpath", b"../../../etc/passwd"));
        add_raw(builder, EntryType::Symlink, b"l", b"fine", b"");
    });
    expect_invalid(check(&bytes), "points outside the archive");
}

#[test]
fn rejects_devices_fifos_sparse_files_and_unknown_types() {
    for (kind, needle) in [
        (EntryType::Fifo, "device or fifo"),
        (EntryType::Char, "device or fifo"),
        (EntryType::Block, "device or fifo"),
        (EntryType::new(b'V'), "unsupported type `V`"),
    ] {
        let bytes = package_with(|builder| add_raw(builder, kind, b"thing", b"", b""));
        expect_invalid(check(&bytes), needle);
    }

    // A sparse file of 1 TiB of holes: no data in the archive, but reading it through would
    // produce a TiB of zeros.
    let bytes = package_with(|builder| {
        let mut header = Header::new_gnu();
        header.set_path("holes").unwrap();
        header.set_entry_type(EntryType::GNUSparse);
        header.set_size(0);
        let gnu = header.as_gnu_mut().unwrap();
        gnu.sparse[0].set_offset(1 << 40);
        gnu.sparse[0].set_length(0);
        gnu.set_real_size(1 << 40);
        header.set_cksum();
        builder.append(&header, io::empty()).unwrap();
    });
    expect_invalid(check(&bytes), "entry `holes` is a sparse file");
}

#[test]
fn rejects_links_and_directories_carrying_data() {
    for kind in [EntryType::Directory, EntryType::Symlink, EntryType::Link] {
        let bytes = package_with(|builder| add_raw(builder, kind, b"d", b"t", b"hidden data"));
        expect_invalid(check(&bytes), "carries data");
    }
}

#[test]
fn rejects_pax_global_headers() {
    // Accepted before issue 11: readers apply a global `path` or `linkpath` to every later entry
    // or to none, so since then it is refused.
    let bytes = package_with(|builder| {
        let records = pax_record("comment", b"made by git archive");
        let mut header = Header::new_ustar();
        header.set_path("pax_global_header").unwrap();
        header.set_entry_type(EntryType::XGlobalHeader);
        header.set_size(records.len() as u64);
        header.set_cksum();
        builder.append(&header, &records[..]).unwrap();
        add_file(builder, "a.txt", b"a");
    });
    expect_invalid(check(&bytes), "PAX global header");
}

#[test]
fn rejects_garbage_and_bad_checksums() {
    let mut garbage = random(4096);
    garbage[0] = b'x';
    expect_invalid(check(&garbage), "not a valid tar archive: ");

    let mut bytes = package_with(|builder| add_file(builder, "a.txt", b"hello"));
    // Inside the second header's name field.
    bytes[1024 + 3] ^= 0x20;
    expect_invalid(
        check(&bytes),
        "not a valid tar archive: archive header checksum mismatch",
    );
    let mut bytes = package_with(|_| {});
    bytes[0] ^= 0x20;
    expect_invalid(check(&bytes), "checksum mismatch");
}

/// Entry positions of a well-formed archive, read back with the tar crate.
fn header_positions(bytes: &[u8]) -> (Vec<u64>, u64) {
    let mut archive = tar::Archive::new(bytes);
    let mut headers = Vec::new();
    let mut end = 0;
    for entry in archive.entries().unwrap() {
        let entry = entry.unwrap();
        headers.push(entry.raw_header_position());
        end = entry.raw_file_position() + entry.size().div_ceil(512) * 512;
    }
    (headers, end)
}

fn truncation_sample() -> Vec<u8> {
    package_with(|builder| {
        add_dir(builder, "data/");
        add_file(builder, "data/middle.bin", &random(3000));
        add_file(builder, "data/last.bin", &random(1000));
    })
}

#[test]
fn plain_archive_cut_anywhere_is_rejected_except_between_entries() {
    let bytes = truncation_sample();
    let (headers, marker) = header_positions(&bytes);
    assert_eq!(headers.len(), 4);
    assert_eq!(bytes.len() as u64, marker + 1024);

    // Named cuts first, for their messages.
    let middle = headers[2];
    let last = headers[3];
    let cases = [
        (100, "not a valid tar archive"),
        (middle + 200, "not a valid tar archive"),
        (
            middle + 512 + 1500,
            "data of entry `data/middle.bin` is cut short",
        ),
        (
            last + 512 + 10,
            "data of entry `data/last.bin` is cut short",
        ),
        (
            last + 512 + 999,
            "data of entry `data/last.bin` is cut short",
        ),
        // Inside the padding after the last entry's data.
        (last + 512 + 1001, "not a valid tar archive"),
        // Inside the end-of-archive marker's first block.
        (marker + 100, "not a valid tar archive"),
    ];
    for (cut, needle) in cases {
        expect_invalid(check(&bytes[..cut as usize]), needle);
    }

    // Every cut: only the boundaries between entries, after the manifest, and the end-marker
    // area pass (a missing end marker is tolerated).
    for cut in 0..=bytes.len() as u64 {
        let between_entries = headers[1..].contains(&cut) || cut == marker;
        let in_end_marker = cut >= marker + 512;
        let result = check(&bytes[..cut as usize]);
        if between_entries || in_end_marker {
            assert_eq!(result.unwrap(), expected_manifest(), "cut at {cut}");
        } else {
            assert!(
                matches!(result, Err(ArchiveError::Invalid(_))),
                "cut at {cut}: {result:?}"
            );
        }
    }
}

#[test]
fn compressed_archive_cut_anywhere_is_rejected() {
    let plain = truncation_sample();
    for (form, bytes) in [("gzip", gzip(&plain)), ("zstd", zstd(&plain))] {
        assert_eq!(check(&bytes).unwrap(), expected_manifest(), "{form}");
        for cut in 0..bytes.len() {
            let result = check(&bytes[..cut]);
            assert!(
                matches!(result, Err(ArchiveError::Invalid(_))),
                "{form} cut at {cut}: {result:?}"
            );
        }
        expect_invalid(check(&bytes[..bytes.len() - 1]), form);
    }
}

#[test]
fn end_marker_may_be_missing_and_followed_by_zeros_only() {
    let mut bytes = package_with(|_| {});
    let without_marker = &bytes[..bytes.len() - 1024];
    for form in [
        without_marker.to_vec(),
        gzip(without_marker),
        zstd(without_marker),
    ] {
        assert_eq!(check(&form).unwrap(), expected_manifest());
    }

    bytes.extend_from_slice(&[0; 20 * 1024]);
    assert_eq!(check(&bytes).unwrap(), expected_manifest());
    assert_eq!(check(&zstd(&bytes)).unwrap(), expected_manifest());

    bytes.extend_from_slice(b"hidden");
    expect_invalid(check(&bytes), "data after its end-of-archive marker");
    // A second archive concatenated after the first one's end marker.
    let mut concatenated = package_with(|_| {});
    concatenated.extend(package_with(|_| {}));
    expect_invalid(check(&concatenated), "data after its end-of-archive marker");
}

#[test]
fn concatenated_gzip_members_and_zstd_frames_are_all_validated() {
    let first = tar_with(|builder| add_file(builder, "manifest.toml", MANIFEST.as_bytes()));
    // The first part without its end marker, so the second part continues the tar stream.
    let first = &first[..first.len() - 1024];
    let second = tar_with(|builder| add_raw(builder, EntryType::Regular, b"../x", b"", b""));
    let mut gz = gzip(first);
    gz.extend(gzip(&second));
    expect_invalid(check(&gz), "`..`");
    let mut zst = zstd(first);
    zst.extend(zstd(&second));
    expect_invalid(check(&zst), "`..`");

    let fine = tar_with(|builder| add_file(builder, "a.txt", b"a"));
    let mut gz = gzip(first);
    gz.extend(gzip(&fine));
    assert_eq!(check(&gz).unwrap(), expected_manifest());
    // Non-gzip bytes after the last member.
    gz.extend_from_slice(b"junk");
    expect_invalid(check(&gz), "gzip stream is corrupt or truncated");
}

#[test]
fn rejects_corrupt_gzip_and_zstd_streams() {
    let plain = truncation_sample();

    let mut gz = gzip(&plain);
    // Right after the 10-byte gzip header: the first deflate block header.
    gz[10] = 0xff;
    gz[11] = 0xff;
    expect_invalid(check(&gz), "gzip stream is corrupt or truncated");
    let mut gz = gzip(&plain);
    let len = gz.len();
    gz[len - 6] ^= 0xff; // the CRC32
    expect_invalid(check(&gz), "gzip stream is corrupt or truncated");

    let mut zst = zstd(&plain);
    zst[4] = 0xff; // the frame header descriptor
    expect_invalid(check(&zst), "zstd stream is corrupt or truncated");

    // Only the magic bytes.
    expect_invalid(check(&[0x1f, 0x8b]), "gzip stream is corrupt or truncated");
    expect_invalid(
        check(&[0x28, 0xb5, 0x2f, 0xfd]),
        "zstd stream is corrupt or truncated",
    );
}

/// The prefix of a package whose second entry claims `size` bytes of data, to be followed by
/// zeros.
fn bomb_prefix(size: u64) -> Vec<u8> {
    let mut bytes = tar_with(|builder| add_file(builder, "manifest.toml", MANIFEST.as_bytes()));
    bytes.truncate(bytes.len() - 1024);
    let mut header = Header::new_gnu();
    header.set_path("zeros.bin").unwrap();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_cksum();
    bytes.extend_from_slice(header.as_bytes());
    bytes
}

#[track_caller]
fn expect_bomb_rejected(bomb: &[u8], expanded: u64) {
    assert!(
        bomb.len() < 8 * MIB as usize,
        "bomb is {} bytes",
        bomb.len()
    );
    assert!(expanded > 4 * GIB, "bomb expands to {expanded} bytes only");
    let started = Instant::now();
    expect_too_large(check(bomb), "archive expands too much when decompressed");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn rejects_a_gzip_bomb() {
    // Deflate cannot exceed ~1030:1, so a few MiB expanding to GiBs needs the whole stream;
    // compressing GiBs here would be slow. After a sync flush the encoder's output is
    // byte-aligned and, with only zeros in the 32 KiB window, a segment encoding 1 MiB of
    // zeros decodes the same wherever it is repeated.
    let zeros = vec![0u8; MIB as usize];
    let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
    encoder.write_all(&bomb_prefix(8 * GIB - 1)).unwrap();
    encoder.write_all(&zeros).unwrap();
    encoder.flush().unwrap();
    let start = encoder.get_ref().len();
    encoder.write_all(&zeros).unwrap();
    encoder.flush().unwrap();
    let mut bomb = encoder.get_ref().clone();
    let segment = bomb[start..].to_vec();
    let mut expanded = 2 * MIB;
    while bomb.len() < 5 * MIB as usize {
        bomb.extend_from_slice(&segment);
        expanded += MIB;
    }
    expect_bomb_rejected(&bomb, expanded);
}

/// Concatenated zstd frames of 8 MiB of zeros each.
fn zstd_zeros(frames: usize) -> (Vec<u8>, u64) {
    let frame = zstd::encode_all(&vec![0u8; 8 * MIB as usize][..], 3).unwrap();
    (frame.repeat(frames), 8 * MIB * frames as u64)
}

#[test]
fn rejects_a_zstd_bomb() {
    let (zeros, expanded) = zstd_zeros(8_000);
    let mut bomb = zstd(&bomb_prefix(8 * GIB - 1));
    bomb.extend(zeros);
    expect_bomb_rejected(&bomb, expanded);
}

#[test]
fn rejects_a_zstd_bomb_of_bare_zeros() {
    // Zeros read as an end-of-archive marker right away: the bound must hold while the rest
    // of the input is drained too.
    let (bomb, expanded) = zstd_zeros(8_000);
    expect_bomb_rejected(&bomb, expanded);
}

#[test]
fn max_unpacked_bytes_is_an_absolute_cap() {
    let bytes = package_with(|builder| add_file(builder, "big", &vec![0; 2 * MIB as usize]));
    let limits = ArchiveLimits {
        max_unpacked_bytes: MIB,
        max_expansion_ratio: u64::MAX,
        ratio_allowance_bytes: u64::MAX,
        ..ArchiveLimits::default()
    };
    expect_too_large(
        validate(&bytes[..], &limits),
        "archive is larger than the limit of 1048576 bytes",
    );
    for compressed in [gzip(&bytes), zstd(&bytes)] {
        expect_too_large(
            validate(&compressed[..], &limits),
            "archive expands too much when decompressed",
        );
    }
    let roomy = ArchiveLimits {
        max_unpacked_bytes: bytes.len() as u64,
        ..limits
    };
    assert!(validate(&bytes[..], &roomy).is_ok());
    assert!(validate(&zstd(&bytes)[..], &roomy).is_ok());
}

#[test]
fn expansion_ratio_applies_to_compressed_archives_only() {
    let bytes = package_with(|builder| add_file(builder, "big", &vec![0; MIB as usize]));
    let strict = ArchiveLimits {
        max_expansion_ratio: 0,
        ratio_allowance_bytes: 0,
        ..ArchiveLimits::default()
    };
    assert_eq!(validate(&bytes[..], &strict).unwrap(), expected_manifest());
    expect_too_large(
        validate(&gzip(&bytes)[..], &strict),
        "archive expands too much",
    );
    // 1 MiB of zeros compresses far better than 10:1; the allowance covers it.
    let ratio_ten = ArchiveLimits {
        max_expansion_ratio: 10,
        ratio_allowance_bytes: 0,
        ..ArchiveLimits::default()
    };
    expect_too_large(
        validate(&zstd(&bytes)[..], &ratio_ten),
        "archive expands too much",
    );
    let allowance = ArchiveLimits {
        ratio_allowance_bytes: 2 * MIB,
        ..ratio_ten
    };
    assert!(validate(&zstd(&bytes)[..], &allowance).is_ok());
}

#[test]
fn entry_metadata_is_bounded() {
    let bytes = package_with(|builder| {
        add_pax(
            builder,
            &pax_record("comment", &vec![b'x'; 2 * MIB as usize]),
        );
        add_file(builder, "a.txt", b"a");
    });
    expect_too_large(check(&bytes), "metadata");
    let bytes = package_with(|builder| {
        add_long_name(builder, &vec![b'x'; 2 * MIB as usize]);
        add_file(builder, "a.txt", b"a");
    });
    expect_too_large(check(&bytes), "metadata");
    // Generous metadata is fine.
    let bytes = package_with(|builder| {
        add_pax(builder, &pax_record("comment", &vec![b'x'; 100_000]));
        add_long_name(builder, format!("long/{}", "y".repeat(4000)).as_bytes());
        add_file(builder, "a.txt", b"a");
    });
    assert_eq!(check(&bytes).unwrap(), expected_manifest());
}

#[test]
fn finishing_early_fails() {
    // Replaces the feed's "dropped without finish" test: the caller decides when the upload
    // ended, and an archive cut inside an entry is refused.
    let bytes = package_with(|builder| add_file(builder, "a.txt", b"a"));
    let mut validator = ArchiveValidator::new(ArchiveLimits::default());
    validator.push(&bytes[..700]).unwrap();
    expect_invalid(
        validator.finish().map(|archive| archive.manifest),
        "archive is truncated: the data of entry `manifest.toml` is cut short",
    );
    let validator = ArchiveValidator::new(ArchiveLimits::default());
    expect_invalid(
        validator.finish().map(|archive| archive.manifest),
        "archive has no manifest.toml at its root",
    );
}

#[test]
fn push_keeps_failing_once_the_validator_failed() {
    let mut validator = ArchiveValidator::new(ArchiveLimits::default());
    let mut garbage = random(512);
    garbage[0] = b'x';
    let first = validator.push(&garbage).unwrap_err();
    assert!(
        first.to_string().contains("not a valid tar archive"),
        "{first}"
    );
    // Even a valid archive's bytes do not revive it.
    let good = package_with(|_| {});
    let again = validator.push(&good).unwrap_err();
    assert_eq!(again.to_string(), first.to_string());
    expect_invalid(
        validator.finish().map(|archive| archive.manifest),
        "not a valid tar archive",
    );
}

#[test]
fn push_reports_early_failures_without_reading_the_rest() {
    // An unsafe path near the start of a large upload stops validation at the first piece.
    let bytes = tar_with(|builder| {
        add_raw(builder, EntryType::Regular, b"/etc/passwd", b"", b"x");
        add_file(builder, "manifest.toml", MANIFEST.as_bytes());
        add_file(builder, "big", &random(4 * MIB as usize));
    });
    let mut validator = ArchiveValidator::new(ArchiveLimits::default());
    let mut chunks = bytes.chunks(16 * 1024);
    let error = validator.push(chunks.next().unwrap()).unwrap_err();
    assert!(error.to_string().contains("absolute path"), "{error}");
}

/// Hands out `data`, then fails with `error` (or ends) at `fail_at`; every other call is
/// interrupted by a "signal".
struct FlakyReader {
    data: Vec<u8>,
    position: usize,
    fail_at: Option<usize>,
    calls: usize,
}

impl Read for FlakyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.calls += 1;
        if self.calls.is_multiple_of(2) {
            return Err(io::ErrorKind::Interrupted.into());
        }
        if Some(self.position) == self.fail_at {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "connection reset by peer",
            ));
        }
        let end = self
            .data
            .len()
            .min(self.position + buf.len().min(1000))
            .min(self.fail_at.unwrap_or(usize::MAX));
        let len = end - self.position;
        buf[..len].copy_from_slice(&self.data[self.position..end]);
        self.position = end;
        Ok(len)
    }
}

#[test]
fn reader_errors_are_invalid_and_interruptions_are_retried() {
    let plain = big_package();
    for bytes in [plain.clone(), gzip(&plain), zstd(&plain)] {
        let reader = FlakyReader {
            data: bytes.clone(),
            position: 0,
            fail_at: None,
            calls: 0,
        };
        let limits = ArchiveLimits::default();
        assert_eq!(
            validate_archive(reader, &limits)
                .map(|archive| archive.manifest)
                .unwrap(),
            expected_manifest()
        );
        let reader = FlakyReader {
            data: bytes.clone(),
            position: 0,
            fail_at: Some(bytes.len() / 2),
            calls: 0,
        };
        expect_invalid(
            validate_archive(reader, &limits).map(|archive| archive.manifest),
            "upload interrupted: connection reset by peer",
        );
    }
}
