//! Downloads: an archive is streamed by reading its chunks in order with a small read-ahead (the
//! store's [`crate::storage::ObjectStore::read_ahead`]), so memory is bounded by a few chunks
//! whatever the archive size. Ranges select the chunks that overlap them and trim the first and
//! last.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{self, Stream, StreamExt};

use entity::{chunk, package};

use super::Registry;
use super::packages::VersionInfo;
use crate::error::{Error, Result};

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
        let read_ahead = registry.store.read_ahead().max(1);
        stream::iter(pieces)
            .map(move |(chunk, slice)| {
                let registry = registry.clone();
                async move {
                    let bytes = registry.read_chunk(&chunk).await?;
                    if bytes.len() != chunk.size as usize {
                        return Err(Error::internal(format!(
                            "chunk {} has {} bytes, expected {}",
                            chunk.id,
                            bytes.len(),
                            chunk.size
                        )));
                    }
                    registry.metrics.download_bytes.inc_by(slice.len() as u64);
                    Ok(bytes.slice(slice))
                }
            })
            .buffered(read_ahead)
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
