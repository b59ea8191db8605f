//! Bodies read whole (JSON, single chunks) are small and must arrive in time: a declared
//! length over the limit is a 413 before any of the body is read, a chunked body is cut off
//! as it crosses the limit, and a body trickling in is cut off with a 408. Spoken over raw
//! TCP, so the client controls exactly what is sent and when.

use std::time::Duration;

use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use niso_test_support::for_each_backend;
use niso_test_support::{Backend, TestApp, test_settings};

for_each_backend!(
    declared_oversized_json_bodies_are_refused_before_reading,
    chunked_json_bodies_are_cut_off_at_the_limit,
    slow_json_bodies_time_out,
    chunk_uploads_have_their_own_limit,
);

/// Long enough for any slow machine; a server that waits for the body never answers at all.
const ANSWER_DEADLINE: Duration = Duration::from_secs(30);

async fn connect(app: &TestApp) -> TcpStream {
    let address = app.base.strip_prefix("http://").expect("http base");
    TcpStream::connect(address).await.expect("connect")
}

/// Reads until the end of the response head and returns the status and the head.
async fn read_head(stream: &mut (impl AsyncReadExt + Unpin)) -> (StatusCode, String) {
    let read = async {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if stream.read(&mut byte).await.expect("read response") == 0 {
                break;
            }
            head.push(byte[0]);
        }
        head
    };
    let head = tokio::time::timeout(ANSWER_DEADLINE, read)
        .await
        .expect("the server answers without waiting for the rest of the body");
    let head = String::from_utf8(head).expect("ASCII head");
    let code: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"));
    (StatusCode::from_u16(code).unwrap(), head)
}

fn json_head(path: &str, framing: &str) -> String {
    format!("POST {path} HTTP/1.1\r\nHost: niso\r\nContent-Type: application/json\r\n{framing}\r\n")
}

async fn declared_oversized_json_bodies_are_refused_before_reading(backend: Backend) {
    let app = TestApp::start(backend).await;
    let key = app.register("olga").await;
    // 30 MiB declared (under the old 32 MiB limit) and 64 KiB + 1; no body is ever sent.
    for length in [30 * 1024 * 1024, 64 * 1024 + 1] {
        for path in ["/v1/auth/login", "/v1/auth/register", "/v1/auth/keys"] {
            let mut stream = connect(&app).await;
            let head = json_head(path, &format!("Content-Length: {length}\r\n")).replace(
                "Host: niso\r\n",
                &format!("Host: niso\r\nAuthorization: Bearer {key}\r\n"),
            );
            stream.write_all(head.as_bytes()).await.unwrap();
            let (status, head) = read_head(&mut stream).await;
            assert_eq!(
                status,
                StatusCode::PAYLOAD_TOO_LARGE,
                "{path} {length}: {head}"
            );
        }
    }
    // A body just within the limit is read (and is then just bad JSON).
    let limit = test_settings().json_body_limit_bytes;
    let mut stream = connect(&app).await;
    let head = json_head("/v1/auth/login", &format!("Content-Length: {limit}\r\n"));
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&vec![b' '; limit]).await.unwrap();
    let (status, head) = read_head(&mut stream).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{head}");
}

async fn chunked_json_bodies_are_cut_off_at_the_limit(backend: Backend) {
    let app = TestApp::start(backend).await;
    let stream = connect(&app).await;
    let (mut reader, mut writer) = stream.into_split();
    // 1 MiB in 16 KiB chunks, and then the body never ends: only a server that stops at the
    // limit answers. Written alongside the read, as a client streaming a body would.
    let sender = tokio::spawn(async move {
        let head = json_head("/v1/auth/login", "Transfer-Encoding: chunked\r\n");
        writer.write_all(head.as_bytes()).await?;
        let piece = vec![b' '; 16 * 1024];
        for _ in 0..64 {
            let chunk = [format!("{:x}\r\n", piece.len()).as_bytes(), &piece, b"\r\n"].concat();
            writer.write_all(&chunk).await?;
        }
        // Held open, never finished.
        std::future::pending::<()>().await;
        Ok::<_, std::io::Error>(writer)
    });
    let (status, head) = read_head(&mut reader).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{head}");
    sender.abort();
}

async fn slow_json_bodies_time_out(backend: Backend) {
    let settings = niso_registry::RegistrySettings {
        json_body_timeout: Duration::from_secs(1),
        ..test_settings()
    };
    let app = TestApp::with_settings(backend, settings).await;
    let mut stream = connect(&app).await;
    let head = json_head("/v1/auth/login", "Content-Length: 100\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(b"{\"username\"").await.unwrap();
    // ... and nothing more.
    let (status, head) = read_head(&mut stream).await;
    assert_eq!(status, StatusCode::REQUEST_TIMEOUT, "{head}");
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    // Everyone else is served meanwhile and after.
    let (status, _) = app.get("/health").await;
    assert_eq!(status, StatusCode::OK);
}

async fn chunk_uploads_have_their_own_limit(backend: Backend) {
    let app = TestApp::start(backend).await;
    let admin = app.admin_key().await;
    let hash = "0".repeat(64);
    let mut stream = connect(&app).await;
    let head = format!(
        "PUT /v1/chunks/{hash} HTTP/1.1\r\nHost: niso\r\nAuthorization: Bearer {admin}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        17 * 1024 * 1024
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let (status, head) = read_head(&mut stream).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{head}");
    // A chunk larger than a JSON body but within the chunk limit is accepted.
    let data = vec![7u8; 256 * 1024];
    let hash = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&data))
    };
    let response = app
        .client
        .put(app.url(&format!("/v1/chunks/{hash}")))
        .bearer_auth(&admin)
        .body(data)
        .send()
        .await
        .expect("chunk upload");
    assert_eq!(response.status(), StatusCode::CREATED);
}
