//! Validation of uploaded `.niso` archives (DESIGN.md §3, "Names and the archive").
//!
//! This module owns everything the registry checks about an archive's bytes: it detects the
//! compression (gzip, zstd or none, by magic bytes), bounds decompression, walks the tar stream to
//! its end, rejects unsafe paths and links, and extracts and parses the root `manifest.toml`. It
//! knows nothing about HTTP, storage or the database: the caller compares the returned [`Manifest`]
//! with the URL and maps [`ArchiveError::Invalid`] to 400 and [`ArchiveError::TooLarge`] to 413.
//!
//! Validation happens while the upload streams through ([`spawn_validator`] / [`ArchiveFeed`]), in
//! bounded memory: entry data is read and discarded, only the manifest is kept (up to
//! [`ArchiveLimits::max_manifest_bytes`]). What stays in memory per upload is the feed channel
//! (a few pieces), the decoder state (gzip: 32 KiB window; zstd: a window of at most 128 MiB, zstd's
//! own default cap, which frames made by `zstd --long` still fit) and at most 1 MiB of tar
//! metadata (PAX records and GNU long names, which the tar crate keeps whole).
//!
//! Policy, beyond what DESIGN.md spells out:
//! - Accepted entry types are regular files, directories, symlinks, hard links and PAX global
//!   headers. Device nodes and fifos are rejected (a package has no use for them and unpacking
//!   them needs privileges), as are GNU sparse files (their holes would make the walker produce
//!   unbounded zeros without consuming input) and any type the tar crate does not know.
//! - Paths are split on `/` and on `\` (a separator on Windows clients), and a leading `/`, `\` or
//!   drive letter (`C:`) counts as absolute.
//! - Link targets are checked lexically: a symlink's target is resolved from the link's directory,
//!   a hard link's from the archive root (that is how tar names hard link targets). Other links
//!   met on the way are not followed, so unpacking still calls for an extractor that refuses to
//!   write through symlinks (the tar crate's `unpack` does). Links, like
//!   directories, must not carry data: readers disagree about whether such data exists, and a
//!   disagreement between the validator and an unpacker is how a hidden entry would slip through.
//! - After the end-of-archive marker only zero bytes may follow. Non-zero data there could be read
//!   as more entries by lenient unpackers (`tar --ignore-zeros`), without having been validated.
//! - Gzip archives may consist of several members and zstd archives of several frames; all of them
//!   are decoded and validated, the same way `gzip -d` and `zstd -d` treat them.

use std::cell::{Cell, RefCell};
use std::io::{self, BufReader, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::{Buf, Bytes};
use flate2::read::MultiGzDecoder;
use serde::Deserialize;
use tar::EntryType;
use tokio::sync::mpsc;

const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;

/// How much the tar reader may consume to produce one entry (its header blocks, the padding of the
/// previous entry, PAX records and GNU long names). The tar crate buffers the records whole, so
/// without this budget a single long-name entry could fill memory.
const MAX_METADATA_BYTES: u64 = MIB;

/// zstd's default decoder limit (128 MiB window), stated here because it bounds our memory.
const ZSTD_WINDOW_LOG_MAX: u32 = 27;

/// Pieces the feed may have in flight before `send` waits for the validator.
const FEED_CAPACITY: usize = 2;

const READ_CHUNK: usize = 64 * 1024;

/// Size bounds applied while validating an archive.
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
}

impl Default for ArchiveLimits {
    fn default() -> Self {
        ArchiveLimits {
            max_manifest_bytes: MIB,
            max_unpacked_bytes: 8 * GIB,
            max_expansion_ratio: 100,
            ratio_allowance_bytes: 64 * MIB,
        }
    }
}

/// The `[package]` table of an archive's `manifest.toml`.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    pub description: Option<String>,
    pub license: Option<String>,
    pub arch: Option<String>,
    /// the manifest.toml text exactly as shipped
    pub raw: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The archive is not acceptable: the message is safe to show to the client (HTTP 400).
    #[error("{0}")]
    Invalid(String),
    /// A size bound was exceeded (HTTP 413): decompression bomb, manifest too large.
    #[error("{0}")]
    TooLarge(String),
}

