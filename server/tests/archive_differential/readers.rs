//! Unpacks an archive with real readers (GNU tar, Python's `tarfile` with the most trusting
//! filter) into a fresh root deep inside a sandbox, then reports what each one created and
//! anything that escaped.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use niso_registry::archive::{EntryKind, ValidatedArchive};

/// What a path is once unpacked; hard links are files (checked for a shared inode separately).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Found {
    File { size: u64 },
    Directory,
    Symlink { target: String },
}

pub type Listing = BTreeSet<(String, Found)>;

#[derive(Debug, Clone, Copy)]
pub enum Reader {
    GnuTar,
    Python,
}

const PYTHON: &str = r#"
import sys, tarfile
with tarfile.open(sys.argv[1]) as archive:
    archive.extractall(sys.argv[2], filter='fully_trusted')
"#;

/// How deep the root sits in the sandbox: escapes up to this many levels land inside the
/// sandbox, where the walk finds them.
const DEPTH: usize = 4;

/// The listing the validator predicts.
pub fn predicted(archive: &ValidatedArchive) -> Listing {
    let entries = archive.entries();
    let size_of = |path: &str| {
        entries
            .iter()
            .find_map(|entry| match (&entry.kind, entry.path == path) {
                (EntryKind::File { size }, true) => Some(*size),
                _ => None,
            })
            .expect("a hard link's target is a file of the archive")
    };
    entries
        .iter()
        .map(|entry| {
            let found = match &entry.kind {
                EntryKind::File { size } => Found::File { size: *size },
                EntryKind::Directory => Found::Directory,
                EntryKind::Symlink { target } => Found::Symlink {
                    target: target.clone(),
                },
                EntryKind::HardLink { target } => Found::File {
                    size: size_of(target),
                },
            };
            (entry.path.clone(), found)
        })
        .collect()
}

/// Unpacks `bytes` with `reader`; returns the listing of the root, or a description of the
/// failure or escape.
pub fn unpack(reader: Reader, bytes: &[u8]) -> Result<Listing, String> {
    let sandbox = tempfile::tempdir().expect("a temporary directory");
    let archive = sandbox.path().join("archive.tar");
    std::fs::write(&archive, bytes).expect("write the archive");
    let mut root = sandbox.path().to_path_buf();
    for level in 0..DEPTH {
        root.push(format!("level{level}"));
    }
    root.push("root");
    std::fs::create_dir_all(&root).expect("create the root");
    let output = match reader {
        Reader::GnuTar => Command::new("tar")
            .arg("-xf")
            .arg(&archive)
            .arg("-C")
            .arg(&root)
            .output(),
        Reader::Python => Command::new("python3")
            .arg("-c")
            .arg(PYTHON)
            .arg(&archive)
            .arg(&root)
            .output(),
    }
    .unwrap_or_else(|error| panic!("{reader:?} must be installed: {error}"));
    // Whatever happened, nothing may be outside the root.
    let escaped = outside_root(sandbox.path(), &archive, &root);
    if !escaped.is_empty() {
        return Err(format!("{reader:?} wrote outside the root: {escaped:?}"));
    }
    if !output.status.success() {
        return Err(format!(
            "{reader:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let mut listing = Listing::new();
    walk(&root, &root, &mut listing)?;
    Ok(listing)
}

/// Checks that hard links unpacked by `reader` share their target's inode.
pub fn hard_links_share_inodes(archive: &ValidatedArchive, bytes: &[u8]) -> Result<(), String> {
    let links: Vec<(String, String)> = archive
        .entries()
        .into_iter()
        .filter_map(|entry| match entry.kind {
            EntryKind::HardLink { target } => Some((entry.path, target)),
            _ => None,
        })
        .collect();
    if links.is_empty() {
        return Ok(());
    }
    let sandbox = tempfile::tempdir().expect("a temporary directory");
    let archive_path = sandbox.path().join("archive.tar");
    std::fs::write(&archive_path, bytes).expect("write the archive");
    let root = sandbox.path().join("root");
    std::fs::create_dir(&root).expect("create the root");
    let status = Command::new("tar")
        .arg("-xf")
        .arg(&archive_path)
        .arg("-C")
        .arg(&root)
        .status()
        .expect("GNU tar must be installed");
    assert!(status.success());
    for (link, target) in links {
        let inode = |path: &str| {
            std::fs::symlink_metadata(root.join(path))
                .map(|metadata| metadata.ino())
                .map_err(|error| format!("{path}: {error}"))
        };
        if inode(&link)? != inode(&target)? {
            return Err(format!("hard link {link} is not {target}"));
        }
    }
    Ok(())
}

/// Paths in the sandbox that are neither the archive, nor the chain of directories down to the
/// root, nor inside the root.
fn outside_root(sandbox: &Path, archive: &Path, root: &Path) -> Vec<PathBuf> {
    let mut escaped = Vec::new();
    let mut stack = vec![sandbox.to_path_buf()];
    while let Some(directory) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&directory) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path == archive || path.starts_with(root) {
                continue;
            }
            if root.starts_with(&path) && path.is_dir() && !path.is_symlink() {
                stack.push(path);
            } else {
                escaped.push(path);
            }
        }
    }
    escaped
}

/// Lists everything under `directory` and checks that every symlink resolves inside `root`.
fn walk(root: &Path, directory: &Path, listing: &mut Listing) -> Result<(), String> {
    let entries = std::fs::read_dir(directory).map_err(|error| error.to_string())?;
    for entry in entries {
        let path = entry.map_err(|error| error.to_string())?.path();
        let metadata = std::fs::symlink_metadata(&path).map_err(|error| error.to_string())?;
        let relative = path
            .strip_prefix(root)
            .expect("under the root")
            .to_str()
            .ok_or("a non-UTF-8 name was unpacked")?
            .to_owned();
        let found = if metadata.file_type().is_symlink() {
            let target = std::fs::read_link(&path).map_err(|error| error.to_string())?;
            let target = target.to_str().ok_or("a non-UTF-8 link target")?.to_owned();
            resolve_inside(root, &path, 0)
                .map_err(|why| format!("symlink {relative} -> {target} {why}"))?;
            Found::Symlink { target }
        } else if metadata.is_dir() {
            walk(root, &path, listing)?;
            Found::Directory
        } else if metadata.is_file() {
            Found::File {
                size: metadata.len(),
            }
        } else {
            return Err(format!(
                "{relative} is neither a file, a directory nor a link"
            ));
        };
        listing.insert((relative, found));
    }
    Ok(())
}

/// Follows the symlink at `link` on the real file system, component by component, refusing any
/// step above `root`. Independent of the validator's resolver: it reads the unpacked tree.
fn resolve_inside(root: &Path, link: &Path, depth: usize) -> Result<PathBuf, String> {
    if depth > 40 {
        return Err("loops".into());
    }
    let target = std::fs::read_link(link).map_err(|error| error.to_string())?;
    if target.is_absolute() {
        return Err("is absolute".into());
    }
    let mut position = link.parent().expect("inside the root").to_path_buf();
    for component in target.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if position == root {
                    return Err("leaves the root".into());
                }
                position.pop();
            }
            Component::Normal(name) => {
                position.push(name);
                if position.is_symlink() {
                    position = resolve_inside(root, &position, depth + 1)?;
                }
            }
            Component::RootDir | Component::Prefix(_) => return Err("is absolute".into()),
        }
    }
    Ok(position)
}
