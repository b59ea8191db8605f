//! The `ObjectStore` contract, checked by one test body against both backends (a local
//! directory and a real S3 protocol server), plus each backend's failure modes: crash-safe local
//! writes, and S3 failures (bad credentials, dead or silent server) that must surface as
//! `Unavailable` within bounded time rather than hang.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use niso_registry::storage::local::LocalStore;
use niso_registry::storage::s3::{S3Settings, S3Store, S3Timeouts};
use niso_registry::storage::{ObjectStore, StorageError, validate_key};
use niso_test_support::s3::S3TestServer;

fn random_bytes(len: usize) -> Bytes {
    let mut buf = vec![0u8; len];
    rand::fill(&mut buf[..]);
    Bytes::from(buf)
}

/// A key shaped like the registry's: `chunks/<2 hex>/<sha256>-<16 hex>`.
fn chunk_key() -> String {
    let hash = hex::encode(rand::random::<[u8; 32]>());
    let unique = hex::encode(rand::random::<[u8; 8]>());
    format!("chunks/{}/{hash}-{unique}", &hash[..2])
}

async fn s3_store() -> Arc<dyn ObjectStore> {
    let settings = S3TestServer::get().fresh_bucket();
    Arc::new(
        S3Store::connect(settings)
            .await
            .expect("connect to the S3 test server"),
    )
}

/// The contract every backend must meet.
async fn exercise(store: Arc<dyn ObjectStore>) {
    store.check().await.expect("check on a healthy store");

    // Round-trip of a max-size chunk.
    let key = chunk_key();
    let big = random_bytes(1 << 20);
    store.put(&key, big.clone()).await.expect("put 1 MiB");
    assert_eq!(store.get(&key).await.expect("get 1 MiB"), big);

    // Overwrite replaces the whole object (a shorter body must not keep the old tail).
    let small = random_bytes(1000);
    store.put(&key, small.clone()).await.expect("overwrite");
    assert_eq!(store.get(&key).await.expect("get overwritten"), small);

    // Empty objects are objects too.
    let empty_key = chunk_key();
    store
        .put(&empty_key, Bytes::new())
        .await
        .expect("put empty");
    assert!(store.get(&empty_key).await.expect("get empty").is_empty());

    // Missing objects: NotFound naming the key, also where a key prefix is itself an object.
    let missing = chunk_key();
    match store.get(&missing).await {
        Err(StorageError::NotFound(k)) => assert_eq!(k, missing),
        other => panic!("get of a missing object: {other:?}"),
    }
    match store.get(&format!("{key}/below")).await {
        Err(StorageError::NotFound(_)) => {}
        other => panic!("get below an object: {other:?}"),
    }

    // Delete, and deleting again or deleting what never existed is fine.
    store.delete(&key).await.expect("delete");
    assert!(matches!(
        store.get(&key).await,
        Err(StorageError::NotFound(_))
    ));
    store.delete(&key).await.expect("delete again");
    store
        .delete(&missing)
        .await
        .expect("delete a never-stored object");
    assert_eq!(
        store.get(&empty_key).await.expect("other objects survive"),
        Bytes::new()
    );

    // Concurrent puts of distinct keys all land.
    let objects: Vec<(String, Bytes)> = (0..8)
        .map(|i| (chunk_key(), random_bytes(10_000 + i)))
        .collect();
    let mut tasks = tokio::task::JoinSet::new();
    for (k, v) in objects.clone() {
        let store = store.clone();
        tasks.spawn(async move { store.put(&k, v).await });
    }
    while let Some(result) = tasks.join_next().await {
        result.expect("put task").expect("concurrent put");
    }
    for (k, v) in &objects {
        assert_eq!(&store.get(k).await.expect("get after concurrent put"), v);
    }

    store.check().await.expect("check after use");
}

#[tokio::test]
async fn local_store_meets_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path().join("chunks")).expect("open");
    assert_eq!(
        store.describe(),
        format!("local:{}", dir.path().join("chunks").display())
    );
    exercise(Arc::new(store)).await;
}

