//! Two `niso-server` processes on one PostgreSQL database and one S3 bucket are one registry:
//! whatever is written through one replica is served by the other; a key revoked through one is
//! refused by the other on its very next request; download counts from both add up exactly; the
//! login rate limit counts failures from both; the same version+arch pushed through both at
//! once is stored exactly once (one 201, one 409, the winner's bytes); and replicas started
//! together on an empty database all come up, having migrated it once.

use std::time::{Duration, Instant};

use niso_test_support::archives;
use niso_test_support::archives::sha256_hex;
use niso_test_support::assert_error;
use niso_test_support::process::{Backing, Server, eventually};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::NISO_SERVER;

const ARCH: &str = "x86_64-linux";

/// Two replicas started at the same moment on a fresh database and bucket. Field order is drop
/// order: the servers are killed before their S3 server stops.
struct Pair {
    a: Server,
    b: Server,
    backing: Backing,
}

async fn pair(extra: &[(&str, &str)]) -> Pair {
    let backing = Backing::new().await;
    let env = backing.env(extra);
    let mut servers = NISO_SERVER
        .start_all(&[("replica-a", &env), ("replica-b", &env)])
        .await;
    let b = servers.pop().expect("replica b");
    let a = servers.pop().expect("replica a");
    Pair { a, b, backing }
}

fn archive(name: &str, version: &str, size: usize, seed: u64) -> Vec<u8> {
    archives::niso(
        name,
        version,
        &[("bin/tool", &archives::random_bytes(size, seed))],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_through_one_replica_are_served_by_the_other() {
    let Pair { a, b, backing: _b } = pair(&[]).await;
    let key = a.register("alice").await;

    // Uploaded through A (3 MiB: a dozen chunks in the bucket).
    let v1 = archive("@alice/tool", "1.0.0", 3 << 20, 1);
    let (status, body) = a
        .upload(&key, "@alice/tool", "1.0.0", ARCH, v1.clone())
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["checksum"], sha256_hex(&v1));

    // Listed, described and downloaded through B.
    let (status, list) = b.get("/v1/packages?q=tool").await;
    assert_eq!(status, StatusCode::OK);
    let listed = list
        .as_array()
        .expect("array")
        .iter()
        .find(|p| p["name"] == "@alice/tool")
        .unwrap_or_else(|| panic!("B does not list @alice/tool: {list}"));
    assert_eq!(listed["latest_version"], "1.0.0");
    let (status, versions) = b.get("/v1/packages/@alice/tool/versions").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(versions.as_array().map(Vec::len), Some(1), "{versions}");
    assert_eq!(versions[0]["checksum"], sha256_hex(&v1));
    assert_eq!(versions[0]["size"], v1.len());

    let (status, headers, bytes) = b
        .download("/v1/packages/@alice/tool/1.0.0/x86_64-linux")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(bytes == v1, "B served different bytes than A stored");
    assert_eq!(headers["etag"], format!("\"{}\"", sha256_hex(&v1)).as_str());

    // The chunk manifest and every chunk through B reassemble the archive.
    let (status, manifest) = b
        .get("/v1/packages/@alice/tool/1.0.0/x86_64-linux/chunks")
        .await;
    assert_eq!(status, StatusCode::OK, "{manifest}");
    let mut reassembled = Vec::new();
    for chunk in manifest["chunks"].as_array().expect("chunks") {
        let hash = chunk["hash"].as_str().expect("hash");
        let (status, _, bytes) = b.download(&format!("/v1/chunks/{hash}")).await;
        assert_eq!(status, StatusCode::OK, "chunk {hash}");
        reassembled.extend_from_slice(&bytes);
    }
    assert!(
        reassembled == v1,
        "the chunks served by B do not reassemble the archive"
    );

    // Tagged through B, seen and resolved through A.
    let (status, body) = b
        .post(
            "/v1/packages/@alice/tool/tags",
            Some(&key),
            json!({"tag": "stable", "version": "1.0.0"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (_, tags) = a.get("/v1/packages/@alice/tool/tags").await;
    assert!(
        has_tag(&tags, "stable", "1.0.0"),
        "A does not see the tag: {tags}"
    );
    let (status, _, bytes) = a
        .download("/v1/packages/@alice/tool/stable/x86_64-linux")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(bytes == v1);

    // A newer version through B is "latest" on A.
    let v2 = archive("@alice/tool", "1.1.0", 1 << 20, 2);
    let (status, body) = b
        .upload(&key, "@alice/tool", "1.1.0", ARCH, v2.clone())
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, headers, bytes) = a
        .download("/v1/packages/@alice/tool/latest/x86_64-linux")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-package-version"], "1.1.0");
    assert!(bytes == v2);

    // Deleted through B: gone on A, with the tag that pointed at it.
    let (status, body) = b
        .delete("/v1/packages/@alice/tool/1.0.0/x86_64-linux", Some(&key))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, _, _) = a
        .download("/v1/packages/@alice/tool/1.0.0/x86_64-linux")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, tags) = a.get("/v1/packages/@alice/tool/tags").await;
    assert!(!has_tag(&tags, "stable", "1.0.0"), "{tags}");
    assert!(has_tag(&tags, "latest", "1.1.0"), "{tags}");
    let (_, versions) = a.get("/v1/packages/@alice/tool/versions").await;
    assert_eq!(versions.as_array().map(Vec::len), Some(1), "{versions}");
    assert_eq!(versions[0]["version"], "1.1.0");

    // The last version deleted through A: the package leaves B's listing.
    let (status, _) = a
        .delete("/v1/packages/@alice/tool/1.1.0/x86_64-linux", Some(&key))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, list) = b.get("/v1/packages?q=tool").await;
    assert!(
        !list
            .as_array()
            .expect("array")
            .iter()
            .any(|p| p["name"] == "@alice/tool"),
        "{list}"
    );
}

