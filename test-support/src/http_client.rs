//! The one HTTP test client: requests to a registry's API with an optional bearer key, the
//! account and package helpers the tests build on, and the assertions on the error and
//! timestamp shapes.
//! The in-process [`crate::TestApp`] and the spawned [`crate::process::Server`] both dereference
//! to it, so a test reads the same whichever way its registry runs.

use std::borrow::Borrow;

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::archives;

/// A registry's API at `base`, as seen by one client.
pub struct HttpClient {
    /// Who the registry is, in panic messages (`replica-a`, `in-process registry`).
    pub name: String,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    pub client: reqwest::Client,
}

impl HttpClient {
    pub fn new(name: &str, base: String, client: reqwest::Client) -> HttpClient {
        HttpClient {
            name: name.to_owned(),
            base,
            client,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `host:port` of the server, for raw connections.
    pub fn address(&self) -> &str {
        self.base.strip_prefix("http://").expect("http base")
    }

    /// A request with an optional bearer key and JSON body; the status and the body as JSON
    /// (a non-JSON body becomes a JSON string, an empty one `null`).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.client.request(method.clone(), self.url(path));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        self.answer(request, &method, path).await
    }

    /// Sends raw bytes (an archive or a chunk) as `application/octet-stream` with `method`,
    /// optionally with a key; the answer as [`HttpClient::send`] gives it.
    pub async fn send_bytes(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .client
            .request(method.clone(), self.url(path))
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(body);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        self.answer(request, &method, path).await
    }

    /// The status and the body as JSON (a non-JSON body becomes a JSON string, an empty one
    /// `null`).
    async fn answer(
        &self,
        request: reqwest::RequestBuilder,
        method: &Method,
        path: &str,
    ) -> (StatusCode, Value) {
        let response = request
            .send()
            .await
            .unwrap_or_else(|error| panic!("{method} {path} on {}: {error}", self.name));
        let status = response.status();
        let text = response.text().await.expect("response body");
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(Method::GET, path, None, None).await
    }

    pub async fn get_with(&self, path: &str, key: &str) -> (StatusCode, Value) {
        self.send(Method::GET, path, Some(key), None).await
    }

    pub async fn post(&self, path: &str, key: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.send(Method::POST, path, key, Some(body)).await
    }

    pub async fn delete(&self, path: &str, key: Option<&str>) -> (StatusCode, Value) {
        self.send(Method::DELETE, path, key, None).await
    }

    /// Registers `username` (password `password-of-USERNAME`) and returns its API key.
    pub async fn register(&self, username: &str) -> String {
        let (status, body) = self
            .post(
                "/v1/auth/register",
                None,
                serde_json::json!({
                    "username": username,
                    "email": format!("{username}@example.com"),
                    "password": format!("password-of-{username}"),
                }),
            )
            .await;
        assert_eq!(
            status,
            StatusCode::CREATED,
            "register {username} on {}: {body}",
            self.name
        );
        body["api_key"].as_str().expect("api_key").to_owned()
    }

    /// Pushes `archive` as `name@version` for `arch`; the status and the JSON body (`null`
    /// when the body is not JSON).
    pub async fn upload(
        &self,
        key: &str,
        name: &str,
        version: &str,
        arch: &str,
        archive: Vec<u8>,
    ) -> (StatusCode, Value) {
        let response = self
            .client
            .put(self.url(&format!("/v1/packages/{name}/{version}/{arch}")))
            .bearer_auth(key)
            .header("content-type", "application/octet-stream")
            .body(archive)
            .send()
            .await
            .unwrap_or_else(|error| panic!("upload to {}: {error}", self.name));
        let status = response.status();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    /// Uploads a small generated archive for `name@version`.
    pub async fn publish(&self, key: &str, name: &str, version: &str, arch: &str) -> Value {
        let archive = archives::niso(name, version, &[("bin/tool", b"#!/bin/sh\necho hi\n")]);
        let (status, body) = self.upload(key, name, version, arch, archive).await;
        assert_eq!(
            status,
            StatusCode::CREATED,
            "publish {name}@{version} on {}: {body}",
            self.name
        );
        body
    }

    /// A GET of binary content: status, headers and body.
    pub async fn download(&self, path: &str) -> (StatusCode, HeaderMap, Vec<u8>) {
        let response = self
            .client
            .get(self.url(path))
            .send()
            .await
            .unwrap_or_else(|error| panic!("GET {path} on {}: {error}", self.name));
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .bytes()
            .await
            .unwrap_or_else(|error| panic!("body of GET {path} on {}: {error}", self.name))
            .to_vec();
        (status, headers, body)
    }
}

/// The value of a counter or gauge in a Prometheus text exposition, summed over its labels.
pub fn metric_sum(exposition: &str, name: &str) -> f64 {
    exposition
        .lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Asserts the registry's error shape: the status and a non-empty `error` message, which it
/// returns. Takes the answer by value or by reference.
#[track_caller]
pub fn assert_error(actual: impl Borrow<(StatusCode, Value)>, status: StatusCode) -> String {
    let (actual_status, body) = actual.borrow();
    assert_eq!(*actual_status, status, "unexpected status; body: {body}");
    let message = body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("error body without an error message: {body}"));
    assert!(!message.is_empty(), "empty error message");
    message.to_owned()
}

/// Asserts the API's timestamp shape: `2026-04-10T12:00:00`, exactly (UTC, no offset, no
/// fraction).
#[track_caller]
pub fn assert_timestamp(value: &Value) {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("timestamp is not a string: {value}"));
    assert_eq!(
        text.len(),
        19,
        "timestamp {text:?} is not YYYY-MM-DDTHH:MM:SS"
    );
    chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S")
        .unwrap_or_else(|e| panic!("timestamp {text:?} is not YYYY-MM-DDTHH:MM:SS: {e}"));
}

/// Opens a connection to `address` and sends a request whose body is announced as `announced`
/// bytes but only `sent` arrive; the rest never comes (a client that stalls).
pub async fn stalled_request(
    address: &str,
    method: &str,
    path: &str,
    key: Option<&str>,
    announced: usize,
    sent: &[u8],
) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    // JSON for the JSON endpoints, whose extractor refuses other types before reading.
    let content_type = if path.starts_with("/v1/auth/") {
        "application/json"
    } else {
        "application/octet-stream"
    };
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Length: {announced}\r\n\
         Content-Type: {content_type}\r\n"
    );
    if let Some(key) = key {
        head.push_str(&format!("Authorization: Bearer {key}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.expect("send head");
    stream.write_all(sent).await.expect("send the first bytes");
    stream.flush().await.expect("flush");
    stream
}
