//! `/v1/auth/*`: register, login (and its rate limit), the profile, and API keys (creation
//! without escalation, listing, revocation, `last_used_at`).

use std::net::{IpAddr, Ipv4Addr};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use niso_test_support::for_each_backend;
use niso_test_support::{Backend, TestApp, assert_error, assert_timestamp};

for_each_backend!(
    register_returns_a_working_key,
    register_rejects_bad_input,
    register_rejects_taken_names,
    login_issues_a_new_key,
    login_failures_are_indistinguishable,
    login_is_rate_limited_per_username,
    login_is_rate_limited_per_address,
    profile_update,
    me_needs_a_user_key,
    keys_create_list_and_revoke,
    revoking_another_users_key_is_not_found,
    user_keys_cannot_escalate,
    unlinked_keys_create_keys_only_with_admin,
    invalid_scopes_and_names_are_rejected,
    last_used_at_is_set_on_first_use,
    key_listing_is_paginated,
    expired_keys_and_auth_header_forms,
    concurrent_registrations_of_one_name,
    parallel_login_failures_respect_the_limit,
    oversized_login_input_is_not_a_server_error,
    namespace_admin_keys_manage_only_themselves,
    unlinked_keys_without_admin_see_only_themselves,
    scopes_are_echoed_as_written,
);

/// `niso_` + at least 32 base62 characters.
#[track_caller]
fn assert_key_format(key: &str) {
    let random = key
        .strip_prefix("niso_")
        .unwrap_or_else(|| panic!("key without the niso_ prefix: {key}"));
    assert!(
        random.len() >= 32 && random.chars().all(|c| c.is_ascii_alphanumeric()),
        "key is not niso_ + 32 or more base62 characters: {key}"
    );
}

fn object_keys(value: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"))
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

async fn me(app: &TestApp, key: &str) -> (StatusCode, Value) {
    app.send(Method::GET, "/v1/auth/me", Some(key), None).await
}

async fn patch_me(app: &TestApp, key: &str, body: Value) -> (StatusCode, Value) {
    app.send(Method::PATCH, "/v1/auth/me", Some(key), Some(body))
        .await
}

async fn list_keys(app: &TestApp, key: &str) -> Vec<Value> {
    let (status, body) = app
        .send(Method::GET, "/v1/auth/keys", Some(key), None)
        .await;
    assert_eq!(status, StatusCode::OK, "list keys: {body}");
    body.as_array()
        .unwrap_or_else(|| panic!("key list is not an array: {body}"))
        .clone()
}

async fn create_key(app: &TestApp, key: &str, name: &str, scope: &str) -> (StatusCode, Value) {
    app.post(
        "/v1/auth/keys",
        Some(key),
        json!({ "name": name, "scope": scope }),
    )
    .await
}

/// Creates a key that must succeed; returns `(id, plaintext)`.
async fn created_key(app: &TestApp, key: &str, name: &str, scope: &str) -> (i64, String) {
    let (status, body) = create_key(app, key, name, scope).await;
    assert_eq!(status, StatusCode::CREATED, "create key {scope}: {body}");
    (
        body["id"].as_i64().expect("id"),
        body["key"].as_str().expect("key").to_owned(),
    )
}

async fn login(app: &TestApp, username: &str, password: &str) -> (StatusCode, Value) {
    app.post(
        "/v1/auth/login",
        None,
        json!({ "username": username, "password": password }),
    )
    .await
}

/// A login from a chosen loopback source address, with the response headers.
async fn login_from(
    app: &TestApp,
    source: Ipv4Addr,
    username: &str,
    password: &str,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let client = reqwest::Client::builder()
        .local_address(IpAddr::V4(source))
        .build()
        .expect("client");
    let response = client
        .post(app.url("/v1/auth/login"))
        .json(&json!({ "username": username, "password": password }))
        .send()
        .await
        .expect("login request");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, headers, body)
}

