//! Validation of uploaded `.niso` archives (DESIGN.md §3, "Names and the archive").
//!
//! This module owns everything the registry checks about an archive's bytes: it detects the
//! compression (gzip, zstd or none, by magic bytes), bounds decompression, parses the tar stream
//! to its end, refuses every entry that mainstream unpackers (GNU tar, Python's `tarfile`, the
//! tar crate, bsdtar) could read differently, places each entry in a virtual tree of the archive
//! so that no path or link leads outside it, and extracts and parses the root `manifest.toml`.
//! It knows nothing about HTTP, storage or the database: the caller compares the returned
//! [`Manifest`] with the URL and maps [`ArchiveError::Invalid`] to 400 and
//! [`ArchiveError::TooLarge`] to 413.
//!
//! Validation is push-driven ([`ArchiveValidator::push`] per piece of the upload, then
//! [`ArchiveValidator::finish`]) and holds no thread: an upload that stalls costs its validator's
//! memory and nothing else. Memory per validator is bounded: the decoder state (gzip: 32 KiB
//! window; zstd: a window of at most 2^[`ArchiveLimits::max_zstd_window_log`] bytes, 8 MiB by
//! default), one header block, at most 1 MiB of extended headers for the entry being read, the
//! manifest (at most [`ArchiveLimits::max_manifest_bytes`]) and the tree (at most
//! [`ArchiveLimits::max_entries`] nodes and [`ArchiveLimits::max_name_bytes`] of names).
//!
//! Policy, beyond what DESIGN.md spells out. An archive is refused (400) when:
//! - a header is malformed: checksum other than the unsigned POSIX sum, numeric fields not
//!   strictly octal (base-256 included), no ustar/GNU magic (pre-POSIX tar), an old-GNU header
//!   with data where ustar keeps its name prefix (Python joins it to the name, GNU tar does not);
//! - an entry's type is anything but a regular file, directory, symlink or hard link (with the
//!   PAX `x` and GNU `L`/`K` headers that extend them): devices, fifos, GNU sparse files, PAX
//!   global headers (`g`, applied to all later entries by some readers only) and unknown types;
//! - its extended headers are ambiguous: two PAX headers, two GNU long names or two long link
//!   targets for one entry; a PAX `path`/`linkpath` together with a GNU long name/link; a PAX key
//!   twice in one header; a malformed PAX record; an empty PAX value; a PAX keyword other than
//!   path, linkpath, size, times, ids, owner names, comment and xattr/ACL records (`hdrcharset`
//!   and `GNU.sparse.*` included); a PAX `size` that differs from the header's; a long name with a
//!   NUL inside; a long link target on an entry that is not a link; an extended header with no
//!   entry after it;
//! - a path or link target is not UTF-8, contains NUL or `\` (a separator on Windows clients), is
//!   absolute (`/`, `\` or a drive letter such as `C:`), is longer than 4096 bytes, or (for
//!   paths) has a `..` component or ends with `/` without being a directory;
//! - a directory or link carries data (readers disagree about whether such data exists);
//! - an entry's path is taken already (including a directory created implicitly as a parent),
//!   or its parent is a symlink or a file: no unpacker ever writes through a link;
//! - a hard link does not name, by its exact path, an earlier regular file (not a link);
//! - a symlink's target, resolved through the final tree the way the kernel would (following
//!   symlinks, at most 40 deep), leaves the root at any step, so `a -> b/c` followed later by
//!   `b -> ..` is caught;
//! - anything but zeros follows the first zero block (GNU tar and Python stop there; lenient
//!   readers such as `tar --ignore-zeros` would read on).
//!
//! Gzip archives may consist of several members and zstd archives of several frames; all of
//! them are decoded and validated, the same way `gzip -d` and `zstd -d` treat them. The input
//! may end without the end-of-archive marker, or after its first block, as with GNU tar.
//!
//! Layers: `decompress` (format, bounds), `tar_header` (one block), `pax` (records),
//! `tar_stream` (entries), `tree` (paths and links), `manifest`.

