//! The server through a real `kube::Client`: optimistic concurrency, the status split and
//! generation, finalizers, cascade, apply conflicts, watch resumption and selector transitions.

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::{Error, Resource, ResourceExt};
use serde_json::json;

use super::{ApiServer, Part};
use niso_operator::crd::{
    ApiKey, ApiKeySpec, DeletionPolicy, MembersPolicy, RegistryNamespace, RegistryNamespaceSpec,
};

fn secret(name: &str, labels: serde_json::Value) -> Secret {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "labels": labels},
        "data": {"a": "eA=="}
    }))
    .unwrap()
}

fn api_key(name: &str, scope: &str) -> ApiKey {
    ApiKey::new(
        name,
        ApiKeySpec {
            user: None,
            scope: scope.into(),
            secret_name: None,
            expires_at: None,
            duration: None,
            renew_before: None,
            secret_template: None,
        },
    )
}

fn code(error: Error) -> (u16, String) {
    match error {
        Error::Api(status) => (status.code, status.reason),
        other => panic!("not an API error: {other}"),
    }
}

#[tokio::test]
async fn a_stale_resource_version_is_a_conflict() {
    let server = ApiServer::new();
    let secrets: Api<Secret> = Api::namespaced(server.client("t", "apps"), "apps");
    let created = secrets
        .create(&PostParams::default(), &secret("s", json!({})))
        .await
        .unwrap();
    assert!(created.uid().is_some());
    let mut first = created.clone();
    first.labels_mut().insert("x".into(), "1".into());
    let updated = secrets
        .replace("s", &PostParams::default(), &first)
        .await
        .unwrap();
    assert_ne!(updated.resource_version(), created.resource_version());
    let mut stale = created.clone();
    stale.labels_mut().insert("x".into(), "2".into());
    let error = secrets
        .replace("s", &PostParams::default(), &stale)
        .await
        .unwrap_err();
    assert_eq!(code(error), (409, "Conflict".into()));
    let error = secrets
        .create(&PostParams::default(), &secret("s", json!({})))
        .await
        .unwrap_err();
    assert_eq!(code(error), (409, "AlreadyExists".into()));
    let error = secrets.get("nope").await.unwrap_err();
    assert_eq!(code(error), (404, "NotFound".into()));
    // A write that changes nothing keeps the resourceVersion.
    let again = secrets
        .replace("s", &PostParams::default(), &updated)
        .await
        .unwrap();
    assert_eq!(again.resource_version(), updated.resource_version());
}

#[tokio::test]
async fn status_is_written_through_its_subresource_only_and_generation_counts_spec_changes() {
    let server = ApiServer::new();
    let keys: Api<ApiKey> = Api::namespaced(server.client("t", "apps"), "apps");
    let mut key = api_key("ci", "pull:*");
    key.status = Some(Default::default());
    key.status.as_mut().unwrap().prefix = Some("sneaked".into());
    let created = keys.create(&PostParams::default(), &key).await.unwrap();
    assert!(created.status.is_none(), "status is dropped on create");
    assert_eq!(created.meta().generation, Some(1));

    let status = json!({"apiVersion": "niso.online/v1alpha1", "kind": "ApiKey", "status": {"prefix": "abc"}, "spec": {"scope": "admin:*"}});
    let written = keys
        .patch_status("ci", &PatchParams::apply("op"), &Patch::Apply(status))
        .await
        .unwrap();
    assert_eq!(
        written.status.as_ref().unwrap().prefix.as_deref(),
        Some("abc")
    );
    assert_eq!(
        written.spec.scope, "pull:*",
        "a status write changes no spec"
    );
    assert_eq!(written.meta().generation, Some(1));

    let mut changed = written.clone();
    changed.spec.scope = "push:*".into();
    changed.status.as_mut().unwrap().prefix = Some("other".into());
    let replaced = keys
        .replace("ci", &PostParams::default(), &changed)
        .await
        .unwrap();
    assert_eq!(replaced.spec.scope, "push:*");
    assert_eq!(
        replaced.status.as_ref().unwrap().prefix.as_deref(),
        Some("abc"),
        "a spec write changes no status"
    );
    assert_eq!(replaced.meta().generation, Some(2));
    let labelled = keys
        .patch(
            "ci",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
        )
        .await
        .unwrap();
    assert_eq!(labelled.meta().generation, Some(2), "metadata is not spec");
}

