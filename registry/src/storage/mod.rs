//! Object storage for chunk objects: the [`ObjectStore`] trait the chunk store is written against,
//! its error type, and object-key validation. Two backends: [`local::LocalStore`] (a directory, the
//! embedded default) and [`s3::S3Store`] (any S3-compatible service).
//!
//! Objects are small (one content-defined chunk each, at most a few MiB), so the interface moves
//! whole objects as [`Bytes`]; streaming would add complexity without bounding memory any better.
//! Listing is the exception: a bucket holds any number of objects, so [`ObjectStore::list`]
//! yields bounded pages and never the whole listing at once.

pub mod local;
pub mod s3;
mod s3_http;

use std::time::SystemTime;

use bytes::Bytes;
use futures::stream::BoxStream;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("object {0} not found")]
    NotFound(String),
    /// The store could not be reached or failed; the cause is for logs, never for clients
    /// (HTTP 503 upstream).
    #[error("object storage unavailable: {0}")]
    Unavailable(String),
    /// The key is not one the registry produces (empty, absolute, `..`, backslash, …). A bug in
    /// the caller, not an outage: it must not turn into a 503 that invites retries, nor into a
    /// 404 that hides the bug (HTTP 500 upstream).
    #[error("invalid object key {0:?}")]
    InvalidKey(String),
    /// The storage settings cannot work (for example an endpoint that is not an http(s) URL).
    /// Only returned while opening or connecting a store, i.e. at start-up.
    #[error("invalid object storage configuration: {0}")]
    Config(String),
}

/// One object as a listing reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedObject {
    pub key: String,
    /// Stored bytes.
    pub size: u64,
    /// When the store last wrote the object, by the store's clock (S3 `LastModified`, the
    /// file's mtime): never earlier than the start of the put that wrote it.
    pub last_modified: SystemTime,
}

/// A listing in progress: pages of at most the requested size, in no particular order. An
/// object present for the whole listing appears exactly once; one put or deleted meanwhile may
/// or may not appear. Dropping the stream stops the listing.
pub type ListingPages<'a> = BoxStream<'a, Result<Vec<ListedObject>, StorageError>>;

/// What [`ObjectStore::remove_interrupted_writes`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RemovedDebris {
    pub files: u64,
    pub bytes: u64,
}

/// Where chunk objects live.
///
/// Objects are small (≤ a few MiB: one content-defined chunk each), so whole-object put/get is
/// fine. Keys come from the registry (`chunks/ab/ab12…ef-1a2b3c4d5e6f7a8b`), never from URLs.
#[async_trait::async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    /// Stores `body` under `key`, replacing any previous object. The object is durable when
    /// this returns `Ok`; a failed or interrupted put never leaves a partial object under `key`.
    async fn put(&self, key: &str, body: Bytes) -> Result<(), StorageError>;
    /// The whole object, or [`StorageError::NotFound`].
    async fn get(&self, key: &str) -> Result<Bytes, StorageError>;
    /// Removes the object. Idempotent: deleting a missing object is `Ok`.
    async fn delete(&self, key: &str) -> Result<(), StorageError>;
    /// Every object whose key starts with `prefix` (empty: all), page by page. `page_size` is
    /// clamped to 1..=1000 (S3's maximum page). Memory stays bounded by one page whatever the
    /// number of objects. Keys are returned as stored: they need not be keys the registry made.
    fn list<'a>(&'a self, prefix: &'a str, page_size: usize) -> ListingPages<'a>;
    /// Removes what interrupted puts left behind (never visible through `get` or `list`) whose
    /// last write is older than `older_than`. Stores whose puts are atomic on the service side
    /// (S3: a single PUT, never multipart) leave nothing and keep this default.
    async fn remove_interrupted_writes(
        &self,
        older_than: SystemTime,
    ) -> Result<RemovedDebris, StorageError> {
        let _ = older_than;
        Ok(RemovedDebris::default())
    }
    /// Readiness probe: a cheap round-trip proving the store is reachable and usable.
    async fn check(&self) -> Result<(), StorageError>;
    /// Where the objects live, for logs (`local:/path`, `s3://bucket@endpoint`); never secrets.
    fn describe(&self) -> String;
    /// Objects one download may fetch at once: enough to hide this store's latency. Their
    /// memory is counted against the server-wide read-ahead budget (see `download.rs`).
    fn read_ahead(&self) -> usize {
        4
    }
}

/// The page size a listing really uses for a requested one (S3 refuses more than 1000).
pub fn clamp_page_size(page_size: usize) -> usize {
    page_size.clamp(1, 1000)
}

/// Accepts only relative keys made of non-empty `/`-separated segments, with no `..`, no
/// backslash and no control characters.
///
/// The registry builds every key itself, so a bad key is a bug: debug builds panic to surface it
/// in tests, release builds refuse it with [`StorageError::InvalidKey`] instead of letting it
/// escape the store's root (`../`, absolute paths) or alias another key (`a//b`, `a\b`).
pub fn validate_key(key: &str) -> Result<(), StorageError> {
    let valid = !key.is_empty()
        && key.len() <= 1024 // S3's own limit; also keeps file names within PATH_MAX
        && !key.starts_with('/')
        && !key.contains("..")
        && !key.contains('\\')
        && !key.chars().any(char::is_control)
        && key.split('/').all(|segment| !segment.is_empty() && segment != ".");
    debug_assert!(
        valid,
        "invalid object key {key:?}: keys are built by the registry"
    );
    if valid {
        Ok(())
    } else {
        Err(StorageError::InvalidKey(key.to_owned()))
    }
}
