//! `/v1/packages/…`: uploads (PUT and POST), downloads (ETag, conditional and range requests),
//! `latest`, listings, manifests, chunk manifests and dedup, deletes, download counts,
//! authorisation, and every kind of bad upload leaving nothing behind.

use std::collections::HashSet;

use niso_test_support::archives::sha256_hex;
use reqwest::header::{self, HeaderMap};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use niso_test_support::for_each_backend;
use niso_test_support::{Backend, TestApp, archives, assert_error, test_settings};

for_each_backend!(
    upload_with_put_and_post_then_download_byte_for_byte,
    both_name_forms_are_accepted,
    latest_follows_semver_precedence_per_arch,
    latest_of_a_prerelease_only_package_is_the_highest_prerelease,
    conditional_and_range_requests,
    gzip_and_zstd_archives_are_accepted,
    missing_end_of_archive_marker_is_tolerated,
    list_packages_filters_pages_and_summarises,
    versions_listing_shape,
    manifest_of_the_first_upload_and_of_another_arch,
    download_count_counts_full_downloads_only,
    delete_then_download_is_404_and_the_version_can_be_uploaded_again,
    existing_version_and_arch_is_a_conflict,
    concurrent_uploads_of_one_version_have_exactly_one_winner,
    concurrent_uploads_share_a_chunk_budget_of_one_chunk,
    zstd_uploads_beyond_the_decompression_budget_are_told_to_retry,
    uploads_need_a_valid_key_with_scope_and_membership,
    deletes_need_admin_or_owner_membership,
    unknown_packages_versions_arches_and_namespaces_are_404,
    bad_archives_are_rejected_and_leave_nothing_behind,
    bad_version_or_arch_in_the_url_is_400,
    bad_references_in_read_urls_are_400,
    uploads_over_the_size_limit_are_413,
    decompression_bomb_is_rejected_quickly,
    dedup_shares_chunks_between_similar_versions,
);

const ARCH: &str = "x86_64-linux";

// ---------------------------------------------------------------------------------------------
// Helpers (also used by tags.rs and chunks.rs)

/// A GET with extra request headers.
pub async fn fetch(
    app: &TestApp,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, Vec<u8>) {
    let mut request = app.client.get(app.url(path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("request");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.bytes().await.expect("body").to_vec();
    (status, headers, body)
}

pub fn header_text(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header in {headers:?}"))
        .to_str()
        .expect("ASCII header")
        .to_owned()
}

/// `GET …/versions` as (version, arch) pairs, sorted.
pub async fn version_pairs(app: &TestApp, name: &str) -> Vec<(String, String)> {
    let (status, body) = app.get(&format!("/v1/packages/{name}/versions")).await;
    assert_eq!(status, StatusCode::OK, "versions of {name}: {body}");
    let mut pairs: Vec<(String, String)> = body
        .as_array()
        .expect("versions array")
        .iter()
        .map(|v| {
            (
                v["version"].as_str().expect("version").to_owned(),
                v["arch"].as_str().expect("arch").to_owned(),
            )
        })
        .collect();
    pairs.sort();
    pairs
}

pub fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = list
        .iter()
        .map(|(v, a)| ((*v).to_owned(), (*a).to_owned()))
        .collect();
    pairs.sort();
    pairs
}

/// The chunk manifest of a version, checked for internal consistency (contiguous offsets that
/// add up to the size).
pub async fn chunk_manifest(app: &TestApp, name: &str, version: &str, arch: &str) -> Value {
    let (status, manifest) = app
        .get(&format!("/v1/packages/{name}/{version}/{arch}/chunks"))
        .await;
    assert_eq!(status, StatusCode::OK, "chunk manifest: {manifest}");
    let keys: HashSet<&str> = manifest
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        HashSet::from(["name", "version", "arch", "size", "checksum", "chunks"])
    );
    assert_eq!(manifest["name"], name);
    assert_eq!(manifest["version"], version);
    assert_eq!(manifest["arch"], arch);
    let mut offset = 0;
    for chunk in manifest["chunks"].as_array().expect("chunks") {
        assert_eq!(chunk["offset"].as_u64().expect("offset"), offset, "{chunk}");
        let hash = chunk["hash"].as_str().expect("hash");
        assert_eq!(hash.len(), 64, "{hash}");
        assert!(
            hash.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        offset += chunk["size"].as_u64().expect("size");
    }
    assert_eq!(manifest["size"].as_u64(), Some(offset), "sizes add up");
    manifest
}

/// An archive whose only file is `size` random bytes.
pub fn random_archive(name: &str, version: &str, size: usize, seed: u64) -> Vec<u8> {
    let payload = archives::random_bytes(size, seed);
    archives::niso(name, version, &[("data/payload.bin", &payload)])
}

/// A valid manifest entry followed by one entry whose name (and link target) are written raw,
/// bypassing the tar crate's own path checks.
fn tar_with_raw_entry(
    manifest: &str,
    kind: tar::EntryType,
    raw_path: &[u8],
    link: Option<&[u8]>,
    data: &[u8],
) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(manifest.len() as u64);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    builder
        .append_data(&mut header, "manifest.toml", manifest.as_bytes())
        .expect("manifest");
    let mut header = tar::Header::new_gnu();
    header.as_old_mut().name[..raw_path.len()].copy_from_slice(raw_path);
    if let Some(link) = link {
        header.as_old_mut().linkname[..link.len()].copy_from_slice(link);
    }
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(1_700_000_000);
    header.set_entry_type(kind);
    header.set_cksum();
    builder.append(&header, data).expect("raw entry");
    builder.into_inner().expect("tar")
}

