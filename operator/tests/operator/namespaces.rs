//! The RegistryNamespace reconciler: creation (finalizer, registry state, status, Events),
//! member convergence, deletion with each policy, unknown users, taken names, adoption and
//! idempotence.

use std::sync::Arc;
use std::time::Duration;

use kube::runtime::controller::Action;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{Backend, archives};
use crate::mock::{self, run_reconcile};
use crate::{
    Fixture, assert_adds_finalizer, assert_removes_finalizer, ready_of, with_finalizer, with_status,
};
use niso_operator::crd::{
    DeletionPolicy, MemberRole, MemberSpec, MembersPolicy, RegistryNamespace, RegistryNamespaceSpec,
};
use niso_operator::reconciler::{error_policy, reconcile};

crate::for_each_backend!(
    creation_adds_the_finalizer_then_creates_the_namespace,
    member_changes_converge,
    deletion_with_delete_policy_waits_for_packages_then_removes,
    deletion_with_retain_policy_hands_the_namespace_back,
    deleting_when_the_namespace_is_already_gone_succeeds,
    an_unknown_owner_is_reported_and_retried_with_backoff,
    a_name_taken_by_a_user_is_reported,
    an_existing_org_is_adopted,
);

pub const PATH: &str = "/apis/niso.online/v1alpha1/registrynamespaces/team";
pub const STATUS_PATH: &str = "/apis/niso.online/v1alpha1/registrynamespaces/team/status";
pub const UID: &str = "5a0e0c1c-0000-4000-8000-000000000001";

/// A resource managing `@team` with exactly these members.
pub fn resource(
    owner: &str,
    members: &[(&str, MemberRole)],
    policy: DeletionPolicy,
) -> RegistryNamespace {
    let mut rns = RegistryNamespace::new(
        "team",
        RegistryNamespaceSpec {
            name: None,
            owner: owner.into(),
            members: members
                .iter()
                .map(|(username, role)| MemberSpec {
                    username: (*username).into(),
                    role: *role,
                })
                .collect(),
            members_policy: MembersPolicy::Exact,
            adopt: false,
            grants: vec![],
            deletion_policy: policy,
        },
    );
    rns.metadata.uid = Some(UID.into());
    rns.metadata.generation = Some(1);
    rns.metadata.resource_version = Some("1".into());
    rns
}

pub fn json_of(rns: &RegistryNamespace) -> Value {
    serde_json::to_value(rns).expect("JSON")
}

pub fn from_json(value: Value) -> RegistryNamespace {
    serde_json::from_value(value).expect("a RegistryNamespace")
}

/// `@team`, made by alice through the API with carol as an admin: a namespace no resource
/// manages (yet).
pub async fn org_made_through_the_api(fixture: &Fixture, alice: &str) {
    let (code, body) = fixture
        .app
        .post("/v1/namespaces", Some(alice), json!({"name": "@team"}))
        .await;
    assert_eq!(code, StatusCode::CREATED, "{body}");
    let (code, body) = fixture
        .app
        .post(
            "/v1/namespaces/@team/members",
            Some(alice),
            json!({"username": "carol", "role": "admin"}),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED, "{body}");
}

/// A reconcile of `rns` that fails with `reason`: the status patched at `status_path`
/// (`Ready=False`) and a Warning Event say so. Returns the error and the status patch.
pub async fn expect_failure(
    fixture: &mut Fixture,
    rns: &RegistryNamespace,
    status_path: &str,
    reason: &str,
) -> (niso_operator::Error, Value) {
    let object = json_of(rns);
    let mut status_patch = Value::Null;
    let error = run_reconcile(&mut fixture.api, &fixture.ctx, rns, async |api| {
        status_patch = api
            .expect("PATCH", status_path, |seen| {
                (200, with_status(&object, &seen.body))
            })
            .await
            .body;
        api.expect_event("default", "Warning", reason).await;
    })
    .await
    .expect_err(reason);
    assert_eq!(error.reason(), reason);
    let (status, status_reason, _) = ready_of(&status_patch);
    assert_eq!((status.as_str(), status_reason.as_str()), ("False", reason));
    (error, status_patch)
}

