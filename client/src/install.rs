//! Safe extraction of an archive (`niso install`).
//!
//! The archive is first run through the registry's own validator
//! ([`niso_core::archive::validate_archive`]): same path and link rules, so nothing absolute,
//! no `..`, no entry under a symlink, no symlink whose target leaves the tree, no device or
//! fifo. Then the same file is read again with the tar crate and each entry is written only if
//! it is exactly one the validator listed (path and kind); anything else stops the install.
//!
//! Extraction goes into a fresh directory that niso creates next to the destination, so no
//! symlink or file that was already on disk can redirect a write: files are created with
//! `create_new` (which refuses to follow a symlink), parents are created only as directories.
//! When everything is written the fresh directory replaces the destination by rename.
//! Modes keep only the permission bits 0755 (no setuid, setgid, sticky or world-writable).

use std::collections::HashMap;
use std::fs;
use std::io::{self, BufReader, Read};
use std::path::{Component, Path, PathBuf};

use niso_core::archive::{ArchiveLimits, EntryKind, validate_archive};

use crate::error::{CliError, Result};

/// What an install wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    pub name: String,
    pub version: String,
    pub entries: u64,
}

/// Validates `archive` and installs it as `destination` (replacing what was there).
pub fn install_archive(archive: &Path, destination: &Path) -> Result<Installed> {
    let open = || {
        fs::File::open(archive)
            .map(BufReader::new)
            .map_err(|error| CliError::io(format!("reading {}", archive.display()), error))
    };
    let validated = validate_archive(open()?, &ArchiveLimits::default())
        .map_err(|error| CliError::failed(format!("the archive is refused: {error}")))?;
    let expected: HashMap<String, EntryKind> = validated
        .entries()
        .into_iter()
        .map(|entry| (entry.path, entry.kind))
        .collect();

    let parent = destination
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(parent)
        .map_err(|error| CliError::io(format!("creating {}", parent.display()), error))?;
    let staging = tempfile::Builder::new()
        .prefix(".niso-install-")
        .tempdir_in(parent)
        .map_err(|error| {
            CliError::io(
                format!("creating a directory in {}", parent.display()),
                error,
            )
        })?;

    let entries = extract(decompressed(open()?)?, staging.path(), &expected)?;

    // Swap: the old tree (if any) moves aside, the new one takes its name, the old is removed.
    let previous = parent.join(format!(
        ".niso-old-{}",
        staging
            .path()
            .file_name()
            .and_then(|name| name.to_str())
            .unwrap_or("install")
    ));
    let had_previous = match fs::symlink_metadata(destination) {
        Ok(_) => {
            fs::rename(destination, &previous).map_err(|error| {
                CliError::io(format!("moving {} aside", destination.display()), error)
            })?;
            true
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => false,
        Err(error) => {
            return Err(CliError::io(
                format!("checking {}", destination.display()),
                error,
            ));
        }
    };
    let staged = staging.keep();
    fs::rename(&staged, destination)
        .map_err(|error| CliError::io(format!("installing {}", destination.display()), error))?;
    if had_previous {
        let removed = if fs::symlink_metadata(&previous).is_ok_and(|m| m.is_dir()) {
            fs::remove_dir_all(&previous)
        } else {
            fs::remove_file(&previous)
        };
        removed.map_err(|error| CliError::io(format!("removing {}", previous.display()), error))?;
    }
    Ok(Installed {
        name: validated.manifest.name,
        version: validated.manifest.version,
        entries,
    })
}

/// The tar stream inside the archive: gzip and zstd recognised by their magic bytes, as the
/// validator does.
fn decompressed(mut file: BufReader<fs::File>) -> Result<Box<dyn Read>> {
    let read_error = |error| CliError::io("reading the archive", error);
    let mut magic = [0u8; 4];
    let mut filled = 0;
    while filled < magic.len() {
        match file.read(&mut magic[filled..]).map_err(read_error)? {
            0 => break,
            read => filled += read,
        }
    }
    let head = io::Cursor::new(magic[..filled].to_vec());
    let reader = head.chain(file);
    Ok(match &magic[..filled] {
        [0x1f, 0x8b, ..] => Box::new(flate2::read::MultiGzDecoder::new(reader)),
        [0x28, 0xb5, 0x2f, 0xfd] => {
            let mut decoder = zstd::stream::read::Decoder::new(reader).map_err(read_error)?;
            decoder
                .window_log_max(ArchiveLimits::default().max_zstd_window_log)
                .map_err(read_error)?;
            Box::new(decoder)
        }
        _ => Box::new(reader),
    })
}

/// The validated relative path of an entry as the tar crate reads it: `./` prefixes and
/// trailing slashes dropped, components joined by `/`.
fn normalised(path: &Path) -> Option<String> {
    let mut parts = Vec::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::Normal(part) => parts.push(part.to_str()?),
            _ => return None,
        }
    }
    Some(parts.join("/"))
}

