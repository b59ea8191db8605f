//! The chunks of one upload on their way into the chunk store: stored a few at a time, in
//! order, and within a server-wide budget of chunk bytes in flight.
//!
//! Per upload, the in-flight limit overlaps object-store latency with hashing the next chunk.
//! Across uploads, the budget keeps memory flat however many clients push at once: under the
//! memory benchmark (16 concurrent uploads) chunk copies waiting to be stored were half of the
//! heap at its peak. An upload over budget waits, which only slows it down: the CPU is the
//! bottleneck at that concurrency anyway.

use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{FuturesOrdered, StreamExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::Registry;
use super::chunk_store::{StoredChunk, UploadLease};
use crate::error::Result;

/// Chunks being hashed/compressed/stored at once per upload.
const CHUNKS_IN_FLIGHT: usize = 4;

/// Chunk bytes in flight across all uploads of this server.
pub const DEFAULT_BUDGET_BYTES: usize = 8 * 1024 * 1024;

/// The budget is counted in KiB so that any byte count fits a semaphore's u32 permits.
const UNIT: usize = 1024;

/// Server-wide budget of chunk bytes waiting to be stored.
#[derive(Clone)]
pub struct ChunkBudget {
    permits: Arc<Semaphore>,
    total_units: u32,
}

impl ChunkBudget {
    pub fn new(bytes: usize) -> ChunkBudget {
        let total_units = bytes.div_ceil(UNIT).clamp(1, u32::MAX as usize) as u32;
        ChunkBudget {
            permits: Arc::new(Semaphore::new(total_units as usize)),
            total_units,
        }
    }

    fn units(&self, bytes: usize) -> u32 {
        // A chunk larger than the whole budget still gets through, alone.
        (bytes.div_ceil(UNIT).max(1) as u64).min(self.total_units as u64) as u32
    }

    fn try_reserve(&self, bytes: usize) -> Option<OwnedSemaphorePermit> {
        self.permits
            .clone()
            .try_acquire_many_owned(self.units(bytes))
            .ok()
    }

    async fn reserve(&self, bytes: usize) -> OwnedSemaphorePermit {
        self.permits
            .clone()
            .acquire_many_owned(self.units(bytes))
            .await
            .expect("the chunk budget's semaphore is never closed")
    }

    /// Bytes currently reserved (tests check that finished uploads release everything).
    pub fn reserved_bytes(&self) -> usize {
        (self.total_units as usize - self.permits.available_permits()) * UNIT
    }
}

type StoreFuture<'r> = Pin<Box<dyn Future<Output = Result<StoredChunk>> + Send + 'r>>;

/// One upload's chunks in flight, in upload order, and those already stored.
pub(crate) struct ChunkPipeline<'r> {
    registry: &'r Registry,
    in_flight: FuturesOrdered<StoreFuture<'r>>,
    stored: Vec<StoredChunk>,
}

impl<'r> ChunkPipeline<'r> {
    pub(crate) fn new(registry: &'r Registry) -> ChunkPipeline<'r> {
        ChunkPipeline {
            registry,
            in_flight: FuturesOrdered::new(),
            stored: Vec::new(),
        }
    }

    pub(crate) fn is_idle(&self) -> bool {
        self.in_flight.is_empty()
    }

    /// The result of the oldest chunk in flight, once it is stored. Cancel-safe, so a caller can
    /// select on it while awaiting the body: futures in flight only progress while polled, and
    /// a slow client must not leave stored objects without their lease rows meanwhile. Pass the
    /// result to [`ChunkPipeline::record`].
    pub(crate) async fn next_stored(&mut self) -> Option<Result<StoredChunk>> {
        self.in_flight.next().await
    }

    /// Keeps a stored chunk (and renews the upload's lease now and then).
    pub(crate) async fn record(
        &mut self,
        result: Result<StoredChunk>,
        lease: &mut UploadLease,
    ) -> Result<()> {
        self.stored.push(result?);
        self.registry.renew_upload(lease).await
    }

    async fn complete_one(&mut self, lease: &mut UploadLease) -> Result<()> {
        match self.next_stored().await {
            Some(result) => self.record(result, lease).await,
            None => Ok(()),
        }
    }

    /// Starts storing `chunk` once it fits both this upload's in-flight limit and the
    /// server-wide budget.
    pub(crate) async fn submit(&mut self, chunk: Bytes, lease: &mut UploadLease) -> Result<()> {
        while self.in_flight.len() >= CHUNKS_IN_FLIGHT {
            self.complete_one(lease).await?;
        }
        let budget = &self.registry.chunk_budget;
        let permit = loop {
            if let Some(permit) = budget.try_reserve(chunk.len()) {
                break permit;
            }
            if self.in_flight.is_empty() {
                // Holding no budget ourselves, waiting cannot deadlock: every holder releases
                // its share as soon as its chunk is stored.
                break budget.reserve(chunk.len()).await;
            }
            // Our own chunks hold part of the budget: finishing one frees it.
            self.complete_one(lease).await?;
        };
        let registry = self.registry;
        let upload_id = lease.id;
        self.in_flight.push_back(Box::pin(async move {
            let stored = registry.store_chunk(upload_id, chunk).await;
            drop(permit);
            stored
        }));
        Ok(())
    }

    /// Waits for every chunk in flight; returns all stored chunks in upload order.
    pub(crate) async fn finish(mut self, lease: &mut UploadLease) -> Result<Vec<StoredChunk>> {
        while !self.in_flight.is_empty() {
            self.complete_one(lease).await?;
        }
        Ok(self.stored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_counts_kibibytes_and_caps_one_reservation_at_its_size() {
        let budget = ChunkBudget::new(4 * 1024);
        let first = budget.try_reserve(1).expect("fits");
        assert_eq!(budget.reserved_bytes(), 1024);
        let second = budget.try_reserve(3 * 1024).expect("fits");
        assert!(budget.try_reserve(1).is_none(), "the budget is spent");
        drop(first);
        drop(second);
        // Larger than the whole budget: admitted alone rather than never.
        let huge = budget.try_reserve(1024 * 1024).expect("admitted alone");
        assert_eq!(budget.reserved_bytes(), 4 * 1024);
        assert!(budget.try_reserve(1).is_none());
        drop(huge);
        assert_eq!(budget.reserved_bytes(), 0);
    }
}
