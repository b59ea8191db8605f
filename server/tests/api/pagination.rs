//! Numeric query parameters of every list endpoint: out-of-range, negative, fractional and
//! non-numeric values are a 400 naming the parameter (an offset past `i64::MAX` used to panic
//! inside the database driver and drop the connection), and the largest valid values work.

use reqwest::{Method, StatusCode};
use serde_json::json;

use niso_test_support::for_each_backend;
use niso_test_support::{Backend, TestApp, assert_error};

for_each_backend!(list_endpoints_refuse_bad_numbers_and_accept_the_extremes);

const BAD_OFFSETS: &[&str] = &[
    "9223372036854775808",
    "9223372036854775807",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999999999999999999",
    "1000000001",
    "-1",
    "-9223372036854775808",
    "1.5",
    "1e3",
    "0x10",
    "+1",
    " 1",
    "abc",
    "",
    "%00",
];

const BAD_LIMITS: &[&str] = &["0", "-1", "-99999999999999999999", "1.5", "abc", "", "+5"];

async fn list_endpoints_refuse_bad_numbers_and_accept_the_extremes(backend: Backend) {
    let app = TestApp::start(backend).await;
    let key = app.register("paula").await;
    app.publish(&key, "@paula/tool", "1.0.0", "x86_64").await;
    let endpoints = [
        "/v1/packages?",
        "/v1/packages?q=tool&",
        "/v1/packages/@paula/tool/versions?",
        "/v1/auth/keys?",
    ];
    for endpoint in endpoints {
        for offset in BAD_OFFSETS {
            let path = format!("{endpoint}offset={offset}");
            let message = assert_error(
                app.send(Method::GET, &path, Some(&key), None).await,
                StatusCode::BAD_REQUEST,
            );
            assert!(message.contains("offset"), "{path}: {message}");
        }
        for limit in BAD_LIMITS {
            let path = format!("{endpoint}limit={limit}");
            let message = assert_error(
                app.send(Method::GET, &path, Some(&key), None).await,
                StatusCode::BAD_REQUEST,
            );
            assert!(message.contains("limit"), "{path}: {message}");
        }
        // The extremes that are valid: the largest offset is an empty page, and a limit past
        // 1000 (even past u64) is clamped to 1000.
        let path = format!("{endpoint}offset=1000000000");
        let (status, body) = app.send(Method::GET, &path, Some(&key), None).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        assert_eq!(body, json!([]), "{path}");
        for limit in ["1", "1000", "1001", "18446744073709551616"] {
            let path = format!("{endpoint}limit={limit}&offset=0");
            let (status, body) = app.send(Method::GET, &path, Some(&key), None).await;
            assert_eq!(status, StatusCode::OK, "{path}: {body}");
            assert!(
                !body.as_array().expect("a list").is_empty(),
                "{path}: {body}"
            );
        }
    }
}
