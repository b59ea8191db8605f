//! Reproducible `.niso` archives built from a directory (`niso pack`).
//!
//! The same tree always gives the same bytes, and a tree that changed in one file gives an
//! archive that differs only around that file's entry: that is what lets content-defined
//! chunking find the unchanged chunks of the previous version. So the archive is a plain
//! (uncompressed) tar whose entries are sorted by path, with every field that depends on the
//! machine or the moment fixed: mtime [`PACK_MTIME`], uid and gid 0, no user or group names,
//! modes normalised to 0755 (directories, and files with any execute bit) or 0644, symlinks
//! 0777. Compressing would spread a one-byte change to the end of the stream.
//!
//! Only directories, regular files and symlinks are packed (symlinks as links, never followed);
//! anything else (sockets, fifos, devices) or a name that is not UTF-8 is refused, since the
//! registry's validator would refuse it too. A file with several hard links is packed once per
//! name, as separate regular files. The directory must have a `manifest.toml` at its root.
//! Callers run the archive through [`crate::archive::validate_archive`] before using it:
//! a symlink leading out of the tree is refused there, with the validator's message.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The modification time written to every entry (2006-07-24, the tar crate's deterministic
/// mode): a fixed, non-zero time that no unpacker treats as "unset".
pub const PACK_MTIME: u64 = 1_153_704_088;

#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("{0}")]
    Refused(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// What [`pack_directory`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackSummary {
    pub entries: u64,
    pub bytes: u64,
}

/// One entry to pack: its path relative to the root, components joined by `/`.
struct Source {
    relative: String,
    absolute: PathBuf,
    metadata: fs::Metadata,
}

/// Writes the tar of `root` to `output`. Entries are sorted by their path components, so a
/// directory precedes its contents and siblings appear in byte order.
pub fn pack_directory<W: Write>(root: &Path, output: W) -> Result<PackSummary, PackError> {
    let io_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PackError::Io { path, source }
    };
    let manifest = root.join("manifest.toml");
    let manifest_metadata = fs::symlink_metadata(&manifest).map_err(io_error(&manifest))?;
    if !manifest_metadata.is_file() {
        return Err(PackError::Refused(format!(
            "{} is not a regular file",
            manifest.display()
        )));
    }
    let mut sources = Vec::new();
    collect(root, String::new(), &mut sources)?;

    let counter = CountingWriter {
        inner: output,
        count: 0,
    };
    let mut builder = tar::Builder::new(counter);
    builder.mode(tar::HeaderMode::Deterministic);
    builder.follow_symlinks(false);
    for source in &sources {
        append(&mut builder, source)?;
    }
    let counter = builder.into_inner().map_err(io_error(root))?;
    Ok(PackSummary {
        entries: sources.len() as u64,
        bytes: counter.count,
    })
}

/// Appends the entries below `directory` (whose path from the root is `prefix`) in sorted order.
fn collect(directory: &Path, prefix: String, sources: &mut Vec<Source>) -> Result<(), PackError> {
    let io_error = |source| PackError::Io {
        path: directory.to_path_buf(),
        source,
    };
    let mut children = Vec::new();
    for child in fs::read_dir(directory).map_err(io_error)? {
        let child = child.map_err(io_error)?;
        let name = child.file_name().into_string().map_err(|name| {
            PackError::Refused(format!(
                "{}: the name is not UTF-8",
                directory.join(name).display()
            ))
        })?;
        children.push(name);
    }
    children.sort();
    for name in children {
        let absolute = directory.join(&name);
        let metadata = fs::symlink_metadata(&absolute).map_err(|source| PackError::Io {
            path: absolute.clone(),
            source,
        })?;
        if name.contains('\\') {
            return Err(PackError::Refused(format!(
                "{}: `\\` is not allowed in names",
                absolute.display()
            )));
        }
        let relative = format!("{prefix}{name}");
        let file_type = metadata.file_type();
        if !(file_type.is_dir() || file_type.is_file() || file_type.is_symlink()) {
            return Err(PackError::Refused(format!(
                "{}: only directories, regular files and symlinks can be packed",
                absolute.display()
            )));
        }
        let is_directory = file_type.is_dir();
        sources.push(Source {
            relative: relative.clone(),
            absolute: absolute.clone(),
            metadata,
        });
        if is_directory {
            collect(&absolute, format!("{relative}/"), sources)?;
        }
    }
    Ok(())
}

