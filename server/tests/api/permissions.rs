//! The permission matrix (DESIGN.md §5): every endpoint of the API reference against every
//! kind of principal, with the expected status of each cell written out as a table that can
//! be read against the design. A failure lists every cell that differs, not just the first.
//!
//! The principals, all acting on the org namespace `@team` (owned by `owner`):
//! - `anon`: no key;
//! - `root`: a key not linked to a user with `admin:*` (as `niso-server keys create` makes);
//! - `ns-adm`: a key not linked to a user with `admin:@team/*`;
//! - `narrow`: a key linked to the owner with the narrow scope `pull:@team/*` (a CI key);
//! - `owner`, `admin`, `member`: users with that role in `@team`, with their login key;
//! - `outsider`: a user who is not a member of `@team`.
//!
//! Each cell gets its own target where the request changes something (a version to delete,
//! a key to revoke, a member to remove), so the cells do not depend on each other's order.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use niso_test_support::archives::sha256_hex;
use niso_test_support::for_each_backend;
use niso_test_support::{Backend, TestApp, archives};

for_each_backend!(permission_matrix, key_listing_by_principal);

const ARCH: &str = "x86_64-linux";
const PACKAGE: &str = "@team/app";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Anonymous,
    Root,
    NamespaceAdmin,
    Narrow,
    Owner,
    Admin,
    Member,
    Outsider,
}

/// The table's column order.
const COLUMNS: [Who; 8] = [
    Who::Anonymous,
    Who::Root,
    Who::NamespaceAdmin,
    Who::Narrow,
    Who::Owner,
    Who::Admin,
    Who::Member,
    Who::Outsider,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Health,
    OpenApi,
    ListPackages,
    ListVersions,
    Manifest,
    Download,
    DownloadLatest,
    ChunkManifest,
    GetChunk,
    ListTags,
    GetNamespace,
    Register,
    Login,
    Upload,
    DeleteVersion,
    SetTag,
    PutChunk,
    Me,
    UpdateMe,
    CreateKeyInNamespace,
    CreateKeyEverywhere,
    CreateAdminKeyInNamespace,
    ListKeys,
    RevokeUnlinkedAdminStarKey,
    RevokeUnlinkedKey,
    RevokeOwnersKey,
    CreateNamespace,
    AddMember,
    RemoveMember,
}

/// Expected statuses, columns: anon, root (admin:*), ns-adm (admin:@team/*),
/// narrow (owner's pull:@team/*), owner, admin, member, outsider.
#[rustfmt::skip]
const MATRIX: &[(Endpoint, [u16; 8])] = &[
    //                                  anon root ns-adm narrow owner admin member outsider
    // Public reads: a key changes nothing.
    (Endpoint::Health,                 [200, 200, 200, 200, 200, 200, 200, 200]),
    (Endpoint::OpenApi,                [200, 200, 200, 200, 200, 200, 200, 200]),
    (Endpoint::ListPackages,           [200, 200, 200, 200, 200, 200, 200, 200]),
    (Endpoint::ListVersions,           [200, 200, 200, 200, 200, 200, 200, 200]),
    (Endpoint::Manifest,               [200, 200, 200, 200, 200, 200, 200, 200]),
    (Endpoint::Download,               [200, 200, 200, 200, 200, 200, 200, 200]),
    (Endpoint::DownloadLatest,         [200, 200, 200, 200, 200, 200, 200, 200]),
    (Endpoint::ChunkManifest,          [200, 200, 200, 200, 200, 200, 200, 200]),
    (Endpoint::GetChunk,               [200, 200, 200, 200, 200, 200, 200, 200]),
    (Endpoint::ListTags,               [200, 200, 200, 200, 200, 200, 200, 200]),
    (Endpoint::GetNamespace,           [200, 200, 200, 200, 200, 200, 200, 200]),
    (Endpoint::Register,               [201, 201, 201, 201, 201, 201, 201, 201]),
    (Endpoint::Login,                  [200, 200, 200, 200, 200, 200, 200, 200]),
    // Packages: the scope restricts, membership grants (push and tags: any role; delete:
    // admin or owner); unlinked keys by their scope alone.
    (Endpoint::Upload,                 [401, 201, 201, 403, 201, 201, 201, 403]),
    (Endpoint::DeleteVersion,          [401, 204, 204, 403, 204, 204, 403, 403]),
    (Endpoint::SetTag,                 [401, 201, 201, 403, 201, 201, 201, 403]),
    // Chunk upload: admin on every package.
    (Endpoint::PutChunk,               [401, 201, 403, 403, 403, 403, 403, 403]),
    // user-key endpoints: 403 to keys not linked to a user.
    (Endpoint::Me,                     [401, 403, 403, 200, 200, 200, 200, 200]),
    (Endpoint::UpdateMe,               [401, 403, 403, 200, 200, 200, 200, 200]),
    // Keys: the new scope must be covered by the caller's; a user-linked key never mints
    // admin; an unlinked key needs admin to mint at all.
    (Endpoint::CreateKeyInNamespace,   [401, 201, 201, 201, 201, 201, 201, 201]),
    (Endpoint::CreateKeyEverywhere,    [401, 201, 403, 403, 201, 201, 201, 201]),
    (Endpoint::CreateAdminKeyInNamespace, [401, 201, 201, 403, 403, 403, 403, 403]),
    (Endpoint::ListKeys,               [401, 200, 200, 200, 200, 200, 200, 200]),
    // Revoking: only your own keys; among unlinked keys, only admin:* manages the others
    // (issue 11, item 2: the ns-adm column was 204).
    (Endpoint::RevokeUnlinkedAdminStarKey, [401, 204, 404, 404, 404, 404, 404, 404]),
    (Endpoint::RevokeUnlinkedKey,      [401, 204, 404, 404, 404, 404, 404, 404]),
    (Endpoint::RevokeOwnersKey,        [401, 404, 404, 204, 204, 404, 404, 404]),
    // Namespaces: creating one needs a user-linked key; managing members needs an owner or
    // admin whose key grants push and delete on @team/*.
    (Endpoint::CreateNamespace,        [401, 403, 403, 201, 201, 201, 201, 201]),
    (Endpoint::AddMember,              [401, 403, 403, 403, 201, 201, 403, 403]),
    (Endpoint::RemoveMember,           [401, 403, 403, 403, 204, 204, 403, 403]),
];

