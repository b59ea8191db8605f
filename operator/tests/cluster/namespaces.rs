//! RegistryNamespaces through the running controllers: Ready and present in the registry, a
//! spec change reconciled as a new generation, status written through `/status` only,
//! surviving closed and expired watches, and deletion with `deletionPolicy: Delete` (the
//! finalizer holds the object until the registry namespace is gone) or `Retain`.

use kube::api::{Api, DeleteParams, Patch, PatchParams};
use niso_operator::crd::{DeletionPolicy, MembersPolicy, RegistryNamespace, RegistryNamespaceSpec};

use crate::Cluster;
use crate::api_server::Part;
use niso_test_support::Backend;

niso_test_support::for_each_backend!(a_registry_namespace_lives_and_dies_with_its_object);

pub fn registry_namespace(name: &str, owner: &str, policy: DeletionPolicy) -> RegistryNamespace {
    RegistryNamespace::new(
        name,
        RegistryNamespaceSpec {
            name: None,
            owner: owner.into(),
            members: vec![],
            members_policy: MembersPolicy::Exact,
            adopt: false,
            grants: vec![],
            deletion_policy: policy,
        },
    )
}

const RESOURCE: &str = "registrynamespaces";

async fn a_registry_namespace_lives_and_dies_with_its_object(backend: Backend) {
    let cluster = Cluster::new(backend).await;
    cluster.app.register("alice").await;
    cluster.app.register("bob").await;
    let operator = cluster.operator("operator-a").await;

    cluster
        .create(
            None,
            &registry_namespace("team", "alice", DeletionPolicy::Delete),
        )
        .await;
    let object = cluster.condition(RESOURCE, None, "team", "True").await;
    assert_eq!(
        object["metadata"]["finalizers"][0],
        niso_operator::context::FINALIZER
    );
    assert_eq!(object["status"]["registryName"], "@team");
    let view = cluster
        .app
        .registry
        .namespace_view("@team")
        .await
        .expect("in the registry");
    assert!(view.managed);

    // A spec change is a new generation, reconciled through the watch.
    let namespaces: Api<RegistryNamespace> = Api::all(cluster.user());
    let members = serde_json::json!({"spec": {"members": [{"username": "bob", "role": "member"}]}});
    let patched = namespaces
        .patch("team", &PatchParams::default(), &Patch::Merge(members))
        .await
        .unwrap();
    assert_eq!(patched.metadata.generation, Some(2));
    let object = cluster.condition(RESOURCE, None, "team", "True").await;
    assert_eq!(object["status"]["observedGeneration"], 2);
    assert_eq!(object["status"]["memberCount"], 2);
    let view = cluster.app.registry.namespace_view("@team").await.unwrap();
    assert!(view.members.iter().any(|member| member.username == "bob"));

    // Status came through /status (a status sent to the main resource is dropped), by the
    // operator's field manager.
    let managers = cluster
        .api
        .managers(RESOURCE, None, "team", Part::Status)
        .unwrap();
    assert_eq!(managers.owners("status.registryName"), ["niso-operator"]);
    let requests = cluster.operator_requests();
    assert!(
        requests
            .iter()
            .any(|r| r.verb == "patch" && r.resource == "registrynamespaces/status")
    );

    // Watches that end are resumed; watches that expired are listed again.
    cluster.api.close_watches();
    cluster
        .create(
            None,
            &registry_namespace("second", "alice", DeletionPolicy::Retain),
        )
        .await;
    cluster.condition(RESOURCE, None, "second", "True").await;
    cluster.api.compact();
    cluster
        .create(
            None,
            &registry_namespace("third", "alice", DeletionPolicy::Retain),
        )
        .await;
    cluster.condition(RESOURCE, None, "third", "True").await;

    let namespaces: Api<RegistryNamespace> = Api::all(cluster.user());
    namespaces
        .delete("team", &DeleteParams::default())
        .await
        .unwrap();
    cluster.gone(RESOURCE, None, "team").await;
    assert!(
        cluster.app.registry.namespace_view("@team").await.is_err(),
        "deletionPolicy Delete removes the registry namespace"
    );
    // Retain gives it back to the API.
    namespaces
        .delete("second", &DeleteParams::default())
        .await
        .unwrap();
    cluster.gone(RESOURCE, None, "second").await;
    let view = cluster
        .app
        .registry
        .namespace_view("@second")
        .await
        .expect("retained");
    assert!(!view.managed);

    cluster.finish(vec![operator]).await;
}
