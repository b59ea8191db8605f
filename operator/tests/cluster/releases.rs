//! Two releases on one cluster (staging and production), scoped apart by `instance`, each with
//! its own Lease: each reconciles only the objects labelled for it, never writes the other's,
//! and leaves an unlabelled object alone with a `NotManaged` Event.

use std::collections::BTreeMap;

use crate::Cluster;
use crate::apikeys::{api_key, secret_key};
use niso_operator::context::INSTANCE_LABEL;
use niso_operator::crd::ApiKey;
use niso_test_support::Backend;

niso_test_support::for_each_backend!(two_releases_scoped_apart_do_not_fight);

fn for_instance(mut key: ApiKey, instance: &str) -> ApiKey {
    key.metadata.labels = Some(BTreeMap::from([(
        INSTANCE_LABEL.to_owned(),
        instance.to_owned(),
    )]));
    key
}

async fn two_releases_scoped_apart_do_not_fight(backend: Backend) {
    let cluster = Cluster::new(backend).await;
    cluster.app.register("alice").await;
    let production = cluster
        .operator_with("production-0", "niso-production", |settings| {
            settings.instance = Some("production".into())
        })
        .await;
    let staging = cluster
        .operator_with("staging-0", "niso-staging", |settings| {
            settings.instance = Some("staging".into())
        })
        .await;
    cluster
        .wait("both releases to lead their own Lease", async || {
            (production.is_leader() && staging.is_leader()).then_some(())
        })
        .await;

    for instance in ["production", "staging"] {
        cluster
            .create(
                Some("apps"),
                &for_instance(
                    api_key(
                        instance,
                        Some("alice"),
                        "pull:*",
                        &format!("{instance}-key"),
                    ),
                    instance,
                ),
            )
            .await;
    }
    cluster
        .create(
            Some("apps"),
            &api_key("unlabelled", Some("alice"), "pull:*", "unlabelled-key"),
        )
        .await;
    let mut keys = Vec::new();
    for instance in ["production", "staging"] {
        cluster
            .condition("apikeys", Some("apps"), instance, "True")
            .await;
        keys.push(secret_key(&cluster, "apps", &format!("{instance}-key"), None).await);
    }
    assert_ne!(keys[0], keys[1]);

    // Each object was written by its own release only: no fight over status or Secrets.
    for request in cluster.operator_requests() {
        let Some(name) = request.name.as_deref() else {
            continue;
        };
        let owner = match name {
            "production" | "production-key" => "production-0",
            "staging" | "staging-key" => "staging-0",
            _ => continue,
        };
        if request.verb != "get" && request.verb != "list" && request.verb != "watch" {
            assert_eq!(request.user, owner, "{request:?}");
        }
    }

    // The unlabelled one is left alone by both, and says so.
    cluster
        .wait("the NotManaged Event", async || {
            cluster
                .events("apps", "unlabelled")
                .contains(&("Normal".into(), "NotManaged".into()))
                .then_some(())
        })
        .await;
    let unlabelled = cluster
        .api
        .object("apikeys", Some("apps"), "unlabelled")
        .expect("still there");
    assert!(unlabelled["status"].is_null(), "{unlabelled}");
    assert!(
        unlabelled["metadata"]["finalizers"].is_null(),
        "{unlabelled}"
    );
    assert!(
        cluster
            .api
            .object("secrets", Some("apps"), "unlabelled-key")
            .is_none()
    );

    cluster.finish(vec![production, staging]).await;
}