mod decompress;
mod manifest;
mod pax;
mod tar_header;
mod tar_stream;
mod tree;

#[cfg(test)]
mod tests;

use std::io::{self, Read};

pub use manifest::Manifest;

const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;

/// Default of [`DecompressionBudget`]: zstd windows of all uploads together (32 windows of the
/// default 8 MiB).
pub const DEFAULT_DECOMPRESSION_BUDGET_BYTES: u64 = 256 * MIB;

/// Bytes read from a reader per push by [`validate_archive`].
const READ_CHUNK: usize = 64 * 1024;

/// Bounds applied while validating an archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchiveLimits {
    /// Largest accepted `manifest.toml`, in bytes (default 1 MiB).
    pub max_manifest_bytes: u64,
    /// Absolute cap on the size of the tar stream once decompressed (default 8 GiB). It applies to
    /// plain tar archives too, where it is simply their size.
    pub max_unpacked_bytes: u64,
    /// A compressed archive may expand to at most
    /// `ratio_allowance_bytes + max_expansion_ratio × compressed bytes` (default ratio 100).
    pub max_expansion_ratio: u64,
    /// Decompressed bytes always allowed regardless of the ratio (default 64 MiB), so that small,
    /// highly compressible archives pass.
    pub ratio_allowance_bytes: u64,
    /// Largest zstd window accepted, as a power of two (default 23: 8 MiB, enough for every
    /// zstd level 1-19 without `--long`). The window is decoder memory held for the whole
    /// upload; a frame asking for more is refused (400) before it is allocated.
    pub max_zstd_window_log: u32,
    /// Most entries in the archive's tree, counting parent directories that no entry names
    /// (default 100,000; 413 beyond).
    pub max_entries: u64,
    /// Most bytes of names kept in the tree: each path component once, plus symlink targets
    /// (default 16 MiB; 413 beyond).
    pub max_name_bytes: u64,
}

