//! pack, push, delta pull, install, tags, versions, search, delete and exit codes.

use std::collections::HashSet;

use serde_json::Value;

use crate::{Niso, package_tree, set_version};
use niso_test_support::{Backend, TestApp};

const NAME: &str = "@alice/tool";
const ARCH: &str = "x86_64-linux";

async fn logged_in(backend: Backend) -> (TestApp, Niso) {
    let app = TestApp::start(backend).await;
    app.register("alice").await;
    let niso = Niso::new(&app.base);
    niso.login("alice").await;
    (app, niso)
}

async fn chunk_manifest(app: &TestApp, version: &str) -> Value {
    let (status, manifest) = app
        .get(&format!("/v1/packages/{NAME}/{version}/{ARCH}/chunks"))
        .await;
    assert_eq!(status, 200, "{manifest}");
    manifest
}

async fn push_pull_with_delta(backend: Backend) {
    let (app, niso) = logged_in(backend).await;
    let tree = niso.path("tree");
    package_tree(&tree, NAME, "1.0.0", 8, 512 * 1024);

    // pack is reproducible: the same tree twice gives the same file.
    let first = niso
        .json(&["pack", tree.to_str().unwrap(), "-o", "a.niso"])
        .await;
    let second = niso
        .json(&["pack", tree.to_str().unwrap(), "-o", "b.niso"])
        .await;
    assert_eq!(first["checksum"], second["checksum"]);
    assert_eq!(
        std::fs::read(niso.path("a.niso")).unwrap(),
        std::fs::read(niso.path("b.niso")).unwrap()
    );

    let pushed = niso
        .json(&[
            "push",
            tree.to_str().unwrap(),
            "--arch",
            ARCH,
            "--tag",
            "stable",
        ])
        .await;
    assert_eq!(
        pushed["checksum"], first["checksum"],
        "the directory is packed the same way"
    );
    assert_eq!(pushed["version"], "1.0.0");

    let pulled = niso
        .json(&[
            "pull",
            &format!("{NAME}@stable"),
            "--arch",
            ARCH,
            "-o",
            "v1.niso",
        ])
        .await;
    assert_eq!(pulled["version"], "1.0.0");
    assert_eq!(pulled["chunks_reused"], 0, "the cache starts empty");
    assert_eq!(
        std::fs::read(niso.path("v1.niso")).unwrap(),
        std::fs::read(niso.path("a.niso")).unwrap()
    );

    // Version 2: one byte of one blob changes (and the manifest's version).
    set_version(&tree, NAME, "2.0.0");
    let blob = tree.join("data/blob-4.bin");
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[100_000] ^= 0x5a;
    std::fs::write(&blob, bytes).unwrap();
    niso.json(&["push", tree.to_str().unwrap(), "--arch", ARCH])
        .await;

    let pulled = niso
        .json(&["pull", NAME, "--arch", ARCH, "-o", "v2.niso"])
        .await;
    assert_eq!(pulled["version"], "2.0.0", "no reference is latest");
    let old = chunk_manifest(&app, "1.0.0").await;
    let new = chunk_manifest(&app, "2.0.0").await;
    let old_hashes: HashSet<&str> = old["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|chunk| chunk["hash"].as_str().unwrap())
        .collect();
    let mut missing: Vec<&Value> = new["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|chunk| !old_hashes.contains(chunk["hash"].as_str().unwrap()))
        .collect();
    missing.dedup_by_key(|chunk| chunk["hash"].as_str().unwrap().to_owned());
    let missing_bytes: u64 = missing
        .iter()
        .map(|chunk| chunk["size"].as_u64().unwrap())
        .sum();
    let size = new["size"].as_u64().unwrap();
    assert_eq!(pulled["bytes_downloaded"], missing_bytes, "{pulled}");
    assert_eq!(pulled["chunks_downloaded"], missing.len() as u64);
    assert!(
        missing_bytes * 4 < size,
        "a 1-byte edit moved {missing_bytes} of {size} bytes"
    );
    assert_eq!(
        pulled["checksum"], new["checksum"],
        "the assembled file is the archive"
    );

    // A third pull downloads nothing.
    let again = niso
        .json(&[
            "pull",
            &format!("{NAME}@2.0.0"),
            "--arch",
            ARCH,
            "-o",
            "v2b.niso",
        ])
        .await;
    assert_eq!(again["bytes_downloaded"], 0);

    // A cache limited to nothing is emptied after the pull, and the next pull still works.
    let limited = niso
        .run_with(
            &["pull", NAME, "--arch", ARCH, "-o", "v2c.niso", "--json"],
            "",
            &[("NISO_CACHE_MAX_BYTES", "0")],
        )
        .await;
    assert_eq!(limited.code, 0, "{limited:?}");
    let cached: usize = walk_files(&niso.cache_dir());
    assert_eq!(cached, 0, "LRU eviction to the limit");
    let refetched = niso
        .json(&["pull", NAME, "--arch", ARCH, "-o", "v2d.niso"])
        .await;
    assert_eq!(refetched["chunks_reused"], 0);
    assert_eq!(refetched["bytes_downloaded"], size);
}

fn walk_files(directory: &std::path::Path) -> usize {
    let mut count = 0;
    for entry in std::fs::read_dir(directory).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            count += walk_files(&entry.path());
        } else {
            count += 1;
        }
    }
    count
}