/// Validates a whole archive read from `reader` (synchronous; the caller runs it on a blocking
/// thread).
///
/// Reads `reader` to its end when the archive is accepted, and stops at the first problem
/// otherwise. Errors returned by `reader` itself become [`ArchiveError::Invalid`] starting with
/// "upload interrupted".
pub fn validate_archive<R: io::Read>(
    reader: R,
    limits: &ArchiveLimits,
) -> Result<Manifest, ArchiveError> {
    let shared = Shared::default();
    let outcome = validate(reader, limits, &shared);
    // A reader layer below tar saw the root cause (interrupted upload, corrupt compression, a
    // bound exceeded); what tar, flate2 or zstd made of the io::Error it returned is secondary.
    match shared.verdict.into_inner() {
        Some(verdict) => Err(verdict),
        None => outcome,
    }
}

/// Streaming feed: spawns validation on a blocking thread (tokio::task::spawn_blocking) reading
/// from a bounded channel.
///
/// Must be called from within a Tokio runtime.
pub fn spawn_validator(
    limits: ArchiveLimits,
) -> (
    ArchiveFeed,
    tokio::task::JoinHandle<Result<Manifest, ArchiveError>>,
) {
    let (sender, receiver) = mpsc::channel(FEED_CAPACITY);
    let finished = Arc::new(AtomicBool::new(false));
    let reader = FeedReader {
        receiver,
        piece: Bytes::new(),
        finished: Arc::clone(&finished),
    };
    let handle = tokio::task::spawn_blocking(move || validate_archive(reader, &limits));
    (ArchiveFeed { sender, finished }, handle)
}

/// The sending half of [`spawn_validator`]: hands the upload to the validator piece by piece.
#[derive(Debug)]
pub struct ArchiveFeed {
    sender: mpsc::Sender<Bytes>,
    finished: Arc<AtomicBool>,
}

impl ArchiveFeed {
    /// Hands the next piece of the archive to the validator. Returns false when the validator has
    /// already stopped (it failed early); the caller then stops feeding and awaits the JoinHandle
    /// to get the error. Applies backpressure (bounded channel of a few pieces) and never blocks
    /// forever.
    pub async fn send(&mut self, piece: Bytes) -> bool {
        if piece.is_empty() {
            return !self.sender.is_closed();
        }
        // The validator only ever waits on this channel, and drops its end when it stops, so the
        // wait for room always ends.
        self.sender.send(piece).await.is_ok()
    }

    /// Marks the end of the archive (dropping the feed without finish() makes the validator fail
    /// with Invalid("upload interrupted: …"), never succeed).
    pub fn finish(self) {
        // Release pairs with the Acquire in FeedReader: the validator sees the channel closed only
        // after this store, so it can tell a finished upload from an abandoned one.
        self.finished.store(true, Ordering::Release);
    }
}

/// The validator's end of the feed channel, as a blocking reader.
struct FeedReader {
    receiver: mpsc::Receiver<Bytes>,
    piece: Bytes,
    finished: Arc<AtomicBool>,
}

impl Read for FeedReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while self.piece.is_empty() {
            match self.receiver.blocking_recv() {
                Some(piece) => self.piece = piece,
                None if self.finished.load(Ordering::Acquire) => return Ok(0),
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the sender stopped before the end of the archive",
                    ));
                }
            }
        }
        let len = buf.len().min(self.piece.len());
        buf[..len].copy_from_slice(&self.piece[..len]);
        self.piece.advance(len);
        Ok(len)
    }
}

/// State shared by the reader layers and the walker, all on one thread.
#[derive(Default)]
struct Shared {
    /// Bytes taken from the caller's reader.
    compressed: Cell<u64>,
    /// While the tar crate reads metadata: how many more bytes it may consume.
    metadata_budget: Cell<Option<u64>>,
    /// The first failure detected below tar. The io::Error carrying it travels through flate2,
    /// zstd and tar, which may rewrap or replace it, so the original is kept here.
    verdict: RefCell<Option<ArchiveError>>,
}

impl Shared {
    fn fail(&self, error: ArchiveError) -> io::Error {
        let message = error.to_string();
        self.verdict.borrow_mut().get_or_insert(error);
        io::Error::other(message)
    }
}