fn append<W: Write>(builder: &mut tar::Builder<W>, source: &Source) -> Result<(), PackError> {
    let io_error = |error| PackError::Io {
        path: source.absolute.clone(),
        source: error,
    };
    let file_type = source.metadata.file_type();
    // GNU headers: a path beyond 100 bytes goes into a GNU long-name entry, never split into the
    // ustar prefix (the validator refuses a long name next to a prefix).
    let mut header = tar::Header::new_gnu();
    header.set_mtime(PACK_MTIME);
    header.set_uid(0);
    header.set_gid(0);
    if file_type.is_symlink() {
        let target = fs::read_link(&source.absolute).map_err(io_error)?;
        if target.to_str().is_none() {
            return Err(PackError::Refused(format!(
                "{}: the link target is not UTF-8",
                source.absolute.display()
            )));
        }
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_mode(0o777);
        header.set_size(0);
        builder
            .append_link(&mut header, &source.relative, &target)
            .map_err(io_error)
    } else if file_type.is_dir() {
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(0o755);
        header.set_size(0);
        builder
            .append_data(&mut header, &source.relative, io::empty())
            .map_err(io_error)
    } else {
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(normalised_file_mode(&source.metadata));
        let file = fs::File::open(&source.absolute).map_err(io_error)?;
        // The size is the open file's, not the earlier `stat`'s: a file that changes while it is
        // packed must still give a well-formed tar (the tar crate copies exactly `size` bytes).
        let size = file.metadata().map_err(io_error)?.len();
        header.set_size(size);
        builder
            .append_data(
                &mut header,
                &source.relative,
                ExactReader::new(file, size, &source.absolute),
            )
            .map_err(io_error)
    }
}

#[cfg(unix)]
fn normalised_file_mode(metadata: &fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    if metadata.permissions().mode() & 0o111 != 0 {
        0o755
    } else {
        0o644
    }
}

#[cfg(not(unix))]
fn normalised_file_mode(_metadata: &fs::Metadata) -> u32 {
    0o644
}

/// Reads exactly `size` bytes: a file that shrank while being packed is an error instead of a
/// short entry that would corrupt every header after it; bytes beyond `size` are ignored.
struct ExactReader {
    inner: io::Take<fs::File>,
    remaining: u64,
    path: PathBuf,
}

impl ExactReader {
    fn new(file: fs::File, size: u64, path: &Path) -> ExactReader {
        ExactReader {
            inner: io::Read::take(file, size),
            remaining: size,
            path: path.to_path_buf(),
        }
    }
}

impl io::Read for ExactReader {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buffer)?;
        if read == 0 && self.remaining > 0 && !buffer.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{} shrank while it was packed", self.path.display()),
            ));
        }
        self.remaining -= read as u64;
        Ok(read)
    }
}

struct CountingWriter<W> {
    inner: W,
    count: u64,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buffer: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(buffer)?;
        self.count += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::{ArchiveLimits, EntryKind, validate_archive};
    use crate::chunking::{ChunkingSettings, StreamChunker};
    use rand::{Rng, SeedableRng};

    const MANIFEST: &str = "[package]\nname = \"@acme/tool\"\nversion = \"1.0.0\"\n";