async fn create_key(app: &TestApp, key: &str, scope: &str) -> (i64, String) {
    let (status, body) = app
        .post(
            "/v1/auth/keys",
            Some(key),
            json!({"name": format!("key-{}", scope.len()), "scope": scope}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "create key {scope}: {body}");
    (
        body["id"].as_i64().expect("id"),
        body["key"].as_str().expect("key").to_owned(),
    )
}

// ---------------------------------------------------------------------------------------------
// Upload and download

async fn upload_with_put_and_post_then_download_byte_for_byte(backend: Backend) {
    let app = TestApp::start(backend).await;
    let key = app.register("hakob").await;
    let name = "@hakob/my-app";

    let archive = archives::niso(
        name,
        "1.1.0",
        &[
            ("bin/my-app", b"#!/bin/sh\necho my-app\n"),
            ("README", b"hello"),
        ],
    );
    let checksum = sha256_hex(&archive);
    let (status, body) = app.upload(&key, name, "1.1.0", ARCH, archive.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        body,
        json!({"name": name, "version": "1.1.0", "arch": ARCH,
               "size": archive.len(), "checksum": checksum})
    );

    // POST is accepted as well.
    let posted = archives::niso(name, "1.2.0", &[("bin/my-app", b"v1.2.0")]);
    let (status, body) = app
        .send_bytes(
            Method::POST,
            &format!("/v1/packages/{name}/1.2.0/{ARCH}"),
            Some(&key),
            posted.clone(),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        body,
        json!({"name": name, "version": "1.2.0", "arch": ARCH,
               "size": posted.len(), "checksum": sha256_hex(&posted)})
    );

    let (status, headers, bytes) = app
        .download(&format!("/v1/packages/{name}/1.1.0/{ARCH}"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(bytes == archive, "the download differs from the upload");
    assert_eq!(header_text(&headers, "etag"), format!("\"{checksum}\""));
    assert_eq!(
        header_text(&headers, "content-disposition"),
        "attachment; filename=\"my-app-1.1.0-x86_64-linux.niso\""
    );
    assert_eq!(
        header_text(&headers, "content-type"),
        "application/octet-stream"
    );
    assert_eq!(
        header_text(&headers, "content-length"),
        archive.len().to_string()
    );

    let (status, headers, bytes) = app
        .download(&format!("/v1/packages/{name}/1.2.0/{ARCH}"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(bytes == posted);
    assert_eq!(
        header_text(&headers, "etag"),
        format!("\"{}\"", sha256_hex(&posted))
    );
    assert_eq!(
        version_pairs(&app, name).await,
        pairs(&[("1.1.0", ARCH), ("1.2.0", ARCH)])
    );
}

async fn both_name_forms_are_accepted(backend: Backend) {
    let app = TestApp::start(backend).await;
    let key = app.register("alice").await;
    let name = "@alice/app";
    let encoded = "%40alice%2Fapp";
    let archive = archives::niso(name, "1.0.0", &[("a", b"a")]);
    // Upload through the encoded form, read through both.
    let (status, body) = app
        .send_bytes(
            Method::PUT,
            &format!("/v1/packages/{encoded}/1.0.0/{ARCH}"),
            Some(&key),
            archive.clone(),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["name"], name);

    for form in [name, encoded, "%40alice%2fapp"] {
        let (status, headers, bytes) = app
            .download(&format!("/v1/packages/{form}/1.0.0/{ARCH}"))
            .await;
        assert_eq!(status, StatusCode::OK, "download via {form}");
        assert!(bytes == archive, "download via {form}");
        assert_eq!(
            header_text(&headers, "content-disposition"),
            "attachment; filename=\"app-1.0.0-x86_64-linux.niso\""
        );

        let (status, headers, bytes) = app
            .download(&format!("/v1/packages/{form}/latest/{ARCH}"))
            .await;
        assert_eq!(status, StatusCode::OK, "latest via {form}");
        assert!(bytes == archive);
        assert_eq!(header_text(&headers, "x-package-version"), "1.0.0");

        let (status, versions) = app.get(&format!("/v1/packages/{form}/versions")).await;
        assert_eq!(status, StatusCode::OK, "versions via {form}");
        assert_eq!(versions.as_array().map(Vec::len), Some(1), "{versions}");
        assert_eq!(versions[0]["name"], name);

        let (status, _, manifest) = app
            .download(&format!("/v1/packages/{form}/1.0.0/manifest"))
            .await;
        assert_eq!(status, StatusCode::OK, "manifest via {form}");
        assert_eq!(
            String::from_utf8(manifest).unwrap(),
            archives::manifest(name, "1.0.0")
        );

        let (status, chunks) = app
            .get(&format!("/v1/packages/{form}/1.0.0/{ARCH}/chunks"))
            .await;
        assert_eq!(status, StatusCode::OK, "chunks via {form}");
        assert_eq!(chunks["checksum"], sha256_hex(&archive));
    }
}

async fn latest_follows_semver_precedence_per_arch(backend: Backend) {
    let app = TestApp::start(backend).await;
    let key = app.register("alice").await;
    let name = "@alice/app";
    // Upload order is neither precedence nor lexical order.
    let mut uploaded = std::collections::HashMap::new();
    for (version, arch) in [
        ("1.10.0", ARCH),
        ("1.9.0", ARCH),
        ("2.0.0-rc.1", ARCH),
        ("1.9.0", "aarch64-linux"),
        ("1.2.0", "aarch64-linux"),
        ("3.0.0-beta", "riscv64-linux"),
        ("3.0.0-alpha", "riscv64-linux"),
    ] {
        let archive = archives::niso(name, version, &[("arch", arch.as_bytes())]);
        let (status, body) = app.upload(&key, name, version, arch, archive.clone()).await;
        assert_eq!(status, StatusCode::CREATED, "{version} {arch}: {body}");
        uploaded.insert((version, arch), archive);
    }

    for (arch, expected) in [
        (ARCH, "1.10.0"),
        ("aarch64-linux", "1.9.0"),
        // only prereleases for this arch
        ("riscv64-linux", "3.0.0-beta"),
    ] {
        let (status, headers, bytes) = app
            .download(&format!("/v1/packages/{name}/latest/{arch}"))
            .await;
        assert_eq!(status, StatusCode::OK, "latest for {arch}");
        assert_eq!(
            header_text(&headers, "x-package-version"),
            expected,
            "latest for {arch}"
        );
        assert!(bytes == uploaded[&(expected, arch)], "latest for {arch}");
        assert_eq!(
            header_text(&headers, "etag"),
            format!("\"{}\"", sha256_hex(&uploaded[&(expected, arch)]))
        );
        assert_eq!(
            header_text(&headers, "content-disposition"),
            format!("attachment; filename=\"app-{expected}-{arch}.niso\"")
        );
    }
    assert_error(
        app.get(&format!("/v1/packages/{name}/latest/wasm32-wasi"))
            .await,
        StatusCode::NOT_FOUND,
    );

    // The package's latest is a release, even though a prerelease was uploaded after it and
    // another arch only has prereleases.
    let (status, list) = app.get("/v1/packages").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list[0]["latest_version"], "1.10.0", "{list}");
    let (_, tags) = app.get(&format!("/v1/packages/{name}/tags")).await;
    assert!(
        tags.as_array()
            .unwrap()
            .contains(&json!({"tag": "latest", "version": "1.10.0"})),
        "{tags}"
    );
}

async fn latest_of_a_prerelease_only_package_is_the_highest_prerelease(backend: Backend) {
    let app = TestApp::start(backend).await;
    let key = app.register("alice").await;
    let name = "@alice/pre";
    for version in [
        "1.0.0-alpha.10",
        "1.0.0-rc.1",
        "1.0.0-beta.11",
        "0.9.0-rc.2",
    ] {
        app.publish(&key, name, version, ARCH).await;
    }
    let (status, headers, _) = app
        .download(&format!("/v1/packages/{name}/latest/{ARCH}"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header_text(&headers, "x-package-version"), "1.0.0-rc.1");
    let (_, list) = app.get("/v1/packages").await;
    assert_eq!(list[0]["latest_version"], "1.0.0-rc.1", "{list}");

    // The first release wins over every prerelease, even a higher one.
    app.publish(&key, name, "0.1.0", ARCH).await;
    let (_, headers, _) = app
        .download(&format!("/v1/packages/{name}/latest/{ARCH}"))
        .await;
    assert_eq!(header_text(&headers, "x-package-version"), "0.1.0");
}

async fn conditional_and_range_requests(backend: Backend) {
    let app = TestApp::start(backend).await;
    let key = app.register("alice").await;
    let name = "@alice/big";
    let archive = random_archive(name, "1.0.0", 3 * 1024 * 1024, 7);
    let size = archive.len();
    let (status, body) = app.upload(&key, name, "1.0.0", ARCH, archive.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let etag = format!("\"{}\"", sha256_hex(&archive));
    let path = format!("/v1/packages/{name}/1.0.0/{ARCH}");

    let manifest = chunk_manifest(&app, name, "1.0.0", ARCH).await;
    let offsets: Vec<usize> = manifest["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["offset"].as_u64().unwrap() as usize)
        .collect();
    assert!(offsets.len() >= 5, "expected several chunks: {offsets:?}");

    // If-None-Match
    let (status, headers, bytes) = fetch(&app, &path, &[("if-none-match", &etag)]).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert!(bytes.is_empty());
    assert_eq!(header_text(&headers, "etag"), etag);
    let weak_and_list = format!("\"something-else\", W/{etag}");
    let (status, _, _) = fetch(&app, &path, &[("if-none-match", &weak_and_list)]).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    let (status, _, bytes) = fetch(&app, &path, &[("if-none-match", "\"other\"")]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(bytes == archive);

    // Ranges: the start, one across a chunk boundary, one across several chunks, open-ended,
    // suffix, and one reaching past the end (clamped).
    let boundary = offsets[2];
    let cases: Vec<(String, usize, usize)> = vec![
        ("bytes=0-99".into(), 0, 99),
        ("bytes=0-0".into(), 0, 0),
        (
            format!("bytes={}-{}", boundary - 1000, boundary + 999),
            boundary - 1000,
            boundary + 999,
        ),
        (
            format!("bytes={}-{}", offsets[1] - 10, offsets[4] + 10),
            offsets[1] - 10,
            offsets[4] + 10,
        ),
        (format!("bytes={}-", size - 5000), size - 5000, size - 1),
        ("bytes=-500".into(), size - 500, size - 1),
        (format!("bytes=-{}", size + 10), 0, size - 1),
        (
            format!("bytes={}-{}", size - 10, size + 1000),
            size - 10,
            size - 1,
        ),
    ];
    for (range, first, last) in cases {
        let (status, headers, bytes) = fetch(&app, &path, &[("range", &range)]).await;
        assert_eq!(status, StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(
            header_text(&headers, "content-range"),
            format!("bytes {first}-{last}/{size}"),
            "{range}"
        );
        assert_eq!(header_text(&headers, "etag"), etag, "{range}");
        assert_eq!(bytes.len(), last - first + 1, "{range}");
        assert!(bytes == archive[first..=last], "wrong bytes for {range}");
    }

    for unsatisfiable in [format!("bytes={size}-"), format!("bytes={}-", size + 100)] {
        let response = app
            .client
            .get(app.url(&path))
            .header("range", &unsatisfiable)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::RANGE_NOT_SATISFIABLE,
            "{unsatisfiable}"
        );
        assert_eq!(
            response.headers()["content-range"].to_str().unwrap(),
            format!("bytes */{size}")
        );
        let body: Value = response.json().await.expect("JSON error");
        assert!(body["error"].as_str().is_some_and(|m| !m.is_empty()));
    }

    // Range on `latest` too.
    let (status, headers, bytes) = fetch(
        &app,
        &format!("/v1/packages/{name}/latest/{ARCH}"),
        &[("range", "bytes=100-199")],
    )
    .await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(header_text(&headers, "x-package-version"), "1.0.0");
    assert!(bytes == archive[100..200]);
}

async fn gzip_and_zstd_archives_are_accepted(backend: Backend) {
    let app = TestApp::start(backend).await;
    let key = app.register("alice").await;
    let name = "@alice/packed";
    let payload = b"compressible payload ".repeat(10_000);
    for (version, compress) in [
        ("1.0.0", archives::gzip as fn(&[u8]) -> Vec<u8>),
        ("2.0.0", archives::zstd as fn(&[u8]) -> Vec<u8>),
    ] {
        let archive = compress(&archives::niso(name, version, &[("data.txt", &payload)]));
        let (status, body) = app.upload(&key, name, version, ARCH, archive.clone()).await;
        assert_eq!(status, StatusCode::CREATED, "{version}: {body}");
        assert_eq!(body["size"], archive.len());
        assert_eq!(body["checksum"], sha256_hex(&archive));
        let (status, _, bytes) = app
            .download(&format!("/v1/packages/{name}/{version}/{ARCH}"))
            .await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            bytes == archive,
            "{version}: stored as uploaded, compressed"
        );
        let (status, _, manifest) = app
            .download(&format!("/v1/packages/{name}/{version}/manifest"))
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            String::from_utf8(manifest).unwrap(),
            archives::manifest(name, version)
        );
    }
    // A corrupt compressed stream is not.
    let mut corrupt = archives::gzip(&archives::niso(name, "3.0.0", &[("data.txt", &payload)]));
    let middle = corrupt.len() / 2;
    for byte in &mut corrupt[middle..middle + 64] {
        *byte ^= 0x5a;
    }
    assert_error(
        app.upload(&key, name, "3.0.0", ARCH, corrupt).await,
        StatusCode::BAD_REQUEST,
    );
    assert_eq!(
        version_pairs(&app, name).await,
        pairs(&[("1.0.0", ARCH), ("2.0.0", ARCH)])
    );
}

async fn missing_end_of_archive_marker_is_tolerated(backend: Backend) {
    let app = TestApp::start(backend).await;
    let key = app.register("alice").await;
    let name = "@alice/app";
    let mut archive = archives::niso(name, "1.0.0", &[("bin/tool", b"tool")]);
    // tar ends with two zero blocks; drop them.
    assert!(archive[archive.len() - 1024..].iter().all(|&b| b == 0));
    archive.truncate(archive.len() - 1024);
    let (status, body) = app.upload(&key, name, "1.0.0", ARCH, archive.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (_, _, bytes) = app
        .download(&format!("/v1/packages/{name}/1.0.0/{ARCH}"))
        .await;
    assert!(bytes == archive);
}

// ---------------------------------------------------------------------------------------------
// Listings

async fn list_packages_filters_pages_and_summarises(backend: Backend) {
    let app = TestApp::start(backend).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;

    let (status, list) = app.get("/v1/packages").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list, json!([]));

    let with_description = |name: &str, version: &str, description: &str| {
        let manifest = format!(
            "[package]\nname = \"{name}\"\nversion = \"{version}\"\ndescription = \"{description}\"\n"
        );
        archives::tar_with_manifest(&manifest, &[("f", b"f")])
    };
    let name = "@alice/my-app";
    for (version, description) in [("2.0.0", "the new one"), ("1.0.0", "the old one")] {
        let (status, body) = app
            .upload(
                &alice,
                name,
                version,
                ARCH,
                with_description(name, version, description),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    app.publish(&alice, "@alice/my_app", "0.1.0", ARCH).await;
    app.publish(&alice, "@alice/other", "0.1.0", ARCH).await;
    app.publish(&bob, "@bob/tool", "3.0.0", ARCH).await;
    app.publish(&bob, "@bob/gone", "1.0.0", ARCH).await;

    let (status, list) = app.get("/v1/packages").await;
    assert_eq!(status, StatusCode::OK);
    let entries = list.as_array().expect("array");
    let mut names: Vec<&str> = entries
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "@alice/my-app",
            "@alice/my_app",
            "@alice/other",
            "@bob/gone",
            "@bob/tool"
        ]
    );
    let entry = entries.iter().find(|p| p["name"] == name).unwrap();
    let keys: HashSet<&str> = entry
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        HashSet::from([
            "name",
            "latest_version",
            "description",
            "updated_at",
            "download_count"
        ])
    );
    // latest_version and description come from the latest version, not the latest upload.
    assert_eq!(entry["latest_version"], "2.0.0");
    assert_eq!(entry["description"], "the new one");
    assert_eq!(entry["download_count"], 0);
    let updated_at = entry["updated_at"].as_str().unwrap();
    assert_timestamp(updated_at);

    // ?q= filters by name; LIKE wildcards in the query are literal characters.
    for (query, expected) in [
        ("other", vec!["@alice/other"]),
        ("@bob/", vec!["@bob/gone", "@bob/tool"]),
        ("my-app", vec!["@alice/my-app"]),
        ("my_app", vec!["@alice/my_app"]),
        ("%", vec![]),
        ("nothing-matches", vec![]),
    ] {
        let encoded: String = query
            .bytes()
            .map(|b| format!("%{b:02X}"))
            .collect::<String>();
        let (status, list) = app.get(&format!("/v1/packages?q={encoded}")).await;
        assert_eq!(status, StatusCode::OK, "q={query}: {list}");
        let mut names: Vec<&str> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        names.sort_unstable();
        assert_eq!(names, expected, "q={query}");
    }

    // limit/offset page through every package exactly once.
    let mut paged = Vec::new();
    for offset in 0..5 {
        let (status, page) = app
            .get(&format!("/v1/packages?limit=2&offset={}", offset * 2))
            .await;
        assert_eq!(status, StatusCode::OK);
        let page = page.as_array().unwrap().clone();
        assert!(page.len() <= 2, "{page:?}");
        paged.extend(
            page.into_iter()
                .map(|p| p["name"].as_str().unwrap().to_owned()),
        );
    }
    paged.sort();
    assert_eq!(
        paged,
        [
            "@alice/my-app",
            "@alice/my_app",
            "@alice/other",
            "@bob/gone",
            "@bob/tool"
        ]
    );
    let (_, page) = app.get("/v1/packages?limit=1&offset=4").await;
    assert_eq!(page.as_array().map(Vec::len), Some(1));
    let (_, page) = app.get("/v1/packages?limit=1&offset=5").await;
    assert_eq!(page, json!([]));
    assert_error(
        app.get("/v1/packages?limit=abc").await,
        StatusCode::BAD_REQUEST,
    );

    // Deleting the latest version moves the summary back.
    let (status, _) = app
        .delete(&format!("/v1/packages/{name}/2.0.0/{ARCH}"), Some(&alice))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, list) = app.get("/v1/packages?q=my-app").await;
    assert_eq!(list[0]["latest_version"], "1.0.0", "{list}");
    assert_eq!(list[0]["description"], "the old one", "{list}");

    // A package with no version left disappears.
    let (status, _) = app
        .delete(&format!("/v1/packages/@bob/gone/1.0.0/{ARCH}"), Some(&bob))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, list) = app.get("/v1/packages").await;
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|p| p["name"] != "@bob/gone"),
        "{list}"
    );
    assert_eq!(list.as_array().unwrap().len(), 4);
    assert_error(
        app.get("/v1/packages/@bob/gone/versions").await,
        StatusCode::NOT_FOUND,
    );
    assert_error(
        app.get(&format!("/v1/packages/@bob/gone/latest/{ARCH}"))
            .await,
        StatusCode::NOT_FOUND,
    );
    // It comes back with its next upload.
    app.publish(&bob, "@bob/gone", "1.0.1", ARCH).await;
    let (_, list) = app.get("/v1/packages?q=gone").await;
    assert_eq!(list[0]["latest_version"], "1.0.1", "{list}");
}

#[track_caller]
fn assert_timestamp(text: &str) {
    let parsed = chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S");
    assert!(
        parsed.is_ok(),
        "not a 2026-04-10T12:00:00 timestamp: {text}"
    );
    let age = chrono::Utc::now().naive_utc() - parsed.unwrap();
    assert!(
        age.num_seconds().abs() < 600,
        "timestamp {text} is not about now (UTC)"
    );
}

async fn versions_listing_shape(backend: Backend) {
    let app = TestApp::start(backend).await;
    let key = app.register("alice").await;
    let name = "@alice/app";
    let mut uploaded = Vec::new();
    for (version, arch) in [("1.0.0", ARCH), ("1.0.0", "aarch64-linux"), ("1.1.0", ARCH)] {
        let archive = archives::niso(name, version, &[("arch", arch.as_bytes())]);
        let (status, _) = app.upload(&key, name, version, arch, archive.clone()).await;
        assert_eq!(status, StatusCode::CREATED);
        uploaded.push((version, arch, archive));
    }
    let (status, versions) = app.get(&format!("/v1/packages/{name}/versions")).await;
    assert_eq!(status, StatusCode::OK);
    let versions = versions.as_array().expect("array");
    assert_eq!(versions.len(), 3);
    for (version, arch, archive) in &uploaded {
        let entry = versions
            .iter()
            .find(|v| v["version"] == *version && v["arch"] == *arch)
            .unwrap_or_else(|| panic!("{version} {arch} missing"));
        let keys: HashSet<&str> = entry
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            HashSet::from([
                "name",
                "version",
                "arch",
                "size",
                "checksum",
                "uploaded_at",
                "download_count"
            ])
        );
        assert_eq!(entry["name"], name);
        assert_eq!(entry["size"], archive.len());
        assert_eq!(entry["checksum"], sha256_hex(archive));
        assert_eq!(entry["download_count"], 0);
        assert_timestamp(entry["uploaded_at"].as_str().unwrap());
    }
    let (status, page) = app
        .get(&format!("/v1/packages/{name}/versions?limit=2"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page.as_array().map(Vec::len), Some(2));
    let (_, rest) = app
        .get(&format!("/v1/packages/{name}/versions?limit=2&offset=2"))
        .await;
    assert_eq!(rest.as_array().map(Vec::len), Some(1));
    assert!(!page.as_array().unwrap().contains(&rest[0]));
}

async fn manifest_of_the_first_upload_and_of_another_arch(backend: Backend) {
    let app = TestApp::start(backend).await;
    let key = app.register("alice").await;
    let name = "@alice/app";
    let first = format!(
        "# first upload\n[package]\nname = \"{name}\"\nversion = \"1.0.0\"\ndescription = \"for x86\"\n"
    );
    let second = format!(
        "[package]\nname = \"{name}\"\nversion = \"1.0.0\"\narch = \"aarch64-linux\"\ndescription = \"for arm\"\n"
    );
    for (manifest, arch) in [(&first, ARCH), (&second, "aarch64-linux")] {
        let archive = archives::tar_with_manifest(manifest, &[("f", b"f")]);
        let (status, body) = app.upload(&key, name, "1.0.0", arch, archive).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    for form in [name, "%40alice%2Fapp"] {
        let (status, headers, text) = app
            .download(&format!("/v1/packages/{form}/1.0.0/manifest"))
            .await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            header_text(&headers, "content-type").starts_with("text/plain"),
            "{headers:?}"
        );
        assert_eq!(String::from_utf8(text).unwrap(), first);
        let (status, _, text) = app
            .download(&format!(
                "/v1/packages/{form}/1.0.0/manifest?arch=aarch64-linux"
            ))
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(String::from_utf8(text).unwrap(), second);
    }
    assert_error(
        app.get(&format!(
            "/v1/packages/{name}/1.0.0/manifest?arch=riscv64-linux"
        ))
        .await,
        StatusCode::NOT_FOUND,
    );
    assert_error(
        app.get(&format!("/v1/packages/{name}/1.0.1/manifest"))
            .await,
        StatusCode::NOT_FOUND,
    );
    assert_error(
        app.get("/v1/packages/@alice/nothing/1.0.0/manifest").await,
        StatusCode::NOT_FOUND,
    );
}

async fn download_count_counts_full_downloads_only(backend: Backend) {
    let app = TestApp::start(backend).await;
    let key = app.register("alice").await;
    let name = "@alice/app";
    let uploaded = app.publish(&key, name, "1.0.0", ARCH).await;
    app.publish(&key, name, "1.1.0", ARCH).await;
    let path = format!("/v1/packages/{name}/1.0.0/{ARCH}");
    let etag = format!("\"{}\"", uploaded["checksum"].as_str().unwrap());

    for _ in 0..2 {
        let (status, _, _) = app.download(&path).await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, _, _) = fetch(&app, &path, &[("range", "bytes=0-9")]).await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    let (status, _, _) = fetch(&app, &path, &[("if-none-match", &etag)]).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    app.registry
        .flush_download_counts()
        .await
        .expect("flush download counts");

    let (_, versions) = app.get(&format!("/v1/packages/{name}/versions")).await;
    let count_of = |version: &str| {
        versions
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["version"] == version)
            .map(|v| v["download_count"].clone())
    };
    assert_eq!(count_of("1.0.0"), Some(json!(2)), "{versions}");
    assert_eq!(count_of("1.1.0"), Some(json!(0)), "{versions}");
    let (_, list) = app.get("/v1/packages").await;
    assert_eq!(list[0]["download_count"], 2, "{list}");

    // One more through `latest` (1.1.0) is counted on that version and the package.
    let (status, _, _) = app
        .download(&format!("/v1/packages/{name}/latest/{ARCH}"))
        .await;
    assert_eq!(status, StatusCode::OK);
    app.registry.flush_download_counts().await.expect("flush");
    let (_, versions) = app.get(&format!("/v1/packages/{name}/versions")).await;
    let count_of = |version: &str| {
        versions
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["version"] == version)
            .map(|v| v["download_count"].clone())
    };
    assert_eq!(count_of("1.0.0"), Some(json!(2)), "{versions}");
    assert_eq!(count_of("1.1.0"), Some(json!(1)), "{versions}");
    let (_, list) = app.get("/v1/packages").await;
    assert_eq!(list[0]["download_count"], 3, "{list}");
}