#[tokio::test]
async fn s3_store_meets_the_contract() {
    let store = s3_store().await;
    assert!(
        store.describe().starts_with("s3://niso-test-"),
        "{}",
        store.describe()
    );
    assert!(
        store.describe().ends_with(&S3TestServer::get().endpoint),
        "{}",
        store.describe()
    );
    exercise(store).await;
}

/// Every file under `dir`, relative to it.
fn files_under(dir: &Path) -> HashSet<String> {
    let mut found = HashSet::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let rel = path.strip_prefix(dir).unwrap().to_str().unwrap().to_owned();
                found.insert(rel);
            }
        }
    }
    found
}

#[tokio::test]
async fn local_store_leaves_no_temp_files() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::open(dir.path().to_path_buf()).unwrap());
    let keys: Vec<String> = (0..20).map(|_| chunk_key()).collect();
    for key in &keys {
        store.put(key, random_bytes(4096)).await.unwrap();
        store.put(key, random_bytes(100)).await.unwrap(); // overwrite
    }
    store.check().await.unwrap(); // the write probe cleans up too
    store.delete(&keys[0]).await.unwrap();
    let expected: HashSet<String> = keys[1..].iter().cloned().collect();
    assert_eq!(files_under(dir.path()), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_overwrites_are_atomic_under_concurrency() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::open(dir.path().to_path_buf()).unwrap());
    let key = chunk_key();
    let bodies: Vec<Bytes> = (0..6).map(|_| random_bytes(256 * 1024)).collect();
    store.put(&key, bodies[0].clone()).await.unwrap();

    let mut writers = tokio::task::JoinSet::new();
    for body in bodies.iter().cycle().take(24).cloned() {
        let (store, key) = (store.clone(), key.clone());
        writers.spawn(async move { store.put(&key, body).await });
    }
    // Readers racing the writers must only ever see one complete body.
    let mut reads = 0;
    while !writers.is_empty() {
        let seen = store.get(&key).await.expect("get during overwrites");
        assert!(
            bodies.contains(&seen),
            "read a torn object of {} bytes",
            seen.len()
        );
        reads += 1;
        while let Some(result) = writers.try_join_next() {
            result.unwrap().expect("concurrent overwrite");
        }
        tokio::task::yield_now().await;
    }
    assert!(reads > 0);
    assert!(bodies.contains(&store.get(&key).await.unwrap()));
    assert_eq!(files_under(dir.path()), HashSet::from([key]));
}

#[tokio::test]
async fn local_store_refuses_a_root_that_is_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    assert!(matches!(
        LocalStore::open(file),
        Err(StorageError::Unavailable(_))
    ));
}

#[tokio::test]
async fn local_check_fails_when_the_root_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("chunks");
    let store = LocalStore::open(root.clone()).unwrap();
    std::fs::remove_dir(&root).unwrap();
    assert!(matches!(
        store.check().await,
        Err(StorageError::Unavailable(_))
    ));
}

#[test]
fn invalid_keys_are_refused() {
    for key in ["chunks/ab/x", "a", "chunks/ab/ab12-1a2b"] {
        validate_key(key).unwrap_or_else(|e| panic!("{key:?} refused: {e}"));
    }
    for key in [
        "",
        "/etc/passwd",
        "../x",
        "chunks/../../x",
        "a/..",
        "a..b",
        r"a\b",
        "a//b",
        "a/",
        "./a",
        "a/./b",
        "a\0b",
        "a\nb",
    ] {
        // A bad key is a registry bug: debug builds panic on it, release builds refuse it.
        match std::panic::catch_unwind(|| validate_key(key)) {
            Err(_) if cfg!(debug_assertions) => {}
            Err(_) => panic!("{key:?} panicked in a release build"),
            Ok(Err(StorageError::InvalidKey(k))) => assert_eq!(k, key),
            Ok(other) => panic!("{key:?} accepted: {other:?}"),
        }
    }
}

