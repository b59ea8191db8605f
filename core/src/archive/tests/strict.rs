//! Forms that readers resolve differently, and link chains: each must be refused. The full
//! corpus, checked against GNU tar and Python, is in `tests/archive_differential`.

use tar::{EntryType, Header};

use super::*;

/// Adds entries to a package under test.
type Build = fn(&mut Builder<Vec<u8>>);

/// Edits a header block.
type Edit = fn(&mut [u8; 512]);

fn symlink(builder: &mut Builder<Vec<u8>>, name: &str, target: &str) {
    add_raw(
        builder,
        EntryType::Symlink,
        name.as_bytes(),
        target.as_bytes(),
        b"",
    );
}

fn hard_link(builder: &mut Builder<Vec<u8>>, name: &str, target: &str) {
    add_raw(
        builder,
        EntryType::Link,
        name.as_bytes(),
        target.as_bytes(),
        b"",
    );
}

fn entries_of(bytes: &[u8]) -> Vec<ArchiveEntry> {
    validate_archive(bytes, &ArchiveLimits::default())
        .unwrap()
        .entries()
}

#[test]
fn link_chains_that_leave_the_root_are_refused() {
    // Issue 11: each path is harmless as text; resolved, the file lands outside.
    let chain = package_with(|builder| {
        add_dir(builder, "sub/");
        symlink(builder, "sub/up", "..");
        symlink(builder, "out", "sub/up/..");
        add_file(builder, "out/evil", b"x");
    });
    expect_invalid(check(&chain), "which is a symlink");

    // A symlink pointing through a directory that becomes a symlink later.
    let later = package_with(|builder| {
        symlink(builder, "a", "b/c");
        symlink(builder, "b", "..");
    });
    expect_invalid(
        check(&later),
        "link `a` -> `b/c` points outside the archive",
    );
    let later = package_with(|builder| {
        symlink(builder, "a", "b/../../x");
        add_dir(builder, "b/");
    });
    expect_invalid(check(&later), "link `a` -> `b/../../x` points outside");
    let through = package_with(|builder| {
        add_dir(builder, "d/e/");
        symlink(builder, "d/e/up", "../..");
        symlink(builder, "a", "d/e/up/../x");
    });
    expect_invalid(check(&through), "points outside the archive");
    // `..` after a symlinked directory goes to the real parent, as the kernel does.
    let physical = package_with(|builder| {
        add_dir(builder, "d/e/");
        symlink(builder, "e", "d/e");
        symlink(builder, "a", "e/../../x");
    });
    assert_eq!(check(&physical).unwrap(), expected_manifest());
    let loop_ = package_with(|builder| {
        symlink(builder, "a", "b/x");
        symlink(builder, "b", "a/y");
    });
    expect_invalid(check(&loop_), "too many levels of symlinks");
}

#[test]
fn entries_never_go_through_links_or_files() {
    let cases: [(&str, Build); 4] = [
        ("which is a symlink", |builder| {
            add_dir(builder, "d/");
            symlink(builder, "l", "d");
            add_file(builder, "l/f", b"x");
        }),
        ("which is not a directory", |builder| {
            add_file(builder, "f", b"x");
            add_file(builder, "f/g", b"x");
        }),
        ("appears twice", |builder| {
            add_file(builder, "f", b"x");
            add_file(builder, "./f", b"y");
        }),
        ("appears twice", |builder| {
            // A directory made implicitly by `d/f`, then replaced by a symlink.
            add_file(builder, "d/f", b"x");
            symlink(builder, "d", ".");
        }),
    ];
    for (needle, build) in cases {
        expect_invalid(check(&package_with(build)), needle);
    }
    // A directory entry after its contents is fine.
    let late_dir = package_with(|builder| {
        add_file(builder, "d/f", b"x");
        add_dir(builder, "d/");
    });
    assert_eq!(check(&late_dir).unwrap(), expected_manifest());
}

#[test]
fn hard_links_name_an_earlier_regular_file() {
    let cases: [(Build, &str); 4] = [
        (
            |builder| hard_link(builder, "h", "later"),
            "does not name an earlier entry",
        ),
        (
            |builder| {
                add_file(builder, "f", b"x");
                hard_link(builder, "h", "f");
                hard_link(builder, "h2", "h");
            },
            "names another hard link",
        ),
        (
            |builder| {
                add_file(builder, "f", b"x");
                symlink(builder, "s", "f");
                hard_link(builder, "h", "s");
            },
            "goes through a symlink",
        ),
        (
            |builder| {
                add_dir(builder, "d/");
                hard_link(builder, "h", "d");
            },
            "does not name an earlier regular file",
        ),
    ];
    for (build, needle) in cases {
        expect_invalid(check(&package_with(build)), needle);
    }
}

