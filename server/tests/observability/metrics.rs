//! Scrapes `/metrics` of a running server (served by `niso_server::http::serve_metrics`, as
//! `serve` does), performs uploads and a download, and asserts that the series moved.

use reqwest::StatusCode;

use crate::exposition::Scrape;
use niso_test_support::{Backend, TestApp, archives};

const ARCHIVE_ROUTE: &str = "/v1/packages/{name}/{version}/{arch}";

struct MetricsEndpoint {
    url: String,
    client: reqwest::Client,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl MetricsEndpoint {
    async fn start(app: &TestApp) -> MetricsEndpoint {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/metrics", listener.local_addr().unwrap());
        let (shutdown, receiver) = tokio::sync::oneshot::channel::<()>();
        let metrics = app.registry.metrics().clone();
        tokio::spawn(async move {
            niso_server::http::serve_metrics(listener, metrics, async move {
                let _ = receiver.await;
            })
            .await
            .expect("serve metrics");
        });
        MetricsEndpoint {
            url,
            client: reqwest::Client::new(),
            _shutdown: shutdown,
        }
    }

    async fn scrape(&self) -> Scrape {
        let response = self.client.get(&self.url).send().await.expect("scrape");
        assert_eq!(response.status(), StatusCode::OK);
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            content_type.starts_with("text/plain") && content_type.contains("version=0.0.4"),
            "{content_type}"
        );
        let text = response.text().await.expect("metrics body");
        let scrape = Scrape::parse(&text).unwrap_or_else(|error| panic!("{error}\n{text}"));
        check_conventions(&scrape);
        scrape
    }
}

/// Prometheus naming conventions, for every series: `niso_` prefix, counters end in `_total`,
/// durations in `_seconds`, histograms have an `+Inf` bucket equal to their count.
fn check_conventions(scrape: &Scrape) {
    for key in scrape.samples.keys() {
        assert!(
            key.name.starts_with("niso_"),
            "{} lacks the niso_ prefix",
            key.name
        );
        let family = scrape.family_of(&key.name);
        let kind = scrape
            .types
            .get(family)
            .unwrap_or_else(|| panic!("{} has no TYPE", key.name));
        match kind.as_str() {
            "counter" => assert!(family.ends_with("_total"), "counter {family}"),
            "histogram" => {
                assert!(
                    family.ends_with("_seconds") || family.ends_with("_bytes"),
                    "histogram {family} without a unit suffix"
                );
                if key.name.ends_with("_count") {
                    let mut labels: Vec<(&str, &str)> = key
                        .labels
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str()))
                        .collect();
                    labels.push(("le", "+Inf"));
                    let bucket = format!("{family}_bucket");
                    assert_eq!(
                        scrape.value(&bucket, &labels),
                        scrape.samples[key],
                        "{family}: +Inf bucket ≠ count"
                    );
                }
            }
            _ => {}
        }
        if key.name.contains("duration") {
            assert!(family.ends_with("_seconds"), "{family}");
        }
    }
}

/// The change of one series between two scrapes.
fn delta(before: &Scrape, after: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    after.sum(name, labels) - before.sum(name, labels)
}