#[tokio::test]
async fn finalizers_block_deletion_until_the_last_one_goes() {
    let server = ApiServer::new();
    let namespaces: Api<RegistryNamespace> = Api::all(server.client("t", "default"));
    let mut object = RegistryNamespace::new(
        "team",
        RegistryNamespaceSpec {
            name: None,
            owner: "alice".into(),
            members: vec![],
            members_policy: MembersPolicy::Exact,
            adopt: false,
            grants: vec![],
            deletion_policy: DeletionPolicy::Retain,
        },
    );
    object.metadata.finalizers = Some(vec!["a/b".into(), "c/d".into()]);
    namespaces
        .create(&PostParams::default(), &object)
        .await
        .unwrap();
    namespaces
        .delete("team", &DeleteParams::default())
        .await
        .unwrap();
    let deleting = namespaces.get("team").await.unwrap();
    assert!(deleting.meta().deletion_timestamp.is_some());

    let add = Patch::Json::<()>(
        serde_json::from_value(json!([
            {"op": "add", "path": "/metadata/finalizers/-", "value": "e/f"}
        ]))
        .unwrap(),
    );
    let error = namespaces
        .patch("team", &PatchParams::default(), &add)
        .await
        .unwrap_err();
    assert_eq!(code(error), (422, "Invalid".into()));
    let stale_test = Patch::Json::<()>(
        serde_json::from_value(json!([
            {"op": "test", "path": "/metadata/finalizers", "value": ["x"]},
            {"op": "remove", "path": "/metadata/finalizers/0"}
        ]))
        .unwrap(),
    );
    let error = namespaces
        .patch("team", &PatchParams::default(), &stale_test)
        .await
        .unwrap_err();
    assert_eq!(code(error).0, 422);

    let remove_first = Patch::Json::<()>(
        serde_json::from_value(json!([
            {"op": "test", "path": "/metadata/finalizers/0", "value": "a/b"},
            {"op": "remove", "path": "/metadata/finalizers/0"}
        ]))
        .unwrap(),
    );
    namespaces
        .patch("team", &PatchParams::default(), &remove_first)
        .await
        .unwrap();
    assert!(
        namespaces.get_opt("team").await.unwrap().is_some(),
        "one finalizer left"
    );
    namespaces
        .patch(
            "team",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
    assert!(
        namespaces.get_opt("team").await.unwrap().is_none(),
        "gone with the last finalizer"
    );
}

#[tokio::test]
async fn deleting_an_owner_deletes_its_dependents() {
    let server = ApiServer::new();
    let client = server.client("t", "apps");
    let keys: Api<ApiKey> = Api::namespaced(client.clone(), "apps");
    let secrets: Api<Secret> = Api::namespaced(client, "apps");
    let key = keys
        .create(&PostParams::default(), &api_key("ci", "pull:*"))
        .await
        .unwrap();
    let mut owned = secret("owned", json!({}));
    owned.metadata.owner_references = Some(vec![key.controller_owner_ref(&()).unwrap()]);
    secrets
        .create(&PostParams::default(), &owned)
        .await
        .unwrap();
    secrets
        .create(&PostParams::default(), &secret("free", json!({})))
        .await
        .unwrap();
    keys.delete("ci", &DeleteParams::default()).await.unwrap();
    assert!(secrets.get_opt("owned").await.unwrap().is_none());
    assert!(secrets.get_opt("free").await.unwrap().is_some());
}

#[tokio::test]
async fn apply_creates_and_conflicts_across_managers_unless_forced() {
    let server = ApiServer::new();
    let secrets: Api<Secret> = Api::namespaced(server.client("t", "apps"), "apps");
    let config = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {"k": "YQ=="}});
    let created = secrets
        .patch("s", &PatchParams::apply("one"), &Patch::Apply(&config))
        .await
        .unwrap();
    assert!(created.uid().is_some());
    let other = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {"k": "Yg=="}});
    let error = secrets
        .patch("s", &PatchParams::apply("two"), &Patch::Apply(&other))
        .await
        .unwrap_err();
    assert_eq!(code(error), (409, "Conflict".into()));
    let forced = secrets
        .patch(
            "s",
            &PatchParams::apply("two").force(),
            &Patch::Apply(&other),
        )
        .await
        .unwrap();
    assert_eq!(forced.data.unwrap()["k"].0, b"b");
    let managers = server
        .managers("secrets", Some("apps"), "s", Part::Main)
        .unwrap();
    assert_eq!(managers.owners("data.k"), ["two"]);
}

