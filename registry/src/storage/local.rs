//! [`LocalStore`]: chunk objects as files under one directory (the embedded default,
//! `$NISO_DATA_DIR/chunks/`). Owns crash safety on a plain filesystem: write to a temp file,
//! fsync, rename into place, fsync the directory. Listing walks the directory tree lazily on a
//! blocking thread that hands over one page at a time, and sweeps the temp files a crash left.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;

use super::{
    ListedObject, ListingPages, ObjectStore, RemovedDebris, StorageError, clamp_page_size,
    validate_key,
};

/// Prefix of in-flight temp files. Keys never start a segment with it (they are `chunks/…`), and
/// a crash can leave such files behind, but never under a final key; they are safe to delete
/// once older than any upload could take.
const TEMP_PREFIX: &str = ".niso-tmp-";

/// Chunk objects stored as files: key `chunks/ab/x` lives at `<root>/chunks/ab/x`.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    /// Opens (creating if needed) the store rooted at `root`.
    ///
    /// Blocking, but only a `create_dir_all` meant for start-up, before serving.
    pub fn open(root: PathBuf) -> Result<LocalStore, StorageError> {
        fs::create_dir_all(&root).map_err(|e| io_unavailable("create", &root, &e))?;
        // Absolute, so logs name the real place and a later change of working directory
        // cannot silently move the store.
        let root = std::path::absolute(&root).map_err(|e| io_unavailable("resolve", &root, &e))?;
        Ok(LocalStore { root })
    }

    /// The directory holding the objects.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path_of(&self, key: &str) -> Result<PathBuf, StorageError> {
        validate_key(key)?;
        Ok(self.root.join(key))
    }
}

#[async_trait::async_trait]
impl ObjectStore for LocalStore {
    async fn put(&self, key: &str, body: Bytes) -> Result<(), StorageError> {
        let path = self.path_of(key)?;
        let root = self.root.clone();
        // One blocking task for the whole create/write/fsync/rename sequence: cheaper than a
        // tokio::fs hop per step, and fsync can take long enough to stall a runtime worker.
        blocking(move || put_blocking(&root, &path, &body)).await
    }

    async fn get(&self, key: &str) -> Result<Bytes, StorageError> {
        let path = self.path_of(key)?;
        match tokio::fs::read(&path).await {
            Ok(data) => Ok(Bytes::from(data)),
            Err(e) if is_missing(&e) => Err(StorageError::NotFound(key.to_owned())),
            Err(e) => Err(io_unavailable("read", &path, &e)),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        let path = self.path_of(key)?;
        blocking(move || match fs::remove_file(&path) {
            Ok(()) => {
                // A deletion that a crash undoes would leak the file for good once the
                // registry has forgotten the chunk, so persist it like a put.
                sync_dir_best_effort(parent_of(&path));
                Ok(())
            }
            Err(e) if is_missing(&e) => Ok(()),
            Err(e) => Err(io_unavailable("delete", &path, &e)),
        })
        .await
    }

    async fn check(&self) -> Result<(), StorageError> {
        let root = self.root.clone();
        // Creating a file proves more than `stat`: a read-only or full volume fails here
        // instead of failing the next upload.
        blocking(move || {
            let (probe, file) =
                create_temp(&root).map_err(|e| io_unavailable("write probe in", &root, &e))?;
            drop(file);
            fs::remove_file(&probe).map_err(|e| io_unavailable("remove probe", &probe, &e))
        })
        .await
    }

    fn list<'a>(&'a self, prefix: &'a str, page_size: usize) -> ListingPages<'a> {
        let page_size = clamp_page_size(page_size);
        // Walk only the directory the prefix names up to its last `/` ("chunks" for "chunks/",
        // "chunks/ab" for "chunks/ab/ab12"), then filter on the whole prefix.
        let directory = prefix.rfind('/').map_or("", |end| &prefix[..end]);
        if !directory.is_empty()
            && let Err(error) = validate_key(directory)
        {
            return futures::stream::once(async move { Err(error) }).boxed();
        }
        let root = self.root.clone();
        let start = self.root.join(directory);
        let prefix = prefix.to_owned();
        // Capacity 1: the walker stays at most one page ahead of the consumer, and stops as soon
        // as the consumer drops the stream (its next send fails).
        let (sender, receiver) = mpsc::channel(1);
        tokio::task::spawn_blocking(move || {
            walk_objects(&root, &start, &prefix, page_size, &sender);
        });
        futures::stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|page| (page, receiver))
        })
        .boxed()
    }

    async fn remove_interrupted_writes(
        &self,
        older_than: SystemTime,
    ) -> Result<RemovedDebris, StorageError> {
        let root = self.root.clone();
        blocking(move || remove_stale_temp_files(&root, older_than)).await
    }

    fn describe(&self) -> String {
        format!("local:{}", self.root.display())
    }

    fn read_ahead(&self) -> usize {
        // A read is a page-cache copy at worst a disk seek away: one object ahead keeps the
        // socket busy (measured: the same throughput as four, half the memory per download).
        2
    }
}

