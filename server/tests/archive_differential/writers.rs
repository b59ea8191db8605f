//! Archives made by real writers (GNU tar in its three formats, Python's `tarfile` in its
//! three) from one source tree: the validator must accept all of them and agree with the
//! readers about what they hold. Guards against a validator so strict that real packages fail.

use std::path::Path;
use std::process::Command;

use crate::craft::MANIFEST;
use crate::differential;

const PYTHON: &str = r#"
import sys, tarfile, os
formats = {'gnu': tarfile.GNU_FORMAT, 'pax': tarfile.PAX_FORMAT, 'ustar': tarfile.USTAR_FORMAT}
os.chdir(sys.argv[1])
with tarfile.open(sys.argv[2], 'w', format=formats[sys.argv[3]]) as archive:
    archive.add('.')
"#;

fn source_tree(root: &Path, long_names: bool) {
    let write = |path: &str, data: &[u8]| {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, data).unwrap();
    };
    write("manifest.toml", MANIFEST.as_bytes());
    write("bin/tool", b"#!/bin/sh\n");
    write("share/doc/readme.md", &vec![b'r'; 3000]);
    write("empty", b"");
    std::fs::create_dir_all(root.join("empty-dir")).unwrap();
    std::os::unix::fs::symlink("tool", root.join("bin/latest")).unwrap();
    std::os::unix::fs::symlink("../share/doc", root.join("bin/doc")).unwrap();
    std::fs::hard_link(root.join("bin/tool"), root.join("bin/tool-copy")).unwrap();
    if long_names {
        write(&format!("deep/{}/f.txt", "long-name-".repeat(14)), b"long");
        write("ünïcödé/名前.txt", b"unicode");
        std::os::unix::fs::symlink("x".repeat(120), root.join("long-link")).unwrap();
    }
}

#[test]
fn archives_from_real_writers_are_accepted_and_agree() {
    let mut failures = Vec::new();
    for (writer, format) in [
        ("tar", "gnu"),
        ("tar", "posix"),
        ("tar", "ustar"),
        ("python", "gnu"),
        ("python", "pax"),
        ("python", "ustar"),
    ] {
        let work = tempfile::tempdir().unwrap();
        let source = work.path().join("source");
        // ustar has no way to write long link targets or non-ASCII names portably.
        source_tree(&source, format != "ustar");
        let archive = work.path().join("package.tar");
        let status = match writer {
            "tar" => Command::new("tar")
                .arg(format!("--format={format}"))
                .arg("-cf")
                .arg(&archive)
                .arg("-C")
                .arg(&source)
                .arg(".")
                .status(),
            _ => Command::new("python3")
                .arg("-c")
                .arg(PYTHON)
                .arg(&source)
                .arg(&archive)
                .arg(format)
                .status(),
        }
        .unwrap_or_else(|error| panic!("{writer} must be installed: {error}"));
        assert!(status.success(), "{writer} {format} could not write");
        let bytes = std::fs::read(&archive).unwrap();
        match differential(&bytes) {
            Ok(true) => {}
            Ok(false) => failures.push(format!(
                "{writer} {format}: refused: {:?}",
                crate::validate(&bytes)
            )),
            Err(error) => failures.push(format!("{writer} {format}: {error}")),
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
