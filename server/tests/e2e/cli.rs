//! The `niso-server` command line as an operator uses it: `keys create --scope 'admin:*'` on a
//! fresh data directory (before any `serve`) prints the new key as one JSON line, and that key
//! works against a server started afterwards on the same directory; `migrate` brings a fresh
//! SQLite or PostgreSQL database up to date and is idempotent; a bad configuration value makes
//! every subcommand exit non-zero with a message naming the variable.

use std::time::Duration;

use niso_test_support::archives::sha256_hex;
use niso_test_support::assert_error;
use niso_test_support::process::{Env, env};
use reqwest::StatusCode;
use serde_json::Value;

use crate::NISO_SERVER;

const CLI_TIMEOUT: Duration = Duration::from_secs(60);

fn is_api_key(key: &str) -> bool {
    key.strip_prefix("niso_")
        .is_some_and(|rest| rest.len() >= 32 && rest.bytes().all(|b| b.is_ascii_alphanumeric()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_create_bootstraps_an_admin_key_before_the_first_serve() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("niso-data");
    let data_env: Env = env(&[("NISO_DATA_DIR", data_dir.to_str().expect("utf-8 path"))]);

    let created = NISO_SERVER
        .run_cli(
            &["keys", "create", "--name", "admin", "--scope", "admin:*"],
            &data_env,
            &data_dir,
            CLI_TIMEOUT,
        )
        .await;
    assert!(
        created.status.success(),
        "keys create failed: {}",
        created.stderr
    );
    let lines: Vec<&str> = created.stdout.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "expected one JSON line, got {:?}",
        created.stdout
    );
    let key: Value = serde_json::from_str(lines[0]).expect("a JSON line");
    let fields = key.as_object().expect("a JSON object");
    let mut names: Vec<&str> = fields.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, ["id", "key", "name", "scope"], "{key}");
    assert!(key["id"].is_i64(), "{key}");
    assert_eq!(key["name"], "admin");
    assert_eq!(key["scope"], "admin:*");
    let admin_key = key["key"].as_str().expect("key").to_owned();
    assert!(is_api_key(&admin_key), "not an API key: {admin_key}");
    assert!(
        !created.stderr.contains(&admin_key),
        "the key must not appear in the logs"
    );
    assert!(data_dir.join("niso.db").is_file(), "no SQLite database");

    // `migrate` on the now up-to-date directory is a no-op that succeeds.
    let migrated = NISO_SERVER
        .run_cli(&["migrate"], &data_env, &data_dir, CLI_TIMEOUT)
        .await;
    assert!(
        migrated.status.success(),
        "migrate failed: {}",
        migrated.stderr
    );
    assert_eq!(
        serde_json::from_str::<Value>(migrated.stdout.trim()).ok(),
        Some(serde_json::json!({"migrated": true})),
        "{}",
        migrated.stdout
    );

    // A server started afterwards on the same directory accepts the key for admin-only work.
    let server = NISO_SERVER.start("embedded", &data_env).await;
    let chunk = niso_test_support::archives::random_bytes(100_000, 7);
    let hash = sha256_hex(&chunk);
    let put = |key: Option<&str>, hash: &str, body: Vec<u8>| {
        let mut request = server
            .client
            .put(server.url(&format!("/v1/chunks/{hash}")))
            .header("content-type", "application/octet-stream")
            .body(body);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        async move {
            let response = request.send().await.expect("PUT chunk");
            let status = response.status();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let (status, body) = put(Some(&admin_key), &hash, chunk.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, _, stored) = server.download(&format!("/v1/chunks/{hash}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(stored == chunk);
    // Not without the key, nor with a body that does not match the hash.
    assert_error(
        &put(None, &hash, chunk.clone()).await,
        StatusCode::UNAUTHORIZED,
    );
    let wrong = sha256_hex(b"something else");
    assert_error(
        &put(Some(&admin_key), &wrong, chunk.clone()).await,
        StatusCode::BAD_REQUEST,
    );
    // A user-linked key (from register) has no admin scope: chunk upload is refused.
    let user_key = server.register("judy").await;
    assert_error(
        &put(Some(&user_key), &hash, chunk).await,
        StatusCode::FORBIDDEN,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_brings_a_fresh_postgresql_database_up_to_date_once() {
    use migration::MigratorTrait;

    let database_url = niso_test_support::postgres::TestPostgres::get()
        .fresh_database()
        .await;
    let dir = tempfile::tempdir().expect("temp dir");
    let database_env = env(&[("NISO_DATABASE_URL", &database_url)]);
    for _ in 0..2 {
        let migrated = NISO_SERVER
            .run_cli(&["migrate"], &database_env, dir.path(), CLI_TIMEOUT)
            .await;
        assert!(
            migrated.status.success(),
            "migrate failed: {}",
            migrated.stderr
        );
        assert_eq!(migrated.stdout.trim(), r#"{"migrated":true}"#);
    }
    assert_eq!(
        crate::applied_migrations(&database_url).await,
        migration::Migrator::migrations().len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_configuration_value_stops_every_subcommand_naming_the_variable() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("niso-data");
    let cases: [(&str, &str, &[&str]); 4] = [
        ("NISO_MAX_UPLOAD_BYTES", "lots", &["serve"]),
        (
            "NISO_MAX_UPLOAD_BYTES",
            "lots",
            &["keys", "create", "--name", "x", "--scope", "admin:*"],
        ),
        ("NISO_LISTEN", "nowhere", &[]),
        ("NISO_UPLOAD_LEASE_SECS", "-5", &["migrate"]),
    ];
    for (variable, value, args) in cases {
        let bad: Env = env(&[
            ("NISO_DATA_DIR", data_dir.to_str().expect("utf-8 path")),
            (variable, value),
        ]);
        let started = std::time::Instant::now();
        let output = NISO_SERVER
            .run_cli(args, &bad, &data_dir, CLI_TIMEOUT)
            .await;
        assert!(
            !output.status.success(),
            "`niso-server {}` with {variable}={value} succeeded",
            args.join(" ")
        );
        assert!(
            output.stderr.contains(variable),
            "the error does not name {variable}: {}",
            output.stderr
        );
        assert!(started.elapsed() < Duration::from_secs(10), "slow to fail");
        assert!(output.stdout.is_empty(), "stdout: {}", output.stdout);
    }
    // Nothing was created on the way out.
    assert!(!data_dir.join("niso.db").exists());
}
