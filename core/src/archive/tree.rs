//! The virtual tree of an archive: where each entry lands once unpacked, and where its links
//! lead.
//!
//! Each path is checked as text first (UTF-8, no NUL, no backslash, not absolute, no `..`), then
//! placed in a tree of the entries seen so far: an entry whose parent is a symlink or a file, or
//! whose path is taken already, is refused, so an unpacker never writes through a link. A hard
//! link must name an earlier regular file by its exact path. Symlinks are checked when the whole
//! archive has been seen ([`Tree::check_symlinks`]), by resolving each target through the final
//! tree the way the kernel would (following symlinks met on the way, `..` from a symlinked
//! directory going to its real parent), refusing any that leaves the root at any step. That
//! catches `a -> b/c` followed later by `b -> ..`.
//!
//! Memory is bounded by [`ArchiveLimits::max_entries`] (nodes, counting implicit parent
//! directories) and [`ArchiveLimits::max_name_bytes`] (the components stored, each once).

use std::collections::HashMap;

use super::{ArchiveEntry, ArchiveError, ArchiveLimits, EntryKind};

/// Longest entry path or link target accepted, in bytes (Linux's PATH_MAX).
pub(super) const MAX_PATH_BYTES: usize = 4096;

/// Symlinks followed while resolving one target, as Linux's ELOOP bound.
const MAX_LINK_DEPTH: usize = 40;

/// Path components visited while resolving all symlinks of one archive; bounds the work of
/// [`Tree::check_symlinks`] whatever the archive's shape.
const MAX_RESOLUTION_STEPS: u64 = 20_000_000;

const ROOT: usize = 0;

#[derive(Debug)]
enum NodeKind {
    Directory,
    File { size: u64 },
    Symlink { target: Box<str> },
    HardLink { target: usize },
}

#[derive(Debug)]
struct Node {
    parent: usize,
    name: Box<str>,
    kind: NodeKind,
    /// Named by an entry of the archive (false for parent directories created implicitly).
    explicit: bool,
}

