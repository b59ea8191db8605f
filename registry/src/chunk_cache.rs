//! [`SmallChunkCache`]: the few small chunks that downloads ask for again and again, kept in
//! memory so that serving them costs no object-store read.
//!
//! A small archive (a script, a config bundle, a tool fetched by every CI job) is one chunk
//! smaller than the chunker's minimum, and the last chunk of any archive may be; on S3 each was a
//! GET per download (PostgreSQL + Garage: `latest/{arch}` of a tiny archive at 3379 req/s, p99
//! 17 ms, with a tenth of Garage GETs taking 40–50 ms). Only chunks shorter than the chunker's
//! minimum (and at most [`SMALL_CHUNK_LIMIT`]) are kept: the chunker cuts every other chunk at
//! the minimum or later, so the body of a large download never enters the cache nor pushes the
//! small ones out, whatever the chunk sizes are set to. The cache holds at most its capacity.
//!
//! Why no invalidation: a chunk is named by the sha256 of its content, so the bytes cached under
//! a hash are the right bytes for every row that will ever carry that hash, on every replica,
//! whatever GC deletes meanwhile (a download only reads chunks of a committed version, which GC
//! never deletes). Keys are hashes taken from chunk rows, never from a request.

use bytes::Bytes;
use quick_cache::Weighter;
use quick_cache::sync::Cache;

/// The largest chunk kept, even when the chunker's minimum is larger: the default minimum.
pub const SMALL_CHUNK_LIMIT: usize = 64 * 1024;
/// Room for at least 64 small chunks of the largest kind, thousands of tiny archives.
pub const DEFAULT_SMALL_CHUNK_CACHE_BYTES: usize = 4 * 1024 * 1024;

/// Decompressed chunk bytes by chunk hash, weighed by their length; `None` when disabled.
pub struct SmallChunkCache {
    cache: Option<Cache<String, Bytes, ByLength>>,
    largest_kept: usize,
}

#[derive(Clone)]
struct ByLength;

impl Weighter<String, Bytes> for ByLength {
    fn weight(&self, hash: &String, bytes: &Bytes) -> u64 {
        // The key and the entry's bookkeeping cost memory too; an empty chunk is not free.
        (hash.len() + bytes.len() + 64) as u64
    }
}

impl SmallChunkCache {
    /// A cache holding at most `capacity_bytes` (0 disables it) of chunks shorter than
    /// `chunk_min_size`, the chunker's minimum: whole small archives and archives' last chunks.
    pub fn new(capacity_bytes: usize, chunk_min_size: usize) -> SmallChunkCache {
        let cache = (capacity_bytes > 0).then(|| {
            // quick_cache sizes its tables from an item estimate: small chunks of a few KiB.
            let estimated_items = (capacity_bytes / (8 * 1024)).max(16);
            Cache::with_weighter(estimated_items, capacity_bytes as u64, ByLength)
        });
        SmallChunkCache {
            cache,
            largest_kept: chunk_min_size.saturating_sub(1).min(SMALL_CHUNK_LIMIT),
        }
    }

    pub fn get(&self, hash: &str) -> Option<Bytes> {
        self.cache.as_ref()?.get(hash)
    }

    /// Keeps `bytes` if the chunk is small enough; the cache evicts what it must to stay
    /// within its capacity.
    pub fn insert(&self, hash: &str, bytes: &Bytes) {
        if let Some(cache) = &self.cache
            && bytes.len() <= self.largest_kept
        {
            cache.insert(hash.to_owned(), bytes.clone());
        }
    }

    /// Bytes held (keys and bookkeeping included).
    #[cfg(test)]
    fn weight(&self) -> u64 {
        self.cache.as_ref().map_or(0, |cache| cache.weight())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(len: usize, fill: u8) -> Bytes {
        Bytes::from(vec![fill; len])
    }

    #[test]
    fn only_chunks_shorter_than_the_chunker_minimum_are_kept() {
        let cache = SmallChunkCache::new(1024 * 1024, 4096);
        cache.insert("small", &chunk(1000, 1));
        cache.insert("below", &chunk(4095, 2));
        cache.insert("minimum", &chunk(4096, 3));
        assert_eq!(cache.get("small"), Some(chunk(1000, 1)));
        assert_eq!(cache.get("below"), Some(chunk(4095, 2)));
        assert_eq!(
            cache.get("minimum"),
            None,
            "a chunk the chunker cut mid-archive"
        );
        assert_eq!(cache.get("never inserted"), None);
    }

    #[test]
    fn a_large_chunker_minimum_still_keeps_only_small_chunks() {
        let cache = SmallChunkCache::new(4 * 1024 * 1024, 1024 * 1024);
        cache.insert("limit", &chunk(SMALL_CHUNK_LIMIT, 1));
        cache.insert("above", &chunk(SMALL_CHUNK_LIMIT + 1, 2));
        assert_eq!(cache.get("limit"), Some(chunk(SMALL_CHUNK_LIMIT, 1)));
        assert_eq!(cache.get("above"), None);
    }

    #[test]
    fn the_cache_stays_within_its_capacity() {
        let capacity = 256 * 1024;
        let cache = SmallChunkCache::new(capacity, 64 * 1024);
        for i in 0..100u8 {
            cache.insert(&format!("chunk-{i}"), &chunk(32 * 1024, i));
            assert!(
                cache.weight() <= capacity as u64,
                "{} bytes",
                cache.weight()
            );
        }
        let kept = (0..100u8)
            .filter(|i| cache.get(&format!("chunk-{i}")).is_some())
            .count();
        assert!(
            (1..=8).contains(&kept),
            "{kept} chunks of 32 KiB kept in 256 KiB"
        );
    }

    #[test]
    fn a_zero_capacity_disables_it() {
        let cache = SmallChunkCache::new(0, 64 * 1024);
        cache.insert("small", &chunk(10, 1));
        assert_eq!(cache.get("small"), None);
        assert_eq!(cache.weight(), 0);
    }
}
