//! The metrics stay bounded whatever clients send: label values come from closed sets (a
//! made-up method is `other`), and the in-flight gauge comes back down when a client goes
//! away in the middle of its request.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::exposition::Scrape;
use niso_test_support::{Backend, TestApp};

niso_test_support::for_each_backend!(
    made_up_methods_add_no_series,
    in_flight_returns_to_zero_when_clients_go_away,
);

fn scrape(app: &TestApp) -> Scrape {
    let text = app.registry.metrics().render();
    Scrape::parse(&text).unwrap_or_else(|error| panic!("{error}\n{text}"))
}

fn series_of(scrape: &Scrape, name: &str) -> usize {
    scrape.samples.keys().filter(|key| key.name == name).count()
}

async fn made_up_methods_add_no_series(backend: Backend) {
    let app = TestApp::start(backend).await;
    let paths = [
        "/v1/packages",
        "/v1/packages/@a/b/versions",
        "/nowhere",
        "/health",
    ];
    // Warm every (route, status) pair the paths produce with a known method first.
    for path in paths {
        app.get(path).await;
    }
    let before = scrape(&app);
    let series_before = series_of(&before, "niso_http_requests_total");
    for i in 0..300 {
        let method = reqwest::Method::from_bytes(format!("X-RANDOM-{i:04}").as_bytes()).unwrap();
        let path = paths[i % paths.len()];
        let response = app
            .client
            .request(method, app.url(path))
            .send()
            .await
            .expect("request");
        assert!(
            response.status().is_client_error(),
            "{path}: {}",
            response.status()
        );
    }
    let after = scrape(&app);
    let methods: std::collections::BTreeSet<&str> = after
        .samples
        .keys()
        .filter_map(|key| key.labels.get("method").map(String::as_str))
        .collect();
    for method in &methods {
        assert!(
            [
                "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"
            ]
            .contains(method),
            "label value {method:?} from a request"
        );
    }
    // 300 different methods add at most one `other` series per route and status seen.
    let added = series_of(&after, "niso_http_requests_total") - series_before;
    assert!(added <= 2 * paths.len(), "{added} new series: {methods:?}");
    assert_eq!(
        after.sum("niso_http_requests_total", &[("method", "other")]),
        300.0
    );
}

/// Polls the gauge until it is `expected` (a deadline, not a timing assertion: the server
/// notices a closed connection when it next polls it).
async fn wait_for_in_flight(app: &TestApp, expected: f64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let value = scrape(app).value("niso_http_requests_in_flight", &[]);
        if value == expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "niso_http_requests_in_flight stays at {value}, expected {expected}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn in_flight_returns_to_zero_when_clients_go_away(backend: Backend) {
    let settings = niso_registry::RegistrySettings {
        password_hash_concurrency: 1,
        password_hash_wait: Duration::from_secs(600),
        ..niso_test_support::test_settings()
    };
    let app = TestApp::with_settings(backend, settings).await;
    let key = app.register("leaver").await;
    let address = app.base.strip_prefix("http://").unwrap().to_owned();

    // A login waiting for the (only, held) password-hashing slot when its client hangs up:
    // the server drops the request's future without it ever finishing.
    let (release, released) = std::sync::mpsc::channel::<()>();
    let registry = app.registry.clone();
    let holder = tokio::spawn(async move {
        registry
            .password_hashing()
            .run(move || released.recv())
            .await
    });
    while app.registry.password_hashing().available() > 0 {
        tokio::task::yield_now().await;
    }
    let mut waiting = TcpStream::connect(&address).await.unwrap();
    let body = br#"{"username":"leaver","password":"password-of-leaver"}"#;
    let head = format!(
        "POST /v1/auth/login HTTP/1.1\r\nHost: niso\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    waiting.write_all(head.as_bytes()).await.unwrap();
    waiting.write_all(body).await.unwrap();
    wait_for_in_flight(&app, 1.0).await;
    drop(waiting);
    wait_for_in_flight(&app, 0.0).await;
    release.send(()).unwrap();
    holder.await.unwrap().unwrap().unwrap();

    // An upload that sends part of its body and then hangs up.
    let mut upload = TcpStream::connect(&address).await.unwrap();
    let head = format!(
        "PUT /v1/packages/@leaver/app/1.0.0/x86_64 HTTP/1.1\r\nHost: niso\r\n\
         Authorization: Bearer {key}\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: 10485760\r\n\r\n"
    );
    upload.write_all(head.as_bytes()).await.unwrap();
    upload.write_all(&vec![0u8; 4096]).await.unwrap();
    wait_for_in_flight(&app, 1.0).await;
    drop(upload);
    wait_for_in_flight(&app, 0.0).await;

    // A JSON body that never completes, then the client hangs up.
    let mut login = TcpStream::connect(&address).await.unwrap();
    login
        .write_all(
            b"POST /v1/auth/login HTTP/1.1\r\nHost: niso\r\nContent-Type: application/json\r\n\
              Content-Length: 1000\r\n\r\n{\"username\":",
        )
        .await
        .unwrap();
    wait_for_in_flight(&app, 1.0).await;
    drop(login);
    wait_for_in_flight(&app, 0.0).await;

    // A download the client stops reading and abandons.
    let payload = niso_test_support::archives::random_bytes(8 << 20, 3);
    let archive = niso_test_support::archives::niso("@leaver/big", "1.0.0", &[("data", &payload)]);
    let (status, body) = app
        .upload(&key, "@leaver/big", "1.0.0", "x86_64", archive)
        .await;
    assert_eq!(status, reqwest::StatusCode::CREATED, "{body}");
    let mut download = TcpStream::connect(&address).await.unwrap();
    download
        .write_all(b"GET /v1/packages/@leaver/big/1.0.0/x86_64 HTTP/1.1\r\nHost: niso\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 1024];
    let read = download.read(&mut first).await.unwrap();
    assert!(read > 0);
    drop(download);
    wait_for_in_flight(&app, 0.0).await;
}