fn extract(
    reader: Box<dyn Read>,
    root: &Path,
    expected: &HashMap<String, EntryKind>,
) -> Result<u64> {
    let refused = |path: &str, why: &str| {
        CliError::failed(format!(
            "the archive is refused: entry `{path}` {why}; nothing was installed"
        ))
    };
    let mut archive = tar::Archive::new(reader);
    let mut count = 0u64;
    let entries = archive
        .entries()
        .map_err(|error| CliError::io("reading the archive", error))?;
    for entry in entries {
        let mut entry = entry.map_err(|error| CliError::io("reading the archive", error))?;
        let raw_path = entry
            .path()
            .map_err(|error| CliError::io("reading the archive", error))?
            .into_owned();
        let display = raw_path.display().to_string();
        let Some(relative) = normalised(&raw_path) else {
            return Err(refused(&display, "has a path the validator did not list"));
        };
        if relative.is_empty() {
            // `./` itself: the root, which exists.
            continue;
        }
        let Some(kind) = expected.get(&relative) else {
            return Err(refused(&display, "was not listed by the validator"));
        };
        let target = root.join(&relative);
        let io_error = |error| CliError::io(format!("writing {}", target.display()), error);
        if let Some(parent) = target.parent() {
            create_directories(root, parent).map_err(io_error)?;
        }
        let header_type = entry.header().entry_type();
        let mode = entry.header().mode().unwrap_or(0o644) & 0o755;
        match kind {
            EntryKind::Directory if header_type.is_dir() => {
                create_directories(root, &target).map_err(io_error)?;
                set_mode(&target, mode | 0o700).map_err(io_error)?;
            }
            EntryKind::File { size } if header_type.is_file() => {
                let mut file = fs::File::options()
                    .write(true)
                    .create_new(true)
                    .open(&target)
                    .map_err(io_error)?;
                let copied =
                    io::copy(&mut (&mut entry).take(*size), &mut file).map_err(io_error)?;
                if copied != *size {
                    return Err(refused(&display, "is shorter than its header says"));
                }
                set_mode(&target, mode).map_err(io_error)?;
            }
            EntryKind::Symlink { target: link } if header_type.is_symlink() => {
                symlink(link, &target).map_err(io_error)?;
            }
            EntryKind::HardLink { target: original } if header_type.is_hard_link() => {
                fs::hard_link(root.join(original), &target).map_err(io_error)?;
            }
            _ => return Err(refused(&display, "is not of the kind the validator listed")),
        }
        count += 1;
    }
    Ok(count)
}

