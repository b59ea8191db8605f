//! `/v1/chunks/{hash}`: downloads of content-addressed chunks, and chunk uploads (admin only).

use reqwest::{Method, StatusCode};

use crate::packages::{chunk_manifest, header_text, random_archive};
use niso_test_support::archives::sha256_hex;
use niso_test_support::for_each_backend;
use niso_test_support::{Backend, TestApp, archives, assert_error};

for_each_backend!(
    chunks_of_a_manifest_can_be_downloaded,
    unknown_hash_is_404_and_malformed_hash_is_400,
    admin_key_uploads_chunks,
    chunk_uploads_are_checked_and_admin_only,
);

const ARCH: &str = "x86_64-linux";

async fn chunks_of_a_manifest_can_be_downloaded(backend: Backend) {
    let app = TestApp::start(backend).await;
    let key = app.register("alice").await;
    let name = "@alice/app";
    // Random data (stored as is) followed by compressible data (stored compressed).
    let random = archives::random_bytes(1024 * 1024, 5);
    let text = b"a line of very compressible text\n".repeat(40_000);
    let archive = archives::niso(
        name,
        "1.0.0",
        &[("random.bin", &random), ("text.txt", &text)],
    );
    let (status, body) = app.upload(&key, name, "1.0.0", ARCH, archive.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let manifest = chunk_manifest(&app, name, "1.0.0", ARCH).await;
    assert_eq!(manifest["checksum"], sha256_hex(&archive));
    assert_eq!(manifest["size"], archive.len());
    let chunks = manifest["chunks"].as_array().unwrap();
    assert!(chunks.len() >= 3, "{} chunks", chunks.len());
    for chunk in chunks {
        let hash = chunk["hash"].as_str().unwrap();
        let offset = chunk["offset"].as_u64().unwrap() as usize;
        let size = chunk["size"].as_u64().unwrap() as usize;
        let (status, headers, bytes) = app.download(&format!("/v1/chunks/{hash}")).await;
        assert_eq!(status, StatusCode::OK, "chunk {hash}");
        assert_eq!(
            header_text(&headers, "content-type"),
            "application/octet-stream"
        );
        assert_eq!(
            sha256_hex(&bytes),
            hash,
            "the chunk's bytes hash to its name"
        );
        assert_eq!(bytes.len(), size);
        assert!(bytes == archive[offset..offset + size], "chunk at {offset}");
    }
}

async fn unknown_hash_is_404_and_malformed_hash_is_400(backend: Backend) {
    let app = TestApp::start(backend).await;
    let key = app.register("alice").await;
    app.publish(&key, "@alice/app", "1.0.0", ARCH).await;

    let unknown = sha256_hex(b"no chunk has these bytes");
    assert_error(
        app.get(&format!("/v1/chunks/{unknown}")).await,
        StatusCode::NOT_FOUND,
    );
    let upper = unknown.to_uppercase();
    let short = &unknown[..63];
    let long = format!("{unknown}0");
    let not_hex = "g".repeat(64);
    for hash in [
        upper.as_str(),
        short,
        long.as_str(),
        not_hex.as_str(),
        "abc",
        "..%2F..%2Fetc",
    ] {
        assert_error(
            app.get(&format!("/v1/chunks/{hash}")).await,
            StatusCode::BAD_REQUEST,
        );
    }
}

async fn admin_key_uploads_chunks(backend: Backend) {
    let app = TestApp::start(backend).await;
    let admin = app.admin_key().await;
    for data in [
        archives::random_bytes(200 * 1024, 11),
        b"compressible chunk ".repeat(10_000),
        vec![7u8],
    ] {
        let hash = sha256_hex(&data);
        assert_error(
            app.get(&format!("/v1/chunks/{hash}")).await,
            StatusCode::NOT_FOUND,
        );
        let (status, body) = app
            .send_bytes(
                Method::PUT,
                &format!("/v1/chunks/{hash}"),
                Some(&admin),
                data.clone(),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let (status, _, bytes) = app.download(&format!("/v1/chunks/{hash}")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(bytes == data, "the chunk comes back as uploaded");

        // Storing it again is harmless.
        let (status, body) = app
            .send_bytes(
                Method::PUT,
                &format!("/v1/chunks/{hash}"),
                Some(&admin),
                data.clone(),
            )
            .await;
        assert!(status.is_success(), "{status} {body}");
        let (_, _, bytes) = app.download(&format!("/v1/chunks/{hash}")).await;
        assert!(bytes == data);
    }

    // A chunk an upload already stored can be uploaded again, and is still served intact.
    let key = app.register("alice").await;
    let archive = random_archive("@alice/app", "1.0.0", 300 * 1024, 12);
    let (status, _) = app
        .upload(&key, "@alice/app", "1.0.0", ARCH, archive.clone())
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let manifest = chunk_manifest(&app, "@alice/app", "1.0.0", ARCH).await;
    let first = &manifest["chunks"][0];
    let size = first["size"].as_u64().unwrap() as usize;
    let hash = first["hash"].as_str().unwrap();
    let (status, body) = app
        .send_bytes(
            Method::PUT,
            &format!("/v1/chunks/{hash}"),
            Some(&admin),
            archive[..size].to_vec(),
        )
        .await;
    assert!(status.is_success(), "{status} {body}");
    let (_, _, bytes) = app
        .download(&format!("/v1/packages/@alice/app/1.0.0/{ARCH}"))
        .await;
    assert!(bytes == archive);
}

async fn chunk_uploads_are_checked_and_admin_only(backend: Backend) {
    let app = TestApp::start(backend).await;
    let admin = app.admin_key().await;
    let alice = app.register("alice").await;
    // Alice owns @alice and a package whose chunk this is: still not enough.
    let archive = archives::niso("@alice/app", "1.0.0", &[("f", b"f")]);
    let (status, _) = app
        .upload(&alice, "@alice/app", "1.0.0", ARCH, archive)
        .await;
    assert_eq!(status, StatusCode::CREATED);

    let data = archives::random_bytes(64 * 1024, 21);
    let hash = sha256_hex(&data);
    let path = format!("/v1/chunks/{hash}");

    // The body must hash to the name.
    let mut tampered = data.clone();
    tampered[100] ^= 1;
    assert_error(
        app.send_bytes(Method::PUT, &path, Some(&admin), tampered)
            .await,
        StatusCode::BAD_REQUEST,
    );
    assert_error(
        app.send_bytes(Method::PUT, &path, Some(&admin), Vec::new())
            .await,
        StatusCode::BAD_REQUEST,
    );
    // A malformed name.
    assert_error(
        app.send_bytes(
            Method::PUT,
            &format!("/v1/chunks/{}", hash.to_uppercase()),
            Some(&admin),
            data.clone(),
        )
        .await,
        StatusCode::BAD_REQUEST,
    );

    // Keys without admin:*: the owner's user key, a user key with every non-admin action, an
    // unlinked key with push.
    let unlinked_push = app
        .registry
        .create_key_by_authority(
            &niso_test_support::test_authority(),
            None,
            "pusher",
            "pull:*,push:*,delete:*",
            None,
        )
        .await
        .unwrap()
        .plaintext;
    for key in [&alice, &unlinked_push] {
        assert_error(
            app.send_bytes(Method::PUT, &path, Some(key), data.clone())
                .await,
            StatusCode::FORBIDDEN,
        );
    }
    // No key, an unknown key.
    assert_error(
        app.send_bytes(Method::PUT, &path, None, data.clone()).await,
        StatusCode::UNAUTHORIZED,
    );
    assert_error(
        app.send_bytes(
            Method::PUT,
            &path,
            Some(&format!("niso_{}", "Q".repeat(40))),
            data.clone(),
        )
        .await,
        StatusCode::UNAUTHORIZED,
    );
    // A revoked admin key.
    let revoked = app
        .registry
        .create_key_by_authority(
            &niso_test_support::test_authority(),
            None,
            "old-admin",
            "admin:*",
            None,
        )
        .await
        .unwrap();
    app.registry
        .revoke_key_by_authority(&niso_test_support::test_authority(), revoked.id)
        .await
        .unwrap();
    assert_error(
        app.send_bytes(Method::PUT, &path, Some(&revoked.plaintext), data.clone())
            .await,
        StatusCode::UNAUTHORIZED,
    );

    // None of that stored anything.
    assert_error(app.get(&path).await, StatusCode::NOT_FOUND);
    let (status, body) = app
        .send_bytes(Method::PUT, &path, Some(&admin), data.clone())
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (_, _, bytes) = app.download(&path).await;
    assert!(bytes == data);
}
