//! ApiKeys through the running controllers: the key in the owned Secret works against
//! niso-server over HTTP; deleting the Secret (seen through the label-selected Secret watch)
//! rotates the key; deleting the ApiKey revokes it, and the Secret follows its owner. A refused
//! ApiKey is `Ready=False` with the reason, a Warning Event, and no key (the pattern of any
//! further refusal: copy `a_refused_api_key_says_why_and_gets_no_key`).

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams};
use reqwest::StatusCode;

use crate::Cluster;
use niso_test_support::{Backend, archives};
use niso_operator::crd::{ApiKey, ApiKeySpec};

niso_test_support::for_each_backend!(
    an_api_key_works_rotates_and_is_revoked,
    a_refused_api_key_says_why_and_gets_no_key
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