/// Creates `directory` and its missing parents below `root`, refusing to pass through anything
/// that is not a real directory (the staging root is fresh, so this only fires on a bug or a
/// concurrent writer).
fn create_directories(root: &Path, directory: &Path) -> io::Result<()> {
    let relative = directory.strip_prefix(root).map_err(|_| {
        io::Error::new(io::ErrorKind::InvalidInput, "outside the install directory")
    })?;
    let mut current = PathBuf::from(root);
    for component in relative.components() {
        current.push(component);
        match fs::symlink_metadata(&current) {
            Ok(metadata) if metadata.is_dir() => {}
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a directory", current.display()),
                ));
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => fs::create_dir(&current)?,
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_mode(_path: &Path, _mode: u32) -> io::Result<()> {
    Ok(())
}

#[cfg(unix)]
fn symlink(link: &str, path: &Path) -> io::Result<()> {
    std::os::unix::fs::symlink(link, path)
}

#[cfg(not(unix))]
fn symlink(_link: &str, path: &Path) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        format!("{}: symlinks are only installed on Unix", path.display()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let manifest = b"[package]\nname = \"@a/b\"\nversion = \"1.0.0\"\n";
        let mut header = tar::Header::new_gnu();
        header.set_size(manifest.len() as u64);
        header.set_mode(0o644);
        builder
            .append_data(&mut header, "manifest.toml", &manifest[..])
            .unwrap();
        build(&mut builder);
        builder.into_inner().unwrap()
    }

    fn install(bytes: &[u8]) -> (tempfile::TempDir, Result<Installed>) {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("a.niso");
        fs::write(&archive, bytes).unwrap();
        let result = install_archive(&archive, &dir.path().join("out/pkg"));
        (dir, result)
    }

    #[test]
    fn installs_files_links_and_modes() {
        let bytes = tar_of(|builder| {
            let mut header = tar::Header::new_gnu();
            header.set_size(2);
            header.set_mode(0o4777);
            builder
                .append_data(&mut header, "bin/run", &b"hi"[..])
                .unwrap();
            let mut link = tar::Header::new_gnu();
            link.set_entry_type(tar::EntryType::Symlink);
            link.set_size(0);
            builder
                .append_link(&mut link, "run-link", "bin/run")
                .unwrap();
        });
        let (dir, result) = install(&bytes);
        let installed = result.unwrap();
        assert_eq!(installed.name, "@a/b");
        let root = dir.path().join("out/pkg");
        assert_eq!(fs::read(root.join("bin/run")).unwrap(), b"hi");
        assert_eq!(fs::read(root.join("run-link")).unwrap(), b"hi");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(root.join("bin/run"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o7777, 0o755, "setuid and world-write dropped");
        }
    }

    #[test]
    fn long_names_and_hard_links_are_installed() {
        let long = format!("{}/{}.txt", "d".repeat(120), "f".repeat(120));
        let bytes = tar_of(|builder| {
            let mut header = tar::Header::new_gnu();
            header.set_size(4);
            header.set_mode(0o644);
            builder
                .append_data(&mut header, &long, &b"long"[..])
                .unwrap();
            let mut link = tar::Header::new_gnu();
            link.set_entry_type(tar::EntryType::Link);
            link.set_size(0);
            builder.append_link(&mut link, "again.txt", &long).unwrap();
        });
        let (dir, result) = install(&bytes);
        assert_eq!(result.unwrap().entries, 3, "manifest, file, link");
        let root = dir.path().join("out/pkg");
        assert_eq!(fs::read(root.join(&long)).unwrap(), b"long");
        assert_eq!(fs::read(root.join("again.txt")).unwrap(), b"long");
    }

    #[test]
    fn a_symlink_escape_is_refused_and_nothing_is_installed() {
        let bytes = tar_of(|builder| {
            let mut link = tar::Header::new_gnu();
            link.set_entry_type(tar::EntryType::Symlink);
            link.set_size(0);
            builder.append_link(&mut link, "etc", "../../..").unwrap();
            let mut header = tar::Header::new_gnu();
            header.set_size(1);
            header.set_mode(0o644);
            // Written through the link by a naive unpacker.
            let name = b"etc/owned";
            header.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name);
            header.set_cksum();
            builder.append(&header, &b"x"[..]).unwrap();
        });
        let (dir, result) = install(&bytes);
        let error = result.unwrap_err();
        assert!(error.message.contains("the archive is refused"), "{error}");
        assert!(!dir.path().join("out/pkg").exists());
        assert!(!dir.path().join("owned").exists());
    }

    #[test]
    fn an_existing_install_is_replaced_whole() {
        let (dir, result) = install(&tar_of(|_| {}));
        result.unwrap();
        let destination = dir.path().join("out/pkg");
        fs::write(destination.join("stale"), b"old").unwrap();
        let archive = dir.path().join("b.niso");
        fs::write(&archive, tar_of(|_| {})).unwrap();
        install_archive(&archive, &destination).unwrap();
        assert!(destination.join("manifest.toml").exists());
        assert!(!destination.join("stale").exists());
        let leftovers: Vec<_> = fs::read_dir(dir.path().join("out"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("pkg")]);
    }
}
