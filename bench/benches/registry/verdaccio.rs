//! A peer side by side: Verdaccio (npm's self-hosted registry, installed from the npm registry
//! into target/) with a package of the same size as niso's: publish time, tarball download
//! throughput and package-metadata requests/s, measured in the same run as niso's equivalents.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::processes::{Process, free_port, wait_until_up, wrk};
use crate::{Backend, Bench, Report, data, mb_per_s};

const SIZE: u64 = 16 * 1024 * 1024;

fn install(directory: &Path) -> Result<PathBuf, String> {
    let binary = directory.join("node_modules/.bin/verdaccio");
    if binary.exists() {
        return Ok(binary);
    }
    std::fs::create_dir_all(directory).map_err(|e| e.to_string())?;
    // The override works around a dependency asking for a `node-fetch@cjs` tag that the
    // registry mirror lacks (see ENVIRONMENT.md).
    std::fs::write(
        directory.join("package.json"),
        r#"{"name":"niso-bench-verdaccio","private":true,"dependencies":{"verdaccio":"^6.8.0"},"overrides":{"node-fetch":"2.7.0"}}"#,
    )
    .map_err(|e| e.to_string())?;
    let status = Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(directory)
        .status()
        .map_err(|e| format!("npm: {e}"))?;
    if status.success() && binary.exists() {
        Ok(binary)
    } else {
        Err("npm install verdaccio failed".into())
    }
}

pub async fn side_by_side(bench: &Bench, report: &mut Report) {
    let section = "peer";
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let binary = match install(&target.join("bench-verdaccio")) {
        Ok(binary) => binary,
        Err(error) => {
            report.add(section, "Verdaccio", format!("n/a ({error})"));
            return;
        }
    };
    let home = bench.work.join("verdaccio");
    std::fs::create_dir_all(&home).expect("verdaccio dir");
    let port = free_port();
    let config = home.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "storage: {storage}\nauth:\n  htpasswd:\n    file: {home}/htpasswd\n    max_users: 1000\nuplinks: {{}}\npackages:\n  '**':\n    access: $all\n    publish: $authenticated\nmax_body_size: 1gb\nlog: {{ type: stdout, format: pretty, level: error }}\n",
            storage = home.join("storage").display(),
            home = home.display()
        ),
    )
    .expect("verdaccio config");
    let _verdaccio = Process::spawn(
        "verdaccio",
        Command::new(&binary)
            .args(["--config"])
            .arg(&config)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    );
    let base = format!("http://127.0.0.1:{port}");
    wait_until_up(&bench.client, &format!("{base}/-/ping"), "verdaccio").await;
    let user: serde_json::Value = bench
        .client
        .put(format!("{base}/-/user/org.couchdb.user:bench"))
        .json(&serde_json::json!({"name": "bench", "password": "benchmark-password", "type": "user", "roles": []}))
        .send()
        .await
        .expect("verdaccio adduser")
        .json()
        .await
        .expect("adduser body");
    let token = user["token"].as_str().expect("token").to_owned();

    let tarball = data::random_vec(SIZE as usize, 77);
    let document = serde_json::json!({
        "_id": "bench-pkg",
        "name": "bench-pkg",
        "dist-tags": {"latest": "1.0.0"},
        "versions": {"1.0.0": {"name": "bench-pkg", "version": "1.0.0", "dist": {"tarball": format!("{base}/bench-pkg/-/bench-pkg-1.0.0.tgz")}}},
        "_attachments": {"bench-pkg-1.0.0.tgz": {"content_type": "application/octet-stream", "data": data::base64(&tarball), "length": tarball.len()}}
    });
    let body = serde_json::to_vec(&document).expect("publish body");
    let started = Instant::now();
    let response = bench
        .client
        .put(format!("{base}/bench-pkg"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("publish");
    assert!(
        response.status().is_success(),
        "verdaccio publish: {}",
        response.status()
    );
    let verdaccio_publish = started.elapsed().as_secs_f64();
    let (bytes, seconds) = bench
        .download(&format!("{base}/bench-pkg/-/bench-pkg-1.0.0.tgz"), None)
        .await;
    let verdaccio_download = mb_per_s(bytes, seconds);

    // niso's equivalents, in the same run.
    let env = bench.server_env(Backend::Embedded, "peer-niso").await;
    let server = bench.start(&env, "peer-niso").await;
    let key = bench.register(&server, "bench").await;
    let file = bench.work.join("peer.niso");
    data::write_incompressible_archive(&file, "@bench/peer", "1.0.0", SIZE, 77);
    let niso_publish = bench
        .upload_file(
            &server,
            &key,
            "/v1/packages/@bench/peer/1.0.0/x86_64-linux",
            &file,
        )
        .await;
    let (bytes, seconds) = bench
        .download(
            &format!("{}/v1/packages/@bench/peer/1.0.0/x86_64-linux", server.base),
            None,
        )
        .await;
    let niso_download = mb_per_s(bytes, seconds);
    report.add(
        section,
        "publish 16 MiB: niso vs Verdaccio",
        format!(
            "{:.0} ms vs {:.0} ms ({:.1}× faster)",
            niso_publish * 1000.0,
            verdaccio_publish * 1000.0,
            verdaccio_publish / niso_publish
        ),
    );
    report.add(
        section,
        "download 16 MiB: niso vs Verdaccio",
        format!(
            "{niso_download:.0} vs {verdaccio_download:.0} MB/s ({:.1}×)",
            niso_download / verdaccio_download
        ),
    );
    let seconds = if bench.quick { 3 } else { 10 };
    let (niso_rps, _, niso_p99) = wrk(
        &format!("{}/v1/packages/@bench/peer/versions", server.base),
        seconds,
        32,
        "GET",
    );
    let (verdaccio_rps, _, verdaccio_p99) = wrk(&format!("{base}/bench-pkg"), seconds, 32, "GET");
    report.add(
        section,
        "package metadata: niso vs Verdaccio req/s (p99)",
        format!("{niso_rps:.0} ({niso_p99:.2} ms) vs {verdaccio_rps:.0} ({verdaccio_p99:.2} ms): {:.1}×", niso_rps / verdaccio_rps),
    );
}
