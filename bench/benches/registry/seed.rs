//! Fast seeding of large registries straight into the database: one `INSERT … SELECT` per
//! table over a generated series (`generate_series` on PostgreSQL, a recursive CTE on SQLite),
//! so 100,000 packages or 1,000,000 chunk rows take seconds, not the minutes row-by-row inserts
//! through the ORM took. Only the existing tables are filled (namespaces are made through the
//! API by registering a user; here: packages, package_versions, chunks, version_chunks), so
//! the seed keeps working whatever indexes or side tables GC and search add around them.

use std::time::Duration;

use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement, Value,
};

use crate::env_value;

/// Chunk rows per seeded version in the GC store; the last position of every hundred is left
/// unreferenced, which makes exactly 1% of the rows garbage.
const CHUNKS_PER_VERSION: i64 = 100;
/// Stored size of every seeded chunk (and of the objects made for the garbage ones).
pub const CHUNK_SIZE: i64 = 4096;

/// The server's database, from its environment (PostgreSQL URL, or the embedded SQLite file).
pub async fn connect(env: &[(String, String)]) -> DatabaseConnection {
    let url = env
        .iter()
        .find(|(name, _)| name == "NISO_DATABASE_URL")
        .map(|(_, url)| url.clone())
        .unwrap_or_else(|| {
            format!(
                "sqlite://{}/niso.db?mode=rwc",
                env_value(env, "NISO_DATA_DIR")
            )
        });
    let mut options = ConnectOptions::new(url);
    // No statement timeout (the server's pool has one of 60 s): a million-row insert may
    // legitimately take longer on a busy machine.
    options.max_connections(1).sqlx_logging(false);
    options.map_sqlx_sqlite_opts(|opts| {
        opts.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(60))
            .foreign_keys(true)
    });
    Database::connect(options)
        .await
        .expect("connect to the database")
}

/// Placeholder `n` (1-based) in the backend's syntax; SQLite's `?N` keeps repeated uses of one
/// value bound once.
fn parameter(backend: DbBackend, n: usize) -> String {
    match backend {
        DbBackend::Postgres => format!("${n}"),
        _ => format!("?{n}"),
    }
}

/// `(prefix, source)` that make rows `s` = `from`..=`to` (two integer parameters): the source
/// goes in FROM, the prefix (SQLite's CTE) before the INSERT.
fn series(backend: DbBackend, from: usize, to: usize) -> (String, String) {
    let (from, to) = (parameter(backend, from), parameter(backend, to));
    match backend {
        DbBackend::Postgres => (
            String::new(),
            format!("generate_series(CAST({from} AS BIGINT), CAST({to} AS BIGINT)) AS seq(s)"),
        ),
        _ => (
            format!(
                "WITH RECURSIVE seq(s) AS (SELECT {from} UNION ALL SELECT s + 1 FROM seq WHERE s < {to}) "
            ),
            "seq".to_owned(),
        ),
    }
}

/// `s` as decimal text zero-padded to `width`.
fn padded_decimal(backend: DbBackend, width: usize) -> String {
    match backend {
        DbBackend::Postgres => format!("lpad(CAST(s AS TEXT), {width}, '0')"),
        _ => format!("printf('%0{width}d', s)"),
    }
}

/// `s` as lowercase hex zero-padded to `width`; `modulo` first reduces it.
fn padded_hex(backend: DbBackend, width: usize, modulo: Option<i64>) -> String {
    let value = match modulo {
        Some(m) => format!("(s % {m})"),
        None => "s".to_owned(),
    };
    match backend {
        DbBackend::Postgres => format!("lpad(to_hex({value}), {width}, '0')"),
        _ => format!("printf('%0{width}x', {value})"),
    }
}

async fn execute(db: &DatabaseConnection, sql: String, values: Vec<Value>) -> u64 {
    db.execute_raw(Statement::from_sql_and_values(
        db.get_database_backend(),
        &sql,
        values,
    ))
    .await
    .unwrap_or_else(|error| panic!("{error}\n{sql}"))
    .rows_affected()
}

async fn query_i64(db: &DatabaseConnection, sql: &str, values: Vec<Value>) -> Option<i64> {
    db.query_one_raw(Statement::from_sql_and_values(
        db.get_database_backend(),
        sql,
        values,
    ))
    .await
    .unwrap_or_else(|error| panic!("{error}\n{sql}"))
    .map(|row| row.try_get_by_index::<i64>(0).expect("integer"))
}

