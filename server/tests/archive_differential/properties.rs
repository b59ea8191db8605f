//! Property-based archives from a grammar of entries: files, directories, symlinks and hard
//! links with names from a small alphabet that includes `..`, `.`, empty components and long
//! components, each written plainly, with a GNU long name, a PAX path, both, a duplicated PAX
//! key, a ustar prefix or a mismatched PAX size; plus global headers and odd typeflags. Whatever
//! the validator accepts must unpack as it says with GNU tar and Python.

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};

use crate::craft::{Magic, Raw, Tar};
use crate::{differential, keep_failing_input, seed};

const CASES: u32 = 300;

const LONG: &str = "a-component-long-enough-that-the-name-needs-a-gnu-long-name-or-a-pax-path-record-to-be-stored-whole";

#[derive(Debug, Clone, Copy)]
enum Encoding {
    Plain,
    GnuLong,
    PaxPath,
    GnuLongAndPaxPath,
    PaxPathTwice,
    UstarPrefix,
    PaxSizeMismatch,
}

#[derive(Debug, Clone)]
enum Op {
    File(String, usize, Encoding),
    Directory(String, Encoding),
    Symlink(String, String, Encoding),
    HardLink(String, String, Encoding),
    GlobalHeader(String),
    OddType(u8, String),
}

fn component() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        6 => Just("a"),
        6 => Just("b"),
        4 => Just("c"),
        2 => Just(".."),
        2 => Just("."),
        1 => Just(""),
        1 => Just(LONG),
    ]
}

fn path() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(component(), 1..4),
        prop::bool::weighted(0.04),
        prop::bool::weighted(0.08),
    )
        .prop_map(|(components, absolute, trailing)| {
            let mut path = components.join("/");
            if absolute {
                path.insert(0, '/');
            }
            if trailing {
                path.push('/');
            }
            path
        })
}

fn encoding() -> impl Strategy<Value = Encoding> {
    prop_oneof![
        12 => Just(Encoding::Plain),
        2 => Just(Encoding::GnuLong),
        2 => Just(Encoding::PaxPath),
        1 => Just(Encoding::GnuLongAndPaxPath),
        1 => Just(Encoding::PaxPathTwice),
        1 => Just(Encoding::UstarPrefix),
        1 => Just(Encoding::PaxSizeMismatch),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (path(), 0usize..1100, encoding()).prop_map(|(p, size, e)| Op::File(p, size, e)),
        3 => (path(), encoding()).prop_map(|(p, e)| Op::Directory(p, e)),
        4 => (path(), path(), encoding()).prop_map(|(p, t, e)| Op::Symlink(p, t, e)),
        2 => (path(), path(), encoding()).prop_map(|(p, t, e)| Op::HardLink(p, t, e)),
        1 => path().prop_map(Op::GlobalHeader),
        1 => (prop::sample::select(&b"01234567SVXgDKLMN"[..]), path())
            .prop_map(|(typeflag, p)| Op::OddType(typeflag, p)),
    ]
}

/// Entries whose paths are plain names and whose encodings are unambiguous, so that link
/// targets (which may still climb with `..`) decide whether the archive is accepted.
fn tame_op() -> impl Strategy<Value = Op> {
    let name = prop::collection::vec(
        prop_oneof![4 => Just("a"), 4 => Just("b"), 3 => Just("c"), 1 => Just(LONG)],
        1..4,
    )
    .prop_map(|components| components.join("/"));
    let target = prop::collection::vec(
        prop_oneof![3 => Just("a"), 3 => Just("b"), 3 => Just(".."), 1 => Just("."), 1 => Just("c")],
        1..5,
    )
    .prop_map(|components| components.join("/"));
    let encoding = prop_oneof![
        6 => Just(Encoding::Plain),
        1 => Just(Encoding::GnuLong),
        1 => Just(Encoding::PaxPath),
        1 => Just(Encoding::UstarPrefix),
    ];
    prop_oneof![
        5 => (name.clone(), 0usize..1100, encoding.clone())
            .prop_map(|(p, size, e)| Op::File(p, size, e)),
        2 => (name.clone(), encoding.clone()).prop_map(|(p, e)| Op::Directory(p, e)),
        4 => (name.clone(), target, encoding.clone()).prop_map(|(p, t, e)| Op::Symlink(p, t, e)),
        2 => (name.clone(), name, encoding).prop_map(|(p, t, e)| Op::HardLink(p, t, e)),
    ]
}