/// The caller's reader: counts the compressed bytes and records its failures.
struct Source<'s, R> {
    inner: R,
    shared: &'s Shared,
}

impl<R: Read> Read for Source<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.inner.read(buf) {
                Ok(len) => {
                    let total = self.shared.compressed.get() + len as u64;
                    self.shared.compressed.set(total);
                    return Ok(len);
                }
                // tar's block reads give up on Interrupted instead of retrying, and a signal must
                // not fail an upload.
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    return Err(self.shared.fail(ArchiveError::Invalid(format!(
                        "upload interrupted: {error}"
                    ))));
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Plain,
    Gzip,
    Zstd,
}

impl Format {
    fn detect(magic: &[u8]) -> Format {
        if magic.starts_with(&[0x1f, 0x8b]) {
            Format::Gzip
        } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Format::Zstd
        } else {
            Format::Plain
        }
    }
}

/// The tar stream, decompressed if need be.
enum Decoded<R: Read> {
    Plain(R),
    Gzip(MultiGzDecoder<R>),
    Zstd(zstd::stream::read::Decoder<'static, BufReader<R>>),
}

impl<R: Read> Read for Decoded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoded::Plain(reader) => reader.read(buf),
            Decoded::Gzip(reader) => reader.read(buf),
            Decoded::Zstd(reader) => reader.read(buf),
        }
    }
}

/// What tar reads: enforces the decompression bounds and the metadata budget.
struct Unpacked<'s, R: Read> {
    inner: Decoded<R>,
    format: Format,
    limits: ArchiveLimits,
    unpacked: u64,
    shared: &'s Shared,
}

impl<R: Read> Unpacked<'_, R> {
    fn check_size(&self) -> io::Result<()> {
        let limits = &self.limits;
        if self.format == Format::Plain {
            if self.unpacked > limits.max_unpacked_bytes {
                return Err(self.shared.fail(ArchiveError::TooLarge(format!(
                    "archive is larger than the limit of {} bytes",
                    limits.max_unpacked_bytes
                ))));
            }
            return Ok(());
        }
        let allowed = limits.ratio_allowance_bytes.saturating_add(
            limits
                .max_expansion_ratio
                .saturating_mul(self.shared.compressed.get()),
        );
        if self.unpacked > limits.max_unpacked_bytes || self.unpacked > allowed {
            return Err(self.shared.fail(ArchiveError::TooLarge(
                "archive expands too much when decompressed".to_owned(),
            )));
        }
        Ok(())
    }
}

impl<R: Read> Read for Unpacked<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let budget = self.shared.metadata_budget.get();
        let buf = match budget {
            Some(0) if !buf.is_empty() => {
                return Err(self.shared.fail(ArchiveError::TooLarge(format!(
                    "an entry's metadata (headers, PAX records, long names) exceeds {MAX_METADATA_BYTES} bytes"
                ))));
            }
            Some(left) => {
                let len = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                &mut buf[..len]
            }
            None => buf,
        };
        let len = match self.inner.read(buf) {
            Ok(len) => len,
            Err(error) => {
                // For plain tar the error comes from the caller's reader, already recorded by
                // Source; recording keeps the first verdict, so this only names decoder failures.
                let what = match self.format {
                    Format::Plain => "tar",
                    Format::Gzip => "gzip",
                    Format::Zstd => "zstd",
                };
                return Err(self.shared.fail(ArchiveError::Invalid(format!(
                    "{what} stream is corrupt or truncated: {error}"
                ))));
            }
        };
        if let Some(left) = budget {
            self.shared.metadata_budget.set(Some(left - len as u64));
        }
        self.unpacked += len as u64;
        self.check_size()?;
        Ok(len)
    }
}