fn has_tag(tags: &Value, tag: &str, version: &str) -> bool {
    tags.as_array().is_some_and(|tags| {
        tags.iter()
            .any(|t| t["tag"] == tag && t["version"] == version)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_revoked_through_one_replica_is_refused_by_the_other_at_once() {
    let Pair { a, b, backing: _b } = pair(&[]).await;
    let owner_key = a.register("carol").await;
    let (status, created) = a
        .post(
            "/v1/auth/keys",
            Some(&owner_key),
            json!({"name": "ci", "scope": "pull:*,push:@carol/*"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let ci_key = created["key"].as_str().expect("key").to_owned();
    let ci_id = created["id"].as_i64().expect("id");

    // B accepts the key (and has it in whatever state it keeps)…
    let (status, body) = b.get_with("/v1/auth/me", &ci_key).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let small = archive("@carol/app", "0.1.0", 10_000, 3);
    let (status, body) = b
        .upload(&ci_key, "@carol/app", "0.1.0", ARCH, small.clone())
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // …until A revokes it: B's very next request with it is a 401.
    let (status, body) = a
        .delete(&format!("/v1/auth/keys/{ci_id}"), Some(&owner_key))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_error(
        &b.get_with("/v1/auth/me", &ci_key).await,
        StatusCode::UNAUTHORIZED,
    );
    let upload = b
        .upload(
            &ci_key,
            "@carol/app",
            "0.2.0",
            ARCH,
            archive("@carol/app", "0.2.0", 10_000, 4),
        )
        .await;
    assert_error(&upload, StatusCode::UNAUTHORIZED);
    assert_error(
        &a.get_with("/v1/auth/me", &ci_key).await,
        StatusCode::UNAUTHORIZED,
    );

    // The owner's own key is untouched on both.
    assert_eq!(
        b.get_with("/v1/auth/me", &owner_key).await.0,
        StatusCode::OK
    );
    assert_eq!(
        a.get_with("/v1/auth/me", &owner_key).await.0,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_counts_from_both_replicas_add_up() {
    let Pair { a, b, backing: _b } = pair(&[]).await;
    let key = a.register("dave").await;
    let bytes = archive("@dave/counted", "1.0.0", 600_000, 5);
    let (status, body) = a
        .upload(&key, "@dave/counted", "1.0.0", ARCH, bytes.clone())
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let path = "/v1/packages/@dave/counted/1.0.0/x86_64-linux";
    let etag = format!("\"{}\"", sha256_hex(&bytes));

    for (server, full_downloads) in [(&a, 3), (&b, 4)] {
        for _ in 0..full_downloads {
            let (status, _, body) = server.download(path).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(body.len(), bytes.len());
        }
        // Neither a partial download nor a revalidation counts.
        let partial = server
            .client
            .get(server.url(path))
            .header("range", "bytes=0-99")
            .send()
            .await
            .expect("range request");
        assert_eq!(partial.status(), StatusCode::PARTIAL_CONTENT);
        let cached = server
            .client
            .get(server.url(path))
            .header("if-none-match", &etag)
            .send()
            .await
            .expect("conditional request");
        assert_eq!(cached.status(), StatusCode::NOT_MODIFIED);
    }

    // Each replica flushes its own batch every second; the sum must arrive, exactly.
    let started = Instant::now();
    eventually(
        Duration::from_secs(10),
        "download counts reach 7",
        || async { (counts(&b).await == (Some(7), Some(7))).then_some(()) },
    )
    .await;
    eprintln!("counts reached 7 after {:?}", started.elapsed());
    // And stay there: nothing is counted twice by a later flush.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(counts(&a).await, (Some(7), Some(7)));
    assert_eq!(counts(&b).await, (Some(7), Some(7)));
}

/// (the version's, the package's) download count as `server` reports them.
async fn counts(server: &Server) -> (Option<i64>, Option<i64>) {
    let (_, versions) = server.get("/v1/packages/@dave/counted/versions").await;
    let (_, list) = server.get("/v1/packages?q=counted").await;
    (
        versions[0]["download_count"].as_i64(),
        list[0]["download_count"].as_i64(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_login_rate_limit_counts_failures_on_every_replica() {
    let Pair { a, b, backing: _b } = pair(&[("NISO_LOGIN_MAX_FAILURES", "4")]).await;
    a.register("erin").await;
    // Four failures, two on each replica: below the limit on either alone.
    for server in [&a, &b, &a, &b] {
        let attempt = server
            .post(
                "/v1/auth/login",
                None,
                json!({"username": "erin", "password": "wrong-password"}),
            )
            .await;
        assert_error(&attempt, StatusCode::UNAUTHORIZED);
    }
    // The fifth attempt is refused on both, even with the right password.
    for server in [&a, &b] {
        let response = server
            .client
            .post(server.url("/v1/auth/login"))
            .json(&json!({"username": "erin", "password": "password-of-erin"}))
            .send()
            .await
            .expect("login");
        assert_eq!(
            response.status(),
            StatusCode::TOO_MANY_REQUESTS,
            "{} let a fifth attempt through",
            server.name
        );
        let retry_after: u64 = response.headers()["retry-after"]
            .to_str()
            .expect("Retry-After")
            .parse()
            .expect("Retry-After seconds");
        assert!(
            (1..=300).contains(&retry_after),
            "Retry-After {retry_after}"
        );
        let body: Value = response.json().await.expect("JSON error");
        assert!(body["error"].is_string(), "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_version_pushed_through_both_at_once_is_stored_once() {
    let Pair { a, b, backing: _b } = pair(&[]).await;
    let key = a.register("frank").await;
    const ROUNDS: u64 = 20;
    let mut a_won = 0;
    for round in 0..ROUNDS {
        let version = format!("1.0.{round}");
        // Different bytes per replica (same name and version), so the stored archive tells who won.
        let via_a = archive("@frank/race", &version, 300_000, 1000 + 2 * round);
        let via_b = archive("@frank/race", &version, 300_000, 1001 + 2 * round);
        let (result_a, result_b) = tokio::join!(
            a.upload(&key, "@frank/race", &version, ARCH, via_a.clone()),
            b.upload(&key, "@frank/race", &version, ARCH, via_b.clone()),
        );
        let (winner, winner_body, loser) = match (result_a.0, result_b.0) {
            (StatusCode::CREATED, StatusCode::CONFLICT) => {
                a_won += 1;
                (via_a, result_a.1, result_b)
            }
            (StatusCode::CONFLICT, StatusCode::CREATED) => (via_b, result_b.1, result_a),
            other => panic!(
                "round {round}: expected one 201 and one 409, got {other:?}: {} / {}",
                result_a.1, result_b.1
            ),
        };
        assert_error(&loser, StatusCode::CONFLICT);
        assert_eq!(winner_body["checksum"], sha256_hex(&winner));
        let path = format!("/v1/packages/@frank/race/{version}/x86_64-linux");
        for server in [&a, &b] {
            let (status, _, stored) = server.download(&path).await;
            assert_eq!(status, StatusCode::OK);
            assert!(
                stored == winner,
                "round {round}: {} serves bytes that are not the winner's",
                server.name
            );
        }
    }
    let (_, versions) = b.get("/v1/packages/@frank/race/versions?limit=1000").await;
    assert_eq!(
        versions.as_array().map(Vec::len),
        Some(ROUNDS as usize),
        "{versions}"
    );
    eprintln!("replica A won {a_won} of {ROUNDS} rounds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_started_together_on_an_empty_database_all_come_up() {
    use migration::MigratorTrait;

    let backing = Backing::new().await;
    let env = backing.env(&[]);
    let servers = NISO_SERVER
        .start_all(&[
            ("replica-a", &env),
            ("replica-b", &env),
            ("replica-c", &env),
        ])
        .await;
    for server in &servers {
        let (status, body) = server.get("/ready").await;
        assert_eq!(status, StatusCode::OK, "{}: {body}", server.name);
    }
    // Each migration was applied once, and the schema works through every replica.
    assert_eq!(
        crate::applied_migrations(&backing.database_url).await,
        migration::Migrator::migrations().len()
    );
    for (index, server) in servers.iter().enumerate() {
        server.register(&format!("user{index}")).await;
    }
    drop(servers);
}