fn archive_ops() -> impl Strategy<Value = Vec<Op>> {
    prop_oneof![
        2 => prop::collection::vec(op(), 1..6),
        3 => prop::collection::vec(tame_op(), 1..8),
    ]
}

/// Writes one entry with its name (and link target) encoded as asked.
fn write(tar: &mut Tar, typeflag: u8, name: &str, link: &str, data: &[u8], encoding: Encoding) {
    let mut raw = Raw::new(typeflag, name.as_bytes());
    raw.link = link.as_bytes().to_vec();
    raw.data = data.to_vec();
    let is_link = matches!(typeflag, b'1' | b'2');
    match encoding {
        Encoding::Plain => {}
        Encoding::GnuLong => {
            tar.long(b'L', name.as_bytes());
            if is_link {
                tar.long(b'K', link.as_bytes());
            }
            raw.name = b"placeholder".to_vec();
            raw.link.clear();
        }
        Encoding::PaxPath => {
            let mut records: Vec<(&str, &[u8])> = vec![("path", name.as_bytes())];
            if is_link {
                records.push(("linkpath", link.as_bytes()));
            }
            tar.pax(b'x', &records);
            raw.name = b"placeholder".to_vec();
        }
        Encoding::GnuLongAndPaxPath => {
            tar.pax(b'x', &[("path", name.as_bytes())]);
            tar.long(b'L', b"other-name");
        }
        Encoding::PaxPathTwice => {
            tar.pax(b'x', &[("path", b"first-name"), ("path", name.as_bytes())]);
        }
        Encoding::UstarPrefix => {
            raw.magic = Magic::Ustar;
            raw.prefix = b"prefix".to_vec();
        }
        Encoding::PaxSizeMismatch => {
            let size = (data.len() + 512).to_string();
            tar.pax(b'x', &[("size", size.as_bytes())]);
        }
    }
    tar.raw(&raw);
}

fn build(ops: &[Op]) -> Vec<u8> {
    let mut tar = Tar::package();
    for op in ops {
        match op {
            Op::File(name, size, encoding) => {
                let data: Vec<u8> = (0..*size).map(|index| (index % 251) as u8).collect();
                write(&mut tar, b'0', name, "", &data, *encoding);
            }
            Op::Directory(name, encoding) => write(&mut tar, b'5', name, "", b"", *encoding),
            Op::Symlink(name, target, encoding) => {
                write(&mut tar, b'2', name, target, b"", *encoding)
            }
            Op::HardLink(name, target, encoding) => {
                write(&mut tar, b'1', name, target, b"", *encoding)
            }
            Op::GlobalHeader(name) => {
                tar.pax(b'g', &[("path", name.as_bytes())]);
            }
            Op::OddType(typeflag, name) => {
                tar.raw(&Raw::new(*typeflag, name.as_bytes()));
            }
        }
    }
    tar.finish()
}

#[test]
fn generated_archives_unpack_as_validated() {
    let seed = seed("generated_archives_unpack_as_validated");
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = Config {
        cases: CASES,
        failure_persistence: None,
        max_shrink_iters: 200,
        ..Config::default()
    };
    let mut runner = TestRunner::new_with_rng(
        config,
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    );
    let accepted = std::cell::Cell::new(0u32);
    let result = runner.run(&archive_ops(), |ops| {
        let bytes = build(&ops);
        match differential(&bytes) {
            Ok(true) => {
                accepted.set(accepted.get() + 1);
                Ok(())
            }
            Ok(false) => Ok(()),
            Err(error) => Err(TestCaseError::fail(format!(
                "{error}\n(kept at {})",
                keep_failing_input("generated", &bytes)
            ))),
        }
    });
    if let Err(error) = result {
        panic!("seed {seed}: {error}");
    }
    // The differential part must not be vacuous: a fair share of the cases is accepted.
    println!("{} of {CASES} generated archives accepted", accepted.get());
    assert!(
        accepted.get() >= CASES / 10,
        "only {} of {CASES} generated archives were accepted",
        accepted.get()
    );
}
