//! What the operator's `/metrics` exports: its own series and the registry's domain series,
//! not the API server's `niso_http_*` (always zero here), and GC passes under one name only.

use std::time::Duration;

use crate::common::{Backend, Storage, test_settings};
use niso_operator::gc::run_once;
use niso_operator::http::render_metrics;
use niso_operator::metrics::{Metrics, registry_metrics};
use niso_registry::Registry;

crate::for_each_backend!(operator_metrics_export_no_http_series_and_count_gc_once);

/// The metric family names of a Prometheus text exposition.
fn families(text: &str) -> Vec<&str> {
    text.lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_whitespace().next())
        .collect()
}

async fn operator_metrics_export_no_http_series_and_count_gc_once(backend: Backend) {
    let storage = Storage::new(backend).await;
    let db = niso_registry::db::connect(&storage.database_url, 4)
        .await
        .expect("connect");
    niso_registry::db::migrate(&db).await.expect("migrate");
    let registry = Registry::new(
        db,
        storage.store.clone(),
        test_settings(),
        registry_metrics(),
    );
    let metrics = Metrics::new();
    run_once(&registry, &metrics, Duration::ZERO).await;
    assert_eq!(metrics.gc_runs_ok(), 1, "the GC pass ran");

    let text = render_metrics(&metrics, &registry);
    let names = families(&text);
    let http: Vec<&&str> = names
        .iter()
        .filter(|name| name.starts_with("niso_http_"))
        .collect();
    assert!(http.is_empty(), "HTTP series exported: {http:?}\n{text}");
    let gc_runs: Vec<&&str> = names
        .iter()
        .filter(|name| name.ends_with("gc_runs_total"))
        .collect();
    assert_eq!(gc_runs, [&"niso_operator_gc_runs_total"], "{text}");
    assert!(
        text.contains("niso_operator_gc_runs_total{result=\"ok\"} 1"),
        "{text}"
    );
    assert!(
        names.contains(&"niso_db_query_duration_seconds"),
        "the domain series stay: {text}"
    );
}
