//! `/v1/packages/{name}/tags`: listing (with the registry-maintained `latest`), creating and
//! moving tags, downloads by tag, validation, authorisation, and tags following deletes.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::packages::header_text;
use niso_test_support::archives::sha256_hex;
use niso_test_support::for_each_backend;
use niso_test_support::{Backend, TestApp, archives, assert_error};

for_each_backend!(
    list_create_move_and_download_by_tag,
    latest_and_invalid_tags_are_400,
    tag_to_a_missing_version_or_package_is_404,
    setting_tags_needs_a_member_key,
    tags_of_deleted_versions_disappear_and_latest_moves_back,
);

const ARCH: &str = "x86_64-linux";

async fn tags(app: &TestApp, name: &str) -> Vec<(String, String)> {
    let (status, body) = app.get(&format!("/v1/packages/{name}/tags")).await;
    assert_eq!(status, StatusCode::OK, "tags of {name}: {body}");
    let mut tags: Vec<(String, String)> = body
        .as_array()
        .expect("array")
        .iter()
        .map(|t| {
            assert_eq!(
                t.as_object().map(|o| o.len()),
                Some(2),
                "a tag is {{tag, version}}: {t}"
            );
            (
                t["tag"].as_str().expect("tag").to_owned(),
                t["version"].as_str().expect("version").to_owned(),
            )
        })
        .collect();
    tags.sort();
    tags
}

fn expected(list: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut tags: Vec<(String, String)> = list
        .iter()
        .map(|(t, v)| ((*t).to_owned(), (*v).to_owned()))
        .collect();
    tags.sort();
    tags
}

async fn set_tag(app: &TestApp, key: Option<&str>, name: &str, body: Value) -> (StatusCode, Value) {
    app.post(&format!("/v1/packages/{name}/tags"), key, body)
        .await
}

