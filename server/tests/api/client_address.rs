//! Everything keyed by client (the login limit, the registration limit) uses the client's
//! address: the forwarded one when the connection comes from a trusted proxy, the TCP peer
//! otherwise. Loopback source addresses stand in for the ingress and for direct clients.

use std::net::{IpAddr, Ipv4Addr};

use reqwest::StatusCode;
use serde_json::{Value, json};

use niso_registry::RegistrySettings;
use niso_test_support::for_each_backend;
use niso_test_support::{Backend, TestApp, assert_error, test_settings};

for_each_backend!(
    behind_a_trusted_proxy_the_login_limit_is_per_forwarded_client,
    forwarded_headers_from_untrusted_peers_are_ignored,
    registrations_are_limited_per_client_address,
    concurrent_registrations_are_served_or_told_to_retry,
);

/// The ingress controller's address in these tests.
const INGRESS: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

fn behind_ingress() -> RegistrySettings {
    RegistrySettings {
        trusted_proxies: "127.0.0.2/32".parse().unwrap(),
        ..test_settings()
    }
}

/// A POST from `source`, with `X-Forwarded-For: forwarded` when given.
async fn post_from(
    app: &TestApp,
    source: Ipv4Addr,
    forwarded: Option<&str>,
    path: &str,
    body: Value,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let client = reqwest::Client::builder()
        .local_address(IpAddr::V4(source))
        .build()
        .expect("client");
    let mut request = client.post(app.url(path)).json(&body);
    if let Some(forwarded) = forwarded {
        request = request.header("x-forwarded-for", forwarded);
    }
    let response = request.send().await.expect("request");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, headers, body)
}

async fn login_via(
    app: &TestApp,
    source: Ipv4Addr,
    forwarded: Option<&str>,
    username: &str,
    password: &str,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    post_from(
        app,
        source,
        forwarded,
        "/v1/auth/login",
        json!({ "username": username, "password": password }),
    )
    .await
}

async fn register_via(
    app: &TestApp,
    source: Ipv4Addr,
    forwarded: Option<&str>,
    username: &str,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    post_from(
        app,
        source,
        forwarded,
        "/v1/auth/register",
        json!({
            "username": username,
            "email": format!("{username}@example.com"),
            "password": format!("password-of-{username}"),
        }),
    )
    .await
}

async fn behind_a_trusted_proxy_the_login_limit_is_per_forwarded_client(backend: Backend) {
    let app = TestApp::with_settings(backend, behind_ingress()).await;
    app.register("ivy").await;
    let max_failures = test_settings().login_max_failures;
    // One client sprays wrong passwords over many accounts through the ingress. It prepends
    // addresses of its own to the header, which must not spread its failures around.
    for i in 0..max_failures {
        let forwarded = format!("10.9.9.{i}, 198.51.100.1");
        let (status, _, body) = login_via(
            &app,
            INGRESS,
            Some(&forwarded),
            &format!("victim{i}"),
            "guess",
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    }
    let (status, headers, body) = login_via(
        &app,
        INGRESS,
        Some("198.51.100.1"),
        "ivy",
        "password-of-ivy",
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(headers.contains_key("retry-after"));
    // Another client behind the same ingress is not locked out.
    let (status, _, body) = login_via(
        &app,
        INGRESS,
        Some("198.51.100.2"),
        "ivy",
        "password-of-ivy",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Nor is a client whose header the ingress could not make sense of... it is counted as
    // the ingress itself, which has no failures.
    let (status, _, body) =
        login_via(&app, INGRESS, Some("unknown"), "ivy", "password-of-ivy").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Hostile headers never fail the request.
    let hostile_headers = [
        "[::1]:80, [2001:db8::1]:4711".to_owned(),
        "2001:db8::1".to_owned(),
        "_hidden, ;;;, \"".to_owned(),
        vec!["1.2.3.4"; 3000].join(","),
    ];
    for hostile in &hostile_headers {
        let (status, _, body) = login_via(&app, INGRESS, Some(hostile), "nobody", "x").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{hostile:.40}: {body}");
    }
}

async fn forwarded_headers_from_untrusted_peers_are_ignored(backend: Backend) {
    // Trusts the ingress, but this client connects directly.
    let app = TestApp::with_settings(backend, behind_ingress()).await;
    app.register("jade").await;
    let direct = Ipv4Addr::new(127, 0, 0, 3);
    let max_failures = test_settings().login_max_failures;
    for i in 0..max_failures {
        // A fresh forwarded address each time: believed, it would escape the limit.
        let forwarded = format!("198.51.100.{i}");
        let (status, _, body) = login_via(
            &app,
            direct,
            Some(&forwarded),
            &format!("victim{i}"),
            "guess",
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    }
    let (status, _, body) = login_via(
        &app,
        direct,
        Some("198.51.100.200"),
        "jade",
        "password-of-jade",
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
}

async fn registrations_are_limited_per_client_address(backend: Backend) {
    let settings = RegistrySettings {
        registration_max_per_address: 3,
        ..behind_ingress()
    };
    let app = TestApp::with_settings(backend, settings).await;
    let direct = Ipv4Addr::new(127, 0, 0, 4);
    for i in 0..3 {
        let (status, _, body) = register_via(&app, direct, None, &format!("reg{i}")).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (status, headers, body) = register_via(&app, direct, None, "reg3").await;
    assert_error((status, body), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry_after >= 1);
    // The name was not taken by the refused attempt; another address may register it.
    let other = Ipv4Addr::new(127, 0, 0, 5);
    let (status, _, body) = register_via(&app, other, None, "reg3").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // Behind the ingress, each forwarded client has its own allowance...
    for i in 0..3 {
        let (status, _, body) =
            register_via(&app, INGRESS, Some("198.51.100.9"), &format!("fwd{i}")).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (status, _, body) = register_via(&app, INGRESS, Some("198.51.100.9"), "fwd3").await;
    assert_error((status, body), StatusCode::TOO_MANY_REQUESTS);
    let (status, _, body) = register_via(&app, INGRESS, Some("198.51.100.10"), "fwd3").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

/// With one hashing slot and no wait, a burst of registrations is either served or told to
/// retry (503 + Retry-After): never queued without bound, never a 500.
async fn concurrent_registrations_are_served_or_told_to_retry(backend: Backend) {
    let settings = RegistrySettings {
        password_hash_concurrency: 1,
        password_hash_wait: std::time::Duration::ZERO,
        ..test_settings()
    };
    let app = std::sync::Arc::new(TestApp::with_settings(backend, settings).await);
    let mut tasks = Vec::new();
    for i in 0..16 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            register_via(
                &app,
                Ipv4Addr::new(127, 0, 1, i),
                None,
                &format!("burst{i}"),
            )
            .await
        }));
    }
    let mut created = 0;
    for task in tasks {
        let (status, headers, body) = task.await.unwrap();
        match status {
            StatusCode::CREATED => created += 1,
            StatusCode::SERVICE_UNAVAILABLE => {
                assert!(headers.contains_key("retry-after"), "{body}");
                assert!(body["error"].as_str().unwrap().contains("retry"), "{body}");
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(created >= 1);
    // Once the burst is over, registration works again.
    let (status, _, body) = register_via(&app, Ipv4Addr::new(127, 0, 2, 1), None, "after").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}
