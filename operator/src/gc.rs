//! The chunk GC loop: a pass every `interval` with a `grace` period, run only while this
//! replica holds the Lease. GC is safe to run concurrently (see `niso_registry::gc`),
//! so a Lease lost in the middle of a pass costs nothing but duplicate work. The first pass
//! after taking the Lease, and then one pass per `orphan_sweep_interval`, also sweeps orphan
//! objects (in the store, named by no row) older than the grace period, with a floor of
//! `gc::ORPHAN_MIN_AGE`: the sweep lists the whole store, while the rest of a pass costs only
//! what changed since the last.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use niso_registry::Registry;
use niso_registry::gc::GcOptions;

use crate::metrics::Metrics;

#[derive(Debug, Clone, Copy)]
pub struct GcSettings {
    pub interval: Duration,
    pub grace: Duration,
    /// At least this long between two orphan sweeps (0: every pass).
    pub orphan_sweep_interval: Duration,
}

/// One whole pass (orphan sweep included), recorded in the metrics.
pub async fn run_once(registry: &Registry, metrics: &Metrics, grace: Duration) {
    run_pass(registry, metrics, GcOptions::new(grace)).await;
}

/// One pass with `options`, recorded in the metrics; whether it succeeded.
pub async fn run_pass(registry: &Registry, metrics: &Metrics, options: GcOptions) -> bool {
    let started = Instant::now();
    match registry.collect_garbage_with(options).await {
        Ok(report) => {
            tracing::info!(
                uploads_reaped = report.uploads_reaped,
                chunks_deleted = report.chunks_deleted,
                bytes_reclaimed = report.bytes_reclaimed,
                objects_examined = report.objects_examined,
                orphan_objects_deleted = report.orphan_objects_deleted,
                orphan_bytes_reclaimed = report.orphan_bytes_reclaimed,
                orphans_swept = report.orphans_swept,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "GC pass finished"
            );
            metrics.gc_finished(started.elapsed(), Some(&report));
            true
        }
        Err(error) => {
            tracing::warn!(%error, "GC pass failed");
            metrics.gc_finished(started.elapsed(), None);
            false
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
    let mut last_sweep: Option<Instant> = None;
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
        // A sweep is due on the first pass as leader and once its interval has passed since
        // the last successful one; a failed pass sweeps again next time.
        let sweep_orphans = last_sweep
            .is_none_or(|swept: Instant| swept.elapsed() >= settings.orphan_sweep_interval);
        let options = GcOptions {
            sweep_orphans,
            ..GcOptions::new(settings.grace)
        };
        let started = Instant::now();
        if run_pass(&registry, &metrics, options).await && sweep_orphans {
            last_sweep = Some(started);
        }
        tokio::select! {
            _ = tokio::time::sleep(settings.interval) => {}
            changed = leader.changed() => if changed.is_err() { return },
            changed = shutdown.changed() => if changed.is_err() { return },
        }
    }
}