#[tokio::test]
async fn stores_refuse_invalid_keys_before_any_io() {
    let dir = tempfile::tempdir().unwrap();
    let local: Arc<dyn ObjectStore> = Arc::new(LocalStore::open(dir.path().join("root")).unwrap());
    for store in [local, s3_store().await] {
        let task =
            tokio::spawn(async move { store.put("../escape", Bytes::from_static(b"x")).await });
        match task.await {
            Err(e) => assert!(e.is_panic() && cfg!(debug_assertions)),
            Ok(result) => assert!(
                matches!(result, Err(StorageError::InvalidKey(_))),
                "{result:?}"
            ),
        }
    }
    assert!(!dir.path().join("escape").exists());
}

/// Runs `f`, failing the test if it takes longer than `limit`.
async fn within<T>(limit: Duration, f: impl Future<Output = T>) -> (T, Duration) {
    let start = Instant::now();
    let value = tokio::time::timeout(limit, f)
        .await
        .unwrap_or_else(|_| panic!("still running after {limit:?}"));
    (value, start.elapsed())
}

fn assert_unavailable<T: std::fmt::Debug>(what: &str, result: Result<T, StorageError>) -> String {
    match result {
        Err(StorageError::Unavailable(cause)) => cause,
        other => panic!("{what}: expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn s3_wrong_credentials_are_unavailable() {
    let server = S3TestServer::get();
    let bucket = server.fresh_bucket().bucket;
    let mut settings = server.settings(&bucket);
    let wrong_secret = "wrong-secret-0123456789";
    settings.credentials = Some((server.access_key.clone(), wrong_secret.into()));
    let store = S3Store::connect(settings).await.unwrap();

    // Authentication failures are not retried: this is quick, not a 5-attempt backoff.
    let (result, took) = within(Duration::from_secs(20), store.check()).await;
    let cause = assert_unavailable("check", result);
    assert!(cause.contains("403"), "{cause}");
    assert!(
        !cause.contains(wrong_secret),
        "the secret leaked into {cause}"
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");
    let (result, _) = within(
        Duration::from_secs(20),
        store.put(&chunk_key(), Bytes::from_static(b"x")),
    )
    .await;
    assert_unavailable("put", result);
    // A get must not mistake the refusal for a missing object.
    let (result, _) = within(Duration::from_secs(20), store.get(&chunk_key())).await;
    assert_unavailable("get", result);
}

#[tokio::test]
async fn s3_missing_bucket_fails_the_check() {
    let server = S3TestServer::get();
    let store = S3Store::connect(server.settings(&server.unique_bucket_name()))
        .await
        .unwrap();
    let cause = assert_unavailable("check", store.check().await);
    assert!(cause.contains("404"), "{cause}");
}

/// A server answering every request with one canned HTTP response, to pin down how S3 error
/// responses map onto `StorageError` (s3s-fs, for one, says NoSuchKey for a missing bucket).
async fn canned_s3(status: &str, body: &'static str) -> Arc<dyn ObjectStore> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let response = response.clone();
            tokio::spawn(async move {
                // Requests here carry no body: the head is all there is to read.
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = conn.write_all(response.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    let settings = S3Settings {
        endpoint: Some(format!("http://{addr}")),
        ..S3TestServer::get().settings("niso-canned")
    };
    Arc::new(S3Store::connect(settings).await.unwrap())
}

fn s3_error_xml(code: &str) -> &'static str {
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>canned</Message></Error>"
    );
    Box::leak(xml.into_boxed_str())
}

#[tokio::test]
async fn s3_no_such_key_is_not_found_and_deletes_fine() {
    let store = canned_s3("404 Not Found", s3_error_xml("NoSuchKey")).await;
    assert!(matches!(
        store.get(&chunk_key()).await,
        Err(StorageError::NotFound(_))
    ));
    store
        .delete(&chunk_key())
        .await
        .expect("delete answered NoSuchKey");
}

#[tokio::test]
async fn s3_bare_404_is_not_found() {
    let store = canned_s3("404 Not Found", "").await;
    assert!(matches!(
        store.get(&chunk_key()).await,
        Err(StorageError::NotFound(_))
    ));
}

#[tokio::test]
async fn s3_no_such_bucket_is_unavailable_not_not_found() {
    let store = canned_s3("404 Not Found", s3_error_xml("NoSuchBucket")).await;
    let cause = assert_unavailable("get", store.get(&chunk_key()).await);
    assert!(cause.contains("NoSuchBucket"), "{cause}");
    assert_unavailable("delete", store.delete(&chunk_key()).await);
    assert_unavailable(
        "put",
        store.put(&chunk_key(), Bytes::from_static(b"x")).await,
    );
}

#[tokio::test]
async fn s3_access_denied_is_unavailable() {
    let store = canned_s3("403 Forbidden", s3_error_xml("AccessDenied")).await;
    assert_unavailable("get", store.get(&chunk_key()).await);
    assert_unavailable("delete", store.delete(&chunk_key()).await);
    assert_unavailable("check", store.check().await);
}

#[tokio::test]
async fn s3_closed_port_is_unavailable_within_the_timeouts() {
    // A port that was just free: connections are refused, which the SDK retries with backoff.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let settings = S3Settings {
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        ..S3TestServer::get().settings("niso-closed")
    };
    let store = S3Store::connect(settings).await.unwrap();
    // 5 attempts with jittered exponential backoff (1 s base): ~15 s at worst.
    let (result, took) = within(Duration::from_secs(60), store.check()).await;
    let cause = assert_unavailable("check", result);
    eprintln!("closed port: Unavailable after {took:?}: {cause}");
    let (result, _) = within(Duration::from_secs(60), store.get(&chunk_key())).await;
    assert_unavailable("get", result);
}

#[tokio::test]
async fn s3_silent_server_is_unavailable_after_the_operation_timeout() {
    // Accepts connections and never answers: only the timeouts can end the call.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            held.push(conn);
        }
    });
    let settings = S3Settings {
        endpoint: Some(format!("http://{addr}")),
        ..S3TestServer::get().settings("niso-silent")
    };
    let timeouts = S3Timeouts {
        connect: Duration::from_secs(1),
        attempt: Duration::from_millis(300),
        operation: Duration::from_secs(2),
    };
    let store = S3Store::connect_with_timeouts(settings, timeouts)
        .await
        .unwrap();
    for op in ["check", "get"] {
        let (result, took) = within(Duration::from_secs(10), async {
            match op {
                "check" => store.check().await.map(|_| ()),
                _ => store.get(&chunk_key()).await.map(|_| ()),
            }
        })
        .await;
        let cause = assert_unavailable(op, result);
        assert!(
            took >= Duration::from_millis(300),
            "{op} gave up after {took:?}: {cause}"
        );
        assert!(took < Duration::from_secs(4), "{op} took {took:?}");
    }
    silent.abort();
}

