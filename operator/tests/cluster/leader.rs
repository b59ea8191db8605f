//! Two operator replicas, one Lease: only the holder runs the controllers (the other makes no
//! request to the custom resources at all), and the other takes over when the holder stops.

use crate::Cluster;
use crate::apikeys::{api_key, secret_key};
use crate::namespaces::registry_namespace;
use niso_operator::crd::DeletionPolicy;
use niso_test_support::Backend;

niso_test_support::for_each_backend!(one_lease_one_reconciler_and_a_takeover);

fn touched_custom_resources(cluster: &Cluster, identity: &str) -> usize {
    cluster
        .operator_requests()
        .iter()
        .filter(|request| {
            request.user == identity && request.group == "niso.online" && !request.implied
        })
        .count()
}

async fn one_lease_one_reconciler_and_a_takeover(backend: Backend) {
    let cluster = Cluster::new(backend).await;
    cluster.app.register("alice").await;
    let a = cluster.operator("operator-a").await;
    cluster
        .wait("operator-a to hold the Lease", async || {
            a.is_leader().then_some(())
        })
        .await;
    let b = cluster.operator("operator-b").await;

    cluster
        .create(
            None,
            &registry_namespace("team", "alice", DeletionPolicy::Retain),
        )
        .await;
    cluster
        .condition("registrynamespaces", None, "team", "True")
        .await;
    assert!(!b.is_leader());
    assert!(touched_custom_resources(&cluster, "operator-a") > 0);
    assert_eq!(
        touched_custom_resources(&cluster, "operator-b"),
        0,
        "b stands by"
    );

    a.stop().await;
    cluster
        .wait("operator-b to take the Lease over", async || {
            b.is_leader().then_some(())
        })
        .await;
    cluster
        .create(
            Some("apps"),
            &api_key("ci", Some("alice"), "pull:*", "ci-key"),
        )
        .await;
    cluster
        .condition("apikeys", Some("apps"), "ci", "True")
        .await;
    secret_key(&cluster, "apps", "ci-key", None).await;
    let writers: Vec<String> = cluster
        .operator_requests()
        .into_iter()
        .filter(|request| request.resource == "apikeys/status")
        .map(|request| request.user)
        .collect();
    assert!(!writers.is_empty());
    assert!(
        writers.iter().all(|user| user == "operator-b"),
        "{writers:?}"
    );

    cluster.finish(vec![b]).await;
}
