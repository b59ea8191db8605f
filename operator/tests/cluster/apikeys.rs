//! ApiKeys through the running controllers: the key in the owned Secret works against
//! niso-server over HTTP; deleting the Secret (seen through the label-selected Secret watch)
//! rotates the key; deleting the ApiKey revokes it, and the Secret follows its owner. A refused
//! ApiKey is `Ready=False` with the reason, a Warning Event, and no key (the pattern of any
//! further refusal: copy `a_refused_api_key_says_why_and_gets_no_key`).

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use reqwest::StatusCode;

use crate::Cluster;
use niso_operator::crd::{
    ApiKey, ApiKeySpec, DeletionPolicy, GrantAction, GrantSpec, MembersPolicy, RegistryNamespace,
    RegistryNamespaceSpec,
};
use niso_test_support::{Backend, archives, test_authority};

niso_test_support::for_each_backend!(
    an_api_key_works_rotates_and_is_revoked,
    a_refused_api_key_says_why_and_gets_no_key,
    a_key_is_minted_only_within_its_namespace_grant
);

const RESOURCE: &str = "apikeys";

pub fn api_key(name: &str, user: Option<&str>, scope: &str, secret: &str) -> ApiKey {
    ApiKey::new(
        name,
        ApiKeySpec {
            user: user.map(str::to_owned),
            scope: scope.into(),
            secret_name: Some(secret.into()),
            expires_at: None,
            duration: None,
            renew_before: None,
            secret_template: None,
        },
    )
}

/// The key an ApiKey's Secret holds, once it holds one other than `not`.
pub async fn secret_key(
    cluster: &Cluster,
    namespace: &str,
    name: &str,
    not: Option<&str>,
) -> String {
    cluster
        .wait(
            &format!("Secret {namespace}/{name} with a new key"),
            async || {
                let object = cluster.api.object("secrets", Some(namespace), name)?;
                let secret: Secret = serde_json::from_value(object).expect("a Secret");
                let data = secret.data?;
                assert_eq!(data.get("registry-url")?.0, crate::REGISTRY_URL.as_bytes());
                let key = String::from_utf8(data.get("api-key")?.0.clone()).expect("UTF-8");
                (Some(key.as_str()) != not).then_some(key)
            },
        )
        .await
}

async fn upload(cluster: &Cluster, key: &str, version: &str) -> StatusCode {
    let archive = archives::niso("@alice/tool", version, &[("bin/tool", b"#!/bin/sh\n")]);
    cluster
        .app
        .upload(key, "@alice/tool", version, "x86_64-linux", archive)
        .await
        .0
}

async fn an_api_key_works_rotates_and_is_revoked(backend: Backend) {
    let cluster = Cluster::new(backend).await;
    cluster.app.register("alice").await;
    let operator = cluster.operator("operator-a").await;

    let created = cluster
        .create(
            Some("apps"),
            &api_key("ci", Some("alice"), "pull:*,push:@alice/*", "ci-key"),
        )
        .await;
    let object = cluster
        .condition(RESOURCE, Some("apps"), "ci", "True")
        .await;
    let first = secret_key(&cluster, "apps", "ci-key", None).await;
    assert!(first.starts_with(object["status"]["prefix"].as_str().expect("prefix")));
    let secret = cluster
        .api
        .object("secrets", Some("apps"), "ci-key")
        .unwrap();
    assert_eq!(
        secret["metadata"]["ownerReferences"][0]["uid"],
        created.metadata.uid.clone().unwrap().as_str()
    );
    assert_eq!(upload(&cluster, &first, "1.0.0").await, StatusCode::CREATED);

    // A deleted Secret is noticed through the Secret watch: a new key, the old one revoked.
    let secrets: Api<Secret> = Api::namespaced(cluster.user(), "apps");
    secrets
        .delete("ci-key", &DeleteParams::default())
        .await
        .unwrap();
    let second = secret_key(&cluster, "apps", "ci-key", Some(&first)).await;
    cluster
        .wait("the old key to be revoked", async || {
            cluster
                .app
                .registry
                .authenticate(&first)
                .await
                .is_err()
                .then_some(())
        })
        .await;
    assert_eq!(
        upload(&cluster, &first, "1.0.1").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        upload(&cluster, &second, "1.0.1").await,
        StatusCode::CREATED
    );

    // Deleting the ApiKey revokes its key; the Secret goes with its owner.
    let keys: Api<ApiKey> = Api::namespaced(cluster.user(), "apps");
    keys.delete("ci", &DeleteParams::default()).await.unwrap();
    cluster.gone(RESOURCE, Some("apps"), "ci").await;
    cluster.gone("secrets", Some("apps"), "ci-key").await;
    assert_eq!(
        upload(&cluster, &second, "1.0.2").await,
        StatusCode::UNAUTHORIZED
    );

    cluster.finish(vec![operator]).await;
}