// ---------------------------------------------------------------------------------------------
// Delete and conflicts

async fn delete_then_download_is_404_and_the_version_can_be_uploaded_again(backend: Backend) {
    let app = TestApp::start(backend).await;
    let key = app.register("alice").await;
    let name = "@alice/app";
    app.publish(&key, name, "1.0.0", ARCH).await;
    app.publish(&key, name, "1.0.0", "aarch64-linux").await;
    let path = format!("/v1/packages/{name}/1.0.0/{ARCH}");

    let (status, body) = app.delete(&path, Some(&key)).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(body, Value::Null, "a 204 has no body");
    assert_error(app.get(&path).await, StatusCode::NOT_FOUND);
    assert_error(
        app.get(&format!("{path}/chunks")).await,
        StatusCode::NOT_FOUND,
    );
    assert_error(
        app.get(&format!("/v1/packages/{name}/latest/{ARCH}")).await,
        StatusCode::NOT_FOUND,
    );
    assert_eq!(
        version_pairs(&app, name).await,
        pairs(&[("1.0.0", "aarch64-linux")])
    );
    assert_error(app.delete(&path, Some(&key)).await, StatusCode::NOT_FOUND);

    // The same version+arch can be uploaded again, with different content.
    let again = archives::niso(name, "1.0.0", &[("bin/tool", b"the second coming")]);
    let (status, body) = app.upload(&key, name, "1.0.0", ARCH, again.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, headers, bytes) = app.download(&path).await;
    assert_eq!(status, StatusCode::OK);
    assert!(bytes == again);
    assert_eq!(
        header_text(&headers, "etag"),
        format!("\"{}\"", sha256_hex(&again))
    );
    assert_eq!(
        version_pairs(&app, name).await,
        pairs(&[("1.0.0", ARCH), ("1.0.0", "aarch64-linux")])
    );
}