/// Takes a new resource through the finalizer and the first convergence; returns it as the
/// API would hold it afterwards (finalizer and status set).
pub async fn create(fixture: &mut Fixture, rns: RegistryNamespace) -> RegistryNamespace {
    let object = json_of(&rns);
    let action = run_reconcile(&mut fixture.api, &fixture.ctx, &rns, async |api| {
        let seen = api
            .expect("PATCH", PATH, |_| (200, with_finalizer(&object)))
            .await;
        assert_adds_finalizer(&seen.body);
    })
    .await
    .expect("finalizer added");
    assert_eq!(action, Action::await_change());
    // The first reconcile only adds the finalizer: nothing in the registry yet.
    assert!(
        fixture
            .app
            .registry
            .namespace_view(&niso_operator::namespace::registry_name(&rns).unwrap())
            .await
            .is_err()
    );
    let rns = from_json(with_finalizer(&object));
    let object = json_of(&rns);
    let mut status_patch = Value::Null;
    let action = run_reconcile(&mut fixture.api, &fixture.ctx, &rns, async |api| {
        let seen = api
            .expect("PATCH", STATUS_PATH, |seen| {
                (200, with_status(&object, &seen.body))
            })
            .await;
        assert!(
            seen.query.contains("fieldManager=niso-operator"),
            "{}",
            seen.query
        );
        status_patch = seen.body;
        api.expect_event("default", "Normal", "Created").await;
        if !rns.spec.members.is_empty() {
            api.expect_event("default", "Normal", "MembersChanged")
                .await;
        }
    })
    .await
    .expect("reconciled");
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));
    let (status, reason, _) = ready_of(&status_patch);
    assert_eq!((status.as_str(), reason.as_str()), ("True", "Reconciled"));
    from_json(with_status(&object, &status_patch))
}

pub async fn members(fixture: &Fixture, name: &str) -> Vec<(String, String)> {
    fixture
        .app
        .registry
        .namespace_view(name)
        .await
        .expect("namespace")
        .members
        .into_iter()
        .map(|member| (member.username, member.role))
        .collect()
}

pub fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

async fn creation_adds_the_finalizer_then_creates_the_namespace(backend: Backend) {
    let mut fixture = Fixture::new(backend).await;
    let alice = fixture.app.register("alice").await;
    fixture.app.register("bob").await;
    fixture.app.register("carol").await;
    let rns = resource(
        "alice",
        &[("bob", MemberRole::Admin), ("carol", MemberRole::Member)],
        DeletionPolicy::Retain,
    );

    let rns = create(&mut fixture, rns).await;
    let status = rns.status.clone().expect("status");
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(status.registry_name.as_deref(), Some("@team"));
    assert_eq!(status.member_count, Some(3));
    let view = fixture.app.registry.namespace_view("@team").await.unwrap();
    assert!(view.managed);
    assert_eq!(view.ns_type, "org");
    assert_eq!(
        members(&fixture, "@team").await,
        pairs(&[("alice", "owner"), ("bob", "admin"), ("carol", "member")])
    );

    // The API refuses member changes to a managed namespace.
    let (code, body) = fixture
        .app
        .post(
            "/v1/namespaces/@team/members",
            Some(&alice),
            json!({"username": "carol", "role": "admin"}),
        )
        .await;
    assert_eq!(code, StatusCode::CONFLICT, "{body}");
    let (code, _) = fixture
        .app
        .delete("/v1/namespaces/@team/members/bob", Some(&alice))
        .await;
    assert_eq!(code, StatusCode::CONFLICT);

    // A second reconcile of the unchanged object writes nothing.
    let action = mock::run_silent(
        &mut fixture.api,
        reconcile(Arc::new(rns.clone()), fixture.ctx.clone()),
    )
    .await
    .expect("idempotent");
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));
    let metrics = fixture.ctx.metrics.render();
    assert!(
        metrics.contains("niso_operator_reconciles_total{controller=\"registrynamespace\"} 3"),
        "{metrics}"
    );
}