/// A POST with a raw body and content type.
async fn post_raw(
    app: &TestApp,
    path: &str,
    content_type: &str,
    body: &str,
) -> (StatusCode, Value) {
    let response = app
        .client
        .post(app.url(path))
        .header("content-type", content_type)
        .body(body.to_owned())
        .send()
        .await
        .expect("request");
    let status = response.status();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

fn password_of(username: &str) -> String {
    format!("password-of-{username}")
}

async fn register_returns_a_working_key(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (status, body) = app
        .post(
            "/v1/auth/register",
            None,
            json!({
                "username": "alice",
                "email": "alice@example.com",
                "password": "at-least-eight-chars",
                "display_name": "Alice",
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(object_keys(&body), ["api_key", "id", "username"], "{body}");
    assert_eq!(body["username"], "alice");
    let id = body["id"].as_i64().expect("numeric id");
    let key = body["api_key"].as_str().expect("api_key").to_owned();
    assert_key_format(&key);

    let (status, profile) = me(&app, &key).await;
    assert_eq!(status, StatusCode::OK, "{profile}");
    assert_eq!(
        object_keys(&profile),
        [
            "created_at",
            "display_name",
            "email",
            "id",
            "namespaces",
            "username",
            "verified"
        ],
        "{profile}"
    );
    assert_eq!(profile["id"], id);
    assert_eq!(profile["username"], "alice");
    assert_eq!(profile["email"], "alice@example.com");
    assert_eq!(profile["display_name"], "Alice");
    assert_eq!(profile["verified"], false);
    assert_eq!(profile["namespaces"], json!(["@alice"]));
    assert_timestamp(&profile["created_at"]);

    // The user's own namespace exists, with the user as its only member.
    let (status, namespace) = app.get("/v1/namespaces/@alice").await;
    assert_eq!(status, StatusCode::OK, "{namespace}");
    assert_eq!(namespace["ns_type"], "user");
    assert_eq!(namespace["owner_id"], id);
    assert_eq!(
        namespace["members"],
        json!([{ "username": "alice", "role": "owner" }])
    );

    // The register key is user-linked with the default scope.
    let keys = list_keys(&app, &key).await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!(keys[0]["scope"], "pull:*,push:*,delete:*");

    // Without a display name the profile shows null.
    let key = app.register("bob").await;
    assert_key_format(&key);
    let (status, profile) = me(&app, &key).await;
    assert_eq!(status, StatusCode::OK, "{profile}");
    assert_eq!(profile["display_name"], Value::Null);
    assert_eq!(profile["namespaces"], json!(["@bob"]));
    assert_ne!(profile["id"], id);
}

async fn register_rejects_bad_input(backend: Backend) {
    let app = TestApp::start(backend).await;
    let valid = || {
        json!({
            "username": "carol",
            "email": "carol@example.com",
            "password": "long-enough-password",
        })
    };

    assert_error(
        post_raw(
            &app,
            "/v1/auth/register",
            "application/json",
            "{\"username\": ",
        )
        .await,
        StatusCode::BAD_REQUEST,
    );
    assert_error(
        post_raw(&app, "/v1/auth/register", "application/json", "not json").await,
        StatusCode::BAD_REQUEST,
    );
    assert_error(
        post_raw(
            &app,
            "/v1/auth/register",
            "text/plain",
            &valid().to_string(),
        )
        .await,
        StatusCode::BAD_REQUEST,
    );

    let mut unknown_field = valid();
    unknown_field["admin"] = json!(true);
    assert_error(
        app.post("/v1/auth/register", None, unknown_field).await,
        StatusCode::BAD_REQUEST,
    );
    let mut missing = valid();
    missing.as_object_mut().unwrap().remove("password");
    assert_error(
        app.post("/v1/auth/register", None, missing).await,
        StatusCode::BAD_REQUEST,
    );
    let mut wrong_type = valid();
    wrong_type["username"] = json!(42);
    assert_error(
        app.post("/v1/auth/register", None, wrong_type).await,
        StatusCode::BAD_REQUEST,
    );

    let too_long = "a".repeat(40);
    for username in [
        "",
        "Carol",
        "-carol",
        "ca_rol",
        "ca rol",
        "@carol",
        "carol!",
        too_long.as_str(),
    ] {
        let mut body = valid();
        body["username"] = json!(username);
        assert_error(
            app.post("/v1/auth/register", None, body).await,
            StatusCode::BAD_REQUEST,
        );
    }
    for password in ["", "short", "1234567"] {
        let mut body = valid();
        body["password"] = json!(password);
        assert_error(
            app.post("/v1/auth/register", None, body).await,
            StatusCode::BAD_REQUEST,
        );
    }
    for email in [
        "",
        "carol",
        "carol@",
        "@example.com",
        "carol@example",
        "ca rol@example.com",
        "a@b@example.com",
    ] {
        let mut body = valid();
        body["email"] = json!(email);
        assert_error(
            app.post("/v1/auth/register", None, body).await,
            StatusCode::BAD_REQUEST,
        );
    }

    // None of the refused attempts created the user; the boundary cases are accepted.
    let mut body = valid();
    body["username"] = json!("a".repeat(39));
    body["password"] = json!("8-chars!");
    let (status, created) = app.post("/v1/auth/register", None, body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let (status, created) = app.post("/v1/auth/register", None, valid()).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "carol was created by a refused request: {created}"
    );
}

async fn register_rejects_taken_names(backend: Backend) {
    let app = TestApp::start(backend).await;
    let alice = app.register("alice").await;

    let duplicate = app
        .post(
            "/v1/auth/register",
            None,
            json!({
                "username": "alice",
                "email": "other@example.com",
                "password": "another-password",
            }),
        )
        .await;
    assert_error(duplicate, StatusCode::CONFLICT);
    // The original account is untouched: its password still works.
    let (status, body) = login(&app, "alice", &password_of("alice")).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let (status, body) = app
        .post("/v1/namespaces", Some(&alice), json!({ "name": "@team" }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let taken_by_org = app
        .post(
            "/v1/auth/register",
            None,
            json!({
                "username": "team",
                "email": "team@example.com",
                "password": "password-of-team",
            }),
        )
        .await;
    assert_error(taken_by_org, StatusCode::CONFLICT);
    // The org is still an org, and no user "team" can log in.
    let (status, namespace) = app.get("/v1/namespaces/@team").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(namespace["ns_type"], "org");
    assert_error(
        login(&app, "team", "password-of-team").await,
        StatusCode::UNAUTHORIZED,
    );
}

async fn login_issues_a_new_key(backend: Backend) {
    let app = TestApp::start(backend).await;
    let first = app.register("dave").await;
    let (status, body) = login(&app, "dave", &password_of("dave")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(object_keys(&body), ["api_key", "username"], "{body}");
    assert_eq!(body["username"], "dave");
    let key = body["api_key"].as_str().expect("api_key").to_owned();
    assert_key_format(&key);
    assert_ne!(key, first, "login must mint a fresh key");

    let (status, profile) = me(&app, &key).await;
    assert_eq!(status, StatusCode::OK, "{profile}");
    assert_eq!(profile["username"], "dave");
    // The login key is user-linked with the default scope, and the old key still works.
    let keys = list_keys(&app, &key).await;
    assert_eq!(keys.len(), 2, "{keys:?}");
    for listed in &keys {
        assert_eq!(listed["scope"], "pull:*,push:*,delete:*");
    }
    assert_eq!(me(&app, &first).await.0, StatusCode::OK);

    // Malformed login bodies are 400s, not 401s.
    assert_error(
        post_raw(&app, "/v1/auth/login", "application/json", "{").await,
        StatusCode::BAD_REQUEST,
    );
    assert_error(
        app.post("/v1/auth/login", None, json!({ "username": "dave" }))
            .await,
        StatusCode::BAD_REQUEST,
    );
}

async fn login_failures_are_indistinguishable(backend: Backend) {
    let app = TestApp::start(backend).await;
    app.register("erin").await;
    let (unknown_status, unknown_body) = login(&app, "nobody", "password-of-nobody").await;
    let (wrong_status, wrong_body) = login(&app, "erin", "not-her-password").await;
    assert_error(
        (unknown_status, unknown_body.clone()),
        StatusCode::UNAUTHORIZED,
    );
    assert_error((wrong_status, wrong_body.clone()), StatusCode::UNAUTHORIZED);
    assert_eq!(unknown_body, wrong_body);
    // Usernames are case-sensitive: "Erin" is not erin.
    let (status, body) = login(&app, "Erin", &password_of("erin")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body, wrong_body);
}

async fn login_is_rate_limited_per_username(backend: Backend) {
    let app = TestApp::start(backend).await;
    app.register("frank").await;
    app.register("grace").await;
    let max_failures = niso_test_support::test_settings().login_max_failures;
    assert_eq!(max_failures, 5);

    // Failures from different addresses, so only the username's counter reaches the limit.
    for i in 0..max_failures {
        let source = Ipv4Addr::new(127, 0, 1, 1 + i as u8);
        let (status, _, body) = login_from(&app, source, "frank", "wrong-password").await;
        assert_error((status, body), StatusCode::UNAUTHORIZED);
    }
    let fresh = Ipv4Addr::new(127, 0, 2, 1);
    let (status, headers, body) = login_from(&app, fresh, "frank", &password_of("frank")).await;
    assert_error((status, body), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = headers
        .get(reqwest::header::RETRY_AFTER)
        .expect("429 without Retry-After")
        .to_str()
        .expect("Retry-After text")
        .parse()
        .expect("Retry-After in seconds");
    assert!(
        (1..=300).contains(&retry_after),
        "Retry-After {retry_after} is outside the 300 s window"
    );
    // Still limited on a further attempt; another user from the same address is not.
    let (status, _, body) = login_from(&app, fresh, "frank", &password_of("frank")).await;
    assert_error((status, body), StatusCode::TOO_MANY_REQUESTS);
    let (status, _, body) = login_from(&app, fresh, "grace", &password_of("grace")).await;
    assert_eq!(status, StatusCode::OK, "grace is not rate limited: {body}");
}

async fn login_is_rate_limited_per_address(backend: Backend) {
    let app = TestApp::start(backend).await;
    app.register("heidi").await;
    let max_failures = niso_test_support::test_settings().login_max_failures;

    // A spray: one failure each for many usernames, all from one address.
    let sprayer = Ipv4Addr::new(127, 0, 3, 1);
    for i in 0..max_failures {
        let (status, _, body) =
            login_from(&app, sprayer, &format!("victim{i}"), "guessed-password").await;
        assert_error((status, body), StatusCode::UNAUTHORIZED);
    }
    let (status, headers, body) = login_from(&app, sprayer, "heidi", &password_of("heidi")).await;
    assert_error((status, body), StatusCode::TOO_MANY_REQUESTS);
    assert!(
        headers.contains_key(reqwest::header::RETRY_AFTER),
        "429 without Retry-After"
    );
    // The same user from another address gets in.
    let other = Ipv4Addr::new(127, 0, 3, 2);
    let (status, _, body) = login_from(&app, other, "heidi", &password_of("heidi")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // And a success from the limited address does not lift the address's limit.
    let (status, _, body) = login_from(&app, sprayer, "heidi", &password_of("heidi")).await;
    assert_error((status, body), StatusCode::TOO_MANY_REQUESTS);
}

async fn profile_update(backend: Backend) {
    let app = TestApp::start(backend).await;
    let key = app.register("ivan").await;

    let (status, profile) = patch_me(
        &app,
        &key,
        json!({ "display_name": "Ivan I.", "email": "ivan@new.example.com" }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{profile}");
    assert_eq!(profile["username"], "ivan");
    assert_eq!(profile["display_name"], "Ivan I.");
    assert_eq!(profile["email"], "ivan@new.example.com");
    assert_eq!(profile["verified"], false);
    assert_eq!(profile["namespaces"], json!(["@ivan"]));
    assert_timestamp(&profile["created_at"]);
    let (status, shown) = me(&app, &key).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(shown, profile, "GET shows what PATCH returned");

    // Only the display name: the email stays.
    let (status, profile) = patch_me(&app, &key, json!({ "display_name": "Ivan" })).await;
    assert_eq!(status, StatusCode::OK, "{profile}");
    assert_eq!(profile["display_name"], "Ivan");
    assert_eq!(profile["email"], "ivan@new.example.com");

    // Bad input changes nothing.
    for bad in [
        json!({ "email": "not-an-address" }),
        json!({ "email": "" }),
        json!({ "display_name": "x".repeat(129) }),
        json!({ "username": "root" }),
    ] {
        assert_error(patch_me(&app, &key, bad).await, StatusCode::BAD_REQUEST);
    }
    assert_error(
        app.send(Method::PATCH, "/v1/auth/me", Some(&key), None)
            .await,
        StatusCode::BAD_REQUEST,
    );
    let (status, unchanged) = me(&app, &key).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(unchanged, profile);

    // Without a key, a 401.
    assert_error(
        app.send(
            Method::PATCH,
            "/v1/auth/me",
            None,
            Some(json!({ "display_name": "x" })),
        )
        .await,
        StatusCode::UNAUTHORIZED,
    );
}

async fn me_needs_a_user_key(backend: Backend) {
    let app = TestApp::start(backend).await;
    let key = app.register("judy").await;
    assert_error(app.get("/v1/auth/me").await, StatusCode::UNAUTHORIZED);
    let garbage = format!("niso_{}", "x".repeat(40));
    assert_error(me(&app, &garbage).await, StatusCode::UNAUTHORIZED);
    assert_error(me(&app, "not-a-key").await, StatusCode::UNAUTHORIZED);
    // A real key with one character changed.
    let mut altered = key.clone();
    let last = altered.pop().unwrap();
    altered.push(if last == 'a' { 'b' } else { 'a' });
    assert_error(me(&app, &altered).await, StatusCode::UNAUTHORIZED);
    // Not a Bearer credential.
    let response = app
        .client
        .get(app.url("/v1/auth/me"))
        .header("authorization", format!("Basic {key}"))
        .send()
        .await
        .expect("request");
    let status = response.status();
    let body = response.json().await.unwrap_or(Value::Null);
    assert_error((status, body), StatusCode::UNAUTHORIZED);

    let admin = app.admin_key().await;
    assert_error(me(&app, &admin).await, StatusCode::FORBIDDEN);
    assert_error(
        patch_me(&app, &admin, json!({ "display_name": "root" })).await,
        StatusCode::FORBIDDEN,
    );
    assert_eq!(me(&app, &key).await.0, StatusCode::OK);
}

async fn keys_create_list_and_revoke(backend: Backend) {
    let app = TestApp::start(backend).await;
    let key = app.register("kate").await;

    let (status, body) = create_key(&app, &key, "ci-deploy", "push:@kate/*").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(object_keys(&body), ["id", "key", "name", "scope"], "{body}");
    assert_eq!(body["name"], "ci-deploy");
    assert_eq!(body["scope"], "push:@kate/*");
    let ci_id = body["id"].as_i64().expect("id");
    let ci_key = body["key"].as_str().expect("key").to_owned();
    assert_key_format(&ci_key);
    assert_ne!(ci_key, key);

    // The reference's example scope comes back as written, not reordered.
    let (status, body) = create_key(&app, &key, "mixed", "push:@kate/*,pull:*").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["scope"], "push:@kate/*,pull:*");
    let mixed_id = body["id"].as_i64().expect("id");

    // The new key is linked to kate.
    let (status, profile) = me(&app, &ci_key).await;
    assert_eq!(status, StatusCode::OK, "{profile}");
    assert_eq!(profile["username"], "kate");

    let keys = list_keys(&app, &key).await;
    assert_eq!(keys.len(), 3, "{keys:?}");
    let listed = keys
        .iter()
        .find(|k| k["id"] == ci_id)
        .unwrap_or_else(|| panic!("ci key not listed: {keys:?}"));
    assert_eq!(listed["name"], "ci-deploy");
    assert_eq!(listed["scope"], "push:@kate/*");
    assert_timestamp(&listed["created_at"]);
    assert!(listed.get("last_used_at").is_some(), "{listed}");
    for listed in &keys {
        assert!(
            listed.get("key").is_none(),
            "listing shows a key value: {listed}"
        );
        let text = listed.to_string();
        for secret in [&key, &ci_key] {
            assert!(
                !text.contains(secret.as_str()),
                "listing leaks a key: {text}"
            );
        }
        assert!(listed["id"].is_i64());
    }
    assert!(keys.iter().any(|k| k["id"] == mixed_id));
    // The narrower key sees the same list: listing is per user.
    assert_eq!(list_keys(&app, &ci_key).await.len(), 3);

    let (status, body) = app
        .delete(&format!("/v1/auth/keys/{ci_id}"), Some(&key))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(body, Value::Null, "204 has no body");
    assert_error(me(&app, &ci_key).await, StatusCode::UNAUTHORIZED);
    assert_error(
        create_key(&app, &ci_key, "again", "push:@kate/app").await,
        StatusCode::UNAUTHORIZED,
    );
    let keys = list_keys(&app, &key).await;
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(
        keys.iter().all(|k| k["id"] != ci_id),
        "revoked key still listed"
    );
    // Revoking it again: it no longer exists for the caller.
    assert_error(
        app.delete(&format!("/v1/auth/keys/{ci_id}"), Some(&key))
            .await,
        StatusCode::NOT_FOUND,
    );
    assert_error(
        app.delete("/v1/auth/keys/999999", Some(&key)).await,
        StatusCode::NOT_FOUND,
    );
    assert_error(
        app.delete("/v1/auth/keys/abc", Some(&key)).await,
        StatusCode::BAD_REQUEST,
    );
    assert_error(
        app.delete(&format!("/v1/auth/keys/{mixed_id}"), None).await,
        StatusCode::UNAUTHORIZED,
    );

    // A key may revoke itself.
    let (self_id, self_key) = created_key(&app, &key, "short-lived", "pull:*").await;
    let (status, _) = app
        .delete(&format!("/v1/auth/keys/{self_id}"), Some(&self_key))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_error(me(&app, &self_key).await, StatusCode::UNAUTHORIZED);

    // Listing needs a key.
    assert_error(app.get("/v1/auth/keys").await, StatusCode::UNAUTHORIZED);
}

async fn revoking_another_users_key_is_not_found(backend: Backend) {
    let app = TestApp::start(backend).await;
    let leo = app.register("leo").await;
    let mia = app.register("mia").await;
    let (mia_id, mia_ci) = created_key(&app, &mia, "ci", "pull:*").await;

    assert_error(
        app.delete(&format!("/v1/auth/keys/{mia_id}"), Some(&leo))
            .await,
        StatusCode::NOT_FOUND,
    );
    // Leo does not see mia's keys, and mia's key still works.
    let leo_keys = list_keys(&app, &leo).await;
    assert_eq!(leo_keys.len(), 1, "{leo_keys:?}");
    assert!(leo_keys.iter().all(|k| k["id"] != mia_id));
    assert_eq!(me(&app, &mia_ci).await.0, StatusCode::OK);
    assert_eq!(list_keys(&app, &mia).await.len(), 2);

    // An unlinked admin key does not manage user keys either.
    let admin = app.admin_key().await;
    assert_error(
        app.delete(&format!("/v1/auth/keys/{mia_id}"), Some(&admin))
            .await,
        StatusCode::NOT_FOUND,
    );
    assert_eq!(me(&app, &mia_ci).await.0, StatusCode::OK);
}

async fn user_keys_cannot_escalate(backend: Backend) {
    let app = TestApp::start(backend).await;
    let key = app.register("nina").await;

    // A user-linked key never mints admin, whatever its pattern.
    for scope in ["admin:*", "admin:@nina/*", "pull:*,admin:@nina/app"] {
        assert_error(
            create_key(&app, &key, "root", scope).await,
            StatusCode::FORBIDDEN,
        );
    }
    // Not even a key whose own scope holds admin (created by the registry operator).
    let rooted = app
        .registry
        .create_key_by_authority(
            &niso_test_support::test_authority(),
            Some("nina"),
            "rooted",
            "admin:*",
            None,
        )
        .await
        .expect("operator key")
        .plaintext;
    assert_error(
        create_key(&app, &rooted, "root", "admin:*").await,
        StatusCode::FORBIDDEN,
    );

    let (_, narrow) = created_key(&app, &key, "ci", "push:@nina/*").await;
    for wider in [
        "push:*",
        "push:@nin*",
        "pull:@nina/*",
        "delete:@nina/app",
        "push:@ninabob/x",
    ] {
        assert_error(
            create_key(&app, &narrow, "wider", wider).await,
            StatusCode::FORBIDDEN,
        );
    }
    let (status, body) = create_key(&app, &narrow, "app-only", "push:@nina/app").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["scope"], "push:@nina/app");
    let app_only = body["key"].as_str().expect("key").to_owned();
    let (status, profile) = me(&app, &app_only).await;
    assert_eq!(status, StatusCode::OK, "{profile}");
    assert_eq!(profile["username"], "nina");
    // And the exact-name key cannot widen back to the prefix.
    assert_error(
        create_key(&app, &app_only, "back", "push:@nina/*").await,
        StatusCode::FORBIDDEN,
    );
    // None of the refused keys exist.
    let names: Vec<String> = list_keys(&app, &key)
        .await
        .iter()
        .map(|k| k["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names.len(), 4, "{names:?}");
    assert!(
        !names
            .iter()
            .any(|n| n == "root" || n == "wider" || n == "back"),
        "{names:?}"
    );
}

async fn unlinked_keys_create_keys_only_with_admin(backend: Backend) {
    let app = TestApp::start(backend).await;
    let admin = app.admin_key().await;

    let (status, body) = create_key(&app, &admin, "deployer", "push:@olga/*").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["scope"], "push:@olga/*");
    let deployer_id = body["id"].as_i64().expect("id");
    let deployer = body["key"].as_str().expect("key").to_owned();
    assert_key_format(&deployer);
    // It is not linked to a user.
    assert_error(me(&app, &deployer).await, StatusCode::FORBIDDEN);
    // An admin key may mint admin keys, which are unlinked too.
    let (_, sub_admin) = created_key(&app, &admin, "sub-admin", "admin:*").await;
    assert_error(me(&app, &sub_admin).await, StatusCode::FORBIDDEN);
    let listed = list_keys(&app, &admin).await;
    assert!(listed.iter().any(|k| k["id"] == deployer_id), "{listed:?}");

    // An unlinked key without admin creates nothing, not even something narrower.
    for scope in ["push:@olga/app", "push:@olga/*", "admin:*"] {
        assert_error(
            create_key(&app, &deployer, "child", scope).await,
            StatusCode::FORBIDDEN,
        );
    }
    // An admin key restricted to a prefix can only mint within it.
    let (_, scoped_admin) = created_key(&app, &admin, "olga-admin", "admin:@olga/*").await;
    assert_error(
        create_key(&app, &scoped_admin, "wide", "pull:*").await,
        StatusCode::FORBIDDEN,
    );
    let (status, body) = create_key(&app, &scoped_admin, "narrow", "pull:@olga/*").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // Users see none of the unlinked keys.
    let user = app.register("olga").await;
    let keys = list_keys(&app, &user).await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!(keys[0]["name"], "default");
}

async fn invalid_scopes_and_names_are_rejected(backend: Backend) {
    let app = TestApp::start(backend).await;
    let key = app.register("paul").await;
    let admin = app.admin_key().await;
    for scope in [
        "",
        "read:*",
        "PULL:*",
        "pull",
        "pull:",
        "pull:*,",
        "pull:*,,push:*",
        "pull:@Paul/*",
        "pull:paul/*",
        "pull:@paul/*/*",
        "pull:**",
    ] {
        assert_error(
            create_key(&app, &key, "bad", scope).await,
            StatusCode::BAD_REQUEST,
        );
        assert_error(
            create_key(&app, &admin, "bad", scope).await,
            StatusCode::BAD_REQUEST,
        );
    }
    for name in ["", "   "] {
        assert_error(
            create_key(&app, &key, name, "pull:*").await,
            StatusCode::BAD_REQUEST,
        );
    }
    assert_error(
        app.post("/v1/auth/keys", Some(&key), json!({ "name": "x" }))
            .await,
        StatusCode::BAD_REQUEST,
    );
    assert_error(
        app.post(
            "/v1/auth/keys",
            Some(&key),
            json!({ "name": "x", "scope": "pull:*", "user": "root" }),
        )
        .await,
        StatusCode::BAD_REQUEST,
    );
    assert_error(
        post_raw(&app, "/v1/auth/keys", "application/json", "{").await,
        StatusCode::UNAUTHORIZED,
    );
    // Without a key, even a valid request is a 401.
    assert_error(
        app.post(
            "/v1/auth/keys",
            None,
            json!({ "name": "x", "scope": "pull:*" }),
        )
        .await,
        StatusCode::UNAUTHORIZED,
    );
    assert_eq!(list_keys(&app, &key).await.len(), 1);
}

async fn last_used_at_is_set_on_first_use(backend: Backend) {
    let app = TestApp::start(backend).await;
    let key = app.register("quinn").await;
    let (id, fresh) = created_key(&app, &key, "fresh", "pull:*").await;

    let find = |keys: &[Value]| -> Value {
        keys.iter()
            .find(|k| k["id"] == id)
            .unwrap_or_else(|| panic!("key {id} not listed: {keys:?}"))
            .clone()
    };
    let before = find(&list_keys(&app, &key).await);
    assert!(before.get("last_used_at").is_some(), "{before}");
    assert_eq!(before["last_used_at"], Value::Null, "unused key: {before}");
    // The key doing the listing has been used.
    let listing = list_keys(&app, &key).await;
    let default = listing
        .iter()
        .find(|k| k["name"] == "default")
        .expect("default key");
    assert_timestamp(&default["last_used_at"]);

    // One use, and it is recorded at once.
    assert_eq!(me(&app, &fresh).await.0, StatusCode::OK);
    let after = find(&list_keys(&app, &key).await);
    assert_timestamp(&after["last_used_at"]);
    let used = chrono::NaiveDateTime::parse_from_str(
        after["last_used_at"].as_str().unwrap(),
        "%Y-%m-%dT%H:%M:%S",
    )
    .unwrap();
    let created = chrono::NaiveDateTime::parse_from_str(
        after["created_at"].as_str().unwrap(),
        "%Y-%m-%dT%H:%M:%S",
    )
    .unwrap();
    assert!(
        used >= created,
        "last_used_at {used} before created_at {created}"
    );
    let now = chrono::Utc::now().naive_utc();
    assert!(
        (now - used).num_seconds().abs() < 120,
        "last_used_at {used} is not UTC now ({now})"
    );
}

async fn key_listing_is_paginated(backend: Backend) {
    let app = TestApp::start(backend).await;
    let key = app.register("rosa").await;
    let mut ids = vec![];
    for i in 0..3 {
        ids.push(created_key(&app, &key, &format!("k{i}"), "pull:*").await.0);
    }
    let all = list_keys(&app, &key).await;
    assert_eq!(all.len(), 4, "{all:?}");
    let (status, page) = app
        .send(
            Method::GET,
            "/v1/auth/keys?limit=2&offset=1",
            Some(&key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page, json!(all[1..3]));
    let (status, page) = app
        .send(Method::GET, "/v1/auth/keys?offset=10", Some(&key), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page, json!([]));
    for bad in ["limit=0", "limit=abc", "offset=-1"] {
        assert_error(
            app.send(
                Method::GET,
                &format!("/v1/auth/keys?{bad}"),
                Some(&key),
                None,
            )
            .await,
            StatusCode::BAD_REQUEST,
        );
    }
}

async fn expired_keys_and_auth_header_forms(backend: Backend) {
    let app = TestApp::start(backend).await;
    let key = app.register("sven").await;
    let past = chrono::Utc::now().naive_utc() - chrono::Duration::minutes(1);
    let expired = app
        .registry
        .create_key_by_authority(
            &niso_test_support::test_authority(),
            Some("sven"),
            "old",
            "pull:*",
            Some(past),
        )
        .await
        .expect("expired key")
        .plaintext;
    let expired_body = assert_error(me(&app, &expired).await, StatusCode::UNAUTHORIZED);
    let future = chrono::Utc::now().naive_utc() + chrono::Duration::hours(1);
    let valid = app
        .registry
        .create_key_by_authority(
            &niso_test_support::test_authority(),
            Some("sven"),
            "new",
            "pull:*",
            Some(future),
        )
        .await
        .expect("key")
        .plaintext;
    assert_eq!(me(&app, &valid).await.0, StatusCode::OK);
    // An expired key and an unknown one are told apart by nobody.
    let unknown = format!("niso_{}", "Z".repeat(40));
    assert_eq!(
        assert_error(me(&app, &unknown).await, StatusCode::UNAUTHORIZED),
        expired_body
    );

    // The authentication scheme is case-insensitive (RFC 9110 §11.1).
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let response = app
            .client
            .get(app.url("/v1/auth/me"))
            .header("authorization", format!("{scheme} {key}"))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::OK, "scheme {scheme}");
    }
    for header in ["Bearer", "Bearer ", key.as_str(), "Token niso_x"] {
        let response = app
            .client
            .get(app.url("/v1/auth/me"))
            .header("authorization", header)
            .send()
            .await
            .expect("request");
        let status = response.status();
        let body = response.json().await.unwrap_or(Value::Null);
        assert_error((status, body), StatusCode::UNAUTHORIZED);
    }
}

async fn concurrent_registrations_of_one_name(backend: Backend) {
    let app = std::sync::Arc::new(TestApp::start(backend).await);
    let mut tasks = vec![];
    for i in 0..6 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            app.post(
                "/v1/auth/register",
                None,
                json!({
                    "username": "racer",
                    "email": format!("racer{i}@example.com"),
                    "password": format!("password-{i}-of-racer"),
                }),
            )
            .await
        }));
    }
    let mut created = 0;
    for task in tasks {
        let (status, body) = task.await.expect("task");
        if status == StatusCode::CREATED {
            created += 1;
        } else {
            assert_error((status, body), StatusCode::CONFLICT);
        }
    }
    assert_eq!(created, 1, "exactly one registration of racer wins");
    let (status, namespace) = app.get("/v1/namespaces/@racer").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        namespace["members"],
        json!([{ "username": "racer", "role": "owner" }])
    );
}

async fn parallel_login_failures_respect_the_limit(backend: Backend) {
    let app = std::sync::Arc::new(TestApp::start(backend).await);
    app.register("tara").await;
    let max_failures = niso_test_support::test_settings().login_max_failures as usize;
    // A burst of guesses sent at once, from different addresses: the username's limit must
    // still stop all but `max_failures` of them from being checked.
    let mut tasks = vec![];
    for i in 0..(3 * max_failures) {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            let source = Ipv4Addr::new(127, 0, 4, 1 + i as u8);
            let (status, _, body) = login_from(&app, source, "tara", &format!("guess-{i}")).await;
            (status, body)
        }))
    }
    let mut checked = 0;
    for task in tasks {
        let (status, body) = task.await.expect("task");
        if status == StatusCode::UNAUTHORIZED {
            checked += 1;
        } else {
            assert_error((status, body), StatusCode::TOO_MANY_REQUESTS);
        }
    }
    assert!(
        checked <= max_failures,
        "{checked} guesses were checked against the password; the limit is {max_failures}"
    );
    let (status, _, body) = login_from(
        &app,
        Ipv4Addr::new(127, 0, 4, 100),
        "tara",
        &password_of("tara"),
    )
    .await;
    assert_error((status, body), StatusCode::TOO_MANY_REQUESTS);
}

async fn oversized_login_input_is_not_a_server_error(backend: Backend) {
    let app = TestApp::start(backend).await;
    app.register("uwe").await;
    // Long and incompressible: far over what a database index entry may hold.
    let long_name: String = niso_test_support::archives::random_bytes(10_000, 7)
        .into_iter()
        .map(|b| char::from(b'a' + b % 26))
        .collect();
    let (status, body) = login(&app, &long_name, "some-password").await;
    assert_error((status, body), StatusCode::UNAUTHORIZED);
    let odd_name = "Ünïcode name with spaces and \u{0}";
    let (status, body) = login(&app, odd_name, "some-password").await;
    assert_error((status, body), StatusCode::UNAUTHORIZED);
    // Over the JSON body limit: refused unread.
    let huge_password = "p".repeat(1024 * 1024);
    let (status, body) = login(&app, "uwe", &huge_password).await;
    assert_error((status, body), StatusCode::PAYLOAD_TOO_LARGE);
    // Within it, still far longer than any password.
    let huge_password = "p".repeat(60 * 1024);
    let started = std::time::Instant::now();
    let (status, body) = login(&app, "uwe", &huge_password).await;
    let status = status.as_u16();
    assert!(
        status == 400 || status == 401,
        "a 60 KiB password is a 400 or 401, got {status}: {body}"
    );
    assert!(body["error"].is_string(), "{body}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "a 60 KiB password took {:?}",
        started.elapsed()
    );
    // The account still works.
    let (status, body) = login(&app, "uwe", &password_of("uwe")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// Issue 11, item 2: an unlinked key that is `admin` of some namespaces only (not `admin:*`)
/// lists and revokes only itself; every other unlinked key is a 404 to it (DESIGN.md §5).
async fn namespace_admin_keys_manage_only_themselves(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (root_id, root) = app.system_key(None, "root", "admin:*").await;
    let (spare_id, spare) = app.system_key(None, "spare-root", "admin:*").await;
    let (deployer_id, deployer) = app.system_key(None, "deployer", "pull:*").await;
    let (team_id, team_admin) = app
        .system_key(None, "team-a-admin", "admin:@team-a/*")
        .await;
    let (other_team_id, _) = app
        .system_key(None, "team-b-admin", "admin:@team-b/*")
        .await;

    let ids = |keys: &[Value]| -> Vec<i64> {
        let mut ids: Vec<i64> = keys.iter().map(|k| k["id"].as_i64().expect("id")).collect();
        ids.sort_unstable();
        ids
    };
    // It sees itself only: no other key, and none of their scopes.
    let listed = list_keys(&app, &team_admin).await;
    assert_eq!(ids(&listed), [team_id], "{listed:?}");
    let text = serde_json::to_string(&listed).unwrap();
    assert!(!text.contains("admin:*"), "{text}");

    // Every other unlinked key is a 404, whether it is wider, narrower or a peer; none is
    // revoked.
    for victim in [root_id, spare_id, deployer_id, other_team_id] {
        assert_error(
            app.delete(&format!("/v1/auth/keys/{victim}"), Some(&team_admin))
                .await,
            StatusCode::NOT_FOUND,
        );
    }
    for survivor in [&root, &spare, &deployer] {
        // Still live: listing with it answers 200.
        assert!(!list_keys(&app, survivor).await.is_empty());
    }

    // admin:* lists and revokes every unlinked key.
    let all = ids(&list_keys(&app, &root).await);
    for id in [root_id, spare_id, deployer_id, team_id, other_team_id] {
        assert!(all.contains(&id), "admin:* does not list key {id}: {all:?}");
    }
    let (status, body) = app
        .delete(&format!("/v1/auth/keys/{spare_id}"), Some(&root))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_error(
        app.send(Method::GET, "/v1/auth/keys", Some(&spare), None)
            .await,
        StatusCode::UNAUTHORIZED,
    );

    // The namespace admin may still revoke itself.
    let (status, body) = app
        .delete(&format!("/v1/auth/keys/{team_id}"), Some(&team_admin))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_error(
        app.send(Method::GET, "/v1/auth/keys", Some(&team_admin), None)
            .await,
        StatusCode::UNAUTHORIZED,
    );
}

/// An unlinked key without any admin grant lists and revokes only itself.
async fn unlinked_keys_without_admin_see_only_themselves(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (root_id, _) = app.system_key(None, "root", "admin:*").await;
    let (puller_id, puller) = app.system_key(None, "puller", "pull:*").await;
    let (pusher_id, _) = app.system_key(None, "pusher", "push:@team-a/*").await;
    let listed = list_keys(&app, &puller).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["id"], puller_id);
    for victim in [root_id, pusher_id] {
        assert_error(
            app.delete(&format!("/v1/auth/keys/{victim}"), Some(&puller))
                .await,
            StatusCode::NOT_FOUND,
        );
    }
}

/// `POST /v1/auth/keys` and `GET /v1/auth/keys` give the scope back in the order the caller
/// wrote it; what the key may do is the same whatever the order.
async fn scopes_are_echoed_as_written(backend: Backend) {
    let app = TestApp::start(backend).await;
    let key = app.register("wren").await;
    let admin = app.admin_key().await;
    for (caller, scope, echoed) in [
        (&key, "push:@wren/*,pull:*", "push:@wren/*,pull:*"),
        (
            &key,
            "delete:@wren/app,pull:@wren/*,push:*",
            "delete:@wren/app,pull:@wren/*,push:*",
        ),
        // Blanks around items are not part of what was asked; the order is.
        (
            &key,
            " push:@wren/x , pull:@wren/*",
            "push:@wren/x,pull:@wren/*",
        ),
        (&admin, "admin:@wren/*,pull:*", "admin:@wren/*,pull:*"),
        (&admin, "pull:@b/*,pull:@a/*", "pull:@b/*,pull:@a/*"),
    ] {
        let (status, body) = create_key(&app, caller, "ordered", scope).await;
        assert_eq!(status, StatusCode::CREATED, "{scope}: {body}");
        assert_eq!(body["scope"], echoed, "{scope}");
        let id = body["id"].clone();
        let listed = list_keys(&app, caller).await;
        let entry = listed
            .iter()
            .find(|k| k["id"] == id)
            .unwrap_or_else(|| panic!("{id} not listed: {listed:?}"));
        assert_eq!(entry["scope"], echoed, "{scope}");
    }

    // The order does not change what the key may do: pushing to @wren is allowed, pushing
    // elsewhere is not.
    let (_, ordered) = created_key(&app, &key, "ci", "push:@wren/*,pull:*").await;
    let archive = niso_test_support::archives::niso("@wren/app", "1.0.0", &[("a", b"a")]);
    let (status, body) = app
        .upload(&ordered, "@wren/app", "1.0.0", "x86_64-linux", archive)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let archive = niso_test_support::archives::niso("@other/app", "1.0.0", &[("a", b"a")]);
    let (status, _) = app
        .upload(&ordered, "@other/app", "1.0.0", "x86_64-linux", archive)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // What is stored as written is bounded: a scope over 4096 bytes is refused, even one
    // that says little (the same item many times).
    let long = vec!["pull:@wren/*"; 400].join(",");
    assert!(long.len() > 4096);
    assert_error(
        create_key(&app, &key, "long", &long).await,
        StatusCode::BAD_REQUEST,
    );
    let fits = vec!["pull:@wren/*"; 300].join(",");
    let (status, body) = create_key(&app, &key, "fits", &fits).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["scope"], fits.as_str());

    // Covering is judged on meaning: a key may mint the same grants in another order.
    let (status, body) = create_key(&app, &ordered, "reordered", "pull:*,push:@wren/*").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["scope"], "pull:*,push:@wren/*");
}