async fn namespace_id(db: &DatabaseConnection, name: &str) -> i64 {
    let sql = format!(
        "SELECT id FROM namespaces WHERE name = {}",
        parameter(db.get_database_backend(), 1)
    );
    query_i64(db, &sql, vec![name.into()])
        .await
        .unwrap_or_else(|| panic!("namespace {name} (register its user first)"))
}

/// Packages `@bench/{stem}-{s}` for `s` in `from..to` (decimal, `width` digits), each with
/// versions 1.0.0–1.0.4 for x86_64-linux copying size, checksum and manifest of version
/// `template` (whose chunk list they also share when `share_chunks`).
async fn packages_with_versions(
    db: &DatabaseConnection,
    stem: &str,
    width: usize,
    range: std::ops::Range<usize>,
    template: Template,
) {
    let backend = db.get_database_backend();
    let now = chrono::Utc::now().naive_utc();
    let namespace = namespace_id(db, "@bench").await;
    let (prefix, source) = series(backend, 3, 4);
    let name = padded_decimal(backend, width);
    execute(
        db,
        format!(
            "{prefix}INSERT INTO packages \
             (namespace_id, name, latest_version, description, updated_at, download_count, created_at) \
             SELECT {p1}, '@bench/{stem}-' || {name}, '1.0.4', 'benchmark package ' || CAST(s AS TEXT), \
             {p2}, 0, {p2} FROM {source}",
            p1 = parameter(backend, 1),
            p2 = parameter(backend, 2),
        ),
        vec![
            namespace.into(),
            now.into(),
            (range.start as i64).into(),
            (range.end as i64 - 1).into(),
        ],
    )
    .await;
    let p = |n| parameter(backend, n);
    let mut values: Vec<Value> = vec![now.into(), format!("@bench/{stem}-%").into()];
    let copied = match &template {
        Template::Version(id) => {
            values.push((*id).into());
            format!(
                "(SELECT size FROM package_versions WHERE id = {p3}), \
                 (SELECT checksum FROM package_versions WHERE id = {p3}), \
                 (SELECT manifest FROM package_versions WHERE id = {p3})",
                p3 = p(3)
            )
        }
        Template::Synthetic => {
            values.push(format!("sha256:{}", "0".repeat(64)).into());
            values.push("[package]\nname = \"@bench/gc\"\nversion = \"1.0.0\"\n".into());
            format!("{}, {}, {}", CHUNKS_PER_VERSION * CHUNK_SIZE, p(3), p(4))
        }
    };
    // The new packages are those without versions yet, so seeding can grow a registry in steps.
    execute(
        db,
        format!(
            "INSERT INTO package_versions \
             (package_id, version, arch, size, checksum, manifest, description, license, uploaded_at, download_count) \
             SELECT p.id, '1.0.' || CAST(minor.m AS TEXT), 'x86_64-linux', {copied}, NULL, NULL, {p1}, 0 \
             FROM packages p \
             CROSS JOIN (SELECT 0 AS m UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4) AS minor \
             WHERE p.name LIKE {p2} \
             AND NOT EXISTS (SELECT 1 FROM package_versions x WHERE x.package_id = p.id)",
            p1 = p(1),
            p2 = p(2),
        ),
        values,
    )
    .await;
    if let Template::Version(id) = template {
        execute(
            db,
            format!(
                "INSERT INTO version_chunks (version_id, position, chunk_id, byte_offset, size) \
                 SELECT v.id, t.position, t.chunk_id, t.byte_offset, t.size \
                 FROM package_versions v \
                 JOIN packages p ON p.id = v.package_id \
                 CROSS JOIN version_chunks t \
                 WHERE t.version_id = {p1} AND p.name LIKE {p2} \
                 AND NOT EXISTS (SELECT 1 FROM version_chunks x WHERE x.version_id = v.id)",
                p1 = p(1),
                p2 = p(2),
            ),
            vec![id.into(), format!("@bench/{stem}-%").into()],
        )
        .await;
    }
}

enum Template {
    /// Copy this version (and share its chunk list).
    Version(i64),
    /// Made-up metadata; the chunk lists are filled separately.
    Synthetic,
}