/// What an entry will be in the tree.
#[derive(Debug)]
pub(super) enum NewEntry<'a> {
    Directory,
    File { size: u64 },
    Symlink { target: &'a str },
    HardLink { target: &'a str },
}

#[derive(Debug)]
pub(super) struct Tree {
    nodes: Vec<Node>,
    children: HashMap<(usize, Box<str>), usize>,
    name_bytes: u64,
    max_entries: u64,
    max_name_bytes: u64,
}

/// A position while resolving a link target: an existing node, and how many components below
/// it the path goes into names that do not exist (resolved lexically from there on).
#[derive(Clone, Copy)]
struct Position {
    node: usize,
    missing: usize,
}

impl Tree {
    pub(super) fn new(limits: &ArchiveLimits) -> Tree {
        Tree {
            nodes: vec![Node {
                parent: ROOT,
                name: "".into(),
                kind: NodeKind::Directory,
                explicit: false,
            }],
            children: HashMap::new(),
            name_bytes: 0,
            max_entries: limits.max_entries,
            max_name_bytes: limits.max_name_bytes,
        }
    }

    /// Adds the entry at `components` (from [`entry_components`]). `shown` names it in errors.
    pub(super) fn insert(
        &mut self,
        components: &[&str],
        shown: &str,
        entry: NewEntry<'_>,
    ) -> Result<(), ArchiveError> {
        let Some((last, parents)) = components.split_last() else {
            // The root itself (`./`): only a directory may name it.
            return match entry {
                NewEntry::Directory if !self.nodes[ROOT].explicit => {
                    self.nodes[ROOT].explicit = true;
                    Ok(())
                }
                NewEntry::Directory => Err(invalid(format!("entry `{shown}` appears twice"))),
                _ => Err(invalid(format!("entry `{shown}` has an empty path"))),
            };
        };
        let mut directory = ROOT;
        for (index, name) in parents.iter().enumerate() {
            directory = match self.child(directory, name) {
                Some(child) => match self.nodes[child].kind {
                    NodeKind::Directory => child,
                    NodeKind::Symlink { .. } => {
                        return Err(invalid(format!(
                            "entry `{shown}` is inside `{}`, which is a symlink",
                            components[..=index].join("/")
                        )));
                    }
                    _ => {
                        return Err(invalid(format!(
                            "entry `{shown}` is inside `{}`, which is not a directory",
                            components[..=index].join("/")
                        )));
                    }
                },
                None => self.add(directory, name, NodeKind::Directory, false)?,
            };
        }
        if let Some(existing) = self.child(directory, last) {
            let node = &mut self.nodes[existing];
            return match (&entry, &node.kind) {
                (NewEntry::Directory, NodeKind::Directory) if !node.explicit => {
                    node.explicit = true;
                    Ok(())
                }
                _ => Err(invalid(format!(
                    "entry `{shown}` appears twice (unpackers differ on which one wins)"
                ))),
            };
        }
        let kind = match entry {
            NewEntry::Directory => NodeKind::Directory,
            NewEntry::File { size } => NodeKind::File { size },
            NewEntry::Symlink { target } => NodeKind::Symlink {
                target: target.into(),
            },
            NewEntry::HardLink { target } => NodeKind::HardLink {
                target: self
                    .hard_link_target(target)
                    .map_err(|why| invalid(format!("link `{shown}` -> `{target}` {why}")))?,
            },
        };
        self.add(directory, last, kind, true)?;
        Ok(())
    }

    /// Resolves every symlink against the final tree; see the module doc.
    pub(super) fn check_symlinks(&self) -> Result<(), ArchiveError> {
        let mut budget = MAX_RESOLUTION_STEPS;
        for (id, node) in self.nodes.iter().enumerate() {
            if let NodeKind::Symlink { target } = &node.kind {
                self.resolve(node.parent, target, 0, &mut budget)
                    .map_err(|why| {
                        invalid(format!("link `{}` -> `{target}` {why}", self.path_of(id)))
                    })?;
            }
        }
        Ok(())
    }

    /// Every node but the root, in archive order, with parent directories created implicitly
    /// listed as directories where they first appear.
    pub(super) fn entries(&self) -> Vec<ArchiveEntry> {
        self.nodes
            .iter()
            .enumerate()
            .skip(1)
            .map(|(id, node)| ArchiveEntry {
                path: self.path_of(id),
                kind: match &node.kind {
                    NodeKind::Directory => EntryKind::Directory,
                    NodeKind::File { size } => EntryKind::File { size: *size },
                    NodeKind::Symlink { target } => EntryKind::Symlink {
                        target: target.to_string(),
                    },
                    NodeKind::HardLink { target } => EntryKind::HardLink {
                        target: self.path_of(*target),
                    },
                },
            })
            .collect()
    }

    fn child(&self, directory: usize, name: &str) -> Option<usize> {
        // A borrowed lookup would need a custom key type; names are short.
        self.children.get(&(directory, Box::from(name))).copied()
    }

    fn add(
        &mut self,
        parent: usize,
        name: &str,
        kind: NodeKind,
        explicit: bool,
    ) -> Result<usize, ArchiveError> {
        if self.nodes.len() as u64 >= self.max_entries.saturating_add(1) {
            return Err(ArchiveError::TooLarge(format!(
                "archive has more than {} entries",
                self.max_entries
            )));
        }
        let extra = match &kind {
            NodeKind::Symlink { target } => target.len(),
            _ => 0,
        };
        self.name_bytes += (name.len() + extra) as u64;
        if self.name_bytes > self.max_name_bytes {
            return Err(ArchiveError::TooLarge(format!(
                "the archive's names take more than {} bytes",
                self.max_name_bytes
            )));
        }
        let id = self.nodes.len();
        self.nodes.push(Node {
            parent,
            name: name.into(),
            kind,
            explicit,
        });
        self.children.insert((parent, name.into()), id);
        Ok(id)
    }

    /// A hard link names an earlier regular file by its path from the root, without links on
    /// the way (unpackers call link(2) with the target as written).
    fn hard_link_target(&self, target: &str) -> Result<usize, String> {
        let components = entry_components(target.as_bytes())?;
        let mut node = ROOT;
        for (index, name) in components.iter().enumerate() {
            let Some(child) = self.child(node, name) else {
                return Err("does not name an earlier entry".into());
            };
            let is_last = index + 1 == components.len();
            match &self.nodes[child].kind {
                NodeKind::Directory if !is_last => node = child,
                NodeKind::File { .. } if is_last => return Ok(child),
                NodeKind::Symlink { .. } => return Err("goes through a symlink".into()),
                NodeKind::HardLink { .. } if is_last => {
                    return Err("names another hard link, not a regular file".into());
                }
                _ => return Err("does not name an earlier regular file".into()),
            }
        }
        Err("does not name an earlier regular file".into())
    }

    fn resolve(
        &self,
        start: usize,
        target: &str,
        depth: usize,
        budget: &mut u64,
    ) -> Result<Position, &'static str> {
        if depth > MAX_LINK_DEPTH {
            return Err("goes through too many levels of symlinks");
        }
        let mut position = Position {
            node: start,
            missing: 0,
        };
        for name in target.split('/') {
            *budget = budget
                .checked_sub(1)
                .ok_or("takes too many steps to resolve (symlinks are nested too deeply)")?;
            match name {
                "" | "." => {}
                ".." if position.missing > 0 => position.missing -= 1,
                ".." if position.node == ROOT => return Err("points outside the archive"),
                ".." => position.node = self.nodes[position.node].parent,
                _ if position.missing > 0 => position.missing += 1,
                _ => match self.child(position.node, name) {
                    None => position.missing = 1,
                    Some(child) => match &self.nodes[child].kind {
                        NodeKind::Symlink { target } => {
                            position =
                                self.resolve(self.nodes[child].parent, target, depth + 1, budget)?;
                        }
                        _ => position.node = child,
                    },
                },
            }
        }
        Ok(position)
    }

    fn path_of(&self, mut id: usize) -> String {
        let mut names = Vec::new();
        while id != ROOT {
            names.push(&*self.nodes[id].name);
            id = self.nodes[id].parent;
        }
        names.reverse();
        names.join("/")
    }
}