async fn a_refused_api_key_says_why_and_gets_no_key(backend: Backend) {
    let cluster = Cluster::new(backend).await;
    let operator = cluster.operator("operator-a").await;

    // An unknown registry user.
    cluster
        .create(
            Some("apps"),
            &api_key("ghost", Some("nobody"), "pull:*", "ghost-key"),
        )
        .await;
    cluster
        .condition(RESOURCE, Some("apps"), "ghost", "False")
        .await;
    let (_, reason, message) = cluster.ready(RESOURCE, Some("apps"), "ghost").unwrap();
    assert_eq!(reason, "UserNotFound", "{message}");
    assert!(
        cluster
            .api
            .object("secrets", Some("apps"), "ghost-key")
            .is_none()
    );
    cluster
        .wait("the Warning Event", async || {
            let events = cluster.events("apps", "ghost");
            events
                .contains(&("Warning".into(), "UserNotFound".into()))
                .then_some(())
        })
        .await;

    // A Secret the ApiKey does not own is never overwritten.
    let taken: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "taken"}, "data": {"api-key": "bWluZQ=="}
    }))
    .unwrap();
    cluster.create(Some("apps"), &taken).await;
    cluster
        .create(Some("apps"), &api_key("squatter", None, "pull:*", "taken"))
        .await;
    cluster
        .condition(RESOURCE, Some("apps"), "squatter", "False")
        .await;
    let (_, reason, _) = cluster.ready(RESOURCE, Some("apps"), "squatter").unwrap();
    assert_eq!(reason, "InvalidSpec");
    let secret = cluster
        .api
        .object("secrets", Some("apps"), "taken")
        .unwrap();
    assert_eq!(secret["data"], serde_json::json!({"api-key": "bWluZQ=="}));
    assert!(secret["metadata"].get("ownerReferences").is_none());

    cluster.finish(vec![operator]).await;
}

/// `@team`, owned by alice, whose grants give Kubernetes namespace `team-a` pull.
fn team_granting_pull_to_team_a() -> RegistryNamespace {
    RegistryNamespace::new(
        "team",
        RegistryNamespaceSpec {
            name: None,
            owner: "alice".into(),
            members: vec![],
            members_policy: MembersPolicy::Exact,
            adopt: false,
            grants: vec![GrantSpec {
                namespaces: vec!["team-a".into()],
                service_accounts: vec![],
                actions: vec![GrantAction::Pull],
            }],
            deletion_policy: DeletionPolicy::Retain,
        },
    )
}

/// Creating an ApiKey is a namespaced right; what its key may do is what the cluster-scoped
/// RegistryNamespace grants that Kubernetes namespace, through the running controllers: a key
/// beyond the grant is Forbidden and never minted, one within it works, and withdrawing the
/// grant revokes it.
async fn a_key_is_minted_only_within_its_namespace_grant(backend: Backend) {
    let cluster = Cluster::new(backend).await;
    cluster.app.register("alice").await;
    let operator = cluster.operator("operator-a").await;
    let team = cluster.create(None, &team_granting_pull_to_team_a()).await;
    cluster
        .condition("registrynamespaces", None, "team", "True")
        .await;
    // The same grant, mirrored for keyless access: pods of team-a may exchange their
    // ServiceAccount token for a pull key on @team.
    let uid = team.metadata.uid.clone().expect("uid");
    let mirrored = cluster
        .app
        .registry
        .identity_grants(&test_authority(), Some(&uid))
        .await
        .unwrap();
    assert_eq!(mirrored.len(), 1, "{mirrored:?}");
    assert_eq!(
        mirrored[0].spec.kubernetes_namespace.as_deref(),
        Some("team-a")
    );
    assert_eq!(mirrored[0].spec.registry_namespace, "@team");
    assert_eq!(
        mirrored[0].spec.issuer,
        niso_operator::context::DEFAULT_CLUSTER_ISSUER
    );

    // Another Kubernetes namespace, and more than pull from team-a: refused, named, no key.
    for (namespace, scope) in [("team-b", "pull:@team/*"), ("team-a", "push:@team/*")] {
        let name = format!("wants-{}", scope.split(':').next().unwrap());
        cluster
            .create(Some(namespace), &api_key(&name, None, scope, &name))
            .await;
        cluster
            .condition(RESOURCE, Some(namespace), &name, "False")
            .await;
        let (_, reason, message) = cluster.ready(RESOURCE, Some(namespace), &name).unwrap();
        assert_eq!(reason, "Forbidden", "{namespace} {scope}: {message}");
        assert!(
            message.contains(namespace) && message.contains("@team"),
            "{message}"
        );
        assert!(
            cluster
                .api
                .object("secrets", Some(namespace), &name)
                .is_none()
        );
    }

    // Within the grant: a key that authenticates.
    cluster
        .create(
            Some("team-a"),
            &api_key("reader", None, "pull:@team/*", "reader-key"),
        )
        .await;
    cluster
        .condition(RESOURCE, Some("team-a"), "reader", "True")
        .await;
    let key = secret_key(&cluster, "team-a", "reader-key", None).await;
    assert!(cluster.app.registry.authenticate(&key).await.is_ok());

    // The grant withdrawn: the ApiKey turns Forbidden and its key stops working.
    let namespaces: Api<RegistryNamespace> = Api::all(cluster.user());
    namespaces
        .patch(
            "team",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"grants": []}})),
        )
        .await
        .unwrap();
    cluster
        .condition(RESOURCE, Some("team-a"), "reader", "False")
        .await;
    cluster
        .wait("the withdrawn grant's key to be revoked", async || {
            cluster
                .app
                .registry
                .authenticate(&key)
                .await
                .is_err()
                .then_some(())
        })
        .await;
    cluster
        .wait("the withdrawn grant to leave the registry", async || {
            cluster
                .app
                .registry
                .identity_grants(&test_authority(), Some(&uid))
                .await
                .unwrap()
                .is_empty()
                .then_some(())
        })
        .await;

    cluster.finish(vec![operator]).await;
}
