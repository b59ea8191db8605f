//! [`MemoryBudget`]: a server-wide allowance of bytes that requests hold in memory for work in
//! flight, so memory stays flat however many clients push or pull at once. Uploads reserve the
//! chunks waiting to be stored (`chunk_pipeline.rs`); downloads reserve the chunks they read
//! ahead of the one they are sending (`download.rs`). A request over budget waits (uploads) or
//! reads less far ahead (downloads): it slows down, it never fails.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The budget is counted in KiB so that any byte count fits a semaphore's u32 permits.
const UNIT: usize = 1024;

/// Bytes in memory across all requests of one kind on this server. Cloning shares the budget.
#[derive(Clone)]
pub struct MemoryBudget {
    permits: Arc<Semaphore>,
    total_units: u32,
}

impl MemoryBudget {
    pub fn new(bytes: usize) -> MemoryBudget {
        let total_units = bytes.div_ceil(UNIT).clamp(1, u32::MAX as usize) as u32;
        MemoryBudget {
            permits: Arc::new(Semaphore::new(total_units as usize)),
            total_units,
        }
    }

    fn units(&self, bytes: usize) -> u32 {
        // A reservation larger than the whole budget still gets through, alone.
        (bytes.div_ceil(UNIT).max(1) as u64).min(self.total_units as u64) as u32
    }

    /// `bytes` of the budget if they are free now; released when the permit drops.
    pub(crate) fn try_reserve(&self, bytes: usize) -> Option<OwnedSemaphorePermit> {
        self.permits
            .clone()
            .try_acquire_many_owned(self.units(bytes))
            .ok()
    }

    /// `bytes` of the budget, waiting until they are free.
    pub(crate) async fn reserve(&self, bytes: usize) -> OwnedSemaphorePermit {
        self.permits
            .clone()
            .acquire_many_owned(self.units(bytes))
            .await
            .expect("a memory budget's semaphore is never closed")
    }

    /// Bytes currently reserved (tests check that finished requests release everything).
    pub fn reserved_bytes(&self) -> usize {
        (self.total_units as usize - self.permits.available_permits()) * UNIT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_counts_kibibytes_and_caps_one_reservation_at_its_size() {
        let budget = MemoryBudget::new(4 * 1024);
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
