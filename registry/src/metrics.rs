//! The registry domain's Prometheus metrics: bytes moved, dedup, chunk storage, database
//! statements and GC. The server adds its HTTP series to the same registry
//! (`server/src/http/metrics.rs`); the operator adds its own. Names follow Prometheus
//! conventions: `niso_` prefix, `_total` counters, `_seconds` and `_bytes` units.
//!
//! Every label value comes from a closed set (statement kinds, store operations): a value taken
//! from a request would let any client add series without bound.

use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntGaugeVec, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub upload_bytes: IntCounter,
    pub download_bytes: IntCounter,
    pub dedup_hits: IntCounter,
    pub dedup_bytes_saved: IntCounter,
    pub chunks_stored: IntCounter,
    pub chunk_bytes_stored: IntCounter,
    pub chunk_cache_hits: IntCounter,
    pub chunk_store_seconds: HistogramVec,
    pub db_query_seconds: HistogramVec,
    pub gc_runs: IntCounter,
    pub gc_chunks_deleted: IntCounter,
    pub gc_bytes_reclaimed: IntCounter,
}

pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0,
];

/// Whether `niso_gc_*` is exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GcSeries {
    /// The server (`gc --once`, and the tests) reports its passes as `niso_gc_*`.
    Exported,
    /// The operator counts GC passes under its own names (`niso_operator_gc_*`), so the
    /// domain's would be a second, always-zero copy.
    Hidden,
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let counter = IntCounter::new(name, help).expect("valid metric");
    registry
        .register(Box::new(counter.clone()))
        .expect("metric registered once");
    counter
}

/// A counter that is registered (exported) only when `export` is set; unexported, it still
/// counts, so the code that increments it needs no branch.
fn counter_if(export: bool, registry: &Registry, name: &str, help: &str) -> IntCounter {
    if export {
        counter(registry, name, help)
    } else {
        IntCounter::new(name, help).expect("valid metric")
    }
}

impl Metrics {
    /// Every domain series, `niso_gc_*` included.
    pub fn new() -> Metrics {
        Metrics::build(GcSeries::Exported)
    }

    /// The domain's series without `niso_gc_*`: for a process that counts GC itself.
    pub fn without_gc() -> Metrics {
        Metrics::build(GcSeries::Hidden)
    }

    /// The Prometheus registry, for a process to add its own series beside the domain's.
    pub fn prometheus(&self) -> &Registry {
        &self.registry
    }

