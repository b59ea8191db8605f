//! Hand-crafted archives: attacks that some reader unpacks outside the root (or reads
//! differently from another reader), each of which must be refused; and well-formed archives
//! exercising every accepted feature, each of which must be accepted and unpacked identically.

use crate::craft::{Magic, Raw, Tar};
use crate::{Outcome, differential, validate};

/// The attack corpus. The first ones are the confirmed attacks of issue 11 (accepted by the
/// validator built on the tar crate); the rest are their relatives.
pub fn attacks() -> Vec<(&'static str, Vec<u8>)> {
    let mut attacks = Vec::new();
    let mut add = |name: &'static str, tar: &Tar| attacks.push((name, tar.finish()));

    // The tar crate takes the GNU long name, GNU tar and Python the PAX path.
    add(
        "pax path with a GNU long name",
        Tar::package()
            .pax(b'x', &[("path", b"../pax-vs-gnu.txt")])
            .long(b'L', b"pax-vs-gnu.txt")
            .file("pax-vs-gnu.txt", b"evil"),
    );
    add(
        "pax linkpath with a GNU long link",
        Tar::package()
            .pax(b'x', &[("linkpath", b"/etc/passwd")])
            .long(b'K', b"manifest.toml")
            .symlink("passwd", "manifest.toml"),
    );
    // The tar crate keeps the first record, GNU tar and Python the last.
    add(
        "the same PAX key twice",
        Tar::package()
            .pax(
                b'x',
                &[("path", b"fine.txt"), ("path", b"../duplicate-key.txt")],
            )
            .file("fine.txt", b"evil"),
    );
    add(
        "the same PAX linkpath twice",
        Tar::package()
            .pax(
                b'x',
                &[("linkpath", b"manifest.toml"), ("linkpath", b"/etc/passwd")],
            )
            .symlink("passwd", "manifest.toml"),
    );
    // Python applies a global `path` to the entries that follow; the tar crate ignores it.
    add(
        "a PAX global header",
        Tar::package()
            .pax(b'g', &[("path", b"../global.txt")])
            .file("fine.txt", b"evil"),
    );
    // Readers that follow the PAX size read the hidden header; the others skip it as data.
    let mut hidden = Tar::default();
    hidden.file("../hidden.txt", b"evil");
    add(
        "a PAX size smaller than the header's",
        Tar::package().pax(b'x', &[("size", b"0")]).raw(&Raw {
            data: hidden.bytes.clone(),
            ..Raw::new(b'0', b"cover.txt")
        }),
    );
    add(
        "a PAX size larger than the header's",
        Tar::package()
            .pax(b'x', &[("size", b"1024")])
            .raw(&Raw::new(b'0', b"cover.txt"))
            .file("../hidden.txt", b"evil"),
    );
    // Each path harmless as text: `sub/up` is the root, so `esc` is its parent.
    add(
        "a link chain through a symlink to ..",
        Tar::package()
            .dir("sub")
            .symlink("sub/up", "..")
            .symlink("esc", "sub/up/..")
            .file("esc/chain.txt", b"evil"),
    );
    add(
        "a symlink whose directory becomes a symlink later",
        Tar::package()
            .dir("d")
            .symlink("d/up", "..")
            .symlink("late", "b/up/../..")
            .symlink("b", "d"),
    );
    add(
        "a hard link through a symlink",
        Tar::package()
            .dir("d")
            .symlink("d/up", "..")
            .hard_link("passwd", "d/up/../../../../../../../../etc/passwd"),
    );
    add(
        "a hard link to a symlink",
        Tar::package()
            .dir("d")
            .symlink("d/up", "..")
            .hard_link("up2", "d/up"),
    );
    // Python joins the ustar prefix even in old-GNU headers; GNU tar and the tar crate do not.
    add(
        "a ustar prefix in an old-GNU header",
        Tar::package().raw(&Raw {
            prefix: b"..".to_vec(),
            data: b"evil".to_vec(),
            ..Raw::new(b'0', b"gnu-prefix.txt")
        }),
    );
    // Python keeps the first long name, the tar crate the last.
    add(
        "two GNU long names",
        Tar::package()
            .long(b'L', b"../two-long-names.txt")
            .long(b'L', b"fine.txt")
            .file("fine.txt", b"evil"),
    );
    add(
        "two PAX extended headers",
        Tar::package()
            .pax(b'x', &[("path", b"../two-pax.txt")])
            .pax(b'x', &[("path", b"fine.txt")])
            .file("fine.txt", b"evil"),
    );
    add(
        "two GNU long links",
        Tar::package()
            .long(b'K', b"/etc/passwd")
            .long(b'K', b"manifest.toml")
            .symlink("l", "manifest.toml"),
    );

    // Relatives.
    add("a symlink to ..", Tar::package().symlink("up", ".."));
    add(
        "an absolute symlink",
        Tar::package().symlink("passwd", "/etc/passwd"),
    );
    add(
        "a file under a symlinked directory",
        Tar::package()
            .dir("d")
            .symlink("l", "d")
            .file("l/f.txt", b"x"),
    );
    add(
        "a duplicate path",
        Tar::package().file("a.txt", b"one").file("./a.txt", b"two"),
    );
    add(
        "a symlink replacing an implicit directory",
        Tar::package().file("d/f.txt", b"x").symlink("d", "."),
    );
    add(
        "a hard link to a later file",
        Tar::package()
            .hard_link("h", "later.txt")
            .file("later.txt", b"x"),
    );
    add(
        "an absolute path",
        Tar::package().file("/tmp/niso-absolute.txt", b"evil"),
    );
    add(
        "a .. path",
        Tar::package().file("a/../../dotdot.txt", b"evil"),
    );
    add(
        "a backslash path",
        Tar::package().file("..\\backslash.txt", b"evil"),
    );
    add(
        "a NUL in a PAX path",
        Tar::package()
            .pax(b'x', &[("path", b"fine.txt\0../nul.txt")])
            .file("fine.txt", b"x"),
    );
    add(
        "a NUL inside a GNU long name",
        Tar::package()
            .long(b'L', b"fine.txt\0../nul.txt")
            .file("fine.txt", b"x"),
    );
    add(
        "a non-UTF-8 name",
        Tar::package().raw(&Raw::new(b'0', b"caf\xe9.txt")),
    );
    add(
        "hdrcharset BINARY",
        Tar::package()
            .pax(b'x', &[("hdrcharset", b"BINARY")])
            .file("fine.txt", b"x"),
    );
    add(
        "a PAX record with a wrong length",
        Tar::package().raw(&Raw {
            data: b"15 path=../bad.txt\n".to_vec(),
            magic: Magic::Ustar,
            ..Raw::new(b'x', b"PaxHeaders/bad")
        }),
    );
    add(
        "an empty PAX path",
        Tar::package()
            .pax(b'x', &[("path", b"")])
            .file("fine.txt", b"x"),
    );
    add(
        "GNU sparse keys",
        Tar::package()
            .pax(
                b'x',
                &[("GNU.sparse.major", b"1"), ("GNU.sparse.minor", b"0")],
            )
            .file("fine.txt", b"x"),
    );
    add(
        "a Solaris extended header",
        Tar::package()
            .raw(&Raw {
                data: niso_test_support::archives::pax_record("path", b"../solaris.txt"),
                magic: Magic::Ustar,
                ..Raw::new(b'X', b"PaxHeaders/solaris")
            })
            .file("fine.txt", b"x"),
    );
    for (name, typeflag) in [
        ("a GNU sparse file", b'S'),
        ("a character device", b'3'),
        ("a block device", b'4'),
        ("a fifo", b'6'),
        ("a volume label", b'V'),
        ("a GNU dumpdir", b'D'),
        ("an old GNU long name", b'N'),
        ("a multi-volume continuation", b'M'),
    ] {
        add(name, Tar::package().raw(&Raw::new(typeflag, b"thing")));
    }
    add(
        "a regular file named like a directory",
        Tar::package().file("looks-like-a-dir/", b""),
    );
    add(
        "data on a directory",
        Tar::package().raw(&Raw {
            data: b"hidden".to_vec(),
            ..Raw::new(b'5', b"d")
        }),
    );
    add(
        "data on a symlink",
        Tar::package().raw(&Raw {
            link: b"manifest.toml".to_vec(),
            data: b"hidden".to_vec(),
            ..Raw::new(b'2', b"l")
        }),
    );
    add(
        "a long link on a file",
        Tar::package()
            .long(b'K', b"whatever")
            .file("fine.txt", b"x"),
    );
    add(
        "a pre-POSIX (v7) header",
        Tar::package().raw(&Raw {
            magic: Magic::V7,
            ..Raw::new(b'0', b"v7.txt")
        }),
    );
    add(
        "a size field Python reads as octal and GNU tar refuses",
        Tar::package().raw(&Raw {
            size_field: Some(b"0o0\0".to_vec()),
            ..Raw::new(b'0', b"odd.txt")
        }),
    );
    let mut after = Tar::package().finish();
    after.extend(Tar::package().file("../after-end.txt", b"evil").finish());
    attacks.push(("an archive after the end marker", after));
    let mut signed = Raw::new(b'0', b"\xe9signed.txt").header();
    signed[148..156].fill(b' ');
    let sum: i64 = signed.iter().map(|&byte| i64::from(byte as i8)).sum();
    signed[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut bytes = Tar::package().bytes.clone();
    bytes.extend_from_slice(&signed);
    bytes.extend_from_slice(&[0; 1024]);
    attacks.push(("a signed-sum checksum", bytes));
    attacks
}

/// Archives every reader reads the same way.
pub fn accepted() -> Vec<(&'static str, Vec<u8>)> {
    let long = format!("deep/{}/file.txt", "long-directory-name".repeat(7));
    let long_target = format!("../{}", "t".repeat(150));
    vec![
        ("just a manifest", Tar::package().finish()),
        (
            "files, directories and links",
            Tar::package()
                .dir("./")
                .dir("bin")
                .file("bin/tool", b"#!/bin/sh\necho hi\n")
                .symlink("bin/latest", "tool")
                .hard_link("bin/copy", "bin/tool")
                .file("share/doc/readme.md", &vec![b'r'; 1000])
                .dir("share")
                .symlink("doc", "share/doc")
                .symlink("share/doc/up", "../..")
                .finish(),
        ),
        (
            "long names, GNU and PAX",
            Tar::package()
                .long(b'L', long.as_bytes())
                .file("placeholder", b"gnu")
                .pax(
                    b'x',
                    &[
                        ("path", format!("pax/{long}").as_bytes()),
                        ("mtime", b"1700000000.5"),
                        ("uname", b"builder"),
                    ],
                )
                .file("placeholder", b"pax")
                .dir("links")
                .long(b'K', long_target.as_bytes())
                .symlink("links/dangling", "placeholder")
                .finish(),
        ),
        (
            "a ustar prefix",
            Tar::package()
                .raw(&Raw {
                    prefix: b"prefix/dir".to_vec(),
                    magic: Magic::Ustar,
                    data: b"x".to_vec(),
                    ..Raw::new(b'0', b"file.txt")
                })
                .finish(),
        ),
        (
            "symlink chains inside the root",
            Tar::package()
                .dir("a/b/c")
                .symlink("to-c", "a/b/c")
                .symlink("a/b/c/home", "../../..")
                .symlink("loop-free", "to-c/home/to-c/../c")
                .finish(),
        ),
        (
            "unicode names",
            Tar::package()
                .file("ünïcödé/日本.txt", "ü".as_bytes())
                .finish(),
        ),
    ]
}

#[test]
fn every_attack_is_refused() {
    let mut accepted = Vec::new();
    for (name, bytes) in attacks() {
        match validate(&bytes) {
            Ok(Outcome::Rejected(message)) => println!("refused {name}: {message}"),
            Ok(Outcome::Accepted(_)) => accepted.push(name),
            Err(error) => panic!("{name}: {error}"),
        }
    }
    assert!(accepted.is_empty(), "accepted attacks: {accepted:?}");
}

#[test]
fn well_formed_archives_unpack_as_validated() {
    for (name, bytes) in accepted() {
        match differential(&bytes) {
            Ok(true) => {}
            Ok(false) => panic!("{name} was refused: {:?}", validate(&bytes)),
            Err(error) => panic!("{name}: {error}"),
        }
    }
}