async fn existing_version_and_arch_is_a_conflict(backend: Backend) {
    let app = TestApp::start(backend).await;
    let key = app.register("alice").await;
    let name = "@alice/app";
    let original = archives::niso(name, "1.0.0", &[("v", b"original")]);
    let (status, _) = app
        .upload(&key, name, "1.0.0", ARCH, original.clone())
        .await;
    assert_eq!(status, StatusCode::CREATED);

    // Same bytes and different bytes, through PUT and POST.
    let different = archives::niso(name, "1.0.0", &[("v", b"different")]);
    assert_error(
        app.upload(&key, name, "1.0.0", ARCH, original.clone())
            .await,
        StatusCode::CONFLICT,
    );
    assert_error(
        app.upload(&key, name, "1.0.0", ARCH, different.clone())
            .await,
        StatusCode::CONFLICT,
    );
    assert_error(
        app.send_bytes(
            Method::POST,
            &format!("/v1/packages/{name}/1.0.0/{ARCH}"),
            Some(&key),
            different.clone(),
        )
        .await,
        StatusCode::CONFLICT,
    );
    let (_, _, bytes) = app
        .download(&format!("/v1/packages/{name}/1.0.0/{ARCH}"))
        .await;
    assert!(
        bytes == original,
        "a conflicting upload changed the version"
    );

    // Another arch of the same version is a new version+arch.
    let (status, _) = app
        .upload(&key, name, "1.0.0", "aarch64-linux", different)
        .await;
    assert_eq!(status, StatusCode::CREATED);
    // Build metadata makes a different version string.
    app.publish(&key, name, "1.0.0+build.2", ARCH).await;
    assert_eq!(
        version_pairs(&app, name).await,
        pairs(&[
            ("1.0.0", ARCH),
            ("1.0.0", "aarch64-linux"),
            ("1.0.0+build.2", ARCH)
        ])
    );
}

