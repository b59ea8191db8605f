//! The chunk GC loop: a pass every `interval` with a `grace` period, run only while this
//! replica holds the Lease. GC is safe to run concurrently (see `niso_registry::gc`),
//! so a Lease lost in the middle of a pass costs nothing but duplicate work. Each pass also
//! sweeps orphan objects (in the store, named by no row) older than the grace period, with a
//! floor of `gc::ORPHAN_MIN_AGE`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use niso_registry::Registry;

use crate::metrics::Metrics;

#[derive(Debug, Clone, Copy)]
pub struct GcSettings {
    pub interval: Duration,
    pub grace: Duration,
}

/// One pass, recorded in the metrics.
pub async fn run_once(registry: &Registry, metrics: &Metrics, grace: Duration) {
    let started = Instant::now();
    match registry.collect_garbage(grace).await {
        Ok(report) => {
            tracing::info!(
                uploads_reaped = report.uploads_reaped,
                chunks_deleted = report.chunks_deleted,
                bytes_reclaimed = report.bytes_reclaimed,
                objects_examined = report.objects_examined,
                orphan_objects_deleted = report.orphan_objects_deleted,
                orphan_bytes_reclaimed = report.orphan_bytes_reclaimed,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "GC pass finished"
            );
            metrics.gc_finished(started.elapsed(), Some(&report));
        }
        Err(error) => {
            tracing::warn!(%error, "GC pass failed");
            metrics.gc_finished(started.elapsed(), None);
        }
    }
}

/// Runs GC passes while `leader` says this replica holds the Lease: the first as soon as it
/// does, then every `interval`. Returns when `shutdown` flips to true or either channel closes.
pub async fn run_loop(
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    settings: GcSettings,
    mut leader: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        if *shutdown.borrow() {
            return;
        }
        if !*leader.borrow_and_update() {
            tokio::select! {
                changed = leader.changed() => if changed.is_err() { return },
                changed = shutdown.changed() => if changed.is_err() { return },
            }
            continue;
        }
        run_once(&registry, &metrics, settings.grace).await;
        tokio::select! {
            _ = tokio::time::sleep(settings.interval) => {}
            changed = leader.changed() => if changed.is_err() { return },
            changed = shutdown.changed() => if changed.is_err() { return },
        }
    }
}