fn validate<R: Read>(
    reader: R,
    limits: &ArchiveLimits,
    shared: &Shared,
) -> Result<Manifest, ArchiveError> {
    let mut source = Source {
        inner: reader,
        shared,
    };
    let mut magic = [0u8; 4];
    let magic_len = read_up_to(&mut source, &mut magic).map_err(not_tar)?;
    let format = Format::detect(&magic[..magic_len]);
    let stream = Read::chain(&magic[..magic_len], source);
    let inner = match format {
        Format::Plain => Decoded::Plain(stream),
        Format::Gzip => Decoded::Gzip(MultiGzDecoder::new(stream)),
        Format::Zstd => {
            // Concatenated frames are all decoded until the input ends (the default), like `zstd -d`.
            let decoder = zstd::stream::read::Decoder::new(stream)
                .and_then(|mut decoder| {
                    decoder.window_log_max(ZSTD_WINDOW_LOG_MAX)?;
                    Ok(decoder)
                })
                .map_err(|error| {
                    ArchiveError::Invalid(format!("cannot start the zstd decoder: {error}"))
                })?;
            Decoded::Zstd(decoder)
        }
    };
    walk(
        Unpacked {
            inner,
            format,
            limits: *limits,
            unpacked: 0,
            shared,
        },
        limits,
        shared,
    )
}

/// Reads until `buf` is full or the input ends; returns how much was read.
fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..])? {
            0 => break,
            len => filled += len,
        }
    }
    Ok(filled)
}

/// Walks every entry of the tar stream, then checks that only zeros follow the end marker.
fn walk<R: Read>(
    input: Unpacked<'_, R>,
    limits: &ArchiveLimits,
    shared: &Shared,
) -> Result<Manifest, ArchiveError> {
    let mut archive = tar::Archive::new(input);
    let mut manifest = None;
    let mut entries = archive.entries().map_err(not_tar)?;
    loop {
        shared.metadata_budget.set(Some(MAX_METADATA_BYTES));
        let next = entries.next();
        shared.metadata_budget.set(None);
        // `None` is the end-of-archive marker, or the input ending cleanly between two entries;
        // the tar crate reports input ending inside a header (or inside the padding that follows
        // an entry's data) as an error.
        let Some(entry) = next else { break };
        let mut entry = entry.map_err(not_tar)?;
        check_entry(&mut entry, limits, &mut manifest)?;
    }
    expect_only_zeros(archive.into_inner())?;
    manifest.ok_or_else(|| invalid("archive has no manifest.toml at its root"))
}

fn check_entry<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    limits: &ArchiveLimits,
    manifest: &mut Option<Manifest>,
) -> Result<(), ArchiveError> {
    let kind = entry.header().entry_type();
    // The effective path: GNU long name or PAX `path` when present, as unpackers see it.
    let path = entry.path_bytes().into_owned();
    let shown = String::from_utf8_lossy(&path).into_owned();
    match kind {
        EntryType::Regular
        | EntryType::Continuous
        | EntryType::Directory
        | EntryType::Symlink
        | EntryType::Link => {}
        // Its records set defaults for the following entries; its own name is meaningless.
        EntryType::XGlobalHeader => return skip_data(entry, &shown),
        EntryType::Char | EntryType::Block | EntryType::Fifo => {
            return Err(invalid(format!(
                "entry `{shown}` is a device or fifo; archives may hold only files, directories and links"
            )));
        }
        EntryType::GNUSparse => {
            return Err(invalid(format!(
                "entry `{shown}` is a sparse file, which is not supported"
            )));
        }
        other => {
            return Err(invalid(format!(
                "entry `{shown}` has an unsupported type `{}`",
                other.as_byte().escape_ascii()
            )));
        }
    }

    let components =
        path_components(&path).map_err(|why| invalid(format!("entry `{shown}` {why}")))?;
    if components.is_empty() && kind != EntryType::Directory {
        return Err(invalid(format!("entry `{shown}` has an empty path")));
    }
    if matches!(
        kind,
        EntryType::Directory | EntryType::Symlink | EntryType::Link
    ) && entry.size() != 0
    {
        return Err(invalid(format!(
            "entry `{shown}` is a directory or link but carries data"
        )));
    }
    if matches!(kind, EntryType::Symlink | EntryType::Link) {
        let target = entry
            .link_name_bytes()
            .map(|target| target.into_owned())
            .unwrap_or_default();
        // A symlink is resolved from its own directory, a hard link from the archive root.
        let depth = if kind == EntryType::Symlink {
            components.len() - 1
        } else {
            0
        };
        check_link_target(&target, depth).map_err(|why| {
            invalid(format!(
                "link `{shown}` -> `{}` {why}",
                String::from_utf8_lossy(&target)
            ))
        })?;
    }

    if components == [b"manifest.toml"] {
        if !matches!(kind, EntryType::Regular | EntryType::Continuous) {
            return Err(invalid("manifest.toml must be a regular file"));
        }
        if manifest.is_some() {
            return Err(invalid(
                "archive has more than one manifest.toml at its root",
            ));
        }
        *manifest = Some(read_manifest(entry, limits)?);
        return Ok(());
    }
    skip_data(entry, &shown)
}