#[test]
fn ambiguous_extended_headers_are_refused() {
    let cases: [(&str, Build); 8] = [
        ("both a PAX path and a GNU long name", |builder| {
            add_pax(builder, &pax_record("path", b"a.txt"));
            add_long_name(builder, b"b.txt");
            add_file(builder, "c.txt", b"x");
        }),
        ("keyword `path` appears twice", |builder| {
            let mut records = pax_record("path", b"a.txt");
            records.extend(pax_record("path", b"b.txt"));
            add_pax(builder, &records);
            add_file(builder, "c.txt", b"x");
        }),
        ("two PAX extended headers", |builder| {
            add_pax(builder, &pax_record("path", b"a.txt"));
            add_pax(builder, &pax_record("path", b"b.txt"));
            add_file(builder, "c.txt", b"x");
        }),
        ("two GNU long names", |builder| {
            add_long_name(builder, b"a.txt");
            add_long_name(builder, b"b.txt");
            add_file(builder, "c.txt", b"x");
        }),
        ("PAX size of 0 but a header size of 1", |builder| {
            add_pax(builder, &pax_record("size", b"0"));
            add_file(builder, "c.txt", b"x");
        }),
        ("keyword `hdrcharset` is not supported", |builder| {
            add_pax(builder, &pax_record("hdrcharset", b"BINARY"));
            add_file(builder, "c.txt", b"x");
        }),
        ("keyword `GNU.sparse.size` is not supported", |builder| {
            add_pax(builder, &pax_record("GNU.sparse.size", b"100"));
            add_file(builder, "c.txt", b"x");
        }),
        ("followed by the end-of-archive marker", |builder| {
            add_pax(builder, &pax_record("path", b"a.txt"));
        }),
    ];
    for (needle, build) in cases {
        expect_invalid(check(&package_with(build)), needle);
    }
    // A record whose length is off by one: Python stops reading records there.
    let bytes = package_with(|builder| {
        add_pax(builder, b"13 path=a.txt\n");
        add_file(builder, "c.txt", b"x");
    });
    expect_invalid(check(&bytes), "PAX extended header");
    // The usual metadata passes, and a PAX path is what the entry is called.
    let bytes = package_with(|builder| {
        let mut records = pax_record("path", "ünïcode/ok.txt".as_bytes());
        records.extend(pax_record("mtime", b"1700000000.123456789"));
        records.extend(pax_record("SCHILY.xattr.user.note", b"hi"));
        add_pax(builder, &records);
        add_file(builder, "c.txt", b"x");
    });
    let entries = entries_of(&bytes);
    assert!(
        entries.iter().any(
            |entry| entry.path == "ünïcode/ok.txt" && entry.kind == EntryKind::File { size: 1 }
        ),
        "{entries:?}"
    );
}

#[test]
fn names_are_utf8_without_nul_or_backslash() {
    for (name, needle) in [
        (&b"bad\xff.txt"[..], "is not valid UTF-8"),
        (b"a\\b", "backslash"),
        (b"dir-ish/", "ends with `/` but is not a directory"),
    ] {
        let bytes = package_with(|builder| add_raw(builder, EntryType::Regular, name, b"", b"x"));
        expect_invalid(check(&bytes), needle);
    }
    let bytes = package_with(|builder| {
        add_pax(builder, &pax_record("path", b"a\0b"));
        add_file(builder, "c.txt", b"x");
    });
    expect_invalid(check(&bytes), "NUL");
    let bytes = package_with(|builder| {
        add_long_name(builder, b"a\0b");
        add_file(builder, "c.txt", b"x");
    });
    expect_invalid(check(&bytes), "exactly one NUL");
    let bytes = package_with(|builder| symlink(builder, "l", "t\u{fffd}"));
    assert!(check(&bytes).is_ok());
    let bytes = package_with(|builder| add_raw(builder, EntryType::Symlink, b"l", b"t\xff", b""));
    expect_invalid(check(&bytes), "not valid UTF-8");
}

/// A header with `edit` applied and its checksum recomputed (unless `edit` set it).
fn edited(edit: impl FnOnce(&mut [u8; 512])) -> Vec<u8> {
    let mut header = Header::new_gnu();
    header.set_path("x.txt").unwrap();
    header.set_size(0);
    header.set_mode(0o644);
    header.set_cksum();
    let mut block = *header.as_bytes();
    edit(&mut block);
    package_with(|builder| {
        let parsed = Header::from_byte_slice(&block);
        builder.append(parsed, io::empty()).unwrap();
    })
}