#[tokio::test]
async fn a_watch_resumes_after_its_resource_version_and_expires_after_compaction() {
    let server = ApiServer::new();
    let secrets: Api<Secret> = Api::namespaced(server.client("t", "apps"), "apps");
    let first = secrets
        .create(&PostParams::default(), &secret("a", json!({})))
        .await
        .unwrap();
    let since = first.resource_version().unwrap();
    secrets
        .create(&PostParams::default(), &secret("b", json!({})))
        .await
        .unwrap();
    let mut stream = secrets
        .watch(&WatchParams::default(), &since)
        .await
        .unwrap()
        .boxed();
    match stream.try_next().await.unwrap().unwrap() {
        WatchEvent::Added(secret) => assert_eq!(secret.name_any(), "b"),
        other => panic!("expected b added, got {other:?}"),
    }
    secrets.delete("a", &DeleteParams::default()).await.unwrap();
    match stream.try_next().await.unwrap().unwrap() {
        WatchEvent::Deleted(secret) => assert_eq!(secret.name_any(), "a"),
        other => panic!("expected a deleted, got {other:?}"),
    }
    server.compact();
    let mut stream = secrets
        .watch(&WatchParams::default(), &since)
        .await
        .unwrap()
        .boxed();
    match stream.try_next().await.unwrap().unwrap() {
        WatchEvent::Error(status) => assert_eq!(status.code, 410),
        other => panic!("expected 410 Gone, got {other:?}"),
    }
}

#[tokio::test]
async fn a_selected_watch_sees_objects_enter_and_leave_the_selection() {
    let server = ApiServer::new();
    let secrets: Api<Secret> = Api::namespaced(server.client("t", "apps"), "apps");
    let params = WatchParams::default().labels("team in (a,b),!frozen");
    let mut stream = secrets.watch(&params, "0").await.unwrap().boxed();
    secrets
        .create(
            &PostParams::default(),
            &secret("other", json!({"team": "c"})),
        )
        .await
        .unwrap();
    secrets
        .create(&PostParams::default(), &secret("s", json!({})))
        .await
        .unwrap();
    let label = |labels: serde_json::Value| Patch::Merge(json!({"metadata": {"labels": labels}}));
    secrets
        .patch("s", &PatchParams::default(), &label(json!({"team": "a"})))
        .await
        .unwrap();
    secrets
        .patch("s", &PatchParams::default(), &label(json!({"team": "b"})))
        .await
        .unwrap();
    secrets
        .patch(
            "s",
            &PatchParams::default(),
            &label(json!({"frozen": "yes"})),
        )
        .await
        .unwrap();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let event = stream.try_next().await.unwrap().unwrap();
        seen.push(match event {
            WatchEvent::Added(s) => format!("added {}", s.name_any()),
            WatchEvent::Modified(s) => format!("modified {}", s.name_any()),
            WatchEvent::Deleted(s) => format!("deleted {}", s.name_any()),
            other => format!("{other:?}"),
        });
    }
    assert_eq!(seen, ["added s", "modified s", "deleted s"]);
}

