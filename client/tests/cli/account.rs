//! login, whoami, logout, keys and namespaces through the binary.

use crate::Niso;
use niso_test_support::{Backend, TestApp};

async fn login_whoami_logout(backend: Backend) {
    let app = TestApp::start(backend).await;
    app.register("alice").await;
    let niso = Niso::new(&app.base);

    let run = niso.run(&["whoami"]).await;
    assert_eq!(run.code, 3, "not logged in is an auth error: {run:?}");
    assert!(run.stderr.contains("not logged in"), "{run:?}");

    let wrong = niso
        .run_with(&["login", "--username", "alice"], "not-the-password\n", &[])
        .await;
    assert_eq!(wrong.code, 3, "{wrong:?}");
    assert!(
        wrong.stderr.starts_with("error: ") && !wrong.stderr.contains("Error {"),
        "the server's message, not a debug dump: {wrong:?}"
    );

    niso.login("alice").await;
    let me = niso.json(&["whoami"]).await;
    assert_eq!(me["username"], "alice");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(niso.config_dir().join("credentials.toml"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // NISO_TOKEN wins over the stored key.
    let bob_key = app.register("bob").await;
    let as_bob = niso
        .run_with(&["whoami", "--json"], "", &[("NISO_TOKEN", &bob_key)])
        .await;
    assert_eq!(as_bob.json()["username"], "bob", "{as_bob:?}");

    let logout = niso.json(&["logout"]).await;
    assert_eq!(logout["removed"], true);
    assert_eq!(niso.run(&["whoami"]).await.code, 3);

    // A key given on stdin is checked, then stored.
    let stored = niso
        .run_with(
            &["login", "--token-stdin", "--json"],
            &format!("{bob_key}\n"),
            &[],
        )
        .await;
    assert_eq!(stored.code, 0, "{stored:?}");
    assert_eq!(niso.json(&["whoami"]).await["username"], "bob");
    let bad = niso
        .run_with(&["login", "--token-stdin"], "niso_not-a-key\n", &[])
        .await;
    assert_eq!(bad.code, 3, "{bad:?}");
    // A key linked to no user (a CI key made by the operator) is stored too.
    let admin = app.admin_key().await;
    let stored = niso
        .run_with(&["login", "--token-stdin"], &format!("{admin}\n"), &[])
        .await;
    assert_eq!(stored.code, 0, "{stored:?}");
    assert!(stored.stdout.contains("as a key"), "{stored:?}");

    // Login made this registry the default: no --registry needed; NISO_REGISTRY wins.
    let bare = niso.run_bare(&["search", "--json"], &[]).await;
    assert_eq!(bare.code, 0, "{bare:?}");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let elsewhere = niso
        .run_bare(&["search"], &[("NISO_REGISTRY", &closed)])
        .await;
    assert_eq!(elsewhere.code, 5, "{elsewhere:?}");
    assert!(elsewhere.stderr.contains(&closed), "{elsewhere:?}");
    let nowhere = Niso::new(&app.base).run_bare(&["search"], &[]).await;
    assert_eq!(nowhere.code, 2, "no registry configured: {nowhere:?}");
}

async fn keys_create_list_revoke(backend: Backend) {
    let app = TestApp::start(backend).await;
    app.register("carol").await;
    let niso = Niso::new(&app.base);
    niso.login("carol").await;
    let created = niso
        .json(&["keys", "create", "--name", "ci", "--scope", "pull:*"])
        .await;
    let key = created["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("niso_"));
    let id = created["id"].as_i64().unwrap();
    let listed = niso.json(&["keys", "list"]).await;
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["id"] == id && k["name"] == "ci" && k["scope"] == "pull:*"),
        "{listed}"
    );
    niso.json(&["keys", "revoke", &id.to_string()]).await;
    let listed = niso.json(&["keys", "list"]).await;
    assert!(!listed.as_array().unwrap().iter().any(|k| k["id"] == id));
    let revoked = niso
        .run_with(&["whoami"], "", &[("NISO_TOKEN", &key)])
        .await;
    assert_eq!(revoked.code, 3, "{revoked:?}");
}

async fn namespaces_and_members(backend: Backend) {
    let app = TestApp::start(backend).await;
    app.register("dave").await;
    app.register("erin").await;
    let niso = Niso::new(&app.base);
    niso.login("dave").await;
    niso.json(&["ns", "create", "@team"]).await;
    niso.json(&["ns", "add-member", "@team", "erin", "--role", "admin"])
        .await;
    let shown = niso.json(&["ns", "show", "@team"]).await;
    assert_eq!(shown["ns_type"], "org");
    let members = shown["members"].as_array().unwrap();
    assert!(
        members
            .iter()
            .any(|m| m["username"] == "erin" && m["role"] == "admin")
    );
    niso.json(&["ns", "remove-member", "@team", "erin"]).await;
    let shown = niso.json(&["ns", "show", "@team"]).await;
    assert!(
        !shown["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["username"] == "erin")
    );

    let missing = niso.run(&["ns", "show", "@nobody-here"]).await;
    assert_eq!(missing.code, 4, "{missing:?}");
    let taken = niso.run(&["ns", "create", "@team"]).await;
    assert_eq!(taken.code, 1, "a conflict is a refusal: {taken:?}");
    let bad = niso.run(&["ns", "create", "team"]).await;
    assert_eq!(bad.code, 2, "checked before any request: {bad:?}");
}

niso_test_support::for_each_backend!(
    login_whoami_logout,
    keys_create_list_revoke,
    namespaces_and_members
);