/// Splits an entry path into its meaningful components (dropping `.` and empty ones), refusing
/// anything that would land outside the unpack directory on some platform.
fn path_components(path: &[u8]) -> Result<Vec<&[u8]>, &'static str> {
    if is_absolute(path) {
        return Err("has an absolute path");
    }
    let mut components = Vec::new();
    for component in split_path(path) {
        match component {
            b"" | b"." => {}
            b".." => return Err("has a `..` component"),
            normal => components.push(normal),
        }
    }
    Ok(components)
}

/// Checks that a link target, resolved lexically from `depth` directories below the archive
/// root, neither is absolute nor climbs above the root at any point.
fn check_link_target(target: &[u8], mut depth: usize) -> Result<(), &'static str> {
    if target.is_empty() {
        return Err("has an empty target");
    }
    if is_absolute(target) {
        return Err("points to an absolute path");
    }
    for component in split_path(target) {
        match component {
            b"" | b"." => {}
            b".." => {
                depth = depth.checked_sub(1).ok_or("points outside the archive")?;
            }
            _ => depth += 1,
        }
    }
    Ok(())
}

/// `\` separates components on Windows, so it is treated as a separator wherever it appears.
fn split_path(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    path.split(|&byte| byte == b'/' || byte == b'\\')
}

fn is_absolute(path: &[u8]) -> bool {
    matches!(path, [b'/' | b'\\', ..])
        || matches!(path, [drive, b':', ..] if drive.is_ascii_alphabetic())
}

fn read_manifest<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    limits: &ArchiveLimits,
) -> Result<Manifest, ArchiveError> {
    let size = entry.size();
    let max = limits.max_manifest_bytes;
    // Refuse on the header's word, before reading anything into memory.
    if size > max {
        return Err(too_large_manifest(size, max));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    entry
        .take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(not_tar)?;
    let read = bytes.len() as u64;
    // tar ends the entry at `size`, so this cannot trigger today; the memory bound must not
    // depend on that.
    if read > max {
        return Err(too_large_manifest(read, max));
    }
    if read < size {
        return Err(truncated("manifest.toml"));
    }
    let raw = String::from_utf8(bytes).map_err(|_| invalid("manifest.toml is not valid UTF-8"))?;
    parse_manifest(raw)
}

#[derive(Deserialize)]
struct ManifestDocument {
    package: PackageTable,
}

#[derive(Deserialize)]
struct PackageTable {
    name: String,
    version: String,
    description: Option<String>,
    license: Option<String>,
    arch: Option<String>,
}

fn parse_manifest(raw: String) -> Result<Manifest, ArchiveError> {
    let document: ManifestDocument = toml::from_str(&raw).map_err(|error| {
        invalid(format!(
            "manifest.toml is invalid: {}",
            error.to_string().trim_end()
        ))
    })?;
    let package = document.package;
    Ok(Manifest {
        name: package.name,
        version: package.version,
        description: package.description,
        license: package.license,
        arch: package.arch,
        raw,
    })
}

/// Reads an entry's data through to its end, discarding it.
fn skip_data<R: Read>(entry: &mut tar::Entry<'_, R>, shown: &str) -> Result<(), ArchiveError> {
    let expected = entry.size();
    // The tar crate ends an entry early, without an error, when the input runs out inside its
    // data; counting is how a cut inside the data is noticed.
    let read = io::copy(entry, &mut io::sink()).map_err(not_tar)?;
    if read < expected {
        return Err(truncated(shown));
    }
    Ok(())
}

/// Reads what follows the end-of-archive marker to the end of the input (so that a feed is never
/// left waiting), accepting only the zero padding tar writers add.
fn expect_only_zeros(mut rest: impl Read) -> Result<(), ArchiveError> {
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let len = match rest.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(len) => len,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(not_tar(error)),
        };
        if buf[..len].iter().any(|&byte| byte != 0) {
            return Err(invalid("archive has data after its end-of-archive marker"));
        }
    }
}