#[tokio::test]
async fn refused_requests_are_forbidden_and_uninstalled_kinds_are_not_found() {
    let server = ApiServer::new();
    server.authorize_with(std::sync::Arc::new(|request: &super::Recorded| {
        request.resource != "secrets" || request.verb != "create"
    }));
    let secrets: Api<Secret> = Api::namespaced(server.client("t", "apps"), "apps");
    let error = secrets
        .create(&PostParams::default(), &secret("s", json!({})))
        .await
        .unwrap_err();
    assert_eq!(code(error), (403, "Forbidden".into()));
    assert!(
        secrets.get_opt("s").await.unwrap().is_none(),
        "refused writes change nothing"
    );
    let recorded = server.requests();
    assert_eq!(
        recorded[0].verb, "create",
        "refused requests are recorded too"
    );

    let keys: Api<ApiKey> = Api::namespaced(server.client("t", "apps"), "apps");
    keys.list(&Default::default()).await.unwrap();
    server.uninstall("apikeys");
    let error = keys.list(&Default::default()).await.unwrap_err();
    assert_eq!(code(error), (404, "NotFound".into()));
}

/// Admission's check for owner references that block their owner's deletion is recorded as
/// the `update` of the owner's `finalizers` it needs.
#[tokio::test]
async fn a_blocking_owner_reference_implies_updating_the_owners_finalizers() {
    let server = ApiServer::new();
    let client = server.client("t", "apps");
    let keys: Api<ApiKey> = Api::namespaced(client.clone(), "apps");
    let secrets: Api<Secret> = Api::namespaced(client, "apps");
    let key = keys
        .create(&PostParams::default(), &api_key("ci", "pull:*"))
        .await
        .unwrap();
    let mut owner = key.controller_owner_ref(&()).unwrap();
    let mut owned = secret("plain", json!({}));
    owned.metadata.owner_references = Some(vec![owner.clone()]);
    secrets
        .create(&PostParams::default(), &owned)
        .await
        .unwrap();
    assert!(!server.requests().iter().any(|request| request.implied));
    owner.block_owner_deletion = Some(true);
    let mut blocking = secret("blocking", json!({}));
    blocking.metadata.owner_references = Some(vec![owner]);
    secrets
        .create(&PostParams::default(), &blocking)
        .await
        .unwrap();
    let implied: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|request| request.implied)
        .collect();
    assert_eq!(implied.len(), 1, "{implied:?}");
    assert_eq!(
        (
            implied[0].verb.as_str(),
            implied[0].group.as_str(),
            implied[0].resource.as_str()
        ),
        ("update", "niso.online", "apikeys/finalizers")
    );
    assert_eq!(implied[0].namespace.as_deref(), Some("apps"));
    assert_eq!(implied[0].name.as_deref(), Some("ci"));
}

/// A watch that asked for bookmarks ends, at its timeout, with one carrying the last revision.
#[tokio::test]
async fn a_watch_ends_at_its_timeout_with_a_bookmark() {
    let server = ApiServer::new();
    let secrets: Api<Secret> = Api::namespaced(server.client("t", "apps"), "apps");
    let created = secrets
        .create(&PostParams::default(), &secret("a", json!({})))
        .await
        .unwrap();
    let params = WatchParams::default().timeout(1);
    assert!(params.bookmarks);
    let events: Vec<_> = secrets
        .watch(&params, &created.resource_version().unwrap())
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    match events.as_slice() {
        [WatchEvent::Bookmark(bookmark)] => assert_eq!(
            Some(bookmark.metadata.resource_version.clone()),
            created.resource_version()
        ),
        other => panic!("expected one bookmark, got {other:?}"),
    }
}