async fn upload(app: &TestApp, key: &str, name: &str, version: &str, arch: &str) -> Vec<u8> {
    let archive = archives::niso(
        name,
        version,
        &[("which", format!("{version} {arch}").as_bytes())],
    );
    let (status, body) = app.upload(key, name, version, arch, archive.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{version} {arch}: {body}");
    archive
}

async fn list_create_move_and_download_by_tag(backend: Backend) {
    let app = TestApp::start(backend).await;
    let key = app.register("alice").await;
    let name = "@alice/app";
    let v1 = upload(&app, &key, name, "1.0.0", ARCH).await;
    let v11 = upload(&app, &key, name, "1.1.0", ARCH).await;

    // The registry maintains `latest` from the start.
    assert_eq!(tags(&app, name).await, expected(&[("latest", "1.1.0")]));

    let (status, body) = set_tag(
        &app,
        Some(&key),
        name,
        json!({"tag": "stable", "version": "1.0.0"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body, json!({"tag": "stable", "version": "1.0.0"}));
    assert_eq!(
        tags(&app, name).await,
        expected(&[("latest", "1.1.0"), ("stable", "1.0.0")])
    );

    // Download by tag (and the chunk manifest by tag).
    let (status, headers, bytes) = app
        .download(&format!("/v1/packages/{name}/stable/{ARCH}"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(bytes == v1);
    assert_eq!(header_text(&headers, "x-package-version"), "1.0.0");
    assert_eq!(
        header_text(&headers, "etag"),
        format!("\"{}\"", sha256_hex(&v1))
    );
    assert_eq!(
        header_text(&headers, "content-disposition"),
        "attachment; filename=\"app-1.0.0-x86_64-linux.niso\""
    );
    let (status, chunks) = app
        .get(&format!("/v1/packages/{name}/stable/{ARCH}/chunks"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(chunks["version"], "1.0.0");
    // A tag for an arch that version lacks.
    assert_error(
        app.get(&format!("/v1/packages/{name}/stable/aarch64-linux"))
            .await,
        StatusCode::NOT_FOUND,
    );

    // Move it, through the percent-encoded name.
    let (status, body) = set_tag(
        &app,
        Some(&key),
        "%40alice%2Fapp",
        json!({"tag": "stable", "version": "1.1.0"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body, json!({"tag": "stable", "version": "1.1.0"}));
    let (status, listed) = app.get("/v1/packages/%40alice%2Fapp/tags").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed.as_array().map(Vec::len), Some(2), "{listed}");
    assert_eq!(
        tags(&app, name).await,
        expected(&[("latest", "1.1.0"), ("stable", "1.1.0")])
    );
    let (_, headers, bytes) = app
        .download(&format!("/v1/packages/{name}/stable/{ARCH}"))
        .await;
    assert!(bytes == v11);
    assert_eq!(header_text(&headers, "x-package-version"), "1.1.0");

    // Several tags, on one version, in one package only.
    for tag in ["beta", "lts-1.0", "next_major", "v1"] {
        let (status, body) = set_tag(
            &app,
            Some(&key),
            name,
            json!({"tag": tag, "version": "1.0.0"}),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{tag}: {body}");
    }
    assert_eq!(
        tags(&app, name).await,
        expected(&[
            ("beta", "1.0.0"),
            ("latest", "1.1.0"),
            ("lts-1.0", "1.0.0"),
            ("next_major", "1.0.0"),
            ("stable", "1.1.0"),
            ("v1", "1.0.0"),
        ])
    );
    upload(&app, &key, "@alice/other", "1.0.0", ARCH).await;
    assert_eq!(
        tags(&app, "@alice/other").await,
        expected(&[("latest", "1.0.0")])
    );
    assert_error(
        app.get(&format!("/v1/packages/@alice/other/stable/{ARCH}"))
            .await,
        StatusCode::NOT_FOUND,
    );
    // Tags of an unknown package.
    assert_error(
        app.get("/v1/packages/@alice/nothing/tags").await,
        StatusCode::NOT_FOUND,
    );
}

async fn latest_and_invalid_tags_are_400(backend: Backend) {
    let app = TestApp::start(backend).await;
    let key = app.register("alice").await;
    let name = "@alice/app";
    upload(&app, &key, name, "1.0.0", ARCH).await;
    upload(&app, &key, name, "2.0.0", ARCH).await;

    let long = "a".repeat(65);
    for tag in [
        "latest",
        "1.0.0",
        "2.0.0-rc.1",
        "Stable",
        "1stable",
        "-x",
        "_x",
        "st able",
        "stäble",
        "",
        long.as_str(),
    ] {
        let (status, body) = set_tag(
            &app,
            Some(&key),
            name,
            json!({"tag": tag, "version": "1.0.0"}),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "tag {tag:?}: {body}");
        assert!(body["error"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // Bad versions and bad bodies.
    for body in [
        json!({"tag": "stable", "version": "1.0"}),
        json!({"tag": "stable", "version": "latest"}),
        json!({"tag": "stable"}),
        json!({"version": "1.0.0"}),
        json!({"tag": 5, "version": "1.0.0"}),
        json!("stable"),
    ] {
        assert_error(
            set_tag(&app, Some(&key), name, body).await,
            StatusCode::BAD_REQUEST,
        );
    }
    let response = app
        .client
        .post(app.url(&format!("/v1/packages/{name}/tags")))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body("{\"tag\": \"stable\",")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.expect("JSON error");
    assert!(body["error"].as_str().is_some());

    // `latest` is untouched: still the latest version, not 1.0.0.
    assert_eq!(tags(&app, name).await, expected(&[("latest", "2.0.0")]));
    let (_, headers, _) = app
        .download(&format!("/v1/packages/{name}/latest/{ARCH}"))
        .await;
    assert_eq!(header_text(&headers, "x-package-version"), "2.0.0");
}

async fn tag_to_a_missing_version_or_package_is_404(backend: Backend) {
    let app = TestApp::start(backend).await;
    let key = app.register("alice").await;
    let name = "@alice/app";
    upload(&app, &key, name, "1.0.0", ARCH).await;
    for version in ["1.0.1", "0.9.0", "1.0.0-rc.1"] {
        assert_error(
            set_tag(
                &app,
                Some(&key),
                name,
                json!({"tag": "stable", "version": version}),
            )
            .await,
            StatusCode::NOT_FOUND,
        );
    }
    assert_error(
        set_tag(
            &app,
            Some(&key),
            "@alice/nothing",
            json!({"tag": "stable", "version": "1.0.0"}),
        )
        .await,
        StatusCode::NOT_FOUND,
    );
    assert_eq!(tags(&app, name).await, expected(&[("latest", "1.0.0")]));
}

async fn setting_tags_needs_a_member_key(backend: Backend) {
    let app = TestApp::start(backend).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let name = "@alice/app";
    upload(&app, &alice, name, "1.0.0", ARCH).await;
    let tag = json!({"tag": "stable", "version": "1.0.0"});

    assert_error(
        set_tag(&app, None, name, tag.clone()).await,
        StatusCode::UNAUTHORIZED,
    );
    assert_error(
        set_tag(
            &app,
            Some(&format!("niso_{}", "Z".repeat(40))),
            name,
            tag.clone(),
        )
        .await,
        StatusCode::UNAUTHORIZED,
    );
    // A non-member, even with a push:* scope.
    assert_error(
        set_tag(&app, Some(&bob), name, tag.clone()).await,
        StatusCode::FORBIDDEN,
    );
    // Alice's keys whose scope does not allow pushing to this package.
    for scope in ["push:@alice/other", "pull:*"] {
        let (status, body) = app
            .post(
                "/v1/auth/keys",
                Some(&alice),
                json!({"name": "narrow", "scope": scope}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let narrow = body["key"].as_str().unwrap();
        assert_error(
            set_tag(&app, Some(narrow), name, tag.clone()).await,
            StatusCode::FORBIDDEN,
        );
    }
    assert_eq!(tags(&app, name).await, expected(&[("latest", "1.0.0")]));

    // A key scoped to exactly this package works.
    let (_, body) = app
        .post(
            "/v1/auth/keys",
            Some(&alice),
            json!({"name": "exact", "scope": "push:@alice/app"}),
        )
        .await;
    let exact = body["key"].as_str().unwrap();
    let (status, body) = set_tag(&app, Some(exact), name, tag.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        tags(&app, name).await,
        expected(&[("latest", "1.0.0"), ("stable", "1.0.0")])
    );
}

async fn tags_of_deleted_versions_disappear_and_latest_moves_back(backend: Backend) {
    let app = TestApp::start(backend).await;
    let key = app.register("alice").await;
    let name = "@alice/app";
    upload(&app, &key, name, "1.0.0", ARCH).await;
    let v1_arm = upload(&app, &key, name, "1.0.0", "aarch64-linux").await;
    let v15 = upload(&app, &key, name, "1.5.0", ARCH).await;
    upload(&app, &key, name, "2.0.0", ARCH).await;
    for (tag, version) in [("stable", "1.0.0"), ("beta", "2.0.0"), ("old", "1.5.0")] {
        let (status, body) = set_tag(
            &app,
            Some(&key),
            name,
            json!({"tag": tag, "version": version}),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    assert_eq!(
        tags(&app, name).await,
        expected(&[
            ("beta", "2.0.0"),
            ("latest", "2.0.0"),
            ("old", "1.5.0"),
            ("stable", "1.0.0")
        ])
    );
    let delete = |version: &str, arch: &str| {
        let path = format!("/v1/packages/{name}/{version}/{arch}");
        let app = &app;
        let key = &key;
        async move {
            let (status, body) = app.delete(&path, Some(key)).await;
            assert_eq!(status, StatusCode::NO_CONTENT, "delete {path}: {body}");
        }
    };

    // One arch of 1.0.0 goes: the tag stays, for the arch that remains.
    delete("1.0.0", ARCH).await;
    assert!(
        tags(&app, name)
            .await
            .contains(&("stable".to_owned(), "1.0.0".to_owned()))
    );
    let (status, _, bytes) = app
        .download(&format!("/v1/packages/{name}/stable/aarch64-linux"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(bytes == v1_arm);
    assert_error(
        app.get(&format!("/v1/packages/{name}/stable/{ARCH}")).await,
        StatusCode::NOT_FOUND,
    );

    // The last arch of 1.0.0 goes: so does the tag.
    delete("1.0.0", "aarch64-linux").await;
    assert_eq!(
        tags(&app, name).await,
        expected(&[("beta", "2.0.0"), ("latest", "2.0.0"), ("old", "1.5.0")])
    );
    assert_error(
        app.get(&format!("/v1/packages/{name}/stable/aarch64-linux"))
            .await,
        StatusCode::NOT_FOUND,
    );

    // Deleting the latest version moves `latest` back and removes its tags.
    delete("2.0.0", ARCH).await;
    assert_eq!(
        tags(&app, name).await,
        expected(&[("latest", "1.5.0"), ("old", "1.5.0")])
    );
    let (status, headers, bytes) = app
        .download(&format!("/v1/packages/{name}/latest/{ARCH}"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header_text(&headers, "x-package-version"), "1.5.0");
    assert!(bytes == v15);
    let (_, list) = app.get("/v1/packages").await;
    assert_eq!(list[0]["latest_version"], "1.5.0", "{list}");

    // Uploading the deleted versions again does not bring their old tags back.
    upload(&app, &key, name, "1.0.0", ARCH).await;
    upload(&app, &key, name, "2.0.0", ARCH).await;
    assert_eq!(
        tags(&app, name).await,
        expected(&[("latest", "2.0.0"), ("old", "1.5.0")])
    );
    assert_error(
        app.get(&format!("/v1/packages/{name}/beta/{ARCH}")).await,
        StatusCode::NOT_FOUND,
    );

    // The package disappears with its last version, and so do its tags.
    for version in ["1.0.0", "1.5.0", "2.0.0"] {
        delete(version, ARCH).await;
    }
    assert_error(
        app.get(&format!("/v1/packages/{name}/tags")).await,
        StatusCode::NOT_FOUND,
    );
    assert_error(
        set_tag(
            &app,
            Some(&key),
            name,
            json!({"tag": "old", "version": "1.5.0"}),
        )
        .await,
        StatusCode::NOT_FOUND,
    );
    upload(&app, &key, name, "1.5.0", ARCH).await;
    assert_eq!(tags(&app, name).await, expected(&[("latest", "1.5.0")]));
}
