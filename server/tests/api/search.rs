//! `GET /v1/packages?q=` on its index (trigrams: pg_trgm on PostgreSQL, FTS5 on SQLite): the
//! same answers as the plain `LIKE` scan it replaced — substrings of the name, ignoring case,
//! wildcards literal, queries too short for a trigram, name order and pages — and an index that
//! follows uploads, deletes and package removal, and is filled from packages that existed
//! before it.

use std::sync::Arc;

use migration::{Migrator, MigratorTrait};
use reqwest::StatusCode;
use sea_orm::ConnectionTrait;
use serde_json::Value;

use niso_test_support::for_each_backend;
use niso_test_support::postgres::TestPostgres;
use niso_test_support::{Backend, Storage, TestApp, test_authority, test_settings};

for_each_backend!(
    search_matches_substrings_ignoring_case_with_wildcards_literal,
    short_queries_match_like_longer_ones,
    search_pages_in_name_order,
    search_follows_uploads_deletes_and_package_removal,
    the_index_is_filled_from_packages_that_existed_before_it,
);

const ARCH: &str = "x86_64-linux";

/// The names `?q=query` returns, in the order returned.
async fn search(app: &TestApp, query: &str, page: &str) -> Vec<String> {
    let encoded: String = query.bytes().map(|b| format!("%{b:02X}")).collect();
    let (status, list) = app.get(&format!("/v1/packages?q={encoded}{page}")).await;
    assert_eq!(status, StatusCode::OK, "q={query:?}: {list}");
    list.as_array()
        .unwrap_or_else(|| panic!("q={query:?}: {list}"))
        .iter()
        .map(|package| package["name"].as_str().unwrap().to_owned())
        .collect()
}

/// Checks each query's answer as a set (the order is the database's collation of names;
/// `search_pages_in_name_order` checks paging through it).
async fn assert_searches(app: &TestApp, cases: &[(&str, &[&str])]) {
    for (query, expected) in cases {
        let mut found = search(app, query, "").await;
        found.sort();
        assert_eq!(found, *expected, "q={query:?}");
    }
}

/// On SQLite, the FTS5 index must hold exactly the rows of `packages` (`integrity-check` with
/// rank 1 compares an external-content index with its table). PostgreSQL keeps its own GIN
/// index; there the searches themselves are the check.
async fn assert_index_in_sync(app: &TestApp) {
    let db = app.registry.database();
    if db.get_database_backend() == sea_orm::DbBackend::Sqlite {
        db.execute_unprepared(
            "INSERT INTO package_search (package_search, rank) VALUES ('integrity-check', 1)",
        )
        .await
        .expect("the search index matches the packages table");
    }
}

async fn search_matches_substrings_ignoring_case_with_wildcards_literal(backend: Backend) {
    let app = TestApp::start(backend).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    for name in [
        "@alice/my-app",
        "@alice/my_app",
        "@alice/myxapp",
        "@alice/other",
    ] {
        app.publish(&alice, name, "1.0.0", ARCH).await;
    }
    for name in ["@bob/app.tools", "@bob/tool"] {
        app.publish(&bob, name, "1.0.0", ARCH).await;
    }
    assert_searches(
        &app,
        &[
            (
                "app",
                &[
                    "@alice/my-app",
                    "@alice/my_app",
                    "@alice/myxapp",
                    "@bob/app.tools",
                ],
            ),
            (
                "APP",
                &[
                    "@alice/my-app",
                    "@alice/my_app",
                    "@alice/myxapp",
                    "@bob/app.tools",
                ],
            ),
            ("My_App", &["@alice/my_app"]),
            ("y_a", &["@alice/my_app"]),
            ("my-app", &["@alice/my-app"]),
            ("p.t", &["@bob/app.tools"]),
            ("@bob/", &["@bob/app.tools", "@bob/tool"]),
            ("bob/tool", &["@bob/tool"]),
            ("@alice/other", &["@alice/other"]),
            // The whole name and more is no substring.
            ("@alice/otherx", &[]),
            // Wildcards and escapes match only themselves, which no name contains.
            ("%", &[]),
            ("my%app", &[]),
            ("\\", &[]),
            ("my\\_app", &[]),
            ("app%", &[]),
            // Not in any name's alphabet, so nothing, without an error.
            ("\"app\"", &[]),
            ("app*", &[]),
            ("é", &[]),
            ("a b c", &[]),
            ("nothing-matches", &[]),
        ],
    )
    .await;
    // Surrounding spaces are ignored, and an empty query lists everything.
    assert_eq!(search(&app, "  other ", "").await, ["@alice/other"]);
    assert_eq!(search(&app, "   ", "").await.len(), 6);
}