async fn member_changes_converge(backend: Backend) {
    let mut fixture = Fixture::new(backend).await;
    for user in ["alice", "bob", "carol", "dave"] {
        fixture.app.register(user).await;
    }
    let rns = create(
        &mut fixture,
        resource(
            "alice",
            &[("bob", MemberRole::Admin), ("carol", MemberRole::Member)],
            DeletionPolicy::Retain,
        ),
    )
    .await;

    // bob becomes a member, carol goes, dave comes as admin.
    let mut changed = rns.clone();
    changed.spec.members = vec![
        MemberSpec {
            username: "bob".into(),
            role: MemberRole::Member,
        },
        MemberSpec {
            username: "dave".into(),
            role: MemberRole::Admin,
        },
    ];
    changed.metadata.generation = Some(2);
    let object = json_of(&changed);
    let mut status_patch = Value::Null;
    let mut event = Value::Null;
    run_reconcile(&mut fixture.api, &fixture.ctx, &changed, async |api| {
        status_patch = api
            .expect("PATCH", STATUS_PATH, |seen| {
                (200, with_status(&object, &seen.body))
            })
            .await
            .body;
        event = api
            .expect_event("default", "Normal", "MembersChanged")
            .await
            .body;
    })
    .await
    .expect("converged");
    assert_eq!(status_patch["status"]["observedGeneration"], 2);
    assert_eq!(status_patch["status"]["memberCount"], 3);
    let note = event["note"].as_str().unwrap_or_default();
    assert!(
        note.contains("added: dave")
            && note.contains("role changed: bob")
            && note.contains("removed: carol"),
        "{note}"
    );
    assert_eq!(
        members(&fixture, "@team").await,
        pairs(&[("alice", "owner"), ("bob", "member"), ("dave", "admin")])
    );

    // A member removed by hand in the database (drift) comes back on the next resync.
    let changed = from_json(with_status(&object, &status_patch));
    fixture
        .app
        .registry
        .converge_members(&crate::common::test_authority(), "@team", &[], true)
        .await
        .expect("drift");
    run_reconcile(&mut fixture.api, &fixture.ctx, &changed, async |api| {
        api.expect_event("default", "Normal", "MembersChanged")
            .await;
    })
    .await
    .expect("drift repaired");
    assert_eq!(
        members(&fixture, "@team").await,
        pairs(&[("alice", "owner"), ("bob", "member"), ("dave", "admin")])
    );
}

pub fn deleting(rns: &RegistryNamespace) -> RegistryNamespace {
    let mut rns = rns.clone();
    rns.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::now(),
    ));
    rns
}

async fn deletion_with_delete_policy_waits_for_packages_then_removes(backend: Backend) {
    let mut fixture = Fixture::new(backend).await;
    let alice = fixture.app.register("alice").await;
    fixture.app.register("bob").await;
    let rns = create(
        &mut fixture,
        resource(
            "alice",
            &[("bob", MemberRole::Member)],
            DeletionPolicy::Delete,
        ),
    )
    .await;
    let archive = archives::niso("@team/tool", "1.0.0", &[("bin/tool", b"#!/bin/sh\n")]);
    let (code, body) = fixture
        .app
        .upload(&alice, "@team/tool", "1.0.0", "x86_64-linux", archive)
        .await;
    assert_eq!(code, StatusCode::CREATED, "{body}");

    // With a package left, the namespace stays, the finalizer too, and status says why.
    let rns = deleting(&rns);
    let (_, status_patch) = expect_failure(&mut fixture, &rns, STATUS_PATH, "HasPackages").await;
    let (status, reason, message) = ready_of(&status_patch);
    assert_eq!((status.as_str(), reason.as_str()), ("False", "HasPackages"));
    assert!(message.contains("Retain"), "{message}");
    assert!(fixture.app.registry.namespace_view("@team").await.is_ok());

    // Once the package is gone, the namespace goes and the finalizer is removed.
    let (code, _) = fixture
        .app
        .delete("/v1/packages/@team/tool/1.0.0/x86_64-linux", Some(&alice))
        .await;
    assert_eq!(code, StatusCode::NO_CONTENT);
    let rns = from_json(with_status(&json_of(&rns), &status_patch));
    let object = json_of(&rns);
    let action = run_reconcile(&mut fixture.api, &fixture.ctx, &rns, async |api| {
        api.expect_event("default", "Normal", "Deleted").await;
        let seen = api
            .expect("PATCH", PATH, |_| (200, crate::without_finalizer(&object)))
            .await;
        assert_removes_finalizer(&seen.body);
    })
    .await
    .expect("deleted");
    assert_eq!(action, Action::await_change());
    assert!(matches!(
        fixture.app.registry.namespace_view("@team").await,
        Err(niso_registry::Error::NotFound(_))
    ));
    // The name is free again.
    let (code, body) = fixture
        .app
        .post("/v1/namespaces", Some(&alice), json!({"name": "@team"}))
        .await;
    assert_eq!(code, StatusCode::CREATED, "{body}");
}