    fn random_bytes(length: usize, seed: u64) -> Vec<u8> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut data = vec![0u8; length];
        rng.fill(&mut data[..]);
        data
    }

    /// A tree of a manifest, nested directories, small and large files, an executable, a
    /// symlink and a path longer than ustar's 100-byte name field.
    fn sample_tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::write(root.join("manifest.toml"), MANIFEST).unwrap();
        fs::create_dir_all(root.join("bin")).unwrap();
        fs::create_dir_all(root.join("share/data")).unwrap();
        fs::write(root.join("bin/tool"), b"#!/bin/sh\necho hi\n").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(root.join("bin/tool"), fs::Permissions::from_mode(0o700)).unwrap();
            std::os::unix::fs::symlink("../bin/tool", root.join("share/tool-link")).unwrap();
        }
        for index in 0..8u64 {
            fs::write(
                root.join(format!("share/data/blob-{index}.bin")),
                random_bytes(600 * 1024, index),
            )
            .unwrap();
        }
        let long = format!("share/{}/{}.txt", "d".repeat(90), "f".repeat(120));
        fs::create_dir_all(root.join(&long).parent().unwrap()).unwrap();
        fs::write(root.join(&long), b"long").unwrap();
        dir
    }

    fn pack(root: &Path) -> Vec<u8> {
        let mut bytes = Vec::new();
        pack_directory(root, &mut bytes).unwrap();
        bytes
    }

    fn chunk_hashes(bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut chunker = StreamChunker::new(ChunkingSettings::default());
        let mut chunks = chunker.push(bytes);
        chunks.extend(chunker.finish());
        chunks.into_iter().map(|chunk| chunk.to_vec()).collect()
    }

    #[test]
    fn the_archive_passes_the_registry_validator() {
        let tree = sample_tree();
        let bytes = pack(tree.path());
        let archive = validate_archive(&bytes[..], &ArchiveLimits::default()).unwrap();
        assert_eq!(archive.manifest.name, "@acme/tool");
        let entries = archive.entries();
        assert!(entries.iter().any(|entry| entry.path == "bin/tool"
            && entry.kind == EntryKind::File { size: 18 }));
        #[cfg(unix)]
        assert!(entries.iter().any(|entry| entry.path == "share/tool-link"
            && entry.kind
                == EntryKind::Symlink {
                    target: "../bin/tool".into()
                }));
        assert!(
            entries
                .iter()
                .any(|entry| entry.path.ends_with(".txt") && entry.path.len() > 200)
        );
    }

    #[test]
    fn entries_are_sorted_with_fixed_metadata() {
        let tree = sample_tree();
        let bytes = pack(tree.path());
        let mut archive = tar::Archive::new(&bytes[..]);
        let mut paths = Vec::new();
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            let header = entry.header();
            assert_eq!(header.mtime().unwrap(), PACK_MTIME);
            assert_eq!(header.uid().unwrap(), 0);
            assert_eq!(header.gid().unwrap(), 0);
            let mode = header.mode().unwrap();
            match header.entry_type() {
                tar::EntryType::Directory => assert_eq!(mode, 0o755),
                tar::EntryType::Symlink => assert_eq!(mode, 0o777),
                _ => assert!(mode == 0o644 || mode == 0o755, "{mode:o}"),
            }
            let path = entry.path().unwrap().to_str().unwrap().to_owned();
            if path == "bin/tool" {
                assert_eq!(mode, 0o755, "an executable stays executable");
            }
            paths.push(path);
        }
        let mut sorted = paths.clone();
        sorted.sort_by(|a, b| a.split('/').cmp(b.split('/')));
        assert_eq!(paths, sorted);
        assert_eq!(paths[0], "bin");
    }

    #[test]
    fn the_same_tree_packs_to_the_same_bytes() {
        let first = sample_tree();
        let second = sample_tree();
        // Different times and permissions beyond the execute bit change nothing.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(
                second.path().join("manifest.toml"),
                fs::Permissions::from_mode(0o600),
            )
            .unwrap();
        }
        let file = fs::File::options()
            .write(true)
            .open(second.path().join("share/data/blob-3.bin"))
            .unwrap();
        file.set_modified(std::time::SystemTime::UNIX_EPOCH)
            .unwrap();
        assert_eq!(pack(first.path()), pack(second.path()));
    }

    #[test]
    fn changing_one_file_keeps_most_chunks() {
        let tree = sample_tree();
        let before = pack(tree.path());
        let path = tree.path().join("share/data/blob-5.bin");
        let mut data = fs::read(&path).unwrap();
        data[1000] ^= 0xff;
        fs::write(&path, data).unwrap();
        let after = pack(tree.path());
        assert_eq!(before.len(), after.len());
        let old: std::collections::HashSet<_> = chunk_hashes(&before).into_iter().collect();
        let new = chunk_hashes(&after);
        let changed = new.iter().filter(|chunk| !old.contains(*chunk)).count();
        let changed_bytes: usize = new
            .iter()
            .filter(|chunk| !old.contains(*chunk))
            .map(Vec::len)
            .sum();
        assert!(changed >= 1, "the edit must show");
        assert!(
            changed_bytes * 10 < after.len(),
            "{changed_bytes} of {} bytes in new chunks",
            after.len()
        );
    }

    #[test]
    fn a_directory_without_a_manifest_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.txt"), b"a").unwrap();
        let error = pack_directory(dir.path(), Vec::new()).unwrap_err();
        assert!(error.to_string().contains("manifest.toml"), "{error}");
    }

    #[cfg(unix)]
    #[test]
    fn special_files_are_refused() {
        let tree = sample_tree();
        let socket = tree.path().join("share/socket");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let error = pack_directory(tree.path(), Vec::new()).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("only directories, regular files"),
            "{error}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_symlink_out_of_the_tree_is_packed_but_refused_by_the_validator() {
        let tree = sample_tree();
        std::os::unix::fs::symlink("../../etc/passwd", tree.path().join("bin/escape")).unwrap();
        let bytes = pack(tree.path());
        assert!(validate_archive(&bytes[..], &ArchiveLimits::default()).is_err());
    }
}