async fn short_queries_match_like_longer_ones(backend: Backend) {
    let app = TestApp::start(backend).await;
    let alice = app.register("alice").await;
    for name in ["@alice/a_b", "@alice/ab", "@alice/xyz", "@alice/q9"] {
        app.publish(&alice, name, "1.0.0", ARCH).await;
    }
    assert_searches(
        &app,
        &[
            ("_", &["@alice/a_b"]),
            ("a_", &["@alice/a_b"]),
            ("ab", &["@alice/ab"]),
            ("AB", &["@alice/ab"]),
            ("9", &["@alice/q9"]),
            ("q9", &["@alice/q9"]),
            ("yz", &["@alice/xyz"]),
            ("b", &["@alice/a_b", "@alice/ab"]),
            ("zz", &[]),
            ("%", &[]),
            ("%_", &[]),
        ],
    )
    .await;
    // Every name has `@` and `/`: a short query can match them all, page by page.
    let all = search(&app, "/", "").await;
    assert_eq!(all.len(), 4, "{all:?}");
    assert_eq!(search(&app, "/", "&limit=2&offset=1").await, all[1..3]);
    assert_eq!(search(&app, "@", "&limit=3&offset=3").await, all[3..]);
}

async fn search_pages_in_name_order(backend: Backend) {
    let app = TestApp::start(backend).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    // Published out of order, in two namespaces, with non-matching names in between.
    let mut expected = Vec::new();
    for index in [7, 2, 11, 0, 5, 9, 1, 10, 3, 8, 6, 4] {
        let (key, owner) = if index % 2 == 0 {
            (&alice, "alice")
        } else {
            (&bob, "bob")
        };
        let name = format!("@{owner}/tool-{index:02}");
        app.publish(key, &name, "1.0.0", ARCH).await;
        app.publish(key, &format!("@{owner}/other-{index:02}"), "1.0.0", ARCH)
            .await;
        expected.push(name);
    }
    expected.sort();
    // One page holds them all, in name order (ASCII order here: these names sort the same in
    // any collation).
    let all = search(&app, "tool-", "").await;
    assert_eq!(all, expected);
    let mut paged = Vec::new();
    for offset in (0..14).step_by(5) {
        let page = search(&app, "tool-", &format!("&limit=5&offset={offset}")).await;
        assert!(page.len() <= 5, "{page:?}");
        paged.extend(page);
    }
    assert_eq!(paged, expected);
    assert_eq!(
        search(&app, "TOOL-1", "").await,
        ["@alice/tool-10", "@bob/tool-11"]
    );
    assert!(
        search(&app, "tool-", "&offset=12").await.is_empty(),
        "a page past the end is empty"
    );
}

