//! `/v1/namespaces/*`: org creation, metadata, member management and what membership grants
//! (push for any role, delete for admins and owners).

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use niso_test_support::for_each_backend;
use niso_test_support::{Backend, TestApp, assert_error, assert_timestamp};

for_each_backend!(
    create_org_returns_the_namespace,
    create_org_rejects_bad_input,
    create_org_rejects_taken_names,
    unknown_namespace_is_not_found,
    members_are_added_and_removed,
    member_management_needs_owner_or_admin,
    member_management_needs_a_wide_enough_key,
    member_changes_reject_bad_requests,
    user_namespaces_have_no_members,
    membership_grants_push,
    delete_needs_admin_or_owner,
    managed_namespaces_refuse_member_changes,
    concurrent_creation_of_one_org,
);

const ARCH: &str = "x86_64-linux";

/// Registers `username`; returns `(user id, key)`.
async fn user(app: &TestApp, username: &str) -> (i64, String) {
    let key = app.register(username).await;
    let (status, profile) = app.send(Method::GET, "/v1/auth/me", Some(&key), None).await;
    assert_eq!(status, StatusCode::OK, "{profile}");
    (profile["id"].as_i64().expect("id"), key)
}

async fn namespaces_of(app: &TestApp, key: &str) -> Value {
    let (status, profile) = app.send(Method::GET, "/v1/auth/me", Some(key), None).await;
    assert_eq!(status, StatusCode::OK, "{profile}");
    profile["namespaces"].clone()
}

async fn create_org(app: &TestApp, key: &str, name: &str) -> (StatusCode, Value) {
    app.post("/v1/namespaces", Some(key), json!({ "name": name }))
        .await
}

async fn created_org(app: &TestApp, key: &str, name: &str) -> Value {
    let (status, body) = create_org(app, key, name).await;
    assert_eq!(status, StatusCode::CREATED, "create {name}: {body}");
    body
}

async fn add_member(
    app: &TestApp,
    key: &str,
    namespace: &str,
    username: &str,
    role: &str,
) -> (StatusCode, Value) {
    app.post(
        &format!("/v1/namespaces/{namespace}/members"),
        Some(key),
        json!({ "username": username, "role": role }),
    )
    .await
}

async fn added_member(
    app: &TestApp,
    key: &str,
    namespace: &str,
    username: &str,
    role: &str,
) -> Value {
    let (status, body) = add_member(app, key, namespace, username, role).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "add {username} to {namespace}: {body}"
    );
    body
}

async fn remove_member(
    app: &TestApp,
    key: &str,
    namespace: &str,
    username: &str,
) -> (StatusCode, Value) {
    app.delete(
        &format!("/v1/namespaces/{namespace}/members/{username}"),
        Some(key),
    )
    .await
}

