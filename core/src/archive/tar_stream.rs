//! The tar stream as a push-driven state machine: header blocks, extended headers (PAX `x`,
//! GNU `L`/`K`), entry data, padding and the end-of-archive marker.
//!
//! Bytes arrive in pieces of any size ([`TarStream::write`]); nothing is buffered beyond one
//! header block, the extended headers of the entry being read (at most [`MAX_METADATA_BYTES`])
//! and the manifest. Each entry is resolved into its effective name, link target and size,
//! refusing every combination readers resolve differently (see the module doc of `archive`),
//! and placed in the [`Tree`].

use super::manifest::{Manifest, parse_manifest};
use super::pax::{self, PaxRecords};
use super::tar_header::{self, BLOCK, Typeflag};
use super::tree::{self, NewEntry, Tree};
use super::{ArchiveError, ArchiveLimits};

/// How much metadata one entry may carry: its extended headers (header blocks and data).
pub(super) const MAX_METADATA_BYTES: u64 = 1024 * 1024;

const MANIFEST: &str = "manifest.toml";

#[derive(Debug)]
enum Kept {
    Pax,
    LongName,
    LongLink,
    Manifest,
}

#[derive(Debug)]
enum State {
    /// Expecting a header block (`filled` bytes of it so far).
    Header,
    /// Inside an entry's data; `kept` collects it when it is metadata or the manifest.
    Data {
        left: u64,
        padding: u64,
        kept: Option<(Kept, Vec<u8>)>,
        shown: String,
    },
    Padding {
        left: u64,
    },
    /// After the first zero block: only zeros may follow.
    Trailer,
}

/// Extended headers read for the entry that follows them.
#[derive(Debug, Default)]
struct Pending {
    pax: Option<PaxRecords>,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    /// Bytes of extended headers so far (blocks and data).
    metadata: u64,
    /// An extended header was announced (its data may still be in flight).
    any: bool,
}

#[derive(Debug)]
pub(super) struct TarStream {
    limits: ArchiveLimits,
    block: Box<[u8; BLOCK]>,
    filled: usize,
    /// Stream offset of the next byte.
    offset: u64,
    state: State,
    pending: Pending,
    tree: Tree,
    manifest: Option<Manifest>,
    manifest_seen: bool,
}

impl TarStream {
    pub(super) fn new(limits: ArchiveLimits) -> TarStream {
        TarStream {
            limits,
            block: Box::new([0; BLOCK]),
            filled: 0,
            offset: 0,
            state: State::Header,
            pending: Pending::default(),
            tree: Tree::new(&limits),
            manifest: None,
            manifest_seen: false,
        }
    }

    pub(super) fn write(&mut self, mut data: &[u8]) -> Result<(), ArchiveError> {
        while !data.is_empty() {
            let taken = match &mut self.state {
                State::Header => {
                    let taken = (BLOCK - self.filled).min(data.len());
                    self.block[self.filled..self.filled + taken].copy_from_slice(&data[..taken]);
                    self.filled += taken;
                    if self.filled == BLOCK {
                        self.filled = 0;
                        let header_offset = self.offset + taken as u64 - BLOCK as u64;
                        self.header_block(header_offset)?;
                    }
                    taken
                }
                State::Data {
                    left,
                    padding,
                    kept,
                    ..
                } => {
                    let taken = usize::try_from(*left).unwrap_or(usize::MAX).min(data.len());
                    if let Some((_, bytes)) = kept {
                        bytes.extend_from_slice(&data[..taken]);
                    }
                    *left -= taken as u64;
                    if *left == 0 {
                        let padding = *padding;
                        let kept = kept.take();
                        self.state = if padding == 0 {
                            State::Header
                        } else {
                            State::Padding { left: padding }
                        };
                        if let Some((kind, bytes)) = kept {
                            self.keep(kind, bytes)?;
                        }
                    }
                    taken
                }
                State::Padding { left } => {
                    let taken = usize::try_from(*left).unwrap_or(usize::MAX).min(data.len());
                    *left -= taken as u64;
                    if *left == 0 {
                        self.state = State::Header;
                    }
                    taken
                }
                State::Trailer => {
                    if data.iter().any(|&byte| byte != 0) {
                        return Err(invalid(
                            "archive has data after its end-of-archive marker".into(),
                        ));
                    }
                    data.len()
                }
            };
            self.offset += taken as u64;
            data = &data[taken..];
        }
        Ok(())
    }