    fn build(gc_series: GcSeries) -> Metrics {
        let export_gc = gc_series == GcSeries::Exported;
        let registry = Registry::new();
        let chunk_store_seconds = HistogramVec::new(
            HistogramOpts::new(
                "niso_chunk_store_duration_seconds",
                "Object store latency by operation",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["operation"],
        )
        .expect("valid metric");
        let db_query_seconds = HistogramVec::new(
            HistogramOpts::new(
                "niso_db_query_duration_seconds",
                "Database statement latency by statement kind and outcome",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["operation", "outcome"],
        )
        .expect("valid metric");
        let collectors: [Box<dyn Collector>; 2] = [
            Box::new(chunk_store_seconds.clone()),
            Box::new(db_query_seconds.clone()),
        ];
        for collector in collectors {
            registry
                .register(collector)
                .expect("metric registered once");
        }
        Metrics {
            upload_bytes: counter(
                &registry,
                "niso_upload_bytes_total",
                "Archive bytes received by uploads",
            ),
            download_bytes: counter(
                &registry,
                "niso_download_bytes_total",
                "Archive bytes sent by downloads",
            ),
            dedup_hits: counter(
                &registry,
                "niso_dedup_hits_total",
                "Chunks of uploads that were already stored",
            ),
            dedup_bytes_saved: counter(
                &registry,
                "niso_dedup_saved_bytes_total",
                "Bytes not stored again thanks to dedup",
            ),
            chunks_stored: counter(
                &registry,
                "niso_chunks_stored_total",
                "New chunks written to the object store",
            ),
            chunk_bytes_stored: counter(
                &registry,
                "niso_chunk_stored_bytes_total",
                "Bytes written to the object store (after compression)",
            ),
            chunk_cache_hits: counter(
                &registry,
                "niso_chunk_cache_hits_total",
                "Chunk reads of downloads answered from the small-chunk cache, without the object store",
            ),
            gc_runs: counter_if(
                export_gc,
                &registry,
                "niso_gc_runs_total",
                "Completed GC passes",
            ),
            gc_chunks_deleted: counter_if(
                export_gc,
                &registry,
                "niso_gc_chunks_deleted_total",
                "Orphan chunks deleted by GC",
            ),
            gc_bytes_reclaimed: counter_if(
                export_gc,
                &registry,
                "niso_gc_reclaimed_bytes_total",
                "Object-store bytes reclaimed by GC",
            ),
            chunk_store_seconds,
            db_query_seconds,
            registry,
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        let encoder = TextEncoder::new();
        if let Err(error) = encoder.encode(&self.registry.gather(), &mut buffer) {
            tracing::error!(%error, "cannot encode metrics");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}

/// Times every statement `db` runs into `niso_db_query_duration_seconds` (sea-orm's metric
/// callback; transactions opened on `db` inherit it), and reports its connection pool as
/// `niso_db_pool_connections{state="idle"|"in_use"}` at each scrape.
pub fn observe_database(db: &mut sea_orm::DatabaseConnection, metrics: &Arc<Metrics>) {
    let histogram = metrics.db_query_seconds.clone();
    db.set_metric_callback(move |info| {
        let outcome = if info.failed { "error" } else { "ok" };
        histogram
            .with_label_values(&[statement_kind(&info.statement.sql), outcome])
            .observe(info.elapsed.as_secs_f64());
    });
    let connections = IntGaugeVec::new(
        Opts::new(
            "niso_db_pool_connections",
            "Database pool connections by state",
        ),
        &["state"],
    )
    .expect("valid metric");
    // A second registry on the same metrics (one process, one pool in practice) keeps the
    // first one's collector.
    let _ = metrics.registry.register(Box::new(DbPoolCollector {
        db: db.clone(),
        connections,
    }));
}

struct DbPoolCollector {
    db: sea_orm::DatabaseConnection,
    connections: IntGaugeVec,
}

impl Collector for DbPoolCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.connections.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let (size, idle) = match self.db.get_database_backend() {
            sea_orm::DbBackend::Postgres => {
                let pool = self.db.get_postgres_connection_pool();
                (pool.size() as i64, pool.num_idle() as i64)
            }
            sea_orm::DbBackend::Sqlite => {
                let pool = self.db.get_sqlite_connection_pool();
                (pool.size() as i64, pool.num_idle() as i64)
            }
            _ => return Vec::new(),
        };
        self.connections.with_label_values(&["idle"]).set(idle);
        self.connections
            .with_label_values(&["in_use"])
            .set((size - idle).max(0));
        self.connections.collect()
    }
}

/// The statement's leading keyword, from a fixed set (label values must stay few).
fn statement_kind(sql: &str) -> &'static str {
    let keyword = sql
        .trim_start_matches(|c: char| c.is_whitespace() || c == '(')
        .split(|c: char| !c.is_ascii_alphabetic())
        .next()
        .unwrap_or_default();
    const KINDS: [&str; 8] = [
        "select", "insert", "update", "delete", "with", "begin", "commit", "rollback",
    ];
    KINDS
        .into_iter()
        .find(|kind| keyword.eq_ignore_ascii_case(kind))
        .unwrap_or("other")
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::{Metrics, statement_kind};

    #[test]
    fn gc_series_are_left_out_for_a_process_that_counts_gc_itself() {
        let metrics = Metrics::without_gc();
        metrics.gc_runs.inc();
        metrics.upload_bytes.inc();
        let text = metrics.render();
        assert!(!text.contains("niso_gc_"), "{text}");
        assert!(text.contains("niso_upload_bytes_total 1"), "{text}");
        let everything = Metrics::new().render();
        assert!(everything.contains("niso_gc_runs_total"), "{everything}");
    }

    #[test]
    fn statement_kinds_are_a_fixed_set() {
        assert_eq!(statement_kind("SELECT 1"), "select");
        assert_eq!(statement_kind("  insert INTO x"), "insert");
        assert_eq!(statement_kind("(SELECT 1) UNION (SELECT 2)"), "select");
        assert_eq!(statement_kind("SAVEPOINT a"), "other");
        assert_eq!(statement_kind(""), "other");
    }
}
