//! The content-addressed chunk cache: `chunks/<first two hex digits>/<sha256>` under the cache
//! directory. A chunk is named by its hash, so one copy serves every package and version that
//! contains it, from any registry.
//!
//! Every read is verified: a chunk whose bytes no longer match its name (disk corruption, an
//! interrupted write from an older client, tampering) is deleted and reported missing, so the
//! caller fetches it again. Writes go to a temporary file renamed into place, so a reader never
//! sees half a chunk. Recency is the file's modification time, set on each hit; eviction removes
//! the least recently used chunks until the cache fits its limit. Several `niso` processes may
//! share the cache: the worst a race does is evict a chunk another process then fetches again.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use sha2::{Digest, Sha256};

/// A chunk's name: 64 lowercase hex digits. Checked before the name becomes a path, since it
/// comes from the registry.
pub fn is_chunk_hash(hash: &str) -> bool {
    hash.len() == 64 && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[derive(Debug, Clone)]
pub struct ChunkCache {
    root: PathBuf,
    max_bytes: u64,
}

/// What an eviction pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Eviction {
    pub removed_chunks: u64,
    pub removed_bytes: u64,
    pub remaining_bytes: u64,
}

impl ChunkCache {
    pub fn open(directory: &Path, max_bytes: u64) -> std::io::Result<ChunkCache> {
        let root = directory.join("chunks");
        fs::create_dir_all(&root)?;
        Ok(ChunkCache { root, max_bytes })
    }

    fn path(&self, hash: &str) -> PathBuf {
        debug_assert!(is_chunk_hash(hash));
        self.root.join(&hash[..2]).join(hash)
    }

    /// The chunk's bytes if cached and intact; a corrupted copy is removed.
    pub fn get(&self, hash: &str) -> std::io::Result<Option<Vec<u8>>> {
        if !is_chunk_hash(hash) {
            return Ok(None);
        }
        let path = self.path(hash);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(error),
        };
        if sha256_hex(&bytes) != hash {
            remove_if_present(&path)?;
            return Ok(None);
        }
        // A hit makes the chunk the most recently used. Best effort: a read-only cache still
        // serves chunks.
        if let Ok(file) = fs::File::options().write(true).open(&path) {
            let _ = file.set_modified(SystemTime::now());
        }
        Ok(Some(bytes))
    }

    /// Stores a chunk already verified against `hash`.
    pub fn put(&self, hash: &str, bytes: &[u8]) -> std::io::Result<()> {
        if !is_chunk_hash(hash) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a chunk hash",
            ));
        }
        let path = self.path(hash);
        let directory = path.parent().expect("chunk paths have a parent");
        fs::create_dir_all(directory)?;
        let mut file = tempfile::NamedTempFile::new_in(directory)?;
        file.write_all(bytes)?;
        file.persist(&path).map_err(|error| error.error)?;
        Ok(())
    }

    /// Removes least recently used chunks until the cache holds at most its limit.
    pub fn evict(&self) -> std::io::Result<Eviction> {
        let mut chunks = Vec::new();
        let mut total = 0u64;
        for shard in fs::read_dir(&self.root)? {
            let shard = shard?;
            if !shard.file_type()?.is_dir() {
                continue;
            }
            for entry in fs::read_dir(shard.path())? {
                let entry = entry?;
                let metadata = match entry.metadata() {
                    Ok(metadata) if metadata.is_file() => metadata,
                    _ => continue,
                };
                let used = metadata.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                total += metadata.len();
                chunks.push((used, metadata.len(), entry.path()));
            }
        }
        chunks.sort();
        let mut eviction = Eviction::default();
        for (_, size, path) in chunks {
            if total <= self.max_bytes {
                break;
            }
            remove_if_present(&path)?;
            total -= size;
            eviction.removed_chunks += 1;
            eviction.removed_bytes += size;
        }
        eviction.remaining_bytes = total;
        Ok(eviction)
    }
}

fn remove_if_present(path: &Path) -> std::io::Result<()> {
    match fs::remove_file(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn chunk(seed: u8, size: usize) -> (String, Vec<u8>) {
        let bytes = vec![seed; size];
        (sha256_hex(&bytes), bytes)
    }

    fn age(cache: &ChunkCache, hash: &str, seconds_ago: u64) {
        let file = fs::File::options()
            .write(true)
            .open(cache.path(hash))
            .unwrap();
        file.set_modified(SystemTime::now() - Duration::from_secs(seconds_ago))
            .unwrap();
    }

    #[test]
    fn a_stored_chunk_is_returned() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ChunkCache::open(dir.path(), 1 << 20).unwrap();
        let (hash, bytes) = chunk(1, 1000);
        assert_eq!(cache.get(&hash).unwrap(), None);
        cache.put(&hash, &bytes).unwrap();
        assert_eq!(cache.get(&hash).unwrap(), Some(bytes));
    }

    #[test]
    fn a_corrupted_chunk_is_dropped_and_reported_missing() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ChunkCache::open(dir.path(), 1 << 20).unwrap();
        let (hash, mut bytes) = chunk(2, 1000);
        bytes[10] ^= 1;
        fs::create_dir_all(cache.path(&hash).parent().unwrap()).unwrap();
        fs::write(cache.path(&hash), &bytes).unwrap();
        assert_eq!(cache.get(&hash).unwrap(), None);
        assert!(!cache.path(&hash).exists(), "the bad copy is removed");
    }

    #[test]
    fn names_that_are_not_hashes_never_become_paths() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ChunkCache::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(cache.get("../../etc/passwd").unwrap(), None);
        assert!(cache.put("../x", b"x").is_err());
        assert!(!is_chunk_hash(&"A".repeat(64)));
    }

    #[test]
    fn eviction_removes_the_least_recently_used_first() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ChunkCache::open(dir.path(), 2500).unwrap();
        let chunks: Vec<_> = (0..4).map(|seed| chunk(seed, 1000)).collect();
        for (hash, bytes) in &chunks {
            cache.put(hash, bytes).unwrap();
        }
        // Written oldest first: 0 (40 s ago) … 3 (10 s ago); then 0 is read, which makes it
        // the most recently used.
        for (index, (hash, _)) in chunks.iter().enumerate() {
            age(&cache, hash, 40 - 10 * index as u64);
        }
        assert!(cache.get(&chunks[0].0).unwrap().is_some());
        let eviction = cache.evict().unwrap();
        assert_eq!(eviction.removed_chunks, 2);
        assert_eq!(eviction.remaining_bytes, 2000);
        assert!(!cache.path(&chunks[1].0).exists());
        assert!(!cache.path(&chunks[2].0).exists());
        assert!(cache.path(&chunks[0].0).exists(), "recently read");
        assert!(cache.path(&chunks[3].0).exists(), "most recently written");
    }
}