async fn concurrent_uploads_of_one_version_have_exactly_one_winner(backend: Backend) {
    let app = TestApp::start(backend).await;
    let key = app.register("alice").await;
    let name = "@alice/race";
    let candidates: Vec<Vec<u8>> = (0..8)
        .map(|seed| random_archive(name, "1.0.0", 300 * 1024, 100 + seed))
        .collect();
    let results = futures::future::join_all(
        candidates
            .iter()
            .map(|archive| app.upload(&key, name, "1.0.0", ARCH, archive.clone())),
    )
    .await;
    let statuses: Vec<StatusCode> = results.iter().map(|(status, _)| *status).collect();
    let winners: Vec<usize> = (0..8)
        .filter(|&i| statuses[i] == StatusCode::CREATED)
        .collect();
    assert_eq!(winners.len(), 1, "statuses: {statuses:?} {results:?}");
    for (i, (status, body)) in results.iter().enumerate() {
        if i != winners[0] {
            assert_eq!(*status, StatusCode::CONFLICT, "upload {i}: {body}");
            assert!(body["error"].as_str().is_some_and(|m| !m.is_empty()));
        }
    }
    let winner = &candidates[winners[0]];
    assert_eq!(results[winners[0]].1["checksum"], sha256_hex(winner));
    let (status, headers, bytes) = app
        .download(&format!("/v1/packages/{name}/1.0.0/{ARCH}"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(bytes == *winner, "the stored archive is not the winner's");
    assert_eq!(
        header_text(&headers, "etag"),
        format!("\"{}\"", sha256_hex(winner))
    );
    assert_eq!(version_pairs(&app, name).await, pairs(&[("1.0.0", ARCH)]));
    let manifest = chunk_manifest(&app, name, "1.0.0", ARCH).await;
    assert_eq!(manifest["checksum"], sha256_hex(winner));
}

/// The server-wide chunk budget at its smallest (one chunk at a time across all uploads):
/// uploads that find it spent wait for each other's chunks instead of deadlocking, every one
/// commits intact, and the whole budget is free again afterwards.
async fn concurrent_uploads_share_a_chunk_budget_of_one_chunk(backend: Backend) {
    let mut settings = test_settings();
    settings.chunk_budget_bytes = 1;
    let app = TestApp::with_settings(backend, settings).await;
    let key = app.register("alice").await;
    let archives: Vec<(String, Vec<u8>)> = (0..6)
        .map(|i| {
            let name = format!("@alice/budget-{i}");
            let archive = random_archive(&name, "1.0.0", 2 * 1024 * 1024, 300 + i);
            (name, archive)
        })
        .collect();
    let uploads = futures::future::join_all(
        archives
            .iter()
            .map(|(name, archive)| app.upload(&key, name, "1.0.0", ARCH, archive.clone())),
    );
    // A deadlock would hang here: fail instead.
    let results = tokio::time::timeout(std::time::Duration::from_secs(120), uploads)
        .await
        .expect("the uploads deadlocked on the chunk budget");
    for ((name, archive), (status, body)) in archives.iter().zip(&results) {
        assert_eq!(*status, StatusCode::CREATED, "{name}: {body}");
        let (status, _, bytes) = app
            .download(&format!("/v1/packages/{name}/1.0.0/{ARCH}"))
            .await;
        assert_eq!(status, StatusCode::OK);
        assert!(bytes == *archive, "{name} came back different");
    }
    assert_eq!(app.registry.chunk_budget().reserved_bytes(), 0);
}

/// With no decoder memory left for zstd windows, a zstd upload is a 503 with Retry-After (the
/// archive is fine, the server is busy) and stores nothing; a gzip upload is unaffected.
async fn zstd_uploads_beyond_the_decompression_budget_are_told_to_retry(backend: Backend) {
    let mut settings = test_settings();
    settings.decompression_budget_bytes = 0;
    let app = TestApp::with_settings(backend, settings).await;
    let key = app.register("alice").await;
    let plain = archives::niso("@alice/app", "1.0.0", &[("bin/tool", b"#!/bin/sh\n")]);
    let response = app
        .client
        .put(app.url(&format!("/v1/packages/@alice/app/1.0.0/{ARCH}")))
        .bearer_auth(&key)
        .body(archives::zstd(&plain))
        .send()
        .await
        .expect("upload");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key(header::RETRY_AFTER));
    let body: Value = response.json().await.expect("JSON error");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|message| message.contains("zstd")),
        "{body}"
    );
    let (status, _) = app.get("/v1/packages/@alice/app/versions").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = app
        .upload(&key, "@alice/app", "1.0.0", ARCH, archives::gzip(&plain))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

// ---------------------------------------------------------------------------------------------
// Authorisation