async fn search_follows_uploads_deletes_and_package_removal(backend: Backend) {
    let app = TestApp::start(backend).await;
    let alice = app.register("alice").await;
    let (status, body) = app
        .post(
            "/v1/namespaces",
            Some(&alice),
            serde_json::json!({ "name": "@team" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert!(search(&app, "widget", "").await.is_empty());

    // An upload makes it findable.
    app.publish(&alice, "@team/widget", "1.0.0", ARCH).await;
    app.publish(&alice, "@team/widget", "1.1.0", ARCH).await;
    let (_, list) = app.get("/v1/packages?q=widget").await;
    assert_eq!(names(&list), ["@team/widget"]);
    assert_eq!(list[0]["latest_version"], "1.1.0");
    assert_index_in_sync(&app).await;

    // Deleting one version keeps it, with the summary moved back.
    let (status, _) = app
        .delete(
            &format!("/v1/packages/@team/widget/1.1.0/{ARCH}"),
            Some(&alice),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, list) = app.get("/v1/packages?q=widget").await;
    assert_eq!(names(&list), ["@team/widget"]);
    assert_eq!(list[0]["latest_version"], "1.0.0");

    // Deleting the last version hides it (the package row stays, version-less).
    let (status, _) = app
        .delete(
            &format!("/v1/packages/@team/widget/1.0.0/{ARCH}"),
            Some(&alice),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(search(&app, "widget", "").await.is_empty());
    assert!(search(&app, "wi", "").await.is_empty());
    assert_index_in_sync(&app).await;

    // Removing the namespace removes the version-less package row.
    app.registry
        .claim_namespace(&test_authority(), "@team", "uid-team", true)
        .await
        .expect("claim @team");
    assert!(
        app.registry
            .delete_empty_namespace(&test_authority(), "@team", "uid-team")
            .await
            .expect("delete @team")
    );
    assert!(search(&app, "widget", "").await.is_empty());
    assert_index_in_sync(&app).await;

    // A new package of the same name (a new row) is found once, with its own summary.
    let (status, body) = app
        .post(
            "/v1/namespaces",
            Some(&alice),
            serde_json::json!({ "name": "@team" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    app.publish(&alice, "@team/widget", "2.0.0", ARCH).await;
    let (_, list) = app.get("/v1/packages?q=team/wid").await;
    assert_eq!(names(&list), ["@team/widget"]);
    assert_eq!(list[0]["latest_version"], "2.0.0");
    assert_index_in_sync(&app).await;
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .unwrap_or_else(|| panic!("{list}"))
        .iter()
        .map(|package| package["name"].as_str().unwrap())
        .collect()
}

async fn the_index_is_filled_from_packages_that_existed_before_it(backend: Backend) {
    let storage = Arc::new(Storage::new(backend).await);
    // The schema as it was before the index, with packages in it.
    let db = niso_registry::db::connect(&storage.database_url, 2)
        .await
        .expect("connect");
    let before_index = Migrator::migrations()
        .iter()
        .position(|migration| migration.name() == "m20261130_000005_package_search")
        .expect("the search index migration");
    Migrator::up(&db, Some(before_index as u32))
        .await
        .expect("migrate up to the index");
    for statement in [
        "INSERT INTO users (id, username, email, password_hash, verified, created_at) \
         VALUES (1, 'old', 'old@example.com', 'x', true, '2026-01-01 00:00:00')",
        "INSERT INTO namespaces (id, name, ns_type, owner_id, managed, created_at) \
         VALUES (1, '@old', 'user', 1, false, '2026-01-01 00:00:00')",
        "INSERT INTO packages (namespace_id, name, latest_version, description, updated_at, \
         download_count, created_at) VALUES \
         (1, '@old/legacy-tool', '1.0.0', NULL, '2026-01-01 00:00:00', 0, '2026-01-01 00:00:00'), \
         (1, '@old/other', '1.0.0', NULL, '2026-01-01 00:00:00', 0, '2026-01-01 00:00:00')",
    ] {
        db.execute_unprepared(statement)
            .await
            .unwrap_or_else(|error| panic!("{statement}: {error}"));
    }
    drop(db);

    // Starting the registry applies the index migration.
    let app = TestApp::on_storage(storage, test_settings()).await;
    assert_eq!(search(&app, "legacy", "").await, ["@old/legacy-tool"]);
    assert_eq!(
        search(&app, "OLD/", "").await,
        ["@old/legacy-tool", "@old/other"]
    );
    assert_index_in_sync(&app).await;
}

/// A role that may create tables but not extensions (no CREATE on the database) cannot create
/// pg_trgm: migrating fails, naming the extension and what to run, and nothing is left half
/// done. Once the owner has created the extension, the same role migrates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_migration_without_the_right_to_create_pg_trgm_says_what_to_run() {
    let database_url = TestPostgres::get().fresh_database().await;
    let owner = niso_registry::db::connect(&database_url, 1)
        .await
        .expect("connect as the owner");
    let role = format!("restricted_{:08x}", rand::random::<u32>());
    for statement in [
        format!("CREATE ROLE {role} LOGIN PASSWORD 'restricted'"),
        format!("GRANT CREATE, USAGE ON SCHEMA public TO {role}"),
    ] {
        owner
            .execute_unprepared(&statement)
            .await
            .expect(&statement);
    }
    let (scheme, rest) = database_url.split_once("://").expect("a URL");
    let host_and_database = rest.rsplit_once('@').map_or(rest, |(_, after)| after);
    let restricted_url = format!("{scheme}://{role}:restricted@{host_and_database}");
    let restricted = niso_registry::db::connect(&restricted_url, 1)
        .await
        .expect("connect as the restricted role");

    let error = niso_registry::db::migrate(&restricted)
        .await
        .expect_err("pg_trgm cannot be created by this role")
        .to_string();
    assert!(error.contains("pg_trgm"), "{error}");
    assert!(error.contains("CREATE EXTENSION pg_trgm"), "{error}");
    assert!(error.contains("permission denied"), "{error}");
    // The migrations share one transaction: no table was left behind.
    let tables = owner
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'",
        ))
        .await
        .expect("count tables")
        .expect("a row")
        .try_get_by_index::<i64>(0)
        .expect("a count");
    assert_eq!(tables, 0);

    owner
        .execute_unprepared("CREATE EXTENSION pg_trgm")
        .await
        .expect("the owner creates pg_trgm");
    niso_registry::db::migrate(&restricted)
        .await
        .expect("with pg_trgm present the restricted role migrates");
}
