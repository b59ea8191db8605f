//! The operator's GC loop against a real database and chunk store while uploads reuse chunks
//! and versions are deleted concurrently: no committed version loses a chunk, and orphans
//! older than the grace period go.

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use tokio::sync::watch;

use crate::common::{Backend, TestApp, archives, small_chunk_settings, test_settings};
use niso_operator::gc::{GcSettings, run_loop, run_once};
use niso_operator::metrics::Metrics;

crate::for_each_backend!(
    gc_loop_keeps_committed_chunks_while_uploads_reuse_them,
    the_grace_period_protects_young_orphans,
    the_orphan_sweep_runs_once_per_its_interval,
);

/// The operator's GC loop as leader, a pass every 5 ms with no grace period.
struct GcLoop {
    metrics: Arc<Metrics>,
    _leader: watch::Sender<bool>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl GcLoop {
    fn start(app: &TestApp, orphan_sweep_interval: Duration) -> GcLoop {
        let metrics = Arc::new(Metrics::new());
        let (leader, leading) = watch::channel(true);
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run_loop(
            app.registry.clone(),
            metrics.clone(),
            GcSettings {
                interval: Duration::from_millis(5),
                grace: Duration::ZERO,
                orphan_sweep_interval,
            },
            leading,
            stopped,
        ));
        GcLoop {
            metrics,
            _leader: leader,
            stop,
            task,
        }
    }

    async fn stop(self) {
        self.stop.send(true).unwrap();
        self.task.await.unwrap();
    }
}

/// Every pass collects, but only the first and then one per `orphan_sweep_interval` lists the
/// store for orphans: with an hour's interval, one sweep in many passes; with none, a sweep in
/// every pass.
async fn the_orphan_sweep_runs_once_per_its_interval(backend: Backend) {
    let app = Arc::new(TestApp::with_settings(backend, test_settings()).await);
    for (orphan_sweep_interval, every_pass) in
        [(Duration::from_secs(3600), false), (Duration::ZERO, true)]
    {
        let gc = GcLoop::start(&app, orphan_sweep_interval);
        let metrics = gc.metrics.clone();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while metrics.gc_runs_ok() < 4 {
            assert!(tokio::time::Instant::now() < deadline, "GC passes ran");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        gc.stop().await;
        let (passes, sweeps) = (metrics.gc_runs_ok(), metrics.gc_orphan_sweeps.get());
        if every_pass {
            assert_eq!(sweeps, passes, "a sweep in each of {passes} passes");
        } else {
            assert_eq!(sweeps, 1, "one sweep in {passes} passes");
        }
    }
}

async fn gc_loop_keeps_committed_chunks_while_uploads_reuse_them(backend: Backend) {
    let app = Arc::new(TestApp::with_settings(backend, small_chunk_settings()).await);
    let key = Arc::new(app.register("gcuser").await);
    let shared: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..4)
            .map(|i| archives::random_bytes(48 * 1024, 100 + i))
            .collect(),
    );

    let gc = GcLoop::start(&app, Duration::ZERO);
    let metrics = gc.metrics.clone();

    // Three workers upload versions made of shared blocks plus a unique one; every other
    // version is deleted again, orphaning its unique chunks while GC runs.
    let mut workers = Vec::new();
    for worker in 0..3u64 {
        let app = app.clone();
        let key = key.clone();
        let shared = shared.clone();
        workers.push(tokio::spawn(async move {
            let mut kept = Vec::new();
            for round in 0..6u64 {
                let version = format!("{worker}.{round}.0");
                let unique = archives::random_bytes(32 * 1024, worker * 1000 + round);
                let files: Vec<(&str, &[u8])> = vec![
                    ("a", &shared[(round % 4) as usize]),
                    ("b", &shared[((round + worker) % 4) as usize]),
                    ("unique", &unique),
                ];
                let archive = archives::niso("@gcuser/app", &version, &files);
                let (code, body) = app
                    .upload(&key, "@gcuser/app", &version, "x86_64", archive.clone())
                    .await;
                assert_eq!(code, StatusCode::CREATED, "{version}: {body}");
                if round % 2 == 1 {
                    let (code, _) = app
                        .delete(
                            &format!("/v1/packages/@gcuser/app/{version}/x86_64"),
                            Some(&key),
                        )
                        .await;
                    assert_eq!(code, StatusCode::NO_CONTENT);
                } else {
                    kept.push((version, archive));
                }
            }
            kept
        }));
    }
    let mut kept = Vec::new();
    for worker in workers {
        kept.extend(worker.await.expect("worker"));
    }
    gc.stop().await;
    assert!(metrics.gc_runs_ok() > 3, "GC ran during the uploads");

    // One more pass over the quiet registry: what deleted versions left goes, nothing else.
    run_once(&app.registry, &metrics, Duration::ZERO).await;
    assert!(
        metrics.gc_chunks_deleted.get() > 0,
        "deleted versions' chunks were reclaimed"
    );
    assert!(metrics.gc_bytes_reclaimed.get() > 0);
    for (version, archive) in kept {
        let (code, _, body) = app
            .download(&format!("/v1/packages/@gcuser/app/{version}/x86_64"))
            .await;
        assert_eq!(code, StatusCode::OK, "{version}");
        assert!(body == archive, "{version} downloads byte for byte");
    }
}

async fn the_grace_period_protects_young_orphans(backend: Backend) {
    let app = TestApp::with_settings(backend, test_settings()).await;
    let upload = app
        .registry
        .begin_upload("@nobody/orphan", "1.0.0", "x86_64")
        .await
        .unwrap();
    app.registry
        .store_chunk(upload.id, bytes::Bytes::from(vec![7u8; 10_000]))
        .await
        .unwrap();
    app.registry.release_upload(upload.id).await.unwrap();
    let metrics = Metrics::new();
    run_once(&app.registry, &metrics, Duration::from_secs(3600)).await;
    assert_eq!(
        metrics.gc_chunks_deleted.get(),
        0,
        "younger than the grace period"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    run_once(&app.registry, &metrics, Duration::from_secs(1)).await;
    assert_eq!(
        metrics.gc_chunks_deleted.get(),
        1,
        "older than the grace period"
    );
    assert_eq!(metrics.gc_runs_ok(), 2);
    let text = metrics.render();
    assert!(
        text.contains("niso_operator_gc_chunks_deleted_total 1"),
        "{text}"
    );
}
