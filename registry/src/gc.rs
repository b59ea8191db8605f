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
//! 4. only then delete the object, then the row. Uploads never use `deleting` rows;
//! 5. sweep orphan objects: objects in the store that no row names, left by a crash between an
//!    upload's put and its row insert (see [`Registry::sweep_orphan_objects`]).

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use entity::{chunk, upload};

use super::chunk_store::{
    OBJECT_KEY_PREFIX, OBJECT_ROW_DEADLINE, STATE_DELETING, STATE_LIVE, is_object_key,
};
use super::{Registry, now};
use crate::error::Result;

/// Candidates examined per query, so a huge backlog is worked through in bounded memory.
const BATCH: u64 = 500;

/// Objects without a row are swept only once at least this old, whatever the grace period
/// (which may be zero: the chunk-row invariant holds with no grace at all, the object sweep
/// does not). It covers [`OBJECT_ROW_DEADLINE`], within which an upload commits its row or
/// fails, plus a generous allowance for the object store's clock (which dates the object) being
/// ahead of or behind GC's.
pub const ORPHAN_MIN_AGE: Duration = Duration::from_secs(60 * 60);
const _: () = assert!(ORPHAN_MIN_AGE.as_secs() >= OBJECT_ROW_DEADLINE.as_secs() + 30 * 60);

/// Objects listed (and looked up in one query) at a time: S3's largest page.
pub const LISTING_PAGE_SIZE: usize = 1000;

/// How a GC pass runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcOptions {
    /// Unreferenced chunks younger than this are kept.
    pub grace: Duration,
    /// Objects per listing page in the orphan sweep (clamped to 1..=1000); tests use tiny pages.
    pub listing_page_size: usize,
}

impl GcOptions {
    pub fn new(grace: Duration) -> GcOptions {
        GcOptions {
            grace,
            listing_page_size: LISTING_PAGE_SIZE,
        }
    }

    /// The age past which an object without a row is garbage.
    pub fn orphan_age(&self) -> Duration {
        self.grace.max(ORPHAN_MIN_AGE)
    }
}

const UNREFERENCED: &str =
    "NOT EXISTS (SELECT 1 FROM version_chunks WHERE version_chunks.chunk_id = chunks.id)";
const UNLEASED: &str =
    "NOT EXISTS (SELECT 1 FROM upload_chunks WHERE upload_chunks.chunk_id = chunks.id)";

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct GcReport {
    pub uploads_reaped: u64,
    /// Chunk rows (and their objects) deleted.
    pub chunks_deleted: u64,
    /// Stored bytes of those chunks.
    pub bytes_reclaimed: u64,
    /// Objects with the registry's key shape that the orphan sweep listed.
    pub objects_examined: u64,
    /// Objects without a row, older than [`GcOptions::orphan_age`], deleted; this includes temp
    /// files of interrupted local writes.
    pub orphan_objects_deleted: u64,
    /// Stored bytes of those objects (not part of `bytes_reclaimed`).
    pub orphan_bytes_reclaimed: u64,
}

impl Registry {
    /// One GC pass. Safe to run concurrently with uploads, deletes and other passes.
    pub async fn collect_garbage(&self, grace: Duration) -> Result<GcReport> {
        self.collect_garbage_with(GcOptions::new(grace)).await
    }

    /// [`Registry::collect_garbage`] with every option.
    pub async fn collect_garbage_with(&self, options: GcOptions) -> Result<GcReport> {
        let grace = options.grace;
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
        self.sweep_orphan_objects(&options, &mut report).await?;
        self.metrics.gc_runs.inc();
        self.metrics.gc_chunks_deleted.inc_by(report.chunks_deleted);
        self.metrics
            .gc_bytes_reclaimed
            .inc_by(report.bytes_reclaimed);
        Ok(report)
    }

    /// Deletes objects that no chunk row names and that are older than
    /// [`GcOptions::orphan_age`]: an upload that crashed (or whose database write failed)
    /// between writing a new chunk's object and inserting its row leaves one behind.
    ///
    /// Safety rests on one assumption, enforced on the upload side: a row follows its object
    /// within [`OBJECT_ROW_DEADLINE`] or never (the upload rolls back and fails). The cutoff is
    /// taken before any lookup and compared with the object's own date from the store, so an
    /// object old enough here and absent from the database when looked up can no longer get a
    /// row. Clocks: the store dates objects, GC's host computes the cutoff; the margin in
    /// [`ORPHAN_MIN_AGE`] absorbs any skew short of half an hour.
    ///
    /// * Objects whose row is `deleting` have a row, so they are left to step 2.
    /// * Only keys of the registry's exact shape under `chunks/` are considered; anything else
    ///   in a shared bucket or directory is not ours and is never deleted.
    /// * Bounded memory: one listing page at a time, looked up in one query.
    pub async fn sweep_orphan_objects(
        &self,
        options: &GcOptions,
        report: &mut GcReport,
    ) -> Result<()> {
        let cutoff = SystemTime::now()
            .checked_sub(options.orphan_age())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut pages = self
            .store
            .list(OBJECT_KEY_PREFIX, options.listing_page_size);
        while let Some(page) = pages.next().await {
            let page = page?;
            let listed: Vec<_> = page
                .into_iter()
                .filter(|object| is_object_key(&object.key))
                .collect();
            report.objects_examined += listed.len() as u64;
            let old: Vec<_> = listed
                .into_iter()
                .filter(|object| object.last_modified < cutoff)
                .collect();
            if old.is_empty() {
                continue;
            }
            let recorded: HashSet<String> = chunk::Entity::find()
                .select_only()
                .column(chunk::Column::ObjectKey)
                .filter(
                    chunk::Column::ObjectKey.is_in(old.iter().map(|object| object.key.as_str())),
                )
                .into_tuple::<String>()
                .all(&self.db)
                .await?
                .into_iter()
                .collect();
            for orphan in old.iter().filter(|object| !recorded.contains(&object.key)) {
                self.store.delete(&orphan.key).await?;
                tracing::info!(key = %orphan.key, size = orphan.size, "deleted an orphan object");
                report.orphan_objects_deleted += 1;
                report.orphan_bytes_reclaimed += orphan.size;
            }
        }
        drop(pages);
        let debris = self.store.remove_interrupted_writes(cutoff).await?;
        report.orphan_objects_deleted += debris.files;
        report.orphan_bytes_reclaimed += debris.bytes;
        Ok(())
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