async fn uploads_need_a_valid_key_with_scope_and_membership(backend: Backend) {
    let app = TestApp::start(backend).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let name = "@alice/app";
    let path = format!("/v1/packages/{name}/1.0.0/{ARCH}");
    let archive = || archives::niso(name, "1.0.0", &[("f", b"f")]);

    // No key, a malformed header, an unknown key.
    assert_error(
        app.send_bytes(Method::PUT, &path, None, archive()).await,
        StatusCode::UNAUTHORIZED,
    );
    let response = app
        .client
        .put(app.url(&path))
        .header("authorization", format!("Token {alice}"))
        .body(archive())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let unknown = format!("niso_{}", "A".repeat(40));
    assert_error(
        app.upload(&unknown, name, "1.0.0", ARCH, archive()).await,
        StatusCode::UNAUTHORIZED,
    );

    // A revoked key: it works until it is revoked.
    let (id, ci) = create_key(&app, &alice, "push:@alice/*").await;
    let (status, body) = app
        .upload(
            &ci,
            "@alice/ci",
            "1.0.0",
            ARCH,
            archives::niso("@alice/ci", "1.0.0", &[]),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, _) = app
        .delete(&format!("/v1/auth/keys/{id}"), Some(&alice))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_error(
        app.upload(&ci, name, "1.0.0", ARCH, archive()).await,
        StatusCode::UNAUTHORIZED,
    );

    // A key scoped to another package.
    let (_, other_only) = create_key(&app, &alice, "push:@alice/other").await;
    assert_error(
        app.upload(&other_only, name, "1.0.0", ARCH, archive())
            .await,
        StatusCode::FORBIDDEN,
    );
    let (status, _) = app
        .upload(
            &other_only,
            "@alice/other",
            "1.0.0",
            ARCH,
            archives::niso("@alice/other", "1.0.0", &[]),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "the scoped key works where it may"
    );
    // A pull-only key.
    let (_, pull_only) = create_key(&app, &alice, "pull:*").await;
    assert_error(
        app.upload(&pull_only, name, "1.0.0", ARCH, archive()).await,
        StatusCode::FORBIDDEN,
    );

    // A non-member, whatever its scope.
    assert_error(
        app.upload(&bob, name, "1.0.0", ARCH, archive()).await,
        StatusCode::FORBIDDEN,
    );

    // Nothing of all that created @alice/app.
    assert_error(
        app.get(&format!("/v1/packages/{name}/versions")).await,
        StatusCode::NOT_FOUND,
    );

    // Membership grants: bob pushes to an org namespace he is a member of.
    let (status, body) = app
        .post("/v1/namespaces", Some(&alice), json!({"name": "@team"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_error(
        app.upload(
            &bob,
            "@team/tool",
            "1.0.0",
            ARCH,
            archives::niso("@team/tool", "1.0.0", &[]),
        )
        .await,
        StatusCode::FORBIDDEN,
    );
    let (status, body) = app
        .post(
            "/v1/namespaces/@team/members",
            Some(&alice),
            json!({"username": "bob", "role": "member"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    app.publish(&bob, "@team/tool", "1.0.0", ARCH).await;

    // An unlinked key is authorised by its scope alone.
    let admin = app.admin_key().await;
    app.publish(&admin, "@team/tool", "1.1.0", ARCH).await;
    let unlinked_pull = app
        .registry
        .create_key_by_authority(
            &niso_test_support::test_authority(),
            None,
            "pull-only",
            "pull:*",
            None,
        )
        .await
        .unwrap()
        .plaintext;
    assert_error(
        app.upload(
            &unlinked_pull,
            "@team/tool",
            "1.2.0",
            ARCH,
            archives::niso("@team/tool", "1.2.0", &[]),
        )
        .await,
        StatusCode::FORBIDDEN,
    );
    assert_eq!(
        version_pairs(&app, "@team/tool").await,
        pairs(&[("1.0.0", ARCH), ("1.1.0", ARCH)])
    );
}

async fn deletes_need_admin_or_owner_membership(backend: Backend) {
    let app = TestApp::start(backend).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let (status, _) = app
        .post("/v1/namespaces", Some(&alice), json!({"name": "@team"}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    for (user, role) in [("bob", "member"), ("carol", "admin")] {
        let (status, body) = app
            .post(
                "/v1/namespaces/@team/members",
                Some(&alice),
                json!({"username": user, "role": role}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let name = "@team/tool";
    for version in ["1.0.0", "1.1.0", "1.2.0"] {
        app.publish(&bob, name, version, ARCH).await;
    }
    let path = |version: &str| format!("/v1/packages/{name}/{version}/{ARCH}");

    assert_error(
        app.delete(&path("1.0.0"), None).await,
        StatusCode::UNAUTHORIZED,
    );
    // A plain member may push but not delete.
    assert_error(
        app.delete(&path("1.0.0"), Some(&bob)).await,
        StatusCode::FORBIDDEN,
    );
    // A non-member.
    let dave = app.register("dave").await;
    assert_error(
        app.delete(&path("1.0.0"), Some(&dave)).await,
        StatusCode::FORBIDDEN,
    );
    // The owner's key without the delete action.
    let (_, push_only) = create_key(&app, &alice, "push:*,pull:*").await;
    assert_error(
        app.delete(&path("1.0.0"), Some(&push_only)).await,
        StatusCode::FORBIDDEN,
    );
    assert_eq!(
        version_pairs(&app, name).await,
        pairs(&[("1.0.0", ARCH), ("1.1.0", ARCH), ("1.2.0", ARCH)])
    );

    // An admin member and the owner may.
    let (status, _) = app.delete(&path("1.0.0"), Some(&carol)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = app.delete(&path("1.1.0"), Some(&alice)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(version_pairs(&app, name).await, pairs(&[("1.2.0", ARCH)]));
}

async fn unknown_packages_versions_arches_and_namespaces_are_404(backend: Backend) {
    let app = TestApp::start(backend).await;
    let key = app.register("alice").await;
    let name = "@alice/app";
    app.publish(&key, name, "1.0.0", ARCH).await;

    for path in [
        // unknown package, in an existing and a missing namespace
        format!("/v1/packages/@alice/nothing/1.0.0/{ARCH}"),
        format!("/v1/packages/@alice/nothing/latest/{ARCH}"),
        "/v1/packages/@alice/nothing/versions".to_owned(),
        "/v1/packages/@alice/nothing/1.0.0/manifest".to_owned(),
        format!("/v1/packages/@alice/nothing/1.0.0/{ARCH}/chunks"),
        format!("/v1/packages/@nobody/app/1.0.0/{ARCH}"),
        "/v1/packages/%40nobody%2Fapp/versions".to_owned(),
        // unknown version
        format!("/v1/packages/{name}/2.0.0/{ARCH}"),
        format!("/v1/packages/{name}/2.0.0/{ARCH}/chunks"),
        format!("/v1/packages/{name}/1.0.0-rc.1/{ARCH}"),
        // unknown tag
        format!("/v1/packages/{name}/stable/{ARCH}"),
        // unknown arch
        format!("/v1/packages/{name}/1.0.0/aarch64-linux"),
        format!("/v1/packages/{name}/latest/aarch64-linux"),
    ] {
        assert_error(app.get(&path).await, StatusCode::NOT_FOUND);
    }

    // Uploads and deletes in a namespace that does not exist.
    let admin = app.admin_key().await;
    for key in [&key, &admin] {
        assert_error(
            app.upload(
                key,
                "@nobody/app",
                "1.0.0",
                ARCH,
                archives::niso("@nobody/app", "1.0.0", &[]),
            )
            .await,
            StatusCode::NOT_FOUND,
        );
        assert_error(
            app.delete(&format!("/v1/packages/@nobody/app/1.0.0/{ARCH}"), Some(key))
                .await,
            StatusCode::NOT_FOUND,
        );
    }
    // Deletes of unknown packages, versions and arches.
    for path in [
        format!("/v1/packages/@alice/nothing/1.0.0/{ARCH}"),
        format!("/v1/packages/{name}/2.0.0/{ARCH}"),
        format!("/v1/packages/{name}/1.0.0/aarch64-linux"),
    ] {
        assert_error(app.delete(&path, Some(&key)).await, StatusCode::NOT_FOUND);
    }
    assert_eq!(version_pairs(&app, name).await, pairs(&[("1.0.0", ARCH)]));
}

// ---------------------------------------------------------------------------------------------
// Bad input

async fn bad_archives_are_rejected_and_leave_nothing_behind(backend: Backend) {
    let app = TestApp::start(backend).await;
    let key = app.register("alice").await;
    let name = "@alice/app";
    let version = "2.0.0";
    app.publish(&key, name, "1.0.0", ARCH).await;
    let before = version_pairs(&app, name).await;
    let good_manifest = archives::manifest(name, version);

    let big_file = archives::random_bytes(100_000, 3);
    let whole = archives::niso(name, version, &[("data.bin", &big_file)]);
    assert!(good_manifest.len() < 512);
    // manifest header + manifest block + data.bin header, then data
    let data_start = 3 * 512;
    let huge_manifest = format!("{good_manifest}# {}\n", "x".repeat(1024 * 1024 + 10));

    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("an empty body", Vec::new()),
        ("garbage bytes", archives::random_bytes(10_000, 99)),
        ("text", b"this is not an archive at all\n".repeat(100)),
        (
            "an archive cut inside an entry's data",
            whole[..data_start + 50_000].to_vec(),
        ),
        (
            "an archive cut inside a header",
            whole[..2 * 512 + 100].to_vec(),
        ),
        ("a gzip archive cut short", {
            let gz = archives::gzip(&whole);
            gz[..gz.len() / 2].to_vec()
        }),
        (
            "no manifest.toml",
            archives::tar_of(&[("bin/tool", b"tool")]),
        ),
        (
            "manifest.toml not at the root",
            archives::tar_of(&[("sub/manifest.toml", good_manifest.as_bytes())]),
        ),
        (
            "manifest.toml that is not TOML",
            archives::tar_with_manifest("[package\nname = ", &[]),
        ),
        (
            "manifest.toml without [package]",
            archives::tar_with_manifest(
                &format!("name = \"{name}\"\nversion = \"{version}\"\n"),
                &[],
            ),
        ),
        (
            "manifest.toml without a version",
            archives::tar_with_manifest(&format!("[package]\nname = \"{name}\"\n"), &[]),
        ),
        (
            "manifest.toml with a numeric version",
            archives::tar_with_manifest(
                &format!("[package]\nname = \"{name}\"\nversion = 2\n"),
                &[],
            ),
        ),
        (
            "manifest.toml that is not UTF-8",
            archives::tar_of(&[("manifest.toml", b"[package]\nname = \"\xff\xfe\"\n")]),
        ),
        (
            "a manifest naming another package",
            archives::niso("@alice/other", version, &[]),
        ),
        (
            "a manifest naming another namespace",
            archives::niso("@bob/app", version, &[]),
        ),
        (
            "a manifest with another version",
            archives::niso(name, "2.0.1", &[]),
        ),
        (
            "a manifest with another arch",
            archives::tar_with_manifest(&format!("{good_manifest}arch = \"aarch64-linux\"\n"), &[]),
        ),
        (
            "an absolute path",
            tar_with_raw_entry(
                &good_manifest,
                tar::EntryType::Regular,
                b"/etc/cron.d/evil",
                None,
                b"x",
            ),
        ),
        (
            "a .. path",
            tar_with_raw_entry(
                &good_manifest,
                tar::EntryType::Regular,
                b"../escape",
                None,
                b"x",
            ),
        ),
        (
            "a .. path inside",
            tar_with_raw_entry(
                &good_manifest,
                tar::EntryType::Regular,
                b"bin/../../escape",
                None,
                b"x",
            ),
        ),
        (
            "a symlink leaving the archive",
            tar_with_raw_entry(
                &good_manifest,
                tar::EntryType::Symlink,
                b"bin/link",
                Some(b"../../etc/passwd"),
                b"",
            ),
        ),
        (
            "an absolute symlink",
            tar_with_raw_entry(
                &good_manifest,
                tar::EntryType::Symlink,
                b"link",
                Some(b"/etc/passwd"),
                b"",
            ),
        ),
        (
            "a hard link leaving the archive",
            tar_with_raw_entry(
                &good_manifest,
                tar::EntryType::Link,
                b"hard",
                Some(b"../outside"),
                b"",
            ),
        ),
    ];
    for (what, archive) in cases {
        let (status, body) = app.upload(&key, name, version, ARCH, archive).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{what}: {body}");
        assert!(
            body["error"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: {body}"
        );
        assert_eq!(version_pairs(&app, name).await, before, "{what}");
        assert_error(
            app.get(&format!("/v1/packages/{name}/{version}/{ARCH}"))
                .await,
            StatusCode::NOT_FOUND,
        );
    }

    // A manifest over 1 MiB: 400 or 413.
    let (status, body) = app
        .upload(
            &key,
            name,
            version,
            ARCH,
            archives::tar_with_manifest(&huge_manifest, &[]),
        )
        .await;
    assert!(
        status == StatusCode::BAD_REQUEST || status == StatusCode::PAYLOAD_TOO_LARGE,
        "huge manifest: {status} {body}"
    );
    assert_eq!(version_pairs(&app, name).await, before);

    // A package that never got a good upload does not exist at all.
    let (status, _) = app
        .upload(&key, "@alice/fresh", "1.0.0", ARCH, b"garbage".to_vec())
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_error(
        app.get("/v1/packages/@alice/fresh/versions").await,
        StatusCode::NOT_FOUND,
    );
    let (_, list) = app.get("/v1/packages").await;
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");

    // Safe links and a matching arch are fine, and nothing blocks the version afterwards.
    let mut builder = tar::Builder::new(Vec::new());
    let manifest = format!("{good_manifest}arch = \"{ARCH}\"\n");
    let mut header = tar::Header::new_gnu();
    header.set_size(manifest.len() as u64);
    header.set_mode(0o644);
    builder
        .append_data(&mut header, "manifest.toml", manifest.as_bytes())
        .unwrap();
    let mut header = tar::Header::new_gnu();
    header.set_size(3);
    header.set_mode(0o755);
    builder
        .append_data(&mut header, "bin/tool", &b"abc"[..])
        .unwrap();
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Symlink);
    header.set_size(0);
    builder
        .append_link(&mut header, "lib/tool", "../bin/tool")
        .unwrap();
    let good = builder.into_inner().unwrap();
    let (status, body) = app.upload(&key, name, version, ARCH, good).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        version_pairs(&app, name).await,
        pairs(&[("1.0.0", ARCH), (version, ARCH)])
    );
}

/// Every read route validates its path at the edge: a reference that is neither a version, a
/// tag nor `latest` is a 400 naming the rule, on the manifest route too (it used to look such
/// a reference up as a tag and answer 404). Both name forms and a trailing slash route alike.
async fn bad_references_in_read_urls_are_400(backend: Backend) {
    let app = TestApp::start(backend).await;
    let key = app.register("alice").await;
    let name = "@alice/app";
    app.publish(&key, name, "1.0.0", ARCH).await;
    for form in [name, "%40alice%2Fapp"] {
        for reference in ["1.0", "-x", "Stable", "a%20b"] {
            for path in [
                format!("/v1/packages/{form}/{reference}/manifest"),
                format!("/v1/packages/{form}/{reference}/{ARCH}"),
                format!("/v1/packages/{form}/{reference}/{ARCH}/chunks"),
            ] {
                let message = assert_error(app.get(&path).await, StatusCode::BAD_REQUEST);
                assert!(
                    message.contains("expected a SemVer version, a tag or \"latest\""),
                    "{path}: {message}"
                );
            }
        }
        let message = assert_error(
            app.get(&format!("/v1/packages/{form}/1.0.0/manifest?arch=X86"))
                .await,
            StatusCode::BAD_REQUEST,
        );
        assert!(message.contains("invalid arch"), "{message}");
        let (status, body) = app.get(&format!("/v1/packages/{form}/versions/")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    // A percent-encoded name with two slashes is one bad name, not a longer path.
    let message = assert_error(
        app.get("/v1/packages/%40alice%2Fapp%2Fx/versions").await,
        StatusCode::BAD_REQUEST,
    );
    assert!(message.contains("invalid package name"), "{message}");
}

async fn bad_version_or_arch_in_the_url_is_400(backend: Backend) {
    let app = TestApp::start(backend).await;
    let key = app.register("alice").await;
    let name = "@alice/app";
    app.publish(&key, name, "1.0.0", ARCH).await;
    for (version, arch) in [
        ("1.0", ARCH),
        ("v1.0.0", ARCH),
        ("01.0.0", ARCH),
        ("latest", ARCH),
        ("1.0.0", "latest"),
        ("1.0.0", "X86"),
        ("1.0.0", "x86.64"),
        ("1.0.0", "-linux"),
        ("1.0.0", "versions"),
        ("1.0.0", "tags"),
        ("1.0.0", "chunks"),
    ] {
        // The manifest agrees with the URL, so only the URL can be at fault.
        let archive = archives::niso(name, version, &[]);
        let (status, body) = app.upload(&key, name, version, arch, archive).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{version} {arch}: {body}");
        assert!(body["error"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // `manifest` is a reserved word too: never stored as an arch.
    let (status, _) = app
        .upload(
            &key,
            name,
            "1.0.0",
            "manifest",
            archives::niso(name, "1.0.0", &[]),
        )
        .await;
    assert!(status.is_client_error(), "{status}");
    let long_arch = "a".repeat(65);
    assert_error(
        app.upload(
            &key,
            name,
            "1.0.0",
            &long_arch,
            archives::niso(name, "1.0.0", &[]),
        )
        .await,
        StatusCode::BAD_REQUEST,
    );
    // An invalid package name.
    assert_error(
        app.upload(
            &key,
            "@alice/App",
            "1.0.0",
            ARCH,
            archives::niso("@alice/App", "1.0.0", &[]),
        )
        .await,
        StatusCode::BAD_REQUEST,
    );
    // Reads validate the same way.
    assert_error(
        app.get(&format!("/v1/packages/{name}/1.0.0/X86")).await,
        StatusCode::BAD_REQUEST,
    );
    assert_eq!(version_pairs(&app, name).await, pairs(&[("1.0.0", ARCH)]));
}

async fn uploads_over_the_size_limit_are_413(backend: Backend) {
    let mut settings = test_settings();
    settings.max_upload_bytes = 64 * 1024;
    let app = TestApp::with_settings(backend, settings).await;
    let key = app.register("alice").await;
    let name = "@alice/app";

    let small = random_archive(name, "1.0.0", 32 * 1024, 1);
    let (status, body) = app.upload(&key, name, "1.0.0", ARCH, small).await;
    assert_eq!(status, StatusCode::CREATED, "under the limit: {body}");

    // With a Content-Length over the limit.
    let large = random_archive(name, "2.0.0", 96 * 1024, 2);
    let response = app
        .client
        .put(app.url(&format!("/v1/packages/{name}/2.0.0/{ARCH}")))
        .bearer_auth(&key)
        .body(large.clone())
        .send()
        .await
        .expect("upload");
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // The body was not read: the connection must not be reused.
    assert_eq!(
        header_text(response.headers(), "connection"),
        "close",
        "{:?}",
        response.headers()
    );
    let body: Value = response.json().await.expect("JSON error");
    assert!(body["error"].as_str().is_some_and(|m| !m.is_empty()));

    // Streamed without a Content-Length.
    let pieces: Vec<Result<Vec<u8>, std::io::Error>> =
        large.chunks(8 * 1024).map(|p| Ok(p.to_vec())).collect();
    let response = app
        .client
        .put(app.url(&format!("/v1/packages/{name}/2.0.0/{ARCH}")))
        .bearer_auth(&key)
        .body(reqwest::Body::wrap_stream(futures::stream::iter(pieces)))
        .send()
        .await
        .expect("streamed upload");
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // The body was not read: the connection must not be reused.
    assert_eq!(
        header_text(response.headers(), "connection"),
        "close",
        "{:?}",
        response.headers()
    );
    let body: Value = response.json().await.expect("JSON error");
    assert!(body["error"].as_str().is_some_and(|m| !m.is_empty()));

    assert_eq!(version_pairs(&app, name).await, pairs(&[("1.0.0", ARCH)]));
}

/// A gzip stream declaring a 128 MiB file of zeros, about 128 KiB compressed.
fn gzip_bomb(name: &str, version: &str) -> Vec<u8> {
    use std::io::Write;
    let manifest = archives::manifest(name, version);
    let mut head = Vec::new();
    let mut header = tar::Header::new_gnu();
    header.set_path("manifest.toml").unwrap();
    header.set_size(manifest.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    head.extend_from_slice(header.as_bytes());
    head.extend_from_slice(manifest.as_bytes());
    head.resize(head.len().div_ceil(512) * 512, 0);
    let member_size = 4 * 1024 * 1024;
    let members = 32;
    let mut header = tar::Header::new_gnu();
    header.set_path("zeros.bin").unwrap();
    header.set_size((member_size * members) as u64);
    header.set_mode(0o644);
    header.set_cksum();
    head.extend_from_slice(header.as_bytes());

    let mut bomb = archives::gzip(&head);
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(&vec![0u8; member_size]).unwrap();
    let zeros = encoder.finish().unwrap();
    for _ in 0..members {
        bomb.extend_from_slice(&zeros);
    }
    bomb
}

async fn decompression_bomb_is_rejected_quickly(backend: Backend) {
    let app = TestApp::start(backend).await;
    let key = app.register("alice").await;
    let name = "@alice/bomb";
    let bomb = gzip_bomb(name, "1.0.0");
    assert!(bomb.len() < 512 * 1024, "{}", bomb.len());
    let started = std::time::Instant::now();
    let (status, body) = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        app.upload(&key, name, "1.0.0", ARCH, bomb),
    )
    .await
    .expect("the bomb upload hung");
    assert!(
        status == StatusCode::BAD_REQUEST || status == StatusCode::PAYLOAD_TOO_LARGE,
        "{status} {body} after {:?}",
        started.elapsed()
    );
    assert!(body["error"].as_str().is_some_and(|m| !m.is_empty()));
    assert_error(
        app.get(&format!("/v1/packages/{name}/versions")).await,
        StatusCode::NOT_FOUND,
    );
}

// ---------------------------------------------------------------------------------------------
// Chunks and dedup

async fn dedup_shares_chunks_between_similar_versions(backend: Backend) {
    let app = TestApp::start(backend).await;
    let key = app.register("alice").await;
    let name = "@alice/dedup";
    let payload = archives::random_bytes(8 * 1024 * 1024, 42);
    let mut edited = payload.clone();
    let middle = edited.len() / 2;
    edited.splice(middle..middle, archives::random_bytes(100, 43));

    let first = archives::niso(name, "1.0.0", &[("data/payload.bin", &payload)]);
    let second = archives::niso(name, "1.0.1", &[("data/payload.bin", &edited)]);
    for (version, archive) in [("1.0.0", &first), ("1.0.1", &second)] {
        let (status, body) = app.upload(&key, name, version, ARCH, archive.clone()).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }

    let manifests = [
        chunk_manifest(&app, name, "1.0.0", ARCH).await,
        chunk_manifest(&app, name, "1.0.1", ARCH).await,
    ];
    let hashes: Vec<Vec<String>> = manifests
        .iter()
        .map(|m| {
            m["chunks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["hash"].as_str().unwrap().to_owned())
                .collect()
        })
        .collect();
    // FastCDC with the default settings: chunks between 64 KiB and 1 MiB (the last may be
    // smaller), so 8 MiB make at least 8 chunks.
    for manifest in &manifests {
        let chunks = manifest["chunks"].as_array().unwrap();
        assert!(chunks.len() >= 8, "{} chunks", chunks.len());
        for (i, chunk) in chunks.iter().enumerate() {
            let size = chunk["size"].as_u64().unwrap();
            assert!(size <= 1024 * 1024, "chunk {i} has {size} bytes");
            if i + 1 < chunks.len() {
                assert!(size >= 64 * 1024, "chunk {i} has {size} bytes");
            }
        }
    }
    let old: HashSet<&String> = hashes[0].iter().collect();
    let new: Vec<&String> = hashes[1].iter().filter(|h| !old.contains(h)).collect();
    assert!(
        new.len() <= 4,
        "1.0.1 has {} chunks not in 1.0.0 (of {})",
        new.len(),
        hashes[1].len()
    );

    // Concatenating the chunks reproduces each archive exactly.
    for ((manifest, archive), version) in manifests
        .iter()
        .zip([&first, &second])
        .zip(["1.0.0", "1.0.1"])
    {
        let mut rebuilt = Vec::with_capacity(archive.len());
        for chunk in manifest["chunks"].as_array().unwrap() {
            let hash = chunk["hash"].as_str().unwrap();
            let (status, headers, bytes) = app.download(&format!("/v1/chunks/{hash}")).await;
            assert_eq!(status, StatusCode::OK, "chunk {hash}");
            assert_eq!(
                header_text(&headers, "content-type"),
                "application/octet-stream"
            );
            assert_eq!(sha256_hex(&bytes), hash);
            assert_eq!(bytes.len() as u64, chunk["size"].as_u64().unwrap());
            rebuilt.extend_from_slice(&bytes);
        }
        assert!(
            rebuilt == *archive,
            "the chunks of {version} do not rebuild it"
        );
        assert_eq!(manifest["checksum"], sha256_hex(&rebuilt));
        assert_eq!(manifest["size"], archive.len());
    }
}
