//! login, whoami, logout, keys and namespaces through the binary.

use std::collections::{BTreeMap, BTreeSet};

use crate::{Niso, package_tree};
use niso_registry::RegistrySettings;
use niso_registry::auth::scope::Action;
use niso_registry::identity::IdentitySettings;
use niso_registry::identity::grants::GrantSpec;
use niso_test_support::oidc::{Issuer, RSA_A, Signer, service_account_claims};
use niso_test_support::{Backend, TestApp, test_authority, test_settings};

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
    namespaces_and_members,
    keyless_login_with_a_token_file_then_push
);

/// `niso login --oidc-token-file`: a pod's projected ServiceAccount token (signed by an in-test
/// issuer the registry trusts) is exchanged for a short-lived key within the pod's grant, and
/// the stored key pushes; a token the registry does not accept is an auth error (exit 3).
async fn keyless_login_with_a_token_file_then_push(backend: Backend) {
    let issuer = Issuer::start().await;
    let signer = Signer::rsa(RSA_A, "a");
    issuer.publish(&signer);
    let settings = RegistrySettings {
        identity: IdentitySettings {
            issuers: vec![issuer.url.clone()],
            ..IdentitySettings::default()
        },
        ..test_settings()
    };
    let app = TestApp::with_settings(backend, settings).await;
    let owner = app.register("owner").await;
    let (status, body) = app
        .post(
            "/v1/namespaces",
            Some(&owner),
            serde_json::json!({ "name": "@team" }),
        )
        .await;
    assert!(status.is_success(), "{body}");
    app.registry
        .replace_identity_grants(
            &test_authority(),
            "team-grants",
            vec![GrantSpec {
                issuer: issuer.url.clone(),
                kubernetes_namespace: Some("ci".into()),
                service_account: None,
                claims: BTreeMap::new(),
                registry_namespace: "@team".into(),
                actions: BTreeSet::from([Action::Pull, Action::Push]),
            }],
        )
        .await
        .unwrap();
    let niso = Niso::new(&app.base);
    let token_file = niso.path("token");
    std::fs::write(
        &token_file,
        signer.sign(&service_account_claims(&issuer.url, "ci", "builder")),
    )
    .unwrap();

    let login = niso
        .json(&[
            "login",
            "--oidc-token-file",
            token_file.to_str().unwrap(),
            "--scope",
            "push:@team/*",
        ])
        .await;
    assert_eq!(login["scope"], "push:@team/*", "{login}");
    let tree = niso.path("tool");
    package_tree(&tree, "@team/tool", "1.0.0", 1, 1024);
    let pushed = niso
        .json(&["push", tree.to_str().unwrap(), "--arch", "x86_64-linux"])
        .await;
    assert_eq!(pushed["name"], "@team/tool", "{pushed}");

    // Another Kubernetes namespace has no grant: refused with the registry's reason.
    std::fs::write(
        &token_file,
        signer.sign(&service_account_claims(&issuer.url, "other", "builder")),
    )
    .unwrap();
    let refused = niso
        .run(&["login", "--oidc-token-file", token_file.to_str().unwrap()])
        .await;
    assert_eq!(refused.code, 3, "{refused:?}");
    assert!(refused.stderr.contains("grant"), "{refused:?}");
}
