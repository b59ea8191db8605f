//! Claims and adoption: a second RegistryNamespace naming a claimed namespace is a `Conflict`
//! and never changes or deletes it; an existing namespace is adopted only when asked, and its
//! members are merged unless `Exact` is asked.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::Fixture;
use crate::common::Backend;
use crate::mock::run_reconcile;
use crate::namespaces::{
    STATUS_PATH, create, deleting, expect_failure, from_json, json_of, members,
    org_made_through_the_api, pairs, resource,
};
use crate::{ready_of, with_status};
use niso_operator::context::FINALIZER;
use niso_operator::crd::{DeletionPolicy, MemberRole, MemberSpec, MembersPolicy};

crate::for_each_backend!(
    a_second_claimant_is_a_conflict_and_changes_nothing,
    adoption_is_explicit_and_merge_keeps_members,
);

const OTHER_PATH: &str = "/apis/niso.online/v1alpha1/registrynamespaces/team-copy";
const OTHER_STATUS_PATH: &str = "/apis/niso.online/v1alpha1/registrynamespaces/team-copy/status";

async fn a_second_claimant_is_a_conflict_and_changes_nothing(backend: Backend) {
    let mut fixture = Fixture::new(backend).await;
    fixture.app.register("alice").await;
    fixture.app.register("bob").await;
    create(
        &mut fixture,
        resource(
            "alice",
            &[("bob", MemberRole::Admin)],
            DeletionPolicy::Retain,
        ),
    )
    .await;

    // Another resource (another release, another team) names @team too, with no members and
    // the Delete policy.
    let mut other = resource("alice", &[], DeletionPolicy::Delete);
    other.metadata.name = Some("team-copy".into());
    other.metadata.uid = Some("5a0e0c1c-0000-4000-8000-0000000000c2".into());
    other.spec.name = Some("@team".into());
    other.spec.adopt = true;
    other.metadata.finalizers = Some(vec![FINALIZER.into()]);
    let (_, status_patch) =
        expect_failure(&mut fixture, &other, OTHER_STATUS_PATH, "Conflict").await;
    let (status, reason, message) = ready_of(&status_patch);
    assert_eq!((status.as_str(), reason.as_str()), ("False", "Conflict"));
    assert!(
        message.contains("5a0e0c1c-0000-4000-8000-000000000001"),
        "names the claimant: {message}"
    );
    assert_eq!(
        members(&fixture, "@team").await,
        pairs(&[("alice", "owner"), ("bob", "admin")]),
        "the second claimant changed the members"
    );

    // Deleting it leaves @team alone.
    let other = deleting(&from_json(with_status(&json_of(&other), &status_patch)));
    let object = json_of(&other);
    run_reconcile(&mut fixture.api, &fixture.ctx, &other, async |api| {
        api.expect("PATCH", OTHER_PATH, |_| {
            (200, crate::without_finalizer(&object))
        })
        .await;
    })
    .await
    .expect("nothing of its own to delete");
    let view = fixture.app.registry.namespace_view("@team").await.unwrap();
    assert!(view.managed, "still managed by the first");
    assert_eq!(
        members(&fixture, "@team").await,
        pairs(&[("alice", "owner"), ("bob", "admin")])
    );
}

async fn adoption_is_explicit_and_merge_keeps_members(backend: Backend) {
    let mut fixture = Fixture::new(backend).await;
    let alice = fixture.app.register("alice").await;
    fixture.app.register("bob").await;
    fixture.app.register("carol").await;
    fixture.app.register("dave").await;
    org_made_through_the_api(&fixture, &alice).await;

    // Without adopt, an existing namespace is left alone.
    let mut rns = resource("alice", &[], DeletionPolicy::Retain);
    rns.spec.members_policy = MembersPolicy::Merge;
    rns.metadata.finalizers = Some(vec![FINALIZER.into()]);
    let (_, status_patch) =
        expect_failure(&mut fixture, &rns, STATUS_PATH, "AdoptionRequired").await;
    assert!(ready_of(&status_patch).2.contains("spec.adopt"));
    assert_eq!(
        members(&fixture, "@team").await,
        pairs(&[("alice", "owner"), ("carol", "admin")])
    );
    assert!(
        !fixture
            .app
            .registry
            .namespace_view("@team")
            .await
            .unwrap()
            .managed
    );

    // Adopted, with no members listed and the Merge policy: nobody is removed, and the API
    // still manages members.
    let mut rns = from_json(with_status(&json_of(&rns), &status_patch));
    rns.spec.adopt = true;
    rns.metadata.generation = Some(2);
    let object = json_of(&rns);
    let mut status_patch = Value::Null;
    run_reconcile(&mut fixture.api, &fixture.ctx, &rns, async |api| {
        status_patch = api
            .expect("PATCH", STATUS_PATH, |seen| {
                (200, with_status(&object, &seen.body))
            })
            .await
            .body;
        api.expect_event("default", "Normal", "Adopted").await;
    })
    .await
    .expect("adopted");
    assert_eq!(ready_of(&status_patch).0, "True");
    assert_eq!(status_patch["status"]["memberCount"], 2);
    assert_eq!(
        members(&fixture, "@team").await,
        pairs(&[("alice", "owner"), ("carol", "admin")])
    );
    let (code, body) = fixture
        .app
        .post(
            "/v1/namespaces/@team/members",
            Some(&alice),
            json!({"username": "dave", "role": "member"}),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED, "{body}");

    // Listed members are added next to those managed through the API.
    let mut rns = from_json(with_status(&json_of(&rns), &status_patch));
    rns.spec.members = vec![MemberSpec {
        username: "bob".into(),
        role: MemberRole::Member,
    }];
    rns.metadata.generation = Some(3);
    let object = json_of(&rns);
    let mut status_patch = Value::Null;
    run_reconcile(&mut fixture.api, &fixture.ctx, &rns, async |api| {
        status_patch = api
            .expect("PATCH", STATUS_PATH, |seen| {
                (200, with_status(&object, &seen.body))
            })
            .await
            .body;
        api.expect_event("default", "Normal", "MembersChanged")
            .await;
    })
    .await
    .expect("merged");
    assert_eq!(status_patch["status"]["memberCount"], 4);
    assert_eq!(
        members(&fixture, "@team").await,
        pairs(&[
            ("alice", "owner"),
            ("bob", "member"),
            ("carol", "admin"),
            ("dave", "member")
        ])
    );

    // Exact, asked for: now the list is the truth and the API refuses member changes.
    let mut rns = from_json(with_status(&json_of(&rns), &status_patch));
    rns.spec.members_policy = MembersPolicy::Exact;
    rns.metadata.generation = Some(4);
    let object = json_of(&rns);
    run_reconcile(&mut fixture.api, &fixture.ctx, &rns, async |api| {
        api.expect("PATCH", STATUS_PATH, |seen| {
            (200, with_status(&object, &seen.body))
        })
        .await;
        api.expect_event("default", "Normal", "MembersChanged")
            .await;
    })
    .await
    .expect("exact");
    assert_eq!(
        members(&fixture, "@team").await,
        pairs(&[("alice", "owner"), ("bob", "member")])
    );
    assert!(
        fixture
            .app
            .registry
            .namespace_view("@team")
            .await
            .unwrap()
            .managed
    );
}
