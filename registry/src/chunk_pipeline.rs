//! The chunks of one upload on their way into the chunk store: hashed as they come (off the
//! async workers), stored in batches, in order, and within a server-wide budget of chunk bytes
//! in flight.
//!
//! Per upload, chunks wait for a batch while the previous batches are being stored, so a batch
//! takes the chunks that were ready at a time: one when the store keeps up, many when it is
//! slow, and the database work (a lookup, a lease transaction, an insert transaction) is paid
//! per batch instead of per chunk. Two batches in flight overlap one's object writes with the
//! other's database commit and with hashing the next. Across uploads, the budget keeps memory
//! flat however many clients push at once: under the memory benchmark (16 concurrent uploads)
//! chunk copies waiting to be stored were half of the heap at its peak. An upload over budget
//! waits, which only slows it down: the CPU is the bottleneck at that concurrency anyway.

use std::collections::VecDeque;
use std::pin::Pin;

use bytes::Bytes;
use futures::stream::{FuturesOrdered, StreamExt};
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinHandle;

use super::Registry;
use super::chunk_store::{HashedChunk, StoredChunk, UploadLease, sha256_hex};
use crate::error::{Error, Result};

/// Chunks one upload holds at once: being hashed, waiting for a batch, or being stored. It is
/// also the largest batch.
const CHUNKS_PER_UPLOAD: usize = 16;

/// Batches of one upload being stored at once.
const BATCHES_IN_FLIGHT: usize = 2;

/// Chunk bytes in flight across all uploads of this server.
pub const DEFAULT_BUDGET_BYTES: usize = 8 * 1024 * 1024;

type BatchFuture<'r> = Pin<Box<dyn Future<Output = Result<Vec<StoredChunk>>> + Send + 'r>>;

/// A chunk waiting for its batch, its hash being computed meanwhile.
struct WaitingChunk {
    data: Bytes,
    hash: JoinHandle<String>,
    permit: OwnedSemaphorePermit,
}

/// One upload's chunks in flight, in upload order, and those already stored.
pub(crate) struct ChunkPipeline<'r> {
    registry: &'r Registry,
    upload_id: i64,
    /// The next batch. Invariant: it is empty unless [`BATCHES_IN_FLIGHT`] batches are in flight.
    forming: Vec<WaitingChunk>,
    in_flight: FuturesOrdered<BatchFuture<'r>>,
    /// The number of chunks of each batch in flight, oldest first.
    batch_sizes: VecDeque<usize>,
    stored: Vec<StoredChunk>,
}

impl<'r> ChunkPipeline<'r> {
    pub(crate) fn new(registry: &'r Registry, upload_id: i64) -> ChunkPipeline<'r> {
        ChunkPipeline {
            registry,
            upload_id,
            forming: Vec::new(),
            in_flight: FuturesOrdered::new(),
            batch_sizes: VecDeque::new(),
            stored: Vec::new(),
        }
    }

    pub(crate) fn is_idle(&self) -> bool {
        self.in_flight.is_empty()
    }

    fn held(&self) -> usize {
        self.forming.len() + self.batch_sizes.iter().sum::<usize>()
    }

    /// The result of the oldest batch in flight, once it is stored. Cancel-safe, so a caller can
    /// select on it while awaiting the body: futures in flight only progress while polled, and
    /// a slow client must not leave stored objects without their lease rows meanwhile. Pass the
    /// result to [`ChunkPipeline::record`].
    pub(crate) async fn next_stored(&mut self) -> Option<Result<Vec<StoredChunk>>> {
        self.in_flight.next().await
    }

    /// Keeps a stored batch (and renews the upload's lease now and then), then sends the chunks
    /// that gathered meanwhile as the next batch.
    pub(crate) async fn record(
        &mut self,
        result: Result<Vec<StoredChunk>>,
        lease: &mut UploadLease,
    ) -> Result<()> {
        self.batch_sizes.pop_front();
        self.stored.extend(result?);
        if !self.forming.is_empty() {
            self.dispatch();
        }
        self.registry.renew_upload(lease).await
    }

    async fn complete_one(&mut self, lease: &mut UploadLease) -> Result<()> {
        if self.in_flight.is_empty() && !self.forming.is_empty() {
            self.dispatch();
        }
        match self.next_stored().await {
            Some(result) => self.record(result, lease).await,
            None => Ok(()),
        }
    }

    /// Starts hashing `chunk` once it fits both this upload's limit and the server-wide
    /// budget, and sends it to be stored with the chunks gathered since the last batch left.
    pub(crate) async fn submit(&mut self, chunk: Bytes, lease: &mut UploadLease) -> Result<()> {
        while self.held() >= CHUNKS_PER_UPLOAD {
            self.complete_one(lease).await?;
        }
        let budget = &self.registry.chunk_budget;
        let permit = loop {
            if let Some(permit) = budget.try_reserve(chunk.len()) {
                break permit;
            }
            if self.held() == 0 {
                // Holding no budget ourselves, waiting cannot deadlock: every holder releases
                // its share as soon as its batch is stored.
                break budget.reserve(chunk.len()).await;
            }
            // Our own chunks hold part of the budget: storing them frees it.
            self.complete_one(lease).await?;
        };
        let hashed = chunk.clone();
        self.forming.push(WaitingChunk {
            data: chunk,
            hash: tokio::task::spawn_blocking(move || sha256_hex(&hashed)),
            permit,
        });
        if self.in_flight.len() < BATCHES_IN_FLIGHT {
            self.dispatch();
        }
        Ok(())
    }

    /// Sends the gathered chunks to be stored as one batch.
    fn dispatch(&mut self) {
        let waiting = std::mem::take(&mut self.forming);
        self.batch_sizes.push_back(waiting.len());
        let registry = self.registry;
        let upload_id = self.upload_id;
        self.in_flight.push_back(Box::pin(async move {
            let mut chunks = Vec::with_capacity(waiting.len());
            let mut permits = Vec::with_capacity(waiting.len());
            for chunk in waiting {
                let hash = chunk
                    .hash
                    .await
                    .map_err(|error| Error::internal(format!("hashing a chunk failed: {error}")))?;
                chunks.push(HashedChunk {
                    hash,
                    data: chunk.data,
                });
                permits.push(chunk.permit);
            }
            let stored = registry.store_hashed_chunks(upload_id, chunks).await;
            drop(permits);
            stored
        }));
    }

    /// Stores every chunk still held; returns all stored chunks in upload order.
    pub(crate) async fn finish(mut self, lease: &mut UploadLease) -> Result<Vec<StoredChunk>> {
        while !self.forming.is_empty() || !self.in_flight.is_empty() {
            if let Err(error) = self.complete_one(lease).await {
                self.abandon().await;
                return Err(error);
            }
        }
        Ok(self.stored)
    }

    /// Ends a failed upload: drops the chunks not sent yet and waits for the batches in flight,
    /// whatever their outcome. A batch either commits its rows (leased by the upload, whose
    /// release then leaves them to GC) or removes its objects, so none is left for the orphan
    /// sweep, which would only take it after an hour.
    pub(crate) async fn abandon(mut self) {
        self.forming.clear();
        while self.in_flight.next().await.is_some() {}
    }
}