fn invalid(message: impl Into<String>) -> ArchiveError {
    ArchiveError::Invalid(message.into())
}

fn not_tar(error: io::Error) -> ArchiveError {
    invalid(format!("not a valid tar archive: {error}"))
}

fn truncated(shown: &str) -> ArchiveError {
    invalid(format!(
        "archive is truncated: the data of entry `{shown}` is cut short"
    ))
}

fn too_large_manifest(size: u64, max: u64) -> ArchiveError {
    ArchiveError::TooLarge(format!(
        "manifest.toml is {size} bytes, over the limit of {max} bytes"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::{Duration, Instant};

    use flate2::Compression;
    use flate2::write::GzEncoder;
    use tar::{Builder, Header};

    const MANIFEST: &str = r#"# shipped as is
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

    fn expected_manifest() -> Manifest {
        Manifest {
            name: "@hakob/my-app".into(),
            version: "1.1.0".into(),
            description: Some("A test app".into()),
            license: Some("MIT".into()),
            arch: Some("x86_64-linux".into()),
            raw: MANIFEST.into(),
        }
    }

    /// xorshift64*: incompressible test payloads without another dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn bytes(&mut self, len: usize) -> Vec<u8> {
            (0..len).map(|_| self.next() as u8).collect()
        }
    }

    fn random(len: usize) -> Vec<u8> {
        Rng(0x9e37_79b9_7f4a_7c15 ^ len as u64).bytes(len)
    }

    fn add_file(builder: &mut Builder<Vec<u8>>, path: &str, data: &[u8]) {
        let mut header = Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        builder.append_data(&mut header, path, data).unwrap();
    }

    fn add_dir(builder: &mut Builder<Vec<u8>>, path: &str) {
        let mut header = Header::new_gnu();
        header.set_entry_type(EntryType::Directory);
        header.set_size(0);
        header.set_mode(0o755);
        builder.append_data(&mut header, path, io::empty()).unwrap();
    }

    /// Appends an entry whose name and link target go into the header verbatim, bypassing the tar
    /// crate's refusal to write unsafe paths.
    fn add_raw(
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

    /// A PAX record: "<length> <key>=<value>\n", the length counting itself.
    fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
        let body = key.len() + value.len() + 3;
        let mut len = body + 1;
        while body + len.to_string().len() != len {
            len += 1;
        }
        let mut record = format!("{len} {key}=").into_bytes();
        record.extend_from_slice(value);
        record.push(b'\n');
        record
    }

    fn add_pax(builder: &mut Builder<Vec<u8>>, records: &[u8]) {
        let mut header = Header::new_ustar();
        header.set_path("PaxHeaders/entry").unwrap();
        header.set_entry_type(EntryType::XHeader);
        header.set_size(records.len() as u64);
        header.set_cksum();
        builder.append(&header, records).unwrap();
    }

    fn add_long_name(builder: &mut Builder<Vec<u8>>, name: &[u8]) {
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

    fn tar_with(build: impl FnOnce(&mut Builder<Vec<u8>>)) -> Vec<u8> {
        let mut builder = Builder::new(Vec::new());
        build(&mut builder);
        builder.into_inner().unwrap()
    }

    /// A well-formed archive: the manifest, then `build`'s entries.
    fn package_with(build: impl FnOnce(&mut Builder<Vec<u8>>)) -> Vec<u8> {
        tar_with(|builder| {
            add_file(builder, "manifest.toml", MANIFEST.as_bytes());
            build(builder);
        })
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    fn zstd(data: &[u8]) -> Vec<u8> {
        zstd::encode_all(data, 3).unwrap()
    }

    fn check(bytes: &[u8]) -> Result<Manifest, ArchiveError> {
        validate_archive(bytes, &ArchiveLimits::default())
    }

    #[track_caller]
    fn expect_invalid(result: Result<Manifest, ArchiveError>, needle: &str) {
        match result {
            Err(ArchiveError::Invalid(message)) if message.contains(needle) => {}
            other => panic!("expected Invalid containing {needle:?}, got {other:?}"),
        }
    }

    #[track_caller]
    fn expect_too_large(result: Result<Manifest, ArchiveError>, needle: &str) {
        match result {
            Err(ArchiveError::TooLarge(message)) if message.contains(needle) => {}
            other => panic!("expected TooLarge containing {needle:?}, got {other:?}"),
        }
    }

    async fn feed_in_pieces(bytes: &[u8], limits: ArchiveLimits) -> Result<Manifest, ArchiveError> {
        let (mut feed, handle) = spawn_validator(limits);
        let sizes = [1, 511, 0, 4096, 65_536, 100_003, 7];
        let mut offset = 0;
        for &size in sizes.iter().cycle() {
            if offset == bytes.len() {
                break;
            }
            let end = (offset + size).min(bytes.len());
            let piece = Bytes::copy_from_slice(&bytes[offset..end]);
            assert!(feed.send(piece).await, "validator stopped early");
            offset = end;
        }
        feed.finish();
        handle.await.unwrap()
    }

    /// Several MiB of random data, links, a directory and a GNU long name.
    fn big_package() -> Vec<u8> {
        package_with(|builder| {
            add_dir(builder, "bin/");
            add_file(builder, "bin/payload", &random(6 * MIB as usize + 123));
            add_raw(builder, EntryType::Symlink, b"bin/latest", b"payload", b"");
            add_raw(builder, EntryType::Link, b"bin/copy", b"bin/payload", b"");
            let long = format!("docs/{}/readme.md", "very-long-directory-name".repeat(6));
            add_file(builder, &long, b"# readme\n");
        })
    }

    #[tokio::test]
    async fn accepts_plain_gzip_and_zstd_archives_fed_in_pieces() {
        let plain = big_package();
        for (form, bytes) in [
            ("plain", plain.clone()),
            ("gzip", gzip(&plain)),
            ("zstd", zstd(&plain)),
        ] {
            let manifest = feed_in_pieces(&bytes, ArchiveLimits::default()).await;
            assert_eq!(manifest.unwrap(), expected_manifest(), "{form}");
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
            validate_archive(&bytes[..], &at_limit).unwrap(),
            expected_manifest()
        );
        let below = ArchiveLimits {
            max_manifest_bytes: MANIFEST.len() as u64 - 1,
            ..ArchiveLimits::default()
        };
        expect_too_large(validate_archive(&bytes[..], &below), "manifest.toml is");

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
            let bytes =
                package_with(|builder| add_raw(builder, EntryType::Regular, name, b"", b"x"));
            let result = check(&bytes);
            assert!(
                matches!(&result, Err(ArchiveError::Invalid(m)) if m.contains("absolute") || m.contains("`..`")),
                "{}: {result:?}",
                name.escape_ascii()
            );
        }
        // Also on a directory, and through the names unpackers actually use: PAX `path` and GNU
        // long names override the header's own name.
        let bytes =
            package_with(|builder| add_raw(builder, EntryType::Directory, b"../d/", b"", b""));
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
            // Hard link targets are named from the archive root.
            (EntryType::Link, "h", "d/f", true),
            (EntryType::Link, "d/h", "d/f", true),
            (EntryType::Link, "d/h", "../f", false),
            (EntryType::Link, "h", "/etc/shadow", false),
            (EntryType::Link, "h", "", false),
        ];
        for &(kind, name, target, ok) in cases {
            let bytes = package_with(|builder| {
                add_raw(builder, kind, name.as_bytes(), target.as_bytes(), b"")
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
    fn accepts_pax_global_headers() {
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
        assert_eq!(check(&bytes).unwrap(), expected_manifest());
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
        encoder.write_all(&bomb_prefix(64 * GIB)).unwrap();
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
        let mut bomb = zstd(&bomb_prefix(1 << 40));
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
            validate_archive(&bytes[..], &limits),
            "archive is larger than the limit of 1048576 bytes",
        );
        for compressed in [gzip(&bytes), zstd(&bytes)] {
            expect_too_large(
                validate_archive(&compressed[..], &limits),
                "archive expands too much when decompressed",
            );
        }
        let roomy = ArchiveLimits {
            max_unpacked_bytes: bytes.len() as u64,
            ..limits
        };
        assert!(validate_archive(&bytes[..], &roomy).is_ok());
        assert!(validate_archive(&zstd(&bytes)[..], &roomy).is_ok());
    }

    #[test]
    fn expansion_ratio_applies_to_compressed_archives_only() {
        let bytes = package_with(|builder| add_file(builder, "big", &vec![0; MIB as usize]));
        let strict = ArchiveLimits {
            max_expansion_ratio: 0,
            ratio_allowance_bytes: 0,
            ..ArchiveLimits::default()
        };
        assert_eq!(
            validate_archive(&bytes[..], &strict).unwrap(),
            expected_manifest()
        );
        expect_too_large(
            validate_archive(&gzip(&bytes)[..], &strict),
            "archive expands too much",
        );
        // 1 MiB of zeros compresses far better than 10:1; the allowance covers it.
        let ratio_ten = ArchiveLimits {
            max_expansion_ratio: 10,
            ratio_allowance_bytes: 0,
            ..ArchiveLimits::default()
        };
        expect_too_large(
            validate_archive(&zstd(&bytes)[..], &ratio_ten),
            "archive expands too much",
        );
        let allowance = ArchiveLimits {
            ratio_allowance_bytes: 2 * MIB,
            ..ratio_ten
        };
        assert!(validate_archive(&zstd(&bytes)[..], &allowance).is_ok());
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

    #[tokio::test]
    async fn dropping_the_feed_without_finish_fails() {
        let bytes = package_with(|builder| add_file(builder, "a.txt", b"a"));
        // The whole archive, but no finish(): the upload may have been cut at a clean boundary.
        let (mut feed, handle) = spawn_validator(ArchiveLimits::default());
        assert!(feed.send(Bytes::from(bytes.clone())).await);
        drop(feed);
        expect_invalid(handle.await.unwrap(), "upload interrupted");

        let (mut feed, handle) = spawn_validator(ArchiveLimits::default());
        assert!(feed.send(Bytes::copy_from_slice(&bytes[..700])).await);
        drop(feed);
        expect_invalid(handle.await.unwrap(), "upload interrupted");

        let (feed, handle) = spawn_validator(ArchiveLimits::default());
        drop(feed);
        expect_invalid(handle.await.unwrap(), "upload interrupted");
    }

    #[tokio::test]
    async fn send_returns_false_once_the_validator_failed() {
        let (mut feed, handle) = spawn_validator(ArchiveLimits::default());
        let mut garbage = random(512);
        garbage[0] = b'x';
        let piece = Bytes::from(vec![7u8; 64 * 1024]);
        let stopped = tokio::time::timeout(Duration::from_secs(30), async {
            assert!(feed.send(Bytes::from(garbage)).await);
            for _ in 0..10_000 {
                if !feed.send(piece.clone()).await {
                    return true;
                }
            }
            false
        })
        .await
        .expect("send blocked");
        assert!(
            stopped,
            "send kept accepting pieces after the validator failed"
        );
        expect_invalid(handle.await.unwrap(), "not a valid tar archive");
    }

    #[tokio::test]
    async fn feed_reports_early_failures_without_reading_the_rest() {
        // An unsafe path near the start of a large upload stops validation there.
        let bytes = tar_with(|builder| {
            add_raw(builder, EntryType::Regular, b"/etc/passwd", b"", b"x");
            add_file(builder, "manifest.toml", MANIFEST.as_bytes());
            add_file(builder, "big", &random(4 * MIB as usize));
        });
        let (mut feed, handle) = spawn_validator(ArchiveLimits::default());
        let mut refused = false;
        for chunk in bytes.chunks(16 * 1024) {
            if !feed.send(Bytes::copy_from_slice(chunk)).await {
                refused = true;
                break;
            }
        }
        assert!(refused);
        expect_invalid(handle.await.unwrap(), "absolute path");
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
                validate_archive(reader, &limits).unwrap(),
                expected_manifest()
            );
            let reader = FlakyReader {
                data: bytes.clone(),
                position: 0,
                fail_at: Some(bytes.len() / 2),
                calls: 0,
            };
            expect_invalid(
                validate_archive(reader, &limits),
                "upload interrupted: connection reset by peer",
            );
        }
    }
}
