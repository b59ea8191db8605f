//! Reads that resolve a version or list versions load only the columns they answer with: a
//! version's manifest (up to 1 MiB each) is read only for the one version whose manifest is
//! returned. Sixty versions with 1 MiB manifests, eight concurrent anonymous requests per
//! endpoint: loading every manifest would cost 8 × 60 MiB of heap.

use reqwest::StatusCode;

use crate::{MIB, SERIAL, peak_growth, reset_peak};
use niso_test_support::for_each_backend;
use niso_test_support::{Backend, TestApp, archives};

for_each_backend!(latest_and_listings_do_not_load_every_manifest);

const NAME: &str = "@big/app";
const ARCH: &str = "x86_64-linux";
const VERSIONS: usize = 60;
const CONCURRENT: usize = 8;

/// A valid manifest padded with a TOML comment to just under the 1 MiB manifest limit.
fn large_manifest(version: &str) -> String {
    let mut manifest = archives::manifest(NAME, version);
    manifest.push_str("# ");
    manifest.push_str(&"x".repeat(1000 * 1024));
    manifest.push('\n');
    manifest
}

fn archive(version: &str) -> Vec<u8> {
    archives::tar_with_manifest(
        &large_manifest(version),
        &[(
            "bin/tool",
            format!("#!/bin/sh\necho {version}\n").as_bytes(),
        )],
    )
}

/// Peak heap growth while `CONCURRENT` copies of `GET path` run, each read to its end.
async fn peak_of_concurrent_gets(app: &TestApp, path: &str) -> usize {
    let baseline = reset_peak();
    let requests = (0..CONCURRENT).map(|_| async {
        let response = app.client.get(app.url(path)).send().await.expect("GET");
        let status = response.status();
        let body = response.bytes().await.expect("body");
        assert_eq!(status, StatusCode::OK, "GET {path}: {body:?}");
    });
    futures::future::join_all(requests).await;
    peak_growth(baseline)
}

async fn latest_and_listings_do_not_load_every_manifest(backend: Backend) {
    let _serial = SERIAL.lock().await;
    let app = TestApp::start(backend).await;
    let key = app.register("big").await;
    for index in 0..VERSIONS {
        let version = format!("1.0.{index}");
        let (status, body) = app
            .upload(&key, NAME, &version, ARCH, archive(&version))
            .await;
        assert_eq!(status, StatusCode::CREATED, "upload {version}: {body}");
    }

    // One more upload: its commit recomputes the package summary (latest version, description).
    let next = archive("2.0.0");
    let baseline = reset_peak();
    let (status, body) = app.upload(&key, NAME, "2.0.0", ARCH, next).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let upload_peak = peak_growth(baseline);

    let mut figures = vec![("upload (summary refresh)", upload_peak, 32 * MIB)];
    for (label, path, bound) in [
        (
            "latest download",
            format!("/v1/packages/{NAME}/latest/{ARCH}"),
            24 * MIB,
        ),
        (
            "latest chunk list",
            format!("/v1/packages/{NAME}/latest/{ARCH}/chunks"),
            24 * MIB,
        ),
        (
            "versions",
            format!("/v1/packages/{NAME}/versions?limit=1000"),
            24 * MIB,
        ),
        ("package list", "/v1/packages?q=big".to_owned(), 24 * MIB),
        ("tags", format!("/v1/packages/{NAME}/tags"), 24 * MIB),
        // Returns one 1 MiB manifest per request: a few copies of it each.
        (
            "latest manifest",
            format!("/v1/packages/{NAME}/latest/manifest"),
            48 * MIB,
        ),
    ] {
        let peak = peak_of_concurrent_gets(&app, &path).await;
        figures.push((label, peak, bound));
    }
    for (label, peak, _) in &figures {
        println!(
            "{backend:?}: {label}: peak heap growth {:.1} MiB",
            *peak as f64 / MIB as f64
        );
    }
    for (label, peak, bound) in figures {
        assert!(
            peak < bound,
            "{label} grew the heap by {:.1} MiB (bound {} MiB): manifests loaded?",
            peak as f64 / MIB as f64,
            bound / MIB
        );
    }
}