#[tokio::test]
async fn s3_connect_rejects_unusable_settings() {
    let base = S3TestServer::get().settings("niso-config");
    let no_bucket = S3Settings {
        bucket: String::new(),
        ..base.clone()
    };
    assert!(matches!(
        S3Store::connect(no_bucket).await,
        Err(StorageError::Config(_))
    ));
    let bad_endpoint = S3Settings {
        endpoint: Some("127.0.0.1:9000".into()),
        ..base
    };
    assert!(matches!(
        S3Store::connect(bad_endpoint).await,
        Err(StorageError::Config(_))
    ));
}

#[test]
fn s3_settings_debug_hides_the_secret() {
    let settings = S3Settings {
        bucket: "b".into(),
        credentials: Some(("AKIDPUBLIC".into(), "very-secret-key".into())),
        ..S3Settings::default()
    };
    let shown = format!("{settings:?}");
    assert!(shown.contains("AKIDPUBLIC"), "{shown}");
    assert!(!shown.contains("very-secret-key"), "{shown}");
}

#[tokio::test]
async fn s3_without_credentials_is_unavailable_not_a_hang() {
    // `credentials: None` is the production path: the standard AWS chain (env, profile, web
    // identity, container and instance metadata). None of it holds this server's keys, so
    // every request is refused or unsigned, and that must surface quickly as Unavailable.
    let server = S3TestServer::get();
    let settings = S3Settings {
        credentials: None,
        ..server.fresh_bucket()
    };
    let store = S3Store::connect(settings).await.unwrap();
    let (result, took) = within(Duration::from_secs(60), store.check()).await;
    let cause = assert_unavailable("check", result);
    eprintln!("no credentials: Unavailable after {took:?}: {cause}");
}