impl Default for ArchiveLimits {
    fn default() -> Self {
        ArchiveLimits {
            max_manifest_bytes: MIB,
            max_unpacked_bytes: 8 * GIB,
            max_expansion_ratio: 100,
            ratio_allowance_bytes: 64 * MIB,
            max_zstd_window_log: 23,
            max_entries: 100_000,
            max_name_bytes: 16 * MIB,
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ArchiveError {
    /// The archive is not acceptable: the message is safe to show to the client (HTTP 400).
    #[error("{0}")]
    Invalid(String),
    /// A size bound was exceeded (HTTP 413): decompression bomb, manifest or tree too large.
    #[error("{0}")]
    TooLarge(String),
    /// The server-wide [`DecompressionBudget`] is spent (HTTP 503 with Retry-After): the archive
    /// may be fine, the server is busy decompressing others.
    #[error("{0}")]
    Busy(String),
}

/// Decoder memory shared by every upload of the server: each zstd upload reserves its largest
/// possible window (2^[`ArchiveLimits::max_zstd_window_log`]) for its whole life, so however
/// many clients upload zstd archives at once, their windows together stay within the budget.
/// Gzip's 32 KiB window is small and fixed, and not counted. Cloning shares the budget.
#[derive(Debug, Clone)]
pub struct DecompressionBudget {
    /// One permit per KiB.
    kibibytes: std::sync::Arc<tokio::sync::Semaphore>,
}

impl DecompressionBudget {
    pub fn new(bytes: u64) -> DecompressionBudget {
        let kibibytes = usize::try_from(bytes / 1024)
            .unwrap_or(usize::MAX)
            .min(tokio::sync::Semaphore::MAX_PERMITS);
        DecompressionBudget {
            kibibytes: std::sync::Arc::new(tokio::sync::Semaphore::new(kibibytes)),
        }
    }

    /// Reserves `bytes` until the returned permit is dropped, or refuses at once: an upload
    /// never waits here (it would hold its connection and leases while it waits).
    fn reserve(&self, bytes: u64) -> Result<tokio::sync::OwnedSemaphorePermit, ArchiveError> {
        let kibibytes = u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX);
        self.kibibytes
            .clone()
            .try_acquire_many_owned(kibibytes)
            .map_err(|_| {
                ArchiveError::Busy(
                    "the server is decompressing too many zstd archives at once; retry shortly, \
                     or upload the archive uncompressed or as gzip"
                        .into(),
                )
            })
    }
}

/// What an accepted archive unpacks to.
#[derive(Debug)]
pub struct ValidatedArchive {
    pub manifest: Manifest,
    tree: tree::Tree,
}

impl ValidatedArchive {
    /// Everything the archive creates below the unpack directory, in archive order; parent
    /// directories that no entry names are listed as directories where they are first needed.
    pub fn entries(&self) -> Vec<ArchiveEntry> {
        self.tree.entries()
    }
}

/// One path the archive creates, relative to the unpack directory, components joined by `/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ArchiveEntry {
    pub path: String,
    pub kind: EntryKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EntryKind {
    File {
        size: u64,
    },
    Directory,
    /// The target exactly as it will be written to the symlink.
    Symlink {
        target: String,
    },
    /// Another name for the regular file at `target` (a path from the unpack directory).
    HardLink {
        target: String,
    },
}

/// Validates an archive pushed to it piece by piece, on the caller's thread.
///
/// Each [`push`](Self::push) does work proportional to the piece and to what it decompresses
/// to, which the expansion bounds cap. After an error, every later call returns that error.
pub struct ArchiveValidator {
    decompressor: Option<decompress::Decompressor>,
    failure: Option<ArchiveError>,
}

impl ArchiveValidator {
    /// A validator whose zstd window is not counted against any budget (tests, the CLI).
    pub fn new(limits: ArchiveLimits) -> ArchiveValidator {
        ArchiveValidator {
            decompressor: Some(decompress::Decompressor::new(limits, None)),
            failure: None,
        }
    }

    /// A validator that reserves its zstd window from the server's `budget`.
    pub fn with_budget(limits: ArchiveLimits, budget: &DecompressionBudget) -> ArchiveValidator {
        ArchiveValidator {
            decompressor: Some(decompress::Decompressor::new(limits, Some(budget.clone()))),
            failure: None,
        }
    }

    /// Validates the next piece of the archive; an error is final (stop reading the upload).
    pub fn push(&mut self, piece: &[u8]) -> Result<(), ArchiveError> {
        if let Some(failure) = &self.failure {
            return Err(failure.clone());
        }
        let Some(decompressor) = &mut self.decompressor else {
            unreachable!("the decompressor is only taken by finish, which consumes self")
        };
        decompressor.push(piece).inspect_err(|error| {
            self.failure = Some(error.clone());
            // Frees the decoder's window and the tree now, not when the upload ends.
            self.decompressor = None;
        })
    }

    /// The end of the upload: the archive is accepted only if it ended cleanly, every link
    /// resolves inside it and it has a root manifest.
    pub fn finish(mut self) -> Result<ValidatedArchive, ArchiveError> {
        if let Some(failure) = self.failure {
            return Err(failure);
        }
        let decompressor = self
            .decompressor
            .take()
            .expect("present until finish or a failure");
        let (manifest, tree) = decompressor.finish()?;
        Ok(ValidatedArchive { manifest, tree })
    }
}

/// Validates a whole archive read from `reader`, synchronously (tests and tools; the upload
/// path pushes pieces to an [`ArchiveValidator`]).
///
/// Errors returned by `reader` become [`ArchiveError::Invalid`] starting with
/// "upload interrupted"; interrupted reads are retried.
pub fn validate_archive<R: Read>(
    mut reader: R,
    limits: &ArchiveLimits,
) -> Result<ValidatedArchive, ArchiveError> {
    let mut validator = ArchiveValidator::new(*limits);
    let mut buffer = vec![0u8; READ_CHUNK];
    loop {
        let len = match reader.read(&mut buffer) {
            Ok(0) => return validator.finish(),
            Ok(len) => len,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => {
                return Err(ArchiveError::Invalid(format!(
                    "upload interrupted: {error}"
                )));
            }
        };
        validator.push(&buffer[..len])?;
    }
}