fn set_checksum(block: &mut [u8; 512]) {
    block[148..156].fill(b' ');
    let sum: u32 = block.iter().map(|&byte| u32::from(byte)).sum();
    block[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

#[test]
fn headers_are_read_strictly() {
    // The control: the unedited header passes.
    assert!(check(&edited(|_| {})).is_ok());
    let cases: [(&str, Edit); 6] = [
        ("size field is not octal", |block| {
            block[124..136].copy_from_slice(b"0o000000001\0");
            set_checksum(block);
        }),
        ("mode field is not octal", |block| {
            block[100..108].copy_from_slice(b"+0000644");
            set_checksum(block);
        }),
        ("where ustar keeps its name prefix", |block| {
            // An old-GNU header whose atime area Python would join to the name.
            block[345..350].copy_from_slice(b"evil/");
            set_checksum(block);
        }),
        ("no ustar or GNU magic", |block| {
            block[257..265].fill(0);
            set_checksum(block);
        }),
        ("checksum mismatch", |block| {
            // A signed-sum checksum, as GNU tar and Python accept and the tar crate does not.
            block[0] = 0xe9;
            block[148..156].fill(b' ');
            let signed: i64 = block.iter().map(|&byte| i64::from(byte as i8)).sum();
            block[148..156].copy_from_slice(format!("{signed:06o}\0 ").as_bytes());
        }),
        ("8 GiB or larger", |block| {
            block[124..136].fill(0);
            block[124] = 0x80;
            block[135] = 1;
            set_checksum(block);
        }),
    ];
    for (needle, edit) in cases {
        let result = check(&edited(edit));
        assert!(
            matches!(&result, Err(error) if error.to_string().contains(needle)),
            "{needle}: {result:?}"
        );
    }
}

#[test]
fn zstd_window_is_bounded() {
    let plain = package_with(|builder| add_file(builder, "big", &random(9 * MIB as usize)));
    let mut encoder = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
    encoder.long_distance_matching(true).unwrap();
    encoder.window_log(24).unwrap();
    io::Write::write_all(&mut encoder, &plain).unwrap();
    let long = encoder.finish().unwrap();
    expect_invalid(
        check(&long),
        "zstd frame needs a window larger than the limit of 8 MiB",
    );
    let roomy = ArchiveLimits {
        max_zstd_window_log: 24,
        ..ArchiveLimits::default()
    };
    assert_eq!(validate(&long, &roomy).unwrap(), expected_manifest());
    // Level 19, the highest without --ultra, stays within the default.
    assert_eq!(
        check(&zstd::encode_all(&plain[..], 19).unwrap()).unwrap(),
        expected_manifest()
    );
}

#[test]
fn the_tree_is_bounded() {
    let bytes = package_with(|builder| {
        for index in 0..20 {
            add_file(builder, &format!("d{index}/f"), b"x");
        }
    });
    let few = ArchiveLimits {
        max_entries: 30,
        ..ArchiveLimits::default()
    };
    expect_too_large(validate(&bytes, &few), "more than 30 entries");
    let short = ArchiveLimits {
        max_name_bytes: 40,
        ..ArchiveLimits::default()
    };
    expect_too_large(validate(&bytes, &short), "names take more than 40 bytes");
    // manifest.toml + 20 directories + 20 files.
    assert_eq!(entries_of(&bytes).len(), 41);
}

#[test]
fn entries_list_what_unpacking_creates() {
    let bytes = package_with(|builder| {
        add_file(builder, "d/e/f", b"hello");
        symlink(builder, "d/l", "e/f");
        hard_link(builder, "h", "d/e/f");
    });
    let kinds: Vec<(String, EntryKind)> = entries_of(&bytes)
        .into_iter()
        .map(|entry| (entry.path, entry.kind))
        .collect();
    let file = |size| EntryKind::File { size };
    assert_eq!(
        kinds,
        [
            ("manifest.toml".into(), file(MANIFEST.len() as u64)),
            ("d".into(), EntryKind::Directory),
            ("d/e".into(), EntryKind::Directory),
            ("d/e/f".into(), file(5)),
            (
                "d/l".into(),
                EntryKind::Symlink {
                    target: "e/f".into()
                }
            ),
            (
                "h".into(),
                EntryKind::HardLink {
                    target: "d/e/f".into()
                }
            ),
        ]
    );
}

/// zstd windows are reserved from the server-wide budget for a validator's whole life: with room
/// for one window, a second zstd upload is refused as Busy (503, never a 400: the archive is
/// fine) until the first ends; gzip and plain archives need no reservation.
#[test]
fn zstd_windows_share_the_decompression_budget() {
    let plain = package_with(|builder| add_file(builder, "bin/tool", b"#!/bin/sh\n"));
    let compressed = zstd(&plain);
    let window = 1u64 << ArchiveLimits::default().max_zstd_window_log;
    let budget = DecompressionBudget::new(window);
    let limits = ArchiveLimits::default();

    let mut first = ArchiveValidator::with_budget(limits, &budget);
    first.push(&compressed[..compressed.len() / 2]).unwrap();
    let mut second = ArchiveValidator::with_budget(limits, &budget);
    match second.push(&compressed) {
        Err(ArchiveError::Busy(message)) => assert!(message.contains("zstd"), "{message}"),
        other => panic!("expected Busy, got {other:?}"),
    }
    for other_format in [plain.clone(), gzip(&plain)] {
        let mut validator = ArchiveValidator::with_budget(limits, &budget);
        validator.push(&other_format).unwrap();
        assert_eq!(validator.finish().unwrap().manifest, expected_manifest());
    }

    first.push(&compressed[compressed.len() / 2..]).unwrap();
    assert_eq!(first.finish().unwrap().manifest, expected_manifest());
    let mut third = ArchiveValidator::with_budget(limits, &budget);
    third.push(&compressed).unwrap();
    drop(third);
    // A validator dropped mid-upload (client gone) gives its window back too.
    let mut fourth = ArchiveValidator::with_budget(limits, &budget);
    fourth.push(&compressed).unwrap();
    assert_eq!(fourth.finish().unwrap().manifest, expected_manifest());
}