/// Checks a path as text and splits it into its components, dropping empty and `.` ones.
/// The error completes a sentence starting with the entry's name.
pub(super) fn entry_components(path: &[u8]) -> Result<Vec<&str>, String> {
    if path.contains(&0) {
        return Err("contains a NUL byte".into());
    }
    let text = std::str::from_utf8(path).map_err(|_| "is not valid UTF-8".to_owned())?;
    if path.len() > MAX_PATH_BYTES {
        return Err(format!("is longer than {MAX_PATH_BYTES} bytes"));
    }
    if is_absolute(path) {
        return Err("has an absolute path".into());
    }
    // `\` separates components on Windows: checked as a separator first, for the clearer
    // message, then refused outright so that every platform sees the same names.
    if text.split(['/', '\\']).any(|name| name == "..") {
        return Err("has a `..` component".into());
    }
    if text.contains('\\') {
        return Err("contains a backslash (a path separator on Windows)".into());
    }
    Ok(text
        .split('/')
        .filter(|name| !name.is_empty() && *name != ".")
        .collect())
}

/// Checks a symlink target as text; where it leads is checked by [`Tree::check_symlinks`].
pub(super) fn check_symlink_target(target: &[u8]) -> Result<&str, String> {
    if target.is_empty() {
        return Err("has an empty target".into());
    }
    if target.contains(&0) {
        return Err("has a target with a NUL byte".into());
    }
    let text = std::str::from_utf8(target).map_err(|_| "has a target that is not valid UTF-8")?;
    if target.len() > MAX_PATH_BYTES {
        return Err(format!("has a target longer than {MAX_PATH_BYTES} bytes"));
    }
    if is_absolute(target) {
        return Err("points to an absolute path".into());
    }
    if text.contains('\\') {
        return Err("has a target with a backslash (a path separator on Windows)".into());
    }
    Ok(text)
}

fn is_absolute(path: &[u8]) -> bool {
    matches!(path, [b'/' | b'\\', ..])
        || matches!(path, [drive, b':', ..] if drive.is_ascii_alphabetic())
}

fn invalid(message: String) -> ArchiveError {
    ArchiveError::Invalid(message)
}