/// Which keys `GET /v1/auth/keys` shows each principal (by the fixture's key labels).
const KEY_LISTING: &[(Who, &[&str])] = &[
    (
        Who::Root,
        &["root", "ns-adm", "spare-root", "deployer", "other-ns-adm"],
    ),
    (Who::NamespaceAdmin, &["ns-adm"]),
    (Who::Narrow, &["owner", "narrow"]),
    (Who::Owner, &["owner", "narrow"]),
    (Who::Admin, &["admin"]),
    (Who::Member, &["member"]),
    (Who::Outsider, &["outsider"]),
];

struct Fixture {
    app: TestApp,
    /// `(label, key)` of every key the fixture made, in creation order.
    keys: Vec<(&'static str, String)>,
    chunk_hash: String,
}

impl Fixture {
    async fn new(backend: Backend) -> Fixture {
        let app = TestApp::start(backend).await;
        let mut keys: Vec<(&'static str, String)> = Vec::new();
        for (label, username) in [
            ("owner", "owner"),
            ("admin", "boss"),
            ("member", "mate"),
            ("outsider", "stranger"),
            ("guest", "guest"),
        ] {
            keys.push((label, app.register(username).await));
        }
        let fixture_key = |keys: &[(&str, String)], label: &str| -> String {
            keys.iter().find(|(l, _)| *l == label).unwrap().1.clone()
        };
        let owner = fixture_key(&keys, "owner");
        let (status, body) = app
            .post("/v1/namespaces", Some(&owner), json!({ "name": "@team" }))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        for (username, role) in [("boss", "admin"), ("mate", "member")] {
            let (status, body) = app
                .post(
                    "/v1/namespaces/@team/members",
                    Some(&owner),
                    json!({ "username": username, "role": role }),
                )
                .await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
        }
        let (status, body) = app
            .post(
                "/v1/auth/keys",
                Some(&owner),
                json!({ "name": "narrow", "scope": "pull:@team/*" }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        keys.push(("narrow", body["key"].as_str().unwrap().to_owned()));
        for (label, scope) in [
            ("root", "admin:*"),
            ("ns-adm", "admin:@team/*"),
            ("spare-root", "admin:*"),
            ("deployer", "pull:*"),
            ("other-ns-adm", "admin:@other/*"),
        ] {
            keys.push((label, app.system_key(None, label, scope).await.1));
        }
        let root = fixture_key(&keys, "root");
        app.publish(&root, PACKAGE, "1.0.0", ARCH).await;
        let (status, manifest) = app
            .get(&format!("/v1/packages/{PACKAGE}/1.0.0/{ARCH}/chunks"))
            .await;
        assert_eq!(status, StatusCode::OK, "{manifest}");
        let chunk_hash = manifest["chunks"][0]["hash"].as_str().unwrap().to_owned();
        Fixture {
            app,
            keys,
            chunk_hash,
        }
    }

    fn key_of(&self, label: &str) -> &str {
        &self
            .keys
            .iter()
            .find(|(l, _)| *l == label)
            .unwrap_or_else(|| panic!("no key {label}"))
            .1
    }

    fn key(&self, who: Who) -> Option<&str> {
        let label = match who {
            Who::Anonymous => return None,
            Who::Root => "root",
            Who::NamespaceAdmin => "ns-adm",
            Who::Narrow => "narrow",
            Who::Owner => "owner",
            Who::Admin => "admin",
            Who::Member => "member",
            Who::Outsider => "outsider",
        };
        Some(self.key_of(label))
    }

    /// Makes `guest` a member of `@team` (`true`) or not (`false`), through the owner.
    async fn guest_membership(&self, member: bool) {
        let owner = self.key_of("owner");
        let (status, body) = if member {
            self.app
                .post(
                    "/v1/namespaces/@team/members",
                    Some(owner),
                    json!({ "username": "guest", "role": "member" }),
                )
                .await
        } else {
            self.app
                .delete("/v1/namespaces/@team/members/guest", Some(owner))
                .await
        };
        assert!(
            matches!(status.as_u16(), 201 | 204 | 404 | 409),
            "guest membership {member}: {status} {body}"
        );
    }

    /// Runs one cell: `who` calls `endpoint` (column `column` gives per-cell names).
    async fn call(&self, endpoint: Endpoint, who: Who, column: usize) -> (StatusCode, Value) {
        let app = &self.app;
        let key = self.key(who);
        let send = |method: Method, path: String, body: Option<Value>| async move {
            app.send(method, &path, key, body).await
        };
        let get = |path: String| send(Method::GET, path, None);
        match endpoint {
            Endpoint::Health => get("/health".into()).await,
            Endpoint::OpenApi => get("/v1/openapi.json".into()).await,
            Endpoint::ListPackages => get("/v1/packages?q=app".into()).await,
            Endpoint::ListVersions => get(format!("/v1/packages/{PACKAGE}/versions")).await,
            Endpoint::Manifest => get(format!("/v1/packages/{PACKAGE}/1.0.0/manifest")).await,
            Endpoint::Download => get(format!("/v1/packages/{PACKAGE}/1.0.0/{ARCH}")).await,
            Endpoint::DownloadLatest => get(format!("/v1/packages/{PACKAGE}/latest/{ARCH}")).await,
            Endpoint::ChunkManifest => {
                get(format!("/v1/packages/{PACKAGE}/1.0.0/{ARCH}/chunks")).await
            }
            Endpoint::GetChunk => get(format!("/v1/chunks/{}", self.chunk_hash)).await,
            Endpoint::ListTags => get(format!("/v1/packages/{PACKAGE}/tags")).await,
            Endpoint::GetNamespace => get("/v1/namespaces/@team".into()).await,
            Endpoint::Register => {
                let username = format!("newcomer-{column}");
                send(
                    Method::POST,
                    "/v1/auth/register".into(),
                    Some(json!({
                        "username": username,
                        "email": format!("{username}@example.com"),
                        "password": "a long enough password",
                    })),
                )
                .await
            }
            Endpoint::Login => {
                send(
                    Method::POST,
                    "/v1/auth/login".into(),
                    Some(json!({ "username": "guest", "password": "password-of-guest" })),
                )
                .await
            }
            Endpoint::Upload => {
                let version = format!("1.1.{column}");
                let archive = archives::niso(PACKAGE, &version, &[("bin/tool", b"tool")]);
                app.send_bytes(
                    Method::PUT,
                    &format!("/v1/packages/{PACKAGE}/{version}/{ARCH}"),
                    key,
                    archive,
                )
                .await
            }
            Endpoint::DeleteVersion => {
                let version = format!("2.0.{column}");
                app.publish(self.key_of("root"), PACKAGE, &version, ARCH)
                    .await;
                send(
                    Method::DELETE,
                    format!("/v1/packages/{PACKAGE}/{version}/{ARCH}"),
                    None,
                )
                .await
            }
            Endpoint::SetTag => {
                send(
                    Method::POST,
                    format!("/v1/packages/{PACKAGE}/tags"),
                    Some(json!({ "tag": format!("tag-{column}"), "version": "1.0.0" })),
                )
                .await
            }
            Endpoint::PutChunk => {
                let chunk = format!("a chunk uploaded by column {column}").into_bytes();
                let hash = sha256_hex(&chunk);
                app.send_bytes(Method::PUT, &format!("/v1/chunks/{hash}"), key, chunk)
                    .await
            }
            Endpoint::Me => get("/v1/auth/me".into()).await,
            Endpoint::UpdateMe => {
                send(
                    Method::PATCH,
                    "/v1/auth/me".into(),
                    Some(json!({ "display_name": format!("Column {column}") })),
                )
                .await
            }
            Endpoint::CreateKeyInNamespace => create_key(&send, "pull:@team/*").await,
            Endpoint::CreateKeyEverywhere => create_key(&send, "pull:*").await,
            Endpoint::CreateAdminKeyInNamespace => create_key(&send, "admin:@team/*").await,
            Endpoint::ListKeys => get("/v1/auth/keys".into()).await,
            Endpoint::RevokeUnlinkedAdminStarKey => {
                let (id, _) = app.system_key(None, "victim", "admin:*").await;
                send(Method::DELETE, format!("/v1/auth/keys/{id}"), None).await
            }
            Endpoint::RevokeUnlinkedKey => {
                let (id, _) = app.system_key(None, "victim", "pull:@team/*").await;
                send(Method::DELETE, format!("/v1/auth/keys/{id}"), None).await
            }
            Endpoint::RevokeOwnersKey => {
                let (id, _) = app.system_key(Some("owner"), "victim", "pull:*").await;
                send(Method::DELETE, format!("/v1/auth/keys/{id}"), None).await
            }
            Endpoint::CreateNamespace => {
                send(
                    Method::POST,
                    "/v1/namespaces".into(),
                    Some(json!({ "name": format!("@org-{column}") })),
                )
                .await
            }
            Endpoint::AddMember => {
                self.guest_membership(false).await;
                send(
                    Method::POST,
                    "/v1/namespaces/@team/members".into(),
                    Some(json!({ "username": "guest", "role": "member" })),
                )
                .await
            }
            Endpoint::RemoveMember => {
                self.guest_membership(true).await;
                send(
                    Method::DELETE,
                    "/v1/namespaces/@team/members/guest".into(),
                    None,
                )
                .await
            }
        }
    }
}

async fn create_key<F, Fut>(send: F, scope: &str) -> (StatusCode, Value)
where
    F: Fn(Method, String, Option<Value>) -> Fut,
    Fut: std::future::Future<Output = (StatusCode, Value)>,
{
    send(
        Method::POST,
        "/v1/auth/keys".into(),
        Some(json!({ "name": "minted", "scope": scope })),
    )
    .await
}

async fn permission_matrix(backend: Backend) {
    let fixture = Fixture::new(backend).await;
    let mut differences: Vec<String> = Vec::new();
    for (endpoint, expected) in MATRIX {
        for (column, who) in COLUMNS.iter().enumerate() {
            let (status, body) = fixture.call(*endpoint, *who, column).await;
            let want = expected[column];
            if status.as_u16() != want {
                differences.push(format!(
                    "{endpoint:?} as {who:?}: expected {want}, got {} ({body})",
                    status.as_u16()
                ));
            } else if status.is_client_error() {
                // Refusals carry the error shape of DESIGN.md §6.
                let message = body["error"].as_str().unwrap_or_default();
                if message.is_empty() {
                    differences.push(format!(
                        "{endpoint:?} as {who:?}: {want} without an error message: {body}"
                    ));
                }
            }
        }
    }
    assert!(
        differences.is_empty(),
        "{} cells differ from the matrix:\n{}",
        differences.len(),
        differences.join("\n")
    );
}

async fn key_listing_by_principal(backend: Backend) {
    let fixture = Fixture::new(backend).await;
    // A key is recognised by its display prefix (the listing never shows the value).
    let label_of = |prefix: &str| -> &str {
        fixture
            .keys
            .iter()
            .find(|(_, key)| key.starts_with(prefix))
            .map_or("<unknown>", |(label, _)| label)
    };
    let mut differences: Vec<String> = Vec::new();
    for (who, expected) in KEY_LISTING {
        let (status, body) = fixture
            .app
            .send(Method::GET, "/v1/auth/keys", fixture.key(*who), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{who:?}: {body}");
        let mut seen: Vec<&str> = body
            .as_array()
            .expect("array")
            .iter()
            .map(|key| label_of(key["prefix"].as_str().expect("prefix")))
            .collect();
        seen.sort_unstable();
        let mut want: Vec<&str> = expected.to_vec();
        want.sort_unstable();
        if seen != want {
            differences.push(format!("{who:?} sees {seen:?}, expected {want:?}"));
        }
    }
    assert!(differences.is_empty(), "{}", differences.join("\n"));
}
