//! Differential test of the archive validator (issue 11): for every archive it accepts, GNU tar
//! and Python's `tarfile` (with `filter='fully_trusted'`, the most trusting consumer) must
//! unpack exactly the entries it reports, and nothing outside the root, with no symlink
//! resolving outside it. Archives come from a corpus of hand-crafted headers (`corpus`), from
//! real writers (`writers`), from a grammar of entries (`properties`, proptest) and from random
//! mutations of the corpus (`fuzz`). Missing `tar` or `python3` fails the test.
//!
//! Replay a run with `NISO_TEST_SEED=<seed printed by the test>`.

mod corpus;
mod craft;
mod fuzz;
mod properties;
mod readers;
mod writers;

use std::panic::{AssertUnwindSafe, catch_unwind};

use niso_registry::archive::{ArchiveLimits, ValidatedArchive, validate_archive};

use readers::{Reader, hard_links_share_inodes, predicted, unpack};

#[derive(Debug)]
pub enum Outcome {
    Accepted(Box<ValidatedArchive>),
    Rejected(String),
}

/// Runs the validator, catching panics (a panic is a failure, reported with the input).
pub fn validate(bytes: &[u8]) -> Result<Outcome, String> {
    match catch_unwind(AssertUnwindSafe(|| {
        validate_archive(bytes, &ArchiveLimits::default())
    })) {
        Ok(Ok(archive)) => Ok(Outcome::Accepted(Box::new(archive))),
        Ok(Err(error)) => Ok(Outcome::Rejected(error.to_string())),
        Err(_) => Err("the validator panicked".into()),
    }
}

/// Validates `bytes`; when accepted, unpacks them with both readers and compares. Returns
/// whether the archive was accepted.
pub fn differential(bytes: &[u8]) -> Result<bool, String> {
    let archive = match validate(bytes)? {
        Outcome::Rejected(_) => return Ok(false),
        Outcome::Accepted(archive) => archive,
    };
    let expected = predicted(&archive);
    for reader in [Reader::GnuTar, Reader::Python] {
        let listing = unpack(reader, bytes)?;
        if listing != expected {
            let missing: Vec<_> = expected.difference(&listing).collect();
            let extra: Vec<_> = listing.difference(&expected).collect();
            return Err(format!(
                "{reader:?} unpacked something else than the validator reported: \
                 missing {missing:?}, extra {extra:?}"
            ));
        }
    }
    hard_links_share_inodes(&archive, bytes)?;
    Ok(true)
}

/// The seed of a randomized test: `NISO_TEST_SEED` when set, else from the clock; printed.
pub fn seed(test: &str) -> u64 {
    let seed = match std::env::var("NISO_TEST_SEED") {
        Ok(text) => text.parse().expect("NISO_TEST_SEED is a u64"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_nanos() as u64,
    };
    println!("{test}: NISO_TEST_SEED={seed}");
    seed
}

/// Writes a failing input where it can be replayed from, and returns its path for the message.
pub fn keep_failing_input(name: &str, bytes: &[u8]) -> String {
    let path = std::env::temp_dir().join(format!("niso-archive-{name}.tar"));
    match std::fs::write(&path, bytes) {
        Ok(()) => path.display().to_string(),
        Err(error) => format!("(could not keep the input: {error})"),
    }
}