async fn deletion_with_retain_policy_hands_the_namespace_back(backend: Backend) {
    let mut fixture = Fixture::new(backend).await;
    let alice = fixture.app.register("alice").await;
    fixture.app.register("bob").await;
    fixture.app.register("carol").await;
    let rns = create(
        &mut fixture,
        resource(
            "alice",
            &[("bob", MemberRole::Admin)],
            DeletionPolicy::Retain,
        ),
    )
    .await;
    let rns = deleting(&rns);
    let object = json_of(&rns);
    run_reconcile(&mut fixture.api, &fixture.ctx, &rns, async |api| {
        api.expect_event("default", "Normal", "Released").await;
        let seen = api
            .expect("PATCH", PATH, |_| (200, crate::without_finalizer(&object)))
            .await;
        assert_removes_finalizer(&seen.body);
    })
    .await
    .expect("released");
    let view = fixture.app.registry.namespace_view("@team").await.unwrap();
    assert!(!view.managed);
    assert_eq!(
        members(&fixture, "@team").await,
        pairs(&[("alice", "owner"), ("bob", "admin")])
    );
    // Managed through the API again.
    let (code, body) = fixture
        .app
        .post(
            "/v1/namespaces/@team/members",
            Some(&alice),
            json!({"username": "carol", "role": "member"}),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED, "{body}");
}

async fn deleting_when_the_namespace_is_already_gone_succeeds(backend: Backend) {
    let mut fixture = Fixture::new(backend).await;
    fixture.app.register("alice").await;
    let rns = create(&mut fixture, resource("alice", &[], DeletionPolicy::Delete)).await;
    assert!(
        fixture
            .app
            .registry
            .delete_empty_namespace(&crate::common::test_authority(), "@team", UID)
            .await
            .unwrap()
    );
    let rns = deleting(&rns);
    let object = json_of(&rns);
    run_reconcile(&mut fixture.api, &fixture.ctx, &rns, async |api| {
        let seen = api
            .expect("PATCH", PATH, |_| (200, crate::without_finalizer(&object)))
            .await;
        assert_removes_finalizer(&seen.body);
    })
    .await
    .expect("nothing left to clean up");
}

async fn an_unknown_owner_is_reported_and_retried_with_backoff(backend: Backend) {
    let mut fixture = Fixture::new(backend).await;
    fixture.app.register("bob").await;
    let rns = resource(
        "ghost",
        &[("bob", MemberRole::Member)],
        DeletionPolicy::Retain,
    );
    let mut rns = rns;
    rns.metadata.finalizers = Some(vec![niso_operator::context::FINALIZER.into()]);
    let (error, status_patch) =
        expect_failure(&mut fixture, &rns, STATUS_PATH, "UserNotFound").await;
    let (status, reason, message) = ready_of(&status_patch);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "UserNotFound")
    );
    assert!(message.contains("ghost"), "{message}");
    // Nothing was made, not even a partial namespace.
    assert!(fixture.app.registry.namespace_view("@team").await.is_err());
    // Backoff grows with each failure.
    let rns_arc = Arc::new(rns.clone());
    assert_eq!(
        error_policy(rns_arc.clone(), &error, fixture.ctx.clone()),
        Action::requeue(Duration::from_secs(5))
    );
    assert_eq!(
        error_policy(rns_arc.clone(), &error, fixture.ctx.clone()),
        Action::requeue(Duration::from_secs(10))
    );
    let metrics = fixture.ctx.metrics.render();
    assert!(
        metrics.contains(
            "niso_operator_reconcile_failures_total{controller=\"registrynamespace\",reason=\"UserNotFound\"} 1"
        ),
        "{metrics}"
    );

    // Retried with the same status: no new write, no new Event.
    let rns = from_json(with_status(&json_of(&rns), &status_patch));
    let error = mock::run_silent(
        &mut fixture.api,
        reconcile(Arc::new(rns.clone()), fixture.ctx.clone()),
    )
    .await
    .expect_err("still missing");
    assert_eq!(error.reason(), "UserNotFound");

    // Once the owner registers, the next retry succeeds.
    fixture.app.register("ghost").await;
    let object = json_of(&rns);
    let mut status_patch = Value::Null;
    run_reconcile(&mut fixture.api, &fixture.ctx, &rns, async |api| {
        status_patch = api
            .expect("PATCH", STATUS_PATH, |seen| {
                (200, with_status(&object, &seen.body))
            })
            .await
            .body;
        api.expect_event("default", "Normal", "Created").await;
        api.expect_event("default", "Normal", "MembersChanged")
            .await;
    })
    .await
    .expect("reconciled");
    assert_eq!(ready_of(&status_patch).0, "True");
    assert_eq!(
        members(&fixture, "@team").await,
        pairs(&[("ghost", "owner"), ("bob", "member")])
    );
    // Success resets the backoff.
    assert_eq!(
        error_policy(rns_arc, &error, fixture.ctx.clone()),
        Action::requeue(Duration::from_secs(5))
    );
}