async fn install_tags_versions_search_delete(backend: Backend) {
    let (_app, niso) = logged_in(backend).await;
    let tree = niso.path("tree");
    package_tree(&tree, NAME, "1.0.0", 1, 1000);
    #[cfg(unix)]
    std::os::unix::fs::symlink("bin/tool", tree.join("tool-link")).unwrap();
    niso.json(&["push", tree.to_str().unwrap(), "--arch", ARCH])
        .await;
    set_version(&tree, NAME, "1.1.0");
    niso.json(&["push", tree.to_str().unwrap(), "--arch", ARCH])
        .await;

    let installed = niso
        .json(&[
            "install",
            &format!("{NAME}@1.0.0"),
            "--arch",
            ARCH,
            "--into",
            "opt",
        ])
        .await;
    assert_eq!(installed[0]["version"], "1.0.0");
    let root = niso.path("opt/@alice/tool");
    assert_eq!(
        std::fs::read(root.join("bin/tool")).unwrap(),
        b"#!/bin/sh\necho hi\n"
    );
    #[cfg(unix)]
    assert_eq!(
        std::fs::read_link(root.join("tool-link")).unwrap(),
        std::path::PathBuf::from("bin/tool")
    );
    let manifest = std::fs::read_to_string(root.join("manifest.toml")).unwrap();
    assert!(manifest.contains("1.0.0"));
    // Installing the latest replaces the tree.
    niso.json(&["install", NAME, "--arch", ARCH, "--into", "opt"])
        .await;
    let manifest = std::fs::read_to_string(root.join("manifest.toml")).unwrap();
    assert!(manifest.contains("1.1.0"));

    niso.json(&["tag", NAME, "stable", "1.0.0"]).await;
    let tags = niso.json(&["tag", NAME]).await;
    assert!(
        tags.as_array()
            .unwrap()
            .iter()
            .any(|tag| tag["tag"] == "stable" && tag["version"] == "1.0.0"),
        "{tags}"
    );
    let versions = niso.json(&["versions", NAME]).await;
    assert_eq!(versions.as_array().unwrap().len(), 2, "{versions}");
    let found = niso.json(&["search", "tool"]).await;
    assert!(found.as_array().unwrap().iter().any(|p| p["name"] == NAME));

    niso.json(&["delete", &format!("{NAME}@1.1.0"), "--arch", ARCH])
        .await;
    let gone = niso
        .run(&["pull", &format!("{NAME}@1.1.0"), "--arch", ARCH])
        .await;
    assert_eq!(gone.code, 4, "{gone:?}");
}

async fn exit_codes(backend: Backend) {
    let (app, niso) = logged_in(backend).await;
    let tree = niso.path("tree");
    package_tree(&tree, NAME, "1.0.0", 1, 1000);

    // Usage: a bad architecture, an unknown flag.
    let run = niso
        .run(&["push", tree.to_str().unwrap(), "--arch", "X86"])
        .await;
    assert_eq!(run.code, 2, "{run:?}");
    assert_eq!(niso.run(&["pull", NAME, "--frobnicate"]).await.code, 2);

    // Not found.
    let run = niso.run(&["pull", "@alice/nothing", "--arch", ARCH]).await;
    assert_eq!(run.code, 4, "{run:?}");

    // Auth: pushing into someone else's namespace, and with no key at all.
    app.register("mallory").await;
    let other = Niso::new(&app.base);
    other.login("mallory").await;
    let run = other
        .run(&["push", tree.to_str().unwrap(), "--arch", ARCH])
        .await;
    assert_eq!(run.code, 3, "{run:?}");
    let anonymous = Niso::new(&app.base);
    let run = anonymous
        .run(&["push", tree.to_str().unwrap(), "--arch", ARCH])
        .await;
    assert_eq!(run.code, 3, "{run:?}");

    // Refused: the same version twice; the server's own message is shown.
    niso.json(&["push", tree.to_str().unwrap(), "--arch", ARCH])
        .await;
    let run = niso
        .run(&["push", tree.to_str().unwrap(), "--arch", ARCH, "--json"])
        .await;
    assert_eq!(run.code, 1, "{run:?}");
    let error = run.json()["error"].as_str().unwrap().to_owned();
    assert!(!error.is_empty() && !error.contains("reqwest"), "{error}");

    // A local archive that is not one: refused before any request.
    std::fs::write(niso.path("junk.niso"), b"not a tar").unwrap();
    let run = niso.run(&["push", "junk.niso", "--arch", ARCH]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("not a valid archive"), "{run:?}");

    // Network: nothing listens.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let offline = Niso::new(&closed);
    let run = offline.run(&["search"]).await;
    assert_eq!(run.code, 5, "{run:?}");
    assert!(run.stderr.starts_with("error: cannot reach"), "{run:?}");
}

niso_test_support::for_each_backend!(
    push_pull_with_delta,
    install_tags_versions_search_delete,
    exit_codes
);
