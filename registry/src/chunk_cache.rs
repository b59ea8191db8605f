//! [`SmallChunkCache`]: the few small chunks that downloads ask for again and again, kept in
//! memory so that serving them costs no object-store read.
//!
//! A small archive (a script, a config bundle, a tool fetched by every CI job) is one chunk
//! smaller than the chunker's minimum, and the last chunk of any archive may be; on S3 each was a
//! GET per download (PostgreSQL + Garage: `latest/{arch}` of a tiny archive at 3379 req/s, p99
//! 17 ms, with a tenth of Garage GETs taking 40–50 ms). Only chunks up to
//! [`SMALL_CHUNK_LIMIT`] are kept, so a large download neither fills the cache nor pushes the
//! small ones out, and the cache holds at most its byte capacity.
//!
//! Why no invalidation: a chunk is named by the sha256 of its content, so the bytes cached under
//! a hash are the right bytes for every row that will ever carry that hash, on every replica,
//! whatever GC deletes meanwhile (a download only reads chunks of a committed version, which GC
//! never deletes). Keys are hashes taken from chunk rows, never from a request.

use bytes::Bytes;
use quick_cache::Weighter;
use quick_cache::sync::Cache;

/// The largest chunk kept: a whole small archive or an archive's short last chunk. Below the
/// default chunker minimum (64 KiB), so the body of a large archive is never cached.
pub const SMALL_CHUNK_LIMIT: usize = 64 * 1024;
/// Room for at least 64 small chunks of the largest kind, thousands of tiny archives.
pub const DEFAULT_SMALL_CHUNK_CACHE_BYTES: usize = 4 * 1024 * 1024;

/// Decompressed chunk bytes by chunk hash, weighed by their length; `None` when disabled.
pub struct SmallChunkCache {
    cache: Option<Cache<String, Bytes, ByLength>>,
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
    /// A cache holding at most `capacity_bytes`; 0 disables it.
    pub fn new(capacity_bytes: usize) -> SmallChunkCache {
        let cache = (capacity_bytes > 0).then(|| {
            // quick_cache sizes its tables from an item estimate: small chunks of a few KiB.
            let estimated_items = (capacity_bytes / (8 * 1024)).max(16);
            Cache::with_weighter(estimated_items, capacity_bytes as u64, ByLength)
        });
        SmallChunkCache { cache }
    }

    pub fn get(&self, hash: &str) -> Option<Bytes> {
        self.cache.as_ref()?.get(hash)
    }

    /// Keeps `bytes` if the chunk is small enough; the cache evicts what it must to stay
    /// within its capacity.
    pub fn insert(&self, hash: &str, bytes: &Bytes) {
        if let Some(cache) = &self.cache
            && bytes.len() <= SMALL_CHUNK_LIMIT
        {
            cache.insert(hash.to_owned(), bytes.clone());
        }
    }

    /// Bytes held (keys and bookkeeping included).
    pub fn weight(&self) -> u64 {
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
    fn small_chunks_are_kept_and_large_ones_are_not() {
        let cache = SmallChunkCache::new(1024 * 1024);
        cache.insert("small", &chunk(1000, 1));
        cache.insert("limit", &chunk(SMALL_CHUNK_LIMIT, 2));
        cache.insert("large", &chunk(SMALL_CHUNK_LIMIT + 1, 3));
        assert_eq!(cache.get("small"), Some(chunk(1000, 1)));
        assert_eq!(cache.get("limit"), Some(chunk(SMALL_CHUNK_LIMIT, 2)));
        assert_eq!(cache.get("large"), None);
        assert_eq!(cache.get("never inserted"), None);
    }

    #[test]
    fn the_cache_stays_within_its_capacity() {
        let capacity = 256 * 1024;
        let cache = SmallChunkCache::new(capacity);
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
        let cache = SmallChunkCache::new(0);
        cache.insert("small", &chunk(10, 1));
        assert_eq!(cache.get("small"), None);
        assert_eq!(cache.weight(), 0);
    }
}
