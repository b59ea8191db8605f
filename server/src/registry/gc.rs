//! Garbage collection of orphan chunks.
//!
//! Invariant: a chunk referenced by a committed version is never deleted, under any
//! interleaving with uploads, deletes, other GC runs and crashes, even with a zero grace period.
//! The protocol:
//! 1. reap uploads whose lease expired: `DELETE … WHERE id = ? AND expires_at < now` (their
//!    leases go with them). A commit deletes the same row first thing, so exactly one of
//!    "reaped" and "committed" happens;
//! 2. finish chunks a previous run marked `deleting` (it may have crashed midway);
//! 3. for each candidate (live, older than the grace period, unreferenced, unleased), mark it
//!    `deleting` with a conditional UPDATE that re-checks all of that *and* the `lease_version`
//!    seen when it was picked. An upload leasing the chunk concurrently bumps `lease_version` in
//!    the same row, so either GC's mark fails, or the upload's bump (which requires
//!    `state = 'live'`) fails and the upload stores a fresh copy;
//! 4. only then delete the object, then the row. Uploads never use `deleting` rows.

use std::time::Duration;

use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use entity::{chunk, upload};

use super::chunk_store::{STATE_DELETING, STATE_LIVE};
use super::{Registry, now};
use crate::error::Result;

/// Candidates examined per query, so a huge backlog is worked through in bounded memory.
const BATCH: u64 = 500;

const UNREFERENCED: &str =
    "NOT EXISTS (SELECT 1 FROM version_chunks WHERE version_chunks.chunk_id = chunks.id)";
const UNLEASED: &str =
    "NOT EXISTS (SELECT 1 FROM upload_chunks WHERE upload_chunks.chunk_id = chunks.id)";

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct GcReport {
    pub uploads_reaped: u64,
    pub chunks_deleted: u64,
    pub bytes_reclaimed: u64,
}

impl Registry {
    /// One GC pass. Safe to run concurrently with uploads, deletes and other passes.
    pub async fn collect_garbage(&self, grace: Duration) -> Result<GcReport> {
        let mut report = GcReport {
            uploads_reaped: self.reap_expired_uploads().await?,
            ..GcReport::default()
        };
        self.finish_marked_chunks(&mut report).await?;
        let cutoff =
            now() - chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::days(36500));
        let mut after_id = 0i64;
        loop {
            let candidates = chunk::Entity::find()
                .filter(chunk::Column::State.eq(STATE_LIVE))
                .filter(chunk::Column::CreatedAt.lt(cutoff))
                .filter(chunk::Column::Id.gt(after_id))
                .filter(Expr::cust(UNREFERENCED))
                .filter(Expr::cust(UNLEASED))
                .order_by_asc(chunk::Column::Id)
                .limit(BATCH)
                .all(&self.db)
                .await?;
            let Some(last) = candidates.last() else { break };
            after_id = last.id;
            for candidate in candidates {
                let marked = chunk::Entity::update_many()
                    .col_expr(chunk::Column::State, Expr::value(STATE_DELETING))
                    .filter(chunk::Column::Id.eq(candidate.id))
                    .filter(chunk::Column::State.eq(STATE_LIVE))
                    .filter(chunk::Column::LeaseVersion.eq(candidate.lease_version))
                    .filter(Expr::cust(UNREFERENCED))
                    .filter(Expr::cust(UNLEASED))
                    .exec(&self.db)
                    .await?
                    .rows_affected;
                if marked == 1 {
                    self.delete_marked_chunk(&candidate, &mut report).await?;
                }
            }
        }
        self.metrics.gc_runs.inc();
        self.metrics.gc_chunks_deleted.inc_by(report.chunks_deleted);
        self.metrics
            .gc_bytes_reclaimed
            .inc_by(report.bytes_reclaimed);
        Ok(report)
    }

    async fn reap_expired_uploads(&self) -> Result<u64> {
        let current = now();
        let expired = upload::Entity::find()
            .filter(upload::Column::ExpiresAt.lt(current))
            .all(&self.db)
            .await?;
        let mut reaped = 0;
        for stale in expired {
            // Re-checked in the DELETE: a renewal in between keeps the upload alive.
            reaped += upload::Entity::delete_many()
                .filter(upload::Column::Id.eq(stale.id))
                .filter(upload::Column::ExpiresAt.lt(current))
                .exec(&self.db)
                .await?
                .rows_affected;
            // upload_chunks rows go by ON DELETE CASCADE.
        }
        Ok(reaped)
    }

    async fn finish_marked_chunks(&self, report: &mut GcReport) -> Result<()> {
        loop {
            let marked = chunk::Entity::find()
                .filter(chunk::Column::State.eq(STATE_DELETING))
                .order_by_asc(chunk::Column::Id)
                .limit(BATCH)
                .all(&self.db)
                .await?;
            if marked.is_empty() {
                return Ok(());
            }
            for chunk in marked {
                self.delete_marked_chunk(&chunk, report).await?;
            }
        }
    }

    async fn delete_marked_chunk(&self, chunk: &chunk::Model, report: &mut GcReport) -> Result<()> {
        self.store.delete(&chunk.object_key).await?;
        let deleted = chunk::Entity::delete_many()
            .filter(chunk::Column::Id.eq(chunk.id))
            .filter(chunk::Column::State.eq(STATE_DELETING))
            .exec(&self.db)
            .await?
            .rows_affected;
        if deleted == 1 {
            report.chunks_deleted += 1;
            report.bytes_reclaimed += chunk.stored_size as u64;
        }
        Ok(())
    }
}