    /// The end of the stream: checks that it ended at a boundary and that every link resolves
    /// inside the archive, and returns the manifest and the tree.
    pub(super) fn finish(self) -> Result<(Manifest, Tree), ArchiveError> {
        match &self.state {
            State::Header if self.filled > 0 => {
                return Err(not_tar("the archive ends inside a header block"));
            }
            State::Header if self.pending.any => {
                return Err(not_tar(
                    "the archive ends after an extended header, before its entry",
                ));
            }
            State::Header | State::Trailer => {}
            State::Data {
                kept: Some((Kept::Pax | Kept::LongName | Kept::LongLink, _)),
                ..
            } => return Err(not_tar("the archive ends inside an extended header")),
            State::Data { shown, .. } => {
                return Err(invalid(format!(
                    "archive is truncated: the data of entry `{shown}` is cut short"
                )));
            }
            State::Padding { .. } => {
                return Err(not_tar("the archive ends inside the padding of an entry"));
            }
        }
        self.tree.check_symlinks()?;
        let manifest = self
            .manifest
            .ok_or_else(|| invalid("archive has no manifest.toml at its root".into()))?;
        Ok((manifest, self.tree))
    }

    fn header_block(&mut self, offset: u64) -> Result<(), ArchiveError> {
        if tar_header::is_zero_block(&self.block) {
            if self.pending.any {
                return Err(not_tar(
                    "an extended header is followed by the end-of-archive marker",
                ));
            }
            // GNU tar and Python both stop at the first zero block (GNU tar only warns when a
            // second one does not follow), so anything but zeros after it is refused.
            self.state = State::Trailer;
            return Ok(());
        }
        let header = tar_header::parse(&self.block, offset)?;
        let extended = match header.typeflag {
            Typeflag::PaxExtended => Some((
                Kept::Pax,
                self.pending.pax.is_some(),
                "PAX extended headers",
            )),
            Typeflag::GnuLongName => Some((
                Kept::LongName,
                self.pending.long_name.is_some(),
                "GNU long names",
            )),
            Typeflag::GnuLongLink => Some((
                Kept::LongLink,
                self.pending.long_link.is_some(),
                "GNU long link targets",
            )),
            _ => None,
        };
        let Some((kind, twice, what)) = extended else {
            return self.entry(header);
        };
        if twice {
            return Err(invalid(format!(
                "an entry has two {what} (readers keep different ones)"
            )));
        }
        self.pending.any = true;
        self.pending.metadata += BLOCK as u64 + header.size;
        if self.pending.metadata > MAX_METADATA_BYTES {
            return Err(ArchiveError::TooLarge(format!(
                "an entry's metadata (headers, PAX records, long names) exceeds {MAX_METADATA_BYTES} bytes"
            )));
        }
        // Within the metadata bound, so the allocation is bounded too.
        let bytes = Vec::with_capacity(header.size as usize);
        self.start_data(header.size, Some((kind, bytes)), String::new())
    }