/// Grows the registry to packages `@bench/pkg-000000` … `@bench/pkg-{to - 1}` (`from` are there
/// already), 5 versions each, all sharing the chunk list of `@bench/seed` 1.0.0 so every one
/// downloads.
pub async fn packages(db: &DatabaseConnection, from: usize, to: usize) {
    let backend = db.get_database_backend();
    let seed = query_i64(
        db,
        &format!(
            "SELECT v.id FROM package_versions v JOIN packages p ON p.id = v.package_id \
             WHERE p.name = {}",
            parameter(backend, 1)
        ),
        vec!["@bench/seed".into()],
    )
    .await
    .expect("@bench/seed is published first");
    packages_with_versions(db, "pkg", 6, from..to, Template::Version(seed)).await;
}

/// A store of `rows` chunk rows, all older than any grace period, of which every hundredth
/// (by id) is referenced by no version: the garbage. The others are referenced from the chunk
/// lists of seeded versions of `@bench/gc-…` packages, 99 chunks per version. Returns the
/// object keys of the garbage rows.
pub async fn chunk_store(db: &DatabaseConnection, rows: usize) -> Vec<String> {
    let backend = db.get_database_backend();
    let versions = rows.div_ceil(CHUNKS_PER_VERSION as usize);
    let packages = versions.div_ceil(5);
    packages_with_versions(db, "gc", 7, 0..packages, Template::Synthetic).await;
    let (prefix, source) = series(backend, 2, 3);
    // Hash: a 2-hex shard from s spreads objects over directories like real hashes do, then s
    // in hex; unique, 64 lowercase hex, and a key of exactly the registry's shape.
    let hash = format!(
        "{} || {}",
        padded_hex(backend, 2, Some(256)),
        padded_hex(backend, 62, None)
    );
    let shard = padded_hex(backend, 2, Some(256));
    let suffix = padded_hex(backend, 16, None);
    let day_ago = chrono::Utc::now().naive_utc() - chrono::Duration::days(1);
    execute(
        db,
        format!(
            "{prefix}INSERT INTO chunks \
             (hash, object_key, size, stored_size, compression, state, lease_version, created_at) \
             SELECT {hash}, 'chunks/' || {shard} || '/' || {hash} || '-' || {suffix}, \
             {CHUNK_SIZE}, {CHUNK_SIZE}, 'none', 'live', 0, {p1} FROM {source}",
            p1 = parameter(backend, 1),
        ),
        vec![day_ago.into(), 0i64.into(), (rows as i64 - 1).into()],
    )
    .await;
    // Rank chunks and versions, then give version n the chunks ranked 100n … 100n + 99, and
    // delete every hundredth reference again: garbage arises the way a deleted version makes
    // it, so the deletion triggers put it in GC's candidate queue.
    execute(
        db,
        format!(
            "INSERT INTO version_chunks (version_id, position, chunk_id, byte_offset, size) \
             SELECT v.id, CAST(c.r % {CHUNKS_PER_VERSION} AS INTEGER), c.id, \
             (c.r % {CHUNKS_PER_VERSION}) * {CHUNK_SIZE}, {CHUNK_SIZE} \
             FROM (SELECT id, row_number() OVER (ORDER BY id) - 1 AS r FROM chunks) AS c \
             JOIN (SELECT pv.id, row_number() OVER (ORDER BY pv.id) - 1 AS n \
                   FROM package_versions pv JOIN packages p ON p.id = pv.package_id \
                   WHERE p.name LIKE {p1}) AS v \
             ON v.n = c.r / {CHUNKS_PER_VERSION}",
            p1 = parameter(backend, 1),
        ),
        vec!["@bench/gc-%".into()],
    )
    .await;
    execute(
        db,
        format!(
            "DELETE FROM version_chunks WHERE position = {CHUNKS_PER_VERSION} - 1 \
             AND version_id IN (SELECT pv.id FROM package_versions pv \
             JOIN packages p ON p.id = pv.package_id WHERE p.name LIKE {p1})",
            p1 = parameter(backend, 1),
        ),
        vec!["@bench/gc-%".into()],
    )
    .await;
    let garbage: Vec<String> = db
        .query_all_raw(Statement::from_string(
            backend,
            "SELECT object_key FROM chunks WHERE NOT EXISTS \
             (SELECT 1 FROM version_chunks WHERE version_chunks.chunk_id = chunks.id)",
        ))
        .await
        .expect("garbage keys")
        .into_iter()
        .map(|row| row.try_get_by_index::<String>(0).expect("object key"))
        .collect();
    assert_eq!(
        garbage.len(),
        rows / 100,
        "1% of the chunk rows are garbage"
    );
    garbage
}