async fn members(app: &TestApp, namespace: &str) -> Value {
    let (status, body) = app.get(&format!("/v1/namespaces/{namespace}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["members"].clone()
}

async fn versions(app: &TestApp, package: &str) -> Vec<String> {
    let (status, body) = app.get(&format!("/v1/packages/{package}/versions")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut versions: Vec<String> = body
        .as_array()
        .unwrap_or_else(|| panic!("versions is not an array: {body}"))
        .iter()
        .map(|v| v["version"].as_str().expect("version").to_owned())
        .collect();
    versions.sort();
    versions
}

async fn create_org_returns_the_namespace(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (alice_id, alice) = user(&app, "alice").await;

    let created = created_org(&app, &alice, "@team").await;
    let mut fields: Vec<&String> = created.as_object().expect("object").keys().collect();
    fields.sort();
    assert_eq!(
        fields,
        ["created_at", "members", "name", "ns_type", "owner_id"],
        "{created}"
    );
    assert_eq!(created["name"], "@team");
    assert_eq!(created["owner_id"], alice_id);
    assert_eq!(created["ns_type"], "org");
    assert_timestamp(&created["created_at"]);
    assert_eq!(
        created["members"],
        json!([{ "username": "alice", "role": "owner" }])
    );

    let (status, shown) = app.get("/v1/namespaces/@team").await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    assert_eq!(shown, created, "POST answers the namespace as GET shows it");
    let (status, encoded) = app.get("/v1/namespaces/%40team").await;
    assert_eq!(status, StatusCode::OK, "{encoded}");
    assert_eq!(encoded, created);

    assert_eq!(
        namespaces_of(&app, &alice).await,
        json!(["@alice", "@team"])
    );
}

async fn create_org_rejects_bad_input(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (_, bob) = user(&app, "bob").await;
    let too_long = format!("@{}", "a".repeat(40));
    for name in [
        "",
        "@",
        "team",
        "@Team",
        "@-team",
        "@te_am",
        "@te.am",
        "@team/app",
        "@@team",
        " @team",
        too_long.as_str(),
    ] {
        assert_error(create_org(&app, &bob, name).await, StatusCode::BAD_REQUEST);
    }
    // The longest valid name is accepted.
    let longest = format!("@{}", "a".repeat(39));
    created_org(&app, &bob, &longest).await;

    assert_error(
        app.post(
            "/v1/namespaces",
            Some(&bob),
            json!({ "name": "@x", "owner": "bob" }),
        )
        .await,
        StatusCode::BAD_REQUEST,
    );
    assert_error(
        app.post("/v1/namespaces", Some(&bob), json!({})).await,
        StatusCode::BAD_REQUEST,
    );
    let response = app
        .client
        .post(app.url("/v1/namespaces"))
        .bearer_auth(&bob)
        .header("content-type", "application/json")
        .body("{\"name\":")
        .send()
        .await
        .expect("request");
    let status = response.status();
    let body = response.json().await.unwrap_or(Value::Null);
    assert_error((status, body), StatusCode::BAD_REQUEST);

    // Without a key: 401; with a key not linked to a user: 403.
    assert_error(
        app.post("/v1/namespaces", None, json!({ "name": "@anon" }))
            .await,
        StatusCode::UNAUTHORIZED,
    );
    let admin = app.admin_key().await;
    assert_error(
        create_org(&app, &admin, "@ops").await,
        StatusCode::FORBIDDEN,
    );
    assert_error(app.get("/v1/namespaces/@ops").await, StatusCode::NOT_FOUND);
    assert_eq!(namespaces_of(&app, &bob).await, json!([longest, "@bob"]));
}

async fn create_org_rejects_taken_names(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (_, carol) = user(&app, "carol").await;
    let (dave_id, dave) = user(&app, "dave").await;

    // A user's name, whether someone else's or the caller's own.
    assert_error(
        create_org(&app, &carol, "@dave").await,
        StatusCode::CONFLICT,
    );
    assert_error(
        create_org(&app, &carol, "@carol").await,
        StatusCode::CONFLICT,
    );
    let (status, namespace) = app.get("/v1/namespaces/@dave").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(namespace["ns_type"], "user");
    assert_eq!(namespace["owner_id"], dave_id);

    // An org's name, for its owner and for anyone else.
    created_org(&app, &carol, "@crew").await;
    assert_error(
        create_org(&app, &carol, "@crew").await,
        StatusCode::CONFLICT,
    );
    assert_error(create_org(&app, &dave, "@crew").await, StatusCode::CONFLICT);
    assert_eq!(
        members(&app, "@crew").await,
        json!([{ "username": "carol", "role": "owner" }])
    );
    assert_eq!(namespaces_of(&app, &dave).await, json!(["@dave"]));
}

async fn unknown_namespace_is_not_found(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (_, erin) = user(&app, "erin").await;
    assert_error(
        app.get("/v1/namespaces/@nowhere").await,
        StatusCode::NOT_FOUND,
    );
    assert_error(
        app.get("/v1/namespaces/%40nowhere").await,
        StatusCode::NOT_FOUND,
    );
    assert_error(
        app.get("/v1/namespaces/Bad%20Name").await,
        StatusCode::BAD_REQUEST,
    );
    assert_error(
        add_member(&app, &erin, "@nowhere", "erin", "member").await,
        StatusCode::NOT_FOUND,
    );
    assert_error(
        remove_member(&app, &erin, "@nowhere", "erin").await,
        StatusCode::NOT_FOUND,
    );
}

async fn members_are_added_and_removed(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (alice_id, alice) = user(&app, "alice").await;
    let (_, bob) = user(&app, "bob").await;
    user(&app, "zed").await;
    user(&app, "carl").await;
    created_org(&app, &alice, "@team").await;

    let body = added_member(&app, &alice, "@team", "bob", "member").await;
    assert_eq!(body["name"], "@team");
    assert_eq!(body["owner_id"], alice_id);
    assert_eq!(body["ns_type"], "org");
    assert_timestamp(&body["created_at"]);
    assert_eq!(
        body["members"],
        json!([
            { "username": "alice", "role": "owner" },
            { "username": "bob", "role": "member" },
        ])
    );
    let (_, shown) = app.get("/v1/namespaces/@team").await;
    assert_eq!(
        shown, body,
        "POST members answers the namespace as GET shows it"
    );
    assert_eq!(namespaces_of(&app, &bob).await, json!(["@bob", "@team"]));

    // Owner first, then the others by name.
    added_member(&app, &alice, "@team", "zed", "admin").await;
    let body = added_member(&app, &alice, "@team", "carl", "member").await;
    assert_eq!(
        body["members"],
        json!([
            { "username": "alice", "role": "owner" },
            { "username": "bob", "role": "member" },
            { "username": "carl", "role": "member" },
            { "username": "zed", "role": "admin" },
        ])
    );

    let (status, body) = remove_member(&app, &alice, "@team", "bob").await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(body, Value::Null, "204 has no body");
    assert_eq!(
        members(&app, "@team").await,
        json!([
            { "username": "alice", "role": "owner" },
            { "username": "carl", "role": "member" },
            { "username": "zed", "role": "admin" },
        ])
    );
    assert_eq!(namespaces_of(&app, &bob).await, json!(["@bob"]));
    // Removing someone who is no longer a member.
    assert_error(
        remove_member(&app, &alice, "@team", "bob").await,
        StatusCode::NOT_FOUND,
    );
    // And they can be added again.
    added_member(&app, &alice, "@team", "bob", "admin").await;
    assert_eq!(namespaces_of(&app, &bob).await, json!(["@bob", "@team"]));
}

async fn member_management_needs_owner_or_admin(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (_, owner) = user(&app, "olive").await;
    let (_, member) = user(&app, "mel").await;
    let (_, admin) = user(&app, "ada").await;
    let (_, outsider) = user(&app, "otto").await;
    user(&app, "newbie").await;
    user(&app, "other").await;
    created_org(&app, &owner, "@guild").await;
    added_member(&app, &owner, "@guild", "mel", "member").await;
    added_member(&app, &owner, "@guild", "ada", "admin").await;

    // A non-member and a plain member may neither add nor remove.
    for key in [&outsider, &member] {
        assert_error(
            add_member(&app, key, "@guild", "newbie", "member").await,
            StatusCode::FORBIDDEN,
        );
        assert_error(
            remove_member(&app, key, "@guild", "ada").await,
            StatusCode::FORBIDDEN,
        );
    }
    // A member cannot promote themself or add the outsider either.
    assert_error(
        add_member(&app, &outsider, "@guild", "otto", "admin").await,
        StatusCode::FORBIDDEN,
    );
    assert_eq!(
        members(&app, "@guild").await,
        json!([
            { "username": "olive", "role": "owner" },
            { "username": "ada", "role": "admin" },
            { "username": "mel", "role": "member" },
        ])
    );

    // An admin may add and remove members, including other admins.
    let body = added_member(&app, &admin, "@guild", "newbie", "member").await;
    assert!(
        body["members"]
            .as_array()
            .unwrap()
            .contains(&json!({ "username": "newbie", "role": "member" })),
        "{body}"
    );
    added_member(&app, &admin, "@guild", "other", "admin").await;
    let (status, body) = remove_member(&app, &admin, "@guild", "newbie").await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, body) = remove_member(&app, &admin, "@guild", "mel").await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    // But not the owner.
    assert_error(
        remove_member(&app, &admin, "@guild", "olive").await,
        StatusCode::CONFLICT,
    );
    assert_eq!(
        members(&app, "@guild").await,
        json!([
            { "username": "olive", "role": "owner" },
            { "username": "ada", "role": "admin" },
            { "username": "other", "role": "admin" },
        ])
    );
    // A removed member's key no longer manages anything.
    assert_error(
        add_member(&app, &member, "@guild", "mel", "member").await,
        StatusCode::FORBIDDEN,
    );
}

async fn member_management_needs_a_wide_enough_key(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (_, owner) = user(&app, "pia").await;
    user(&app, "quentin").await;
    created_org(&app, &owner, "@squad").await;

    let mint = |scope: &'static str| {
        let app = &app;
        let owner = owner.clone();
        async move {
            let (status, body) = app
                .post(
                    "/v1/auth/keys",
                    Some(&owner),
                    json!({ "name": "ci", "scope": scope }),
                )
                .await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
            body["key"].as_str().expect("key").to_owned()
        }
    };

    // CI keys of the owner that lack push or delete on the whole namespace.
    for scope in [
        "push:@squad/*",
        "push:@squad/*,pull:*",
        "delete:@squad/*",
        "push:@squad/app,delete:@squad/app",
        "pull:*",
    ] {
        let ci = mint(scope).await;
        assert_error(
            add_member(&app, &ci, "@squad", "quentin", "member").await,
            StatusCode::FORBIDDEN,
        );
    }
    // An unlinked admin key is not a user: 403.
    let admin = app.admin_key().await;
    assert_error(
        add_member(&app, &admin, "@squad", "quentin", "member").await,
        StatusCode::FORBIDDEN,
    );
    assert_error(
        remove_member(&app, &admin, "@squad", "pia").await,
        StatusCode::FORBIDDEN,
    );
    // Without a key: 401.
    assert_error(
        app.post(
            "/v1/namespaces/@squad/members",
            None,
            json!({ "username": "quentin", "role": "member" }),
        )
        .await,
        StatusCode::UNAUTHORIZED,
    );
    assert_eq!(
        members(&app, "@squad").await,
        json!([{ "username": "pia", "role": "owner" }])
    );

    // A key with push and delete on @squad/* (and nothing else) is enough.
    let manager = mint("push:@squad/*,delete:@squad/*").await;
    added_member(&app, &manager, "@squad", "quentin", "member").await;
    let (status, body) = remove_member(&app, &manager, "@squad", "quentin").await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
}

async fn member_changes_reject_bad_requests(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (_, owner) = user(&app, "rita").await;
    user(&app, "sam").await;
    user(&app, "tom").await;
    created_org(&app, &owner, "@band").await;
    added_member(&app, &owner, "@band", "sam", "member").await;

    // The owner role is set at creation only; other roles are admin and member.
    for role in ["owner", "superuser", "Admin", ""] {
        assert_error(
            add_member(&app, &owner, "@band", "tom", role).await,
            StatusCode::BAD_REQUEST,
        );
    }
    assert_error(
        app.post(
            "/v1/namespaces/@band/members",
            Some(&owner),
            json!({ "username": "tom" }),
        )
        .await,
        StatusCode::BAD_REQUEST,
    );
    assert_error(
        app.post(
            "/v1/namespaces/@band/members",
            Some(&owner),
            json!({ "username": "tom", "role": "member", "extra": 1 }),
        )
        .await,
        StatusCode::BAD_REQUEST,
    );
    // The owner can be neither removed nor re-added with another role.
    assert_error(
        remove_member(&app, &owner, "@band", "rita").await,
        StatusCode::CONFLICT,
    );
    assert_error(
        add_member(&app, &owner, "@band", "rita", "member").await,
        StatusCode::CONFLICT,
    );
    // An existing member, with the same or another role.
    assert_error(
        add_member(&app, &owner, "@band", "sam", "member").await,
        StatusCode::CONFLICT,
    );
    assert_error(
        add_member(&app, &owner, "@band", "sam", "admin").await,
        StatusCode::CONFLICT,
    );
    // Unknown users.
    assert_error(
        add_member(&app, &owner, "@band", "ghost", "member").await,
        StatusCode::NOT_FOUND,
    );
    assert_error(
        remove_member(&app, &owner, "@band", "ghost").await,
        StatusCode::NOT_FOUND,
    );
    // A user who is not a member.
    assert_error(
        remove_member(&app, &owner, "@band", "tom").await,
        StatusCode::NOT_FOUND,
    );
    // Nothing changed.
    assert_eq!(
        members(&app, "@band").await,
        json!([
            { "username": "rita", "role": "owner" },
            { "username": "sam", "role": "member" },
        ])
    );
}

async fn user_namespaces_have_no_members(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (_, uma) = user(&app, "uma").await;
    let (_, vic) = user(&app, "vic").await;
    assert_error(
        add_member(&app, &uma, "@uma", "vic", "member").await,
        StatusCode::BAD_REQUEST,
    );
    assert_error(
        add_member(&app, &uma, "@uma", "vic", "admin").await,
        StatusCode::BAD_REQUEST,
    );
    assert_error(
        remove_member(&app, &uma, "@uma", "vic").await,
        StatusCode::BAD_REQUEST,
    );
    // Someone else's user namespace: not theirs to manage.
    assert_error(
        add_member(&app, &vic, "@uma", "vic", "member").await,
        StatusCode::FORBIDDEN,
    );
    assert_eq!(
        members(&app, "@uma").await,
        json!([{ "username": "uma", "role": "owner" }])
    );
    assert_eq!(namespaces_of(&app, &vic).await, json!(["@vic"]));
}

async fn membership_grants_push(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (_, owner) = user(&app, "wendy").await;
    let (_, member) = user(&app, "xavier").await;
    let (_, outsider) = user(&app, "yara").await;
    created_org(&app, &owner, "@labs").await;
    added_member(&app, &owner, "@labs", "xavier", "member").await;

    let body = app.publish(&member, "@labs/tool", "1.0.0", ARCH).await;
    assert_eq!(body["name"], "@labs/tool");
    assert_eq!(body["version"], "1.0.0");
    app.publish(&owner, "@labs/tool", "1.1.0", ARCH).await;

    // A non-member's key has push:* in its scope, but membership grants, the scope only restricts.
    let archive = niso_test_support::archives::niso("@labs/tool", "1.2.0", &[("bin/x", b"x")]);
    assert_error(
        app.upload(&outsider, "@labs/tool", "1.2.0", ARCH, archive.clone())
            .await,
        StatusCode::FORBIDDEN,
    );
    let archive_new = niso_test_support::archives::niso("@labs/other", "1.0.0", &[("bin/x", b"x")]);
    assert_error(
        app.upload(&outsider, "@labs/other", "1.0.0", ARCH, archive_new)
            .await,
        StatusCode::FORBIDDEN,
    );
    // Once removed, the former member cannot push either.
    let (status, _) = remove_member(&app, &owner, "@labs", "xavier").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_error(
        app.upload(&member, "@labs/tool", "1.2.0", ARCH, archive.clone())
            .await,
        StatusCode::FORBIDDEN,
    );
    assert_eq!(versions(&app, "@labs/tool").await, ["1.0.0", "1.1.0"]);

    // A member's narrower CI key still pushes, within its scope.
    added_member(&app, &owner, "@labs", "yara", "member").await;
    let (status, body) = app
        .post(
            "/v1/auth/keys",
            Some(&outsider),
            json!({ "name": "ci", "scope": "push:@labs/*" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let ci = body["key"].as_str().expect("key").to_owned();
    app.publish(&ci, "@labs/tool", "1.2.0", ARCH).await;
    assert_eq!(
        versions(&app, "@labs/tool").await,
        ["1.0.0", "1.1.0", "1.2.0"]
    );
}

async fn delete_needs_admin_or_owner(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (_, owner) = user(&app, "zoe").await;
    let (_, member) = user(&app, "abe").await;
    let (_, admin) = user(&app, "bea").await;
    let (_, outsider) = user(&app, "cid").await;
    created_org(&app, &owner, "@corp").await;
    added_member(&app, &owner, "@corp", "abe", "member").await;
    added_member(&app, &owner, "@corp", "bea", "admin").await;
    for version in ["1.0.0", "1.1.0", "1.2.0"] {
        app.publish(&member, "@corp/svc", version, ARCH).await;
    }
    let path = |version: &str| format!("/v1/packages/@corp/svc/{version}/{ARCH}");

    // A member may push but not delete, even their own upload; an outsider neither.
    assert_error(
        app.delete(&path("1.0.0"), Some(&member)).await,
        StatusCode::FORBIDDEN,
    );
    assert_error(
        app.delete(&path("1.0.0"), Some(&outsider)).await,
        StatusCode::FORBIDDEN,
    );
    assert_eq!(
        versions(&app, "@corp/svc").await,
        ["1.0.0", "1.1.0", "1.2.0"]
    );

    let (status, body) = app.delete(&path("1.0.0"), Some(&admin)).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, body) = app.delete(&path("1.1.0"), Some(&owner)).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(versions(&app, "@corp/svc").await, ["1.2.0"]);

    // Roles are not changed in place (adding an existing member is a 409): remove and re-add
    // as admin, and the same key may then delete.
    let (status, _) = remove_member(&app, &owner, "@corp", "abe").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    added_member(&app, &owner, "@corp", "abe", "admin").await;
    let (status, body) = app.delete(&path("1.2.0"), Some(&member)).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    // A deleted version is gone: deleting it again is a 404.
    assert_error(
        app.delete(&path("1.2.0"), Some(&owner)).await,
        StatusCode::NOT_FOUND,
    );
}

async fn managed_namespaces_refuse_member_changes(backend: Backend) {
    use sea_orm::sea_query::Expr;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

    let app = TestApp::start(backend).await;
    let (_, owner) = user(&app, "gil").await;
    user(&app, "hal").await;
    user(&app, "ike").await;
    created_org(&app, &owner, "@fleet").await;
    added_member(&app, &owner, "@fleet", "hal", "member").await;
    // What the operator does when a RegistryNamespace takes the namespace over.
    entity::namespace::Entity::update_many()
        .col_expr(entity::namespace::Column::Managed, Expr::value(true))
        .filter(entity::namespace::Column::Name.eq("@fleet"))
        .exec(app.registry.database())
        .await
        .expect("mark managed");

    assert_error(
        add_member(&app, &owner, "@fleet", "ike", "member").await,
        StatusCode::CONFLICT,
    );
    assert_error(
        remove_member(&app, &owner, "@fleet", "hal").await,
        StatusCode::CONFLICT,
    );
    assert_eq!(
        members(&app, "@fleet").await,
        json!([
            { "username": "gil", "role": "owner" },
            { "username": "hal", "role": "member" },
        ])
    );
    // Membership still grants what it grants.
    let (status, body) = app
        .post(
            "/v1/auth/login",
            None,
            json!({ "username": "hal", "password": "password-of-hal" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let hal = body["api_key"].as_str().expect("key").to_owned();
    app.publish(&hal, "@fleet/app", "0.1.0", ARCH).await;
}

async fn concurrent_creation_of_one_org(backend: Backend) {
    let app = std::sync::Arc::new(TestApp::start(backend).await);
    let mut keys = vec![];
    for name in ["jan", "kim", "lou", "max"] {
        keys.push(user(&app, name).await.1);
    }
    let mut tasks = vec![];
    for key in keys {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            create_org(&app, &key, "@shared").await
        }));
    }
    // And a registration of the same name at the same time.
    let registering = {
        let app = app.clone();
        tokio::spawn(async move {
            app.post(
                "/v1/auth/register",
                None,
                json!({
                    "username": "shared",
                    "email": "shared@example.com",
                    "password": "password-of-shared",
                }),
            )
            .await
        })
    };
    let mut created = 0;
    for task in tasks {
        let (status, body) = task.await.expect("task");
        if status == StatusCode::CREATED {
            created += 1;
        } else {
            assert_error((status, body), StatusCode::CONFLICT);
        }
    }
    let (status, body) = registering.await.expect("task");
    if status == StatusCode::CREATED {
        created += 1;
    } else {
        assert_error((status, body), StatusCode::CONFLICT);
    }
    assert_eq!(created, 1, "exactly one of the claims on @shared wins");
    let (status, namespace) = app.get("/v1/namespaces/@shared").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        namespace["members"].as_array().map(Vec::len),
        Some(1),
        "{namespace}"
    );
}