/// Every page of a listing, collected; fails on the first error.
async fn list_all(
    store: &dyn ObjectStore,
    prefix: &str,
    page_size: usize,
) -> Vec<Vec<niso_registry::storage::ListedObject>> {
    use futures::TryStreamExt;
    store
        .list(prefix, page_size)
        .try_collect()
        .await
        .expect("listing")
}

/// The listing contract: pages of at most the requested size, every object under the prefix
/// exactly once with its size and a plausible date, nothing outside the prefix.
async fn exercise_listing(store: Arc<dyn ObjectStore>) {
    assert!(
        list_all(store.as_ref(), "chunks/", 2)
            .await
            .iter()
            .all(Vec::is_empty),
        "an empty store lists nothing"
    );
    let before = std::time::SystemTime::now() - Duration::from_secs(3600);
    let mut expected = std::collections::HashMap::new();
    for size in 0..5 {
        let key = chunk_key();
        store.put(&key, random_bytes(100 + size)).await.unwrap();
        expected.insert(key, 100 + size as u64);
    }
    let foreign = ["other/ab/notes.txt", "chunksmith/x", "readme"];
    for key in foreign {
        store.put(key, random_bytes(10)).await.unwrap();
    }
    let after = std::time::SystemTime::now() + Duration::from_secs(3600);

    let pages = list_all(store.as_ref(), "chunks/", 2).await;
    assert!(pages.len() >= 3, "5 objects in pages of 2: {pages:?}");
    assert!(pages.iter().all(|page| page.len() <= 2), "{pages:?}");
    let listed: Vec<_> = pages.into_iter().flatten().collect();
    assert_eq!(listed.len(), 5, "each object exactly once: {listed:?}");
    for object in &listed {
        assert_eq!(expected.get(&object.key), Some(&object.size), "{object:?}");
        assert!(
            object.last_modified > before && object.last_modified < after,
            "{object:?}"
        );
    }

    let everything: HashSet<String> = list_all(store.as_ref(), "", 1000)
        .await
        .into_iter()
        .flatten()
        .map(|object| object.key)
        .collect();
    let mut all_keys: HashSet<String> = expected.keys().cloned().collect();
    all_keys.extend(foreign.iter().map(|key| key.to_string()));
    assert_eq!(everything, all_keys);

    // A consumer that stops after the first page neither hangs nor leaks the walk.
    {
        use futures::StreamExt;
        let mut pages = store.list("", 1);
        assert_eq!(pages.next().await.unwrap().unwrap().len(), 1);
    }
    // Page sizes out of range are clamped, not refused.
    assert_eq!(
        list_all(store.as_ref(), "chunks/", 0).await.len(),
        5,
        "page size 0 lists one object per page"
    );
}

#[tokio::test]
async fn local_listing_meets_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    exercise_listing(Arc::new(LocalStore::open(dir.path().to_owned()).unwrap())).await;
}

#[tokio::test]
async fn s3_listing_meets_the_contract() {
    exercise_listing(s3_store().await).await;
}

