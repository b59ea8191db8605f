//! The operator's Prometheus metrics (`niso_operator_` prefix), served on `/metrics` next to
//! the registry library's domain series (database, chunk store, dedup). The library's HTTP
//! series are not exported (the operator serves no API requests) nor its `niso_gc_*` counters
//! (GC passes are counted here, with their result, as `niso_operator_gc_*`).

use std::sync::Arc;
use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use niso_registry::gc::GcReport;

/// The metrics the operator's registry records into: the domain's series only.
pub fn registry_metrics() -> Arc<niso_registry::metrics::Metrics> {
    Arc::new(niso_registry::metrics::Metrics::without_gc())
}

pub struct Metrics {
    registry: Registry,
    pub reconciles: IntCounterVec,
    pub reconcile_failures: IntCounterVec,
    pub reconcile_seconds: HistogramVec,
    pub gc_runs: IntCounterVec,
    pub gc_seconds: Histogram,
    pub gc_uploads_reaped: IntCounter,
    pub gc_chunks_deleted: IntCounter,
    pub gc_bytes_reclaimed: IntCounter,
    pub gc_orphan_objects_deleted: IntCounter,
    pub gc_orphan_bytes_reclaimed: IntCounter,
    pub gc_orphan_sweeps: IntCounter,
    pub leader: IntGauge,
    pub ready: IntGauge,
    /// Per ApiKey with an end: when its live key stops working (alerts: keys near expiry).
    pub key_expiry: IntGaugeVec,
}

const BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let reconciles = IntCounterVec::new(
            Opts::new("niso_operator_reconciles_total", "Reconciles by controller"),
            &["controller"],
        )
        .expect("valid metric");
        let reconcile_failures = IntCounterVec::new(
            Opts::new(
                "niso_operator_reconcile_failures_total",
                "Failed reconciles by controller and reason",
            ),
            &["controller", "reason"],
        )
        .expect("valid metric");
        let reconcile_seconds = HistogramVec::new(
            HistogramOpts::new(
                "niso_operator_reconcile_duration_seconds",
                "Reconcile duration by controller",
            )
            .buckets(BUCKETS.to_vec()),
            &["controller"],
        )
        .expect("valid metric");
        let gc_runs = IntCounterVec::new(
            Opts::new(
                "niso_operator_gc_runs_total",
                "Chunk GC passes by result (ok, error)",
            ),
            &["result"],
        )
        .expect("valid metric");
        let gc_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "niso_operator_gc_duration_seconds",
                "Chunk GC pass duration",
            )
            .buckets(BUCKETS.to_vec()),
        )
        .expect("valid metric");
        let gc_uploads_reaped = IntCounter::new(
            "niso_operator_gc_uploads_reaped_total",
            "Stale uploads whose lease expired, reaped by GC",
        )
        .expect("valid metric");
        let gc_chunks_deleted = IntCounter::new(
            "niso_operator_gc_chunks_deleted_total",
            "Orphan chunks deleted by GC",
        )
        .expect("valid metric");
        let gc_bytes_reclaimed = IntCounter::new(
            "niso_operator_gc_reclaimed_bytes_total",
            "Stored bytes reclaimed by GC",
        )
        .expect("valid metric");
        let gc_orphan_objects_deleted = IntCounter::new(
            "niso_operator_gc_orphan_objects_deleted_total",
            "Stored objects no chunk row named (left by a crashed upload), deleted by GC",
        )
        .expect("valid metric");
        let gc_orphan_bytes_reclaimed = IntCounter::new(
            "niso_operator_gc_orphan_reclaimed_bytes_total",
            "Stored bytes of orphan objects deleted by GC (not in niso_operator_gc_reclaimed_bytes_total)",
        )
        .expect("valid metric");
        let gc_orphan_sweeps = IntCounter::new(
            "niso_operator_gc_orphan_sweeps_total",
            "GC passes that listed the store for orphan objects (one per NISO_GC_ORPHAN_SWEEP_INTERVAL_SECS)",
        )
        .expect("valid metric");
        let leader = IntGauge::new(
            "niso_operator_leader",
            "1 while this replica holds the Lease (and runs the controllers and GC)",
        )
        .expect("valid metric");
        let ready = IntGauge::new(
            "niso_operator_ready",
            "1 while /ready answers 200: a standby, or the leader with every controller listing and watching",
        )
        .expect("valid metric");
        // `apikey_namespace`, not `namespace`: scraping adds the operator pod's namespace.
        let key_expiry = IntGaugeVec::new(
            Opts::new(
                "niso_operator_api_key_expiry_timestamp_seconds",
                "When the live key of an ApiKey stops working (Unix seconds)",
            ),
            &["apikey_namespace", "apikey"],
        )
        .expect("valid metric");
        for collector in [
            Box::new(ready.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(key_expiry.clone()),
            Box::new(reconciles.clone()),
            Box::new(reconcile_failures.clone()),
            Box::new(reconcile_seconds.clone()),
            Box::new(gc_runs.clone()),
            Box::new(gc_seconds.clone()),
            Box::new(gc_uploads_reaped.clone()),
            Box::new(gc_chunks_deleted.clone()),
            Box::new(gc_bytes_reclaimed.clone()),
            Box::new(gc_orphan_objects_deleted.clone()),
            Box::new(gc_orphan_bytes_reclaimed.clone()),
            Box::new(gc_orphan_sweeps.clone()),
            Box::new(leader.clone()),
        ] {
            registry
                .register(collector)
                .expect("metric registered once");
        }
        Metrics {
            registry,
            reconciles,
            reconcile_failures,
            reconcile_seconds,
            gc_runs,
            gc_seconds,
            gc_uploads_reaped,
            gc_chunks_deleted,
            gc_bytes_reclaimed,
            gc_orphan_objects_deleted,
            gc_orphan_bytes_reclaimed,
            gc_orphan_sweeps,
            leader,
            ready,
            key_expiry,
        }
    }

    /// Records when the live key of ApiKey `namespace/name` stops working; None forgets it
    /// (no end, no key, or the ApiKey is gone).
    pub fn key_expiry(&self, namespace: &str, name: &str, not_after: Option<i64>) {
        match not_after {
            Some(at) => self
                .key_expiry
                .with_label_values(&[namespace, name])
                .set(at),
            None => {
                let _ = self.key_expiry.remove_label_values(&[namespace, name]);
            }
        }
    }

    pub fn reconciled(&self, controller: &str, elapsed: Duration, failure: Option<&str>) {
        self.reconciles.with_label_values(&[controller]).inc();
        self.reconcile_seconds
            .with_label_values(&[controller])
            .observe(elapsed.as_secs_f64());
        if let Some(reason) = failure {
            self.reconcile_failures
                .with_label_values(&[controller, reason])
                .inc();
        }
    }

    pub fn gc_finished(&self, elapsed: Duration, report: Option<&GcReport>) {
        self.gc_seconds.observe(elapsed.as_secs_f64());
        match report {
            Some(report) => {
                self.gc_runs.with_label_values(&["ok"]).inc();
                self.gc_uploads_reaped.inc_by(report.uploads_reaped);
                self.gc_chunks_deleted.inc_by(report.chunks_deleted);
                self.gc_bytes_reclaimed.inc_by(report.bytes_reclaimed);
                self.gc_orphan_objects_deleted
                    .inc_by(report.orphan_objects_deleted);
                self.gc_orphan_bytes_reclaimed
                    .inc_by(report.orphan_bytes_reclaimed);
                if report.orphans_swept {
                    self.gc_orphan_sweeps.inc();
                }
            }
            None => self.gc_runs.with_label_values(&["error"]).inc(),
        }
    }

    /// Successful GC passes so far.
    pub fn gc_runs_ok(&self) -> u64 {
        self.gc_runs.with_label_values(&["ok"]).get()
    }

    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .expect("text encoding never fails");
        String::from_utf8(buffer).expect("metrics text is UTF-8")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gc_pass_counts_orphan_objects_next_to_chunks() {
        let metrics = Metrics::new();
        let report = GcReport {
            chunks_deleted: 2,
            bytes_reclaimed: 300,
            objects_examined: 40,
            orphan_objects_deleted: 3,
            orphan_bytes_reclaimed: 4000,
            orphans_swept: true,
            ..GcReport::default()
        };
        metrics.gc_finished(Duration::from_millis(5), Some(&report));
        metrics.gc_finished(Duration::from_millis(5), Some(&report));
        metrics.gc_finished(Duration::from_millis(5), None);
        let without_sweep = GcReport {
            orphans_swept: false,
            ..report.clone()
        };
        metrics.gc_finished(Duration::from_millis(5), Some(&without_sweep));
        let text = metrics.render();
        for line in [
            "niso_operator_gc_orphan_objects_deleted_total 9",
            "niso_operator_gc_orphan_reclaimed_bytes_total 12000",
            "niso_operator_gc_chunks_deleted_total 6",
            "niso_operator_gc_reclaimed_bytes_total 900",
            "niso_operator_gc_orphan_sweeps_total 2",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
        }
    }
}
