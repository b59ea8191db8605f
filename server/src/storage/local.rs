//! [`LocalStore`]: chunk objects as files under one directory (the embedded default,
//! `$NISO_DATA_DIR/chunks/`). Owns crash safety on a plain filesystem: write to a temp file,
//! fsync, rename into place, fsync the directory.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::{ObjectStore, StorageError, validate_key};

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

    fn describe(&self) -> String {
        format!("local:{}", self.root.display())
    }

    fn read_ahead(&self) -> usize {
        // A read is a page-cache copy at worst a disk seek away: one object ahead keeps the
        // socket busy (measured: the same throughput as four, half the memory per download).
        2
    }
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