async fn metrics_move_with_uploads_and_downloads(backend: Backend) {
    let app = TestApp::start(backend).await;
    let endpoint = MetricsEndpoint::start(&app).await;
    let key = app.register("metrics").await;
    let name = "@metrics/tool";
    // ~3 MiB of incompressible data: a dozen chunks at the default 256 KiB average.
    let payload = archives::random_bytes(3 << 20, 7);
    let first = archives::niso(name, "1.0.0", &[("bin/tool", &payload)]);

    let before = endpoint.scrape().await;
    let (status, body) = app
        .upload(&key, name, "1.0.0", "x86_64-linux", first.clone())
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, _, downloaded) = app
        .download(&format!("/v1/packages/{name}/1.0.0/x86_64-linux"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(downloaded.len(), first.len());

    let after = endpoint.scrape().await;
    for family in [
        "niso_http_requests_total",
        "niso_http_request_duration_seconds",
        "niso_http_requests_in_flight",
        "niso_upload_bytes_total",
        "niso_download_bytes_total",
        "niso_dedup_hits_total",
        "niso_dedup_saved_bytes_total",
        "niso_chunks_stored_total",
        "niso_chunk_store_duration_seconds",
        "niso_chunk_cache_hits_total",
        "niso_db_query_duration_seconds",
        "niso_db_pool_connections",
        "niso_gc_reclaimed_bytes_total",
    ] {
        assert!(after.types.contains_key(family), "{family} is not exported");
    }

    let upload = [
        ("route", ARCHIVE_ROUTE),
        ("method", "PUT"),
        ("status", "201"),
    ];
    let download = [
        ("route", ARCHIVE_ROUTE),
        ("method", "GET"),
        ("status", "200"),
    ];
    assert_eq!(
        delta(&before, &after, "niso_http_requests_total", &upload),
        1.0
    );
    assert_eq!(
        delta(&before, &after, "niso_http_requests_total", &download),
        1.0
    );
    assert_eq!(
        delta(
            &before,
            &after,
            "niso_http_request_duration_seconds_count",
            &upload
        ),
        1.0
    );
    assert!(
        delta(
            &before,
            &after,
            "niso_http_request_duration_seconds_sum",
            &upload
        ) > 0.0
    );
    assert_eq!(
        delta(
            &before,
            &after,
            "niso_http_requests_total",
            &[("route", "/v1/auth/register"), ("status", "201")]
        ),
        0.0,
        "registration happened before the first scrape"
    );
    assert_eq!(after.value("niso_http_requests_in_flight", &[]), 0.0);
    assert_eq!(
        delta(&before, &after, "niso_upload_bytes_total", &[]),
        first.len() as f64
    );
    assert_eq!(
        delta(&before, &after, "niso_download_bytes_total", &[]),
        first.len() as f64
    );
    let chunks = delta(&before, &after, "niso_chunks_stored_total", &[]);
    assert!(chunks >= 4.0, "{chunks} chunks stored for 3 MiB");
    assert!(delta(&before, &after, "niso_chunk_stored_bytes_total", &[]) >= payload.len() as f64);
    assert_eq!(
        delta(
            &before,
            &after,
            "niso_chunk_store_duration_seconds_count",
            &[("operation", "put")]
        ),
        chunks,
        "one timed put per stored chunk"
    );
    assert!(
        delta(
            &before,
            &after,
            "niso_chunk_store_duration_seconds_count",
            &[("operation", "get")]
        ) >= chunks,
        "the download read every chunk"
    );
    assert_eq!(delta(&before, &after, "niso_dedup_hits_total", &[]), 0.0);
    assert!(
        delta(
            &before,
            &after,
            "niso_db_query_duration_seconds_count",
            &[("outcome", "ok")]
        ) > 0.0,
        "database statements are timed"
    );
    assert!(
        delta(
            &before,
            &after,
            "niso_db_query_duration_seconds_count",
            &[("operation", "insert")]
        ) > 0.0
    );
    assert!(
        after
            .types
            .get("niso_db_pool_connections")
            .map(String::as_str)
            == Some("gauge"),
        "the database pool is reported"
    );
    assert!(
        after.value("niso_db_pool_connections", &[("state", "idle")])
            + after.value("niso_db_pool_connections", &[("state", "in_use")])
            >= 1.0,
        "an open pool has a connection"
    );

    // A second version with the same payload: its chunks are already stored.
    let second = archives::niso(
        name,
        "1.0.1",
        &[("bin/tool", &payload), ("README", b"now with a readme\n")],
    );
    let (status, body) = app
        .upload(&key, name, "1.0.1", "x86_64-linux", second)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let last = endpoint.scrape().await;
    assert_eq!(
        delta(&after, &last, "niso_http_requests_total", &upload),
        1.0
    );
    let hits = delta(&after, &last, "niso_dedup_hits_total", &[]);
    assert!(hits >= 2.0, "dedup hits: {hits}");
    assert!(
        delta(&after, &last, "niso_dedup_saved_bytes_total", &[]) >= (payload.len() / 2) as f64
    );
    let new_chunks = delta(&after, &last, "niso_chunks_stored_total", &[]);
    assert!(
        new_chunks < chunks,
        "a near-identical archive stored {new_chunks} new chunks (first: {chunks})"
    );

    // A failed request is counted under its status.
    let (status, _) = app
        .get("/v1/packages/@metrics/missing/1.0.0/x86_64-linux")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let end = endpoint.scrape().await;
    assert_eq!(
        delta(
            &last,
            &end,
            "niso_http_requests_total",
            &[("route", ARCHIVE_ROUTE), ("status", "404")]
        ),
        1.0
    );
}

niso_test_support::for_each_backend!(metrics_move_with_uploads_and_downloads);