type PageSender = mpsc::Sender<Result<Vec<ListedObject>, StorageError>>;

/// Sends every object file under `start` whose key starts with `prefix`, `page_size` at a time.
/// `walkdir` reads directories lazily (no sorting), so memory is one page plus one open
/// directory per level, however many files there are.
fn walk_objects(root: &Path, start: &Path, prefix: &str, page_size: usize, sender: &PageSender) {
    let mut page = Vec::with_capacity(page_size);
    for entry in walkdir::WalkDir::new(start).follow_links(false) {
        let entry = match entry {
            Ok(entry) => entry,
            // Nothing stored under the prefix yet, or a file deleted while we walked.
            Err(error) if error.io_error().is_some_and(is_missing) => continue,
            Err(error) => {
                let _ = sender.blocking_send(Err(walk_unavailable(start, &error)));
                return;
            }
        };
        if !entry.file_type().is_file() || is_temp_file(entry.file_name()) {
            continue;
        }
        let Some(key) = key_of(root, entry.path()) else {
            continue; // not UTF-8: no key of ours, and no key S3 could hold either
        };
        if !key.starts_with(prefix) {
            continue;
        }
        let metadata = match entry.metadata() {
            Ok(metadata) => metadata,
            Err(error) if error.io_error().is_some_and(is_missing) => continue,
            Err(error) => {
                let _ = sender.blocking_send(Err(walk_unavailable(entry.path(), &error)));
                return;
            }
        };
        let last_modified = match metadata.modified() {
            Ok(time) => time,
            Err(error) => {
                let _ = sender.blocking_send(Err(io_unavailable("stat", entry.path(), &error)));
                return;
            }
        };
        page.push(ListedObject {
            key,
            size: metadata.len(),
            last_modified,
        });
        if page.len() == page_size
            && sender
                .blocking_send(Ok(std::mem::replace(
                    &mut page,
                    Vec::with_capacity(page_size),
                )))
                .is_err()
        {
            return; // the consumer stopped listening
        }
    }
    if !page.is_empty() {
        let _ = sender.blocking_send(Ok(page));
    }
}

/// Deletes temp files (see [`TEMP_PREFIX`]) last written before `older_than`: puts and
/// readiness probes that a crash interrupted before their rename or removal. A put in progress
/// keeps writing its temp file, so its mtime is recent and it is left alone.
fn remove_stale_temp_files(
    root: &Path,
    older_than: SystemTime,
) -> Result<RemovedDebris, StorageError> {
    let mut removed = RemovedDebris::default();
    for entry in walkdir::WalkDir::new(root).follow_links(false) {
        let entry = match entry {
            Ok(entry) => entry,
            Err(error) if error.io_error().is_some_and(is_missing) => continue,
            Err(error) => return Err(walk_unavailable(root, &error)),
        };
        if !entry.file_type().is_file() || !is_temp_file(entry.file_name()) {
            continue;
        }
        let Ok(metadata) = entry.metadata() else {
            continue; // renamed or removed meanwhile: it was not debris
        };
        if metadata.modified().is_ok_and(|time| time < older_than) {
            match fs::remove_file(entry.path()) {
                Ok(()) => {
                    removed.files += 1;
                    removed.bytes += metadata.len();
                }
                Err(error) if is_missing(&error) => {}
                Err(error) => return Err(io_unavailable("remove", entry.path(), &error)),
            }
        }
    }
    Ok(removed)
}