async fn a_name_taken_by_a_user_is_reported(backend: Backend) {
    let mut fixture = Fixture::new(backend).await;
    fixture.app.register("alice").await;
    fixture.app.register("team").await;
    let mut rns = resource("alice", &[], DeletionPolicy::Delete);
    rns.metadata.finalizers = Some(vec![niso_operator::context::FINALIZER.into()]);
    let (_, status_patch) = expect_failure(&mut fixture, &rns, STATUS_PATH, "NameTaken").await;
    let view = fixture.app.registry.namespace_view("@team").await.unwrap();
    assert_eq!(view.ns_type, "user");
    assert!(!view.managed);

    // Deleting the resource (policy Delete) leaves the user's namespace alone.
    let rns = deleting(&from_json(with_status(&json_of(&rns), &status_patch)));
    let object = json_of(&rns);
    run_reconcile(&mut fixture.api, &fixture.ctx, &rns, async |api| {
        api.expect("PATCH", PATH, |_| (200, crate::without_finalizer(&object)))
            .await;
    })
    .await
    .expect("nothing of ours to delete");
    assert!(fixture.app.registry.namespace_view("@team").await.is_ok());
}

async fn an_existing_org_is_adopted(backend: Backend) {
    let mut fixture = Fixture::new(backend).await;
    let alice = fixture.app.register("alice").await;
    fixture.app.register("bob").await;
    fixture.app.register("carol").await;
    org_made_through_the_api(&fixture, &alice).await;

    let mut rns = resource(
        "alice",
        &[("bob", MemberRole::Member)],
        DeletionPolicy::Retain,
    );
    rns.spec.adopt = true;
    rns.metadata.finalizers = Some(vec![niso_operator::context::FINALIZER.into()]);
    let object = json_of(&rns);
    let mut event = Value::Null;
    run_reconcile(&mut fixture.api, &fixture.ctx, &rns, async |api| {
        api.expect("PATCH", STATUS_PATH, |seen| {
            (200, with_status(&object, &seen.body))
        })
        .await;
        api.expect_event("default", "Normal", "Adopted").await;
        event = api
            .expect_event("default", "Normal", "MembersChanged")
            .await
            .body;
    })
    .await
    .expect("adopted");
    assert!(
        fixture
            .app
            .registry
            .namespace_view("@team")
            .await
            .unwrap()
            .managed
    );
    assert_eq!(
        members(&fixture, "@team").await,
        pairs(&[("alice", "owner"), ("bob", "member")])
    );

    // Another owner's org is not adopted.
    let mut other = resource("bob", &[], DeletionPolicy::Delete);
    other.metadata.finalizers = Some(vec![niso_operator::context::FINALIZER.into()]);
    expect_failure(&mut fixture, &other, STATUS_PATH, "OwnerMismatch").await;
}