/// More objects than S3's largest page: the continuation token is followed to the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_listing_follows_continuation_tokens_past_1000_objects() {
    use futures::StreamExt;
    let store = s3_store().await;
    let keys: Vec<String> = (0..1003).map(|_| chunk_key()).collect();
    futures::stream::iter(keys.clone())
        .for_each_concurrent(16, |key| {
            let store = store.clone();
            async move { store.put(&key, Bytes::from_static(b"x")).await.unwrap() }
        })
        .await;
    let pages = list_all(store.as_ref(), "chunks/", 5000).await;
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![1000, 3],
        "pages of at most 1000"
    );
    let listed: HashSet<String> = pages.into_iter().flatten().map(|o| o.key).collect();
    assert_eq!(listed, keys.into_iter().collect::<HashSet<_>>());
}

/// A hostile or broken server that repeats its continuation token must not keep GC listing the
/// same page forever.
#[tokio::test]
async fn s3_listing_that_does_not_advance_is_unavailable() {
    use futures::StreamExt;
    let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ListBucketResult>\
        <Name>niso-canned</Name><Prefix>chunks/</Prefix><KeyCount>1</KeyCount>\
        <MaxKeys>1000</MaxKeys><IsTruncated>true</IsTruncated>\
        <NextContinuationToken>same</NextContinuationToken>\
        <Contents><Key>chunks/a</Key><Size>1</Size>\
        <LastModified>2026-01-01T00:00:00.000Z</LastModified></Contents></ListBucketResult>";
    let store = canned_s3("200 OK", body).await;
    let (results, _) = within(Duration::from_secs(60), async {
        store
            .list("chunks/", 1000)
            .take(10)
            .collect::<Vec<_>>()
            .await
    })
    .await;
    assert!(results.len() <= 3, "{results:?}");
    let last = results.into_iter().last().expect("at least one page");
    assert_unavailable("list", last.map(|_| ()));
}

#[tokio::test]
async fn local_listing_skips_temp_files_and_removes_them_once_stale() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path().to_owned()).unwrap();
    let key = chunk_key();
    store.put(&key, random_bytes(64)).await.unwrap();
    let shard = dir.path().join(&key[..9]);
    // What a crash between create and rename leaves: `put` writes `.niso-tmp-<16 hex>`.
    let stale = shard.join(".niso-tmp-00112233aabbccdd");
    let fresh = shard.join(".niso-tmp-44556677eeff0011");
    std::fs::write(&stale, b"half a chunk").unwrap();
    std::fs::write(&fresh, b"being written").unwrap();
    let hour = Duration::from_secs(3600);
    set_mtime(&stale, std::time::SystemTime::now() - 2 * hour);
    set_mtime(
        &dir.path().join(&key),
        std::time::SystemTime::now() - 2 * hour,
    );

    let listed: Vec<String> = list_all(&store, "", 10)
        .await
        .into_iter()
        .flatten()
        .map(|object| object.key)
        .collect();
    assert_eq!(listed, vec![key.clone()], "temp files are not objects");

    let removed = store
        .remove_interrupted_writes(std::time::SystemTime::now() - hour)
        .await
        .unwrap();
    assert_eq!(removed.files, 1);
    assert_eq!(removed.bytes, b"half a chunk".len() as u64);
    assert!(!stale.exists(), "the stale temp file is gone");
    assert!(fresh.exists(), "a temp file still being written is kept");
    assert!(
        store.get(&key).await.is_ok(),
        "objects are never debris, however old"
    );
}

#[tokio::test]
async fn listing_refuses_a_prefix_that_escapes_the_root() {
    use futures::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path().join("chunks")).unwrap();
    // validate_key panics in debug builds on keys the registry could never build.
    let outcome = tokio::spawn(async move {
        store
            .list("../", 10)
            .next()
            .await
            .map(|page| page.map(|_| ()))
    })
    .await;
    match outcome {
        Err(join) => assert!(join.is_panic()),
        Ok(result) => assert!(
            matches!(result, Some(Err(StorageError::InvalidKey(_)))),
            "{result:?}"
        ),
    }
}

fn set_mtime(path: &Path, time: std::time::SystemTime) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(time)
        .unwrap();
}