fn is_temp_file(name: &std::ffi::OsStr) -> bool {
    name.as_encoded_bytes().starts_with(TEMP_PREFIX.as_bytes())
}

/// The key of the file at `path`: its path below `root`, `/`-separated.
fn key_of(root: &Path, path: &Path) -> Option<String> {
    let relative = path.strip_prefix(root).ok()?;
    let segments: Option<Vec<&str>> = relative.iter().map(|segment| segment.to_str()).collect();
    Some(segments?.join("/"))
}

fn walk_unavailable(path: &Path, error: &walkdir::Error) -> StorageError {
    StorageError::Unavailable(format!("list {}: {error}", path.display()))
}

fn put_blocking(root: &Path, path: &Path, body: &[u8]) -> Result<(), StorageError> {
    let dir = parent_of(path);
    ensure_dir(root, dir).map_err(|e| io_unavailable("create directory", dir, &e))?;
    let (tmp, file) =
        create_temp(dir).map_err(|e| io_unavailable("create temp file in", dir, &e))?;
    if let Err(e) = write_and_rename(file, &tmp, path, body) {
        let _ = fs::remove_file(&tmp);
        return Err(io_unavailable("write", path, &e));
    }
    // The rename is only durable once the directory entry is on disk.
    sync_dir_best_effort(dir);
    Ok(())
}

fn write_and_rename(mut file: File, tmp: &Path, path: &Path, body: &[u8]) -> io::Result<()> {
    file.write_all(body)?;
    file.sync_all()?;
    drop(file);
    // rename(2) replaces atomically: readers see the old object or the new one, never a mix,
    // and a crash leaves at most a stray temp file.
    fs::rename(tmp, path)
}

/// Creates `dir` (and missing ancestors) if needed. New directories' entries in their parents
/// must reach the disk too, or a crash could drop a whole prefix directory with its objects.
fn ensure_dir(root: &Path, dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    // Concurrent puts may race here; create_dir_all tolerates directories created meanwhile.
    fs::create_dir_all(dir)?;
    let mut ancestor = dir.parent();
    while let Some(d) = ancestor {
        sync_dir_best_effort(d);
        if d == root {
            break;
        }
        ancestor = d.parent();
    }
    Ok(())
}

/// Creates a fresh, uniquely named file in `dir`. `create_new` guarantees two writers never
/// share a temp file, even if the random names collided.
fn create_temp(dir: &Path) -> io::Result<(PathBuf, File)> {
    loop {
        let name = format!("{TEMP_PREFIX}{}", hex::encode(rand::random::<[u8; 8]>()));
        let path = dir.join(name);
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(file) => return Ok((path, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Best-effort because some filesystems refuse to fsync a directory; the data itself was
/// already fsynced, so this only narrows the crash window further.
fn sync_dir_best_effort(dir: &Path) {
    if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
        tracing::debug!(dir = %dir.display(), error = %e, "directory fsync failed");
    }
}

fn parent_of(path: &Path) -> &Path {
    // Validated keys are relative and non-empty, so the joined path always has a parent.
    path.parent().expect("object path has a parent")
}

/// "No such object": the file is missing, a path segment is a file, or the key names a directory.
fn is_missing(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory | io::ErrorKind::IsADirectory
    )
}

fn io_unavailable(op: &str, path: &Path, e: &io::Error) -> StorageError {
    StorageError::Unavailable(format!("{op} {}: {e}", path.display()))
}

async fn blocking<T, F>(f: F) -> Result<T, StorageError>
where
    F: FnOnce() -> Result<T, StorageError> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        // Keep a bug's panic a panic rather than disguising it as an outage.
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(StorageError::Unavailable(format!(
            "blocking task failed: {e}"
        ))),
    }
}
