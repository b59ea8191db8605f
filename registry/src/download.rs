//! Downloads: an archive is streamed by reading its chunks in order, a few ahead of the one
//! being sent, so memory is bounded by a few chunks whatever the archive size. Ranges select
//! the chunks that overlap them and trim the first and last.
//!
//! How far a download reads ahead is the object store's choice ([`ObjectStore::read_ahead`]:
//! a local disk needs a few, an S3 store tens, since each GET waits a round trip and a slow
//! one holds up every chunk behind it) within a server-wide budget of bytes read ahead
//! ([`Registry::read_ahead_budget`]): one download alone gets the whole depth, many at once
//! share the budget, and each always reads at least the chunk it sends next, so none stalls.
//!
//! [`ObjectStore::read_ahead`]: crate::storage::ObjectStore::read_ahead

use std::iter::Peekable;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::{FuturesOrdered, Stream, StreamExt};
use tokio::sync::OwnedSemaphorePermit;

use entity::{chunk, package};

use super::Registry;
use super::packages::VersionInfo;
use crate::error::{Error, Result};

/// Chunk bytes read ahead across all downloads of this server: with S3's 32 objects ahead, one
/// download of 256 KiB chunks gets its whole depth and sixteen at once get two each. Each GET in
/// flight also holds its connection's read buffer (up to ~400 KiB): with 16 uploads and 16
/// downloads at once on Garage, 16 MiB took the server's peak RSS from 127 to 159 MiB.
pub const DEFAULT_READ_AHEAD_BUDGET_BYTES: usize = 8 * 1024 * 1024;

/// A resolved download: the version and its chunk list.
pub struct Download {
    pub package: package::Model,
    /// Without its manifest: a download holds this for as long as it streams.
    pub version: VersionInfo,
    /// (chunk row, byte offset of the chunk in the archive)
    chunks: Vec<(chunk::Model, u64)>,
}

impl Download {
    pub fn size(&self) -> u64 {
        self.version.size as u64
    }

    /// The bytes `range` of the archive as a stream (the whole archive for `0..size`).
    pub fn stream(
        self,
        registry: Arc<Registry>,
        range: Range<u64>,
    ) -> impl Stream<Item = Result<Bytes>> + Send + 'static {
        let pieces: Vec<(chunk::Model, Range<usize>)> = self
            .chunks
            .into_iter()
            .filter_map(|(chunk, offset)| {
                let end = offset + chunk.size as u64;
                let start = range.start.max(offset);
                let stop = range.end.min(end);
                (start < stop).then(|| {
                    let slice = (start - offset) as usize..(stop - offset) as usize;
                    (chunk, slice)
                })
            })
            .collect();
        ChunkReads {
            depth: registry.store.read_ahead().max(1),
            registry,
            pieces: pieces.into_iter().peekable(),
            in_flight: FuturesOrdered::new(),
        }
    }
}

/// A chunk read, and the share of the read-ahead budget its bytes hold until it is sent.
type ChunkRead = BoxFuture<'static, Result<(Bytes, Option<OwnedSemaphorePermit>)>>;

/// The chunks of one download, read in order with up to `depth` in flight.
struct ChunkReads {
    registry: Arc<Registry>,
    pieces: Peekable<std::vec::IntoIter<(chunk::Model, Range<usize>)>>,
    in_flight: FuturesOrdered<ChunkRead>,
    depth: usize,
}

impl ChunkReads {
    /// Starts reads while there is depth left and budget for them. The next chunk to send is
    /// read without budget; the budget is retried whenever the download sends a chunk.
    fn start_reads(&mut self) {
        while self.in_flight.len() < self.depth {
            let Some((next, _)) = self.pieces.peek() else {
                return;
            };
            let permit = if self.in_flight.is_empty() {
                None
            } else {
                match self
                    .registry
                    .read_ahead_budget
                    .try_reserve(next.size as usize)
                {
                    Some(permit) => Some(permit),
                    None => return,
                }
            };
            let (chunk, slice) = self.pieces.next().expect("peeked");
            let registry = self.registry.clone();
            self.in_flight.push_back(Box::pin(async move {
                let bytes = registry.read_chunk_cached(&chunk).await?;
                if bytes.len() != chunk.size as usize {
                    return Err(Error::internal(format!(
                        "chunk {} has {} bytes, expected {}",
                        chunk.id,
                        bytes.len(),
                        chunk.size
                    )));
                }
                registry.metrics.download_bytes.inc_by(slice.len() as u64);
                Ok((bytes.slice(slice), permit))
            }));
        }
    }
}

impl Stream for ChunkReads {
    type Item = Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<Result<Bytes>>> {
        let this = self.get_mut();
        this.start_reads();
        // The permit drops here: the chunk leaves the read-ahead for the response body.
        this.in_flight
            .poll_next_unpin(context)
            .map(|read| read.map(|read| read.map(|(bytes, _permit)| bytes)))
    }
}

impl Registry {
    /// Everything needed to stream `version` of `package`.
    pub async fn prepare_download(
        &self,
        package: package::Model,
        version: VersionInfo,
    ) -> Result<Download> {
        let chunks = self
            .version_chunks(version.id)
            .await?
            .into_iter()
            .map(|(reference, chunk)| (chunk, reference.byte_offset as u64))
            .collect();
        Ok(Download {
            package,
            version,
            chunks,
        })
    }

    /// Counts a completed full download (batched; see `download_counter.rs`).
    pub fn record_download(&self, package_id: i64, version_id: i64) {
        self.download_counter.record(package_id, version_id);
    }
}