    fn start_data(
        &mut self,
        size: u64,
        kept: Option<(Kept, Vec<u8>)>,
        shown: String,
    ) -> Result<(), ArchiveError> {
        if size == 0 {
            if let Some((kind, bytes)) = kept {
                self.keep(kind, bytes)?;
            }
            return Ok(());
        }
        self.state = State::Data {
            left: size,
            padding: (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64,
            kept,
            shown,
        };
        Ok(())
    }

    fn keep(&mut self, kind: Kept, bytes: Vec<u8>) -> Result<(), ArchiveError> {
        match kind {
            Kept::Pax => self.pending.pax = Some(pax::parse(&bytes)?),
            Kept::LongName => self.pending.long_name = Some(long_name(bytes, "name")?),
            Kept::LongLink => self.pending.long_link = Some(long_name(bytes, "link target")?),
            Kept::Manifest => self.manifest = Some(parse_manifest(bytes)?),
        }
        Ok(())
    }

    fn entry(&mut self, header: tar_header::Header) -> Result<(), ArchiveError> {
        let pending = std::mem::take(&mut self.pending);
        let pax = pending.pax.unwrap_or_default();
        let name = match (pax.path, pending.long_name) {
            (Some(_), Some(_)) => {
                return Err(invalid(format!(
                    "entry `{}` has both a PAX path and a GNU long name (readers pick different ones)",
                    header.name.escape_ascii()
                )));
            }
            (Some(name), None) | (None, Some(name)) => {
                if header.has_prefix {
                    return Err(invalid(format!(
                        "entry `{}` has both a long name and a ustar prefix",
                        name.escape_ascii()
                    )));
                }
                name
            }
            (None, None) => header.name,
        };
        let shown = String::from_utf8_lossy(&name).into_owned();
        let link = match (pax.link_path, pending.long_link) {
            (Some(_), Some(_)) => {
                return Err(invalid(format!(
                    "entry `{shown}` has both a PAX linkpath and a GNU long link (readers pick different ones)"
                )));
            }
            (Some(link), None) | (None, Some(link)) => {
                if !matches!(header.typeflag, Typeflag::Symlink | Typeflag::HardLink) {
                    return Err(invalid(format!(
                        "entry `{shown}` is not a link but has a long link target"
                    )));
                }
                link
            }
            (None, None) => header.link_name,
        };
        if let Some(size) = pax.size
            && size != header.size
        {
            return Err(invalid(format!(
                "entry `{shown}` has a PAX size of {size} but a header size of {} (readers skip different amounts of data)",
                header.size
            )));
        }
        let size = header.size;

        let components = tree::entry_components(&name)
            .map_err(|why| invalid(format!("entry `{shown}` {why}")))?;
        if components.is_empty() && header.typeflag != Typeflag::Directory {
            return Err(invalid(format!("entry `{shown}` has an empty path")));
        }
        if name.ends_with(b"/") && header.typeflag != Typeflag::Directory {
            // GNU tar makes a directory of it, Python a file.
            return Err(invalid(format!(
                "entry `{shown}` ends with `/` but is not a directory"
            )));
        }
        if header.typeflag != Typeflag::Directory
            && name.rsplit(|&byte| byte == b'/').next() == Some(b".")
        {
            // `a/.` is the directory `a` to the kernel: GNU tar fails to open it as a file.
            return Err(invalid(format!(
                "entry `{shown}` ends with `.` but is not a directory"
            )));
        }
        if header.typeflag != Typeflag::Regular && size != 0 {
            // Python reads no data after directories and links, GNU tar skips it.
            return Err(invalid(format!(
                "entry `{shown}` is a directory or link but carries data"
            )));
        }
        let is_manifest = components == [MANIFEST];
        if is_manifest && header.typeflag != Typeflag::Regular {
            return Err(invalid("manifest.toml must be a regular file".into()));
        }
        let link_error = |why: String| {
            invalid(format!(
                "link `{shown}` -> `{}` {why}",
                String::from_utf8_lossy(&link)
            ))
        };
        match header.typeflag {
            Typeflag::Regular => {
                if is_manifest {
                    if self.manifest_seen {
                        return Err(invalid(
                            "archive has more than one manifest.toml at its root".into(),
                        ));
                    }
                    self.manifest_seen = true;
                    let max = self.limits.max_manifest_bytes;
                    // Refused on the header's word, before reading anything into memory.
                    if size > max {
                        return Err(ArchiveError::TooLarge(format!(
                            "manifest.toml is {size} bytes, over the limit of {max} bytes"
                        )));
                    }
                }
                self.tree
                    .insert(&components, &shown, NewEntry::File { size })?;
                let kept = is_manifest.then(|| (Kept::Manifest, Vec::with_capacity(size as usize)));
                self.start_data(size, kept, shown)
            }
            Typeflag::Directory => self.tree.insert(&components, &shown, NewEntry::Directory),
            Typeflag::Symlink => {
                let target = tree::check_symlink_target(&link).map_err(link_error)?;
                self.tree
                    .insert(&components, &shown, NewEntry::Symlink { target })
            }
            Typeflag::HardLink => {
                let target = std::str::from_utf8(&link)
                    .map_err(|_| link_error("has a target that is not valid UTF-8".into()))?;
                self.tree
                    .insert(&components, &shown, NewEntry::HardLink { target })
            }
            Typeflag::PaxExtended | Typeflag::GnuLongName | Typeflag::GnuLongLink => {
                unreachable!("extended headers are handled by header_block")
            }
        }
    }
}

/// The data of a GNU `L`/`K` entry: the name and exactly one NUL (readers cut at the first NUL,
/// the tar crate strips only the last one).
fn long_name(mut bytes: Vec<u8>, what: &str) -> Result<Vec<u8>, ArchiveError> {
    if bytes.pop() != Some(0) || bytes.is_empty() || bytes.contains(&0) {
        return Err(invalid(format!(
            "a GNU long {what} must be a non-empty name ending with exactly one NUL byte"
        )));
    }
    Ok(bytes)
}

fn invalid(message: String) -> ArchiveError {
    ArchiveError::Invalid(message)
}

fn not_tar(what: &str) -> ArchiveError {
    ArchiveError::Invalid(format!("not a valid tar archive: {what}"))
}
