//! The grant model at work in the ApiKey reconciler: a key asking for more than its Kubernetes
//! namespace is granted is `Forbidden` and none is minted; a granted key is minted, and revoked
//! when the grant goes; nothing is decided before the grants are loaded.

use std::sync::Arc;

use kube::runtime::reflector;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::Value;

use crate::common::Backend;
use crate::mock::{self, not_found, run_reconcile};
use crate::{Fixture, ready_of, with_status};
use niso_operator::context::FINALIZER;
use niso_operator::crd::{
    ApiKey, ApiKeySpec, DeletionPolicy, GrantAction, GrantSpec, MembersPolicy, RegistryNamespace,
    RegistryNamespaceSpec,
};
use niso_operator::reconciler::reconcile;

crate::for_each_backend!(
    a_key_beyond_its_grant_is_forbidden_and_not_minted,
    a_granted_key_is_minted_and_revoked_when_the_grant_goes,
    nothing_is_decided_before_the_grants_are_loaded,
    another_instances_grants_grant_nothing,
);

const UID: &str = "0b1c2d3e-0000-4000-8000-00000000b001";

/// `@team`, granting `team-a` pull and push.
fn team(grants: Vec<GrantSpec>) -> RegistryNamespace {
    let mut rns = RegistryNamespace::new(
        "team",
        RegistryNamespaceSpec {
            name: None,
            owner: "alice".into(),
            members: vec![],
            members_policy: MembersPolicy::Merge,
            adopt: false,
            grants,
            deletion_policy: DeletionPolicy::Retain,
        },
    );
    rns.metadata.uid = Some("5a0e0c1c-0000-4000-8000-00000000b002".into());
    rns
}

fn team_a_pulls_and_pushes() -> Vec<GrantSpec> {
    vec![GrantSpec {
        namespaces: vec!["team-a".into()],
        service_accounts: vec![],
        actions: vec![GrantAction::Pull, GrantAction::Push],
    }]
}

/// An ApiKey `ci` in `namespace` with the finalizer in place.
fn key(namespace: &str, user: Option<&str>, scope: &str) -> ApiKey {
    let mut key = ApiKey::new(
        "ci",
        ApiKeySpec {
            user: user.map(str::to_owned),
            scope: scope.into(),
            secret_name: None,
            expires_at: None,
            duration: None,
            renew_before: None,
            secret_template: None,
        },
    );
    key.metadata.namespace = Some(namespace.into());
    key.metadata.uid = Some(UID.into());
    key.metadata.generation = Some(1);
    key.metadata.resource_version = Some("1".into());
    key.metadata.finalizers = Some(vec![FINALIZER.into()]);
    key
}

fn status_path(namespace: &str) -> String {
    format!("/apis/niso.online/v1alpha1/namespaces/{namespace}/apikeys/ci/status")
}

/// Keys minted for ApiKeys of the tests, live or not.
async fn keys(fixture: &Fixture, live_only: bool) -> u64 {
    let mut query =
        entity::api_key::Entity::find().filter(entity::api_key::Column::Name.starts_with("k8s:"));
    if live_only {
        query = query.filter(entity::api_key::Column::RevokedAt.is_null());
    }
    query
        .count(fixture.app.registry.database())
        .await
        .expect("count keys")
}

/// Reconciles `key`, which must end `Forbidden`: returns the status message.
async fn forbidden(fixture: &mut Fixture, key: &ApiKey) -> String {
    let namespace = key.metadata.namespace.clone().unwrap();
    let object = serde_json::to_value(key).unwrap();
    let mut status_patch = Value::Null;
    let error = run_reconcile(&mut fixture.api, &fixture.ctx, key, async |api| {
        status_patch = api
            .expect("PATCH", &status_path(&namespace), |seen| {
                (200, with_status(&object, &seen.body))
            })
            .await
            .body;
        api.expect_event(&namespace, "Warning", "Forbidden").await;
    })
    .await
    .expect_err("forbidden");
    assert_eq!(error.reason(), "Forbidden");
    let (status, reason, message) = ready_of(&status_patch);
    assert_eq!((status.as_str(), reason.as_str()), ("False", "Forbidden"));
    message
}

async fn a_key_beyond_its_grant_is_forbidden_and_not_minted(backend: Backend) {
    let mut fixture = Fixture::new(backend).await;
    fixture.app.register("alice").await;
    fixture.set_namespaces(&[team(team_a_pulls_and_pushes())]);

    // An action the namespace is not granted.
    let message = forbidden(
        &mut fixture,
        &key("team-a", None, "pull:@team/*,delete:@team/*"),
    )
    .await;
    assert!(
        message.contains("team-a has no grant of delete on @team (needed by delete:@team/*)"),
        "{message}"
    );
    assert!(!message.contains("pull"), "pull is granted: {message}");
    // A namespace granted nothing.
    let message = forbidden(&mut fixture, &key("team-b", None, "push:@team/app")).await;
    assert!(
        message.contains("team-b has no grant of push on @team"),
        "{message}"
    );
    // Registry-wide scopes, and keys acting as a user, are for privileged namespaces only.
    for scope in ["admin:*", "pull:*", "pull:@te*"] {
        let message = forbidden(&mut fixture, &key("team-a", None, scope)).await;
        assert!(message.contains("registry-wide"), "{scope}: {message}");
    }
    let message = forbidden(&mut fixture, &key("team-a", Some("alice"), "pull:@team/*")).await;
    assert!(message.contains("registry user alice"), "{message}");
    assert_eq!(keys(&fixture, false).await, 0, "no key was ever minted");
}

async fn a_granted_key_is_minted_and_revoked_when_the_grant_goes(backend: Backend) {
    let mut fixture = Fixture::new(backend).await;
    fixture.app.register("alice").await;
    fixture.set_namespaces(&[team(team_a_pulls_and_pushes())]);
    let granted = key("team-a", None, "pull:@team/*,push:@team/app");
    let object = serde_json::to_value(&granted).unwrap();
    let secret_path = "/api/v1/namespaces/team-a/secrets/ci";
    let mut secret_patch = Value::Null;
    let mut status_patch = Value::Null;
    run_reconcile(&mut fixture.api, &fixture.ctx, &granted, async |api| {
        api.expect("GET", secret_path, |_| not_found("secret ci"))
            .await;
        secret_patch = api
            .expect("PATCH", secret_path, |seen| (200, seen.body.clone()))
            .await
            .body;
        status_patch = api
            .expect("PATCH", &status_path("team-a"), |seen| {
                (200, with_status(&object, &seen.body))
            })
            .await
            .body;
        api.expect_event("team-a", "Normal", "KeyCreated").await;
    })
    .await
    .expect("granted");
    assert_eq!(ready_of(&status_patch).0, "True");
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(secret_patch).unwrap();
    let value = String::from_utf8(secret.data.unwrap()["api-key"].0.clone()).unwrap();
    let principal = fixture.app.registry.authenticate(&value).await.unwrap();
    assert_eq!(principal.scope.to_string(), "pull:@team/*,push:@team/app");

    // The admin withdraws push: the key asks for more than is granted now, and stops working.
    let mut pull_only = team_a_pulls_and_pushes();
    pull_only[0].actions = vec![GrantAction::Pull];
    fixture.set_namespaces(&[team(pull_only)]);
    let current: ApiKey = serde_json::from_value(with_status(&object, &status_patch)).unwrap();
    let message = forbidden(&mut fixture, &current).await;
    assert!(message.contains("no grant of push on @team"), "{message}");
    assert!(matches!(
        fixture.app.registry.authenticate(&value).await,
        Err(niso_registry::Error::Unauthenticated(_))
    ));
    assert_eq!(keys(&fixture, true).await, 0);
}

async fn nothing_is_decided_before_the_grants_are_loaded(backend: Backend) {
    let mut fixture = Fixture::new(backend).await;
    // A cache that has not listed yet knows no grant: deciding on it would refuse everything.
    let (unlisted, writer) = reflector::store::<RegistryNamespace>();
    fixture.ctx.use_namespace_store(unlisted);
    let error = mock::run_silent(
        &mut fixture.api,
        reconcile(
            Arc::new(key("team-a", None, "pull:@team/*")),
            fixture.ctx.clone(),
        ),
    )
    .await
    .expect_err("waits for the grants");
    assert_eq!(error.reason(), "GrantsNotLoaded");
    assert_eq!(keys(&fixture, false).await, 0);
    drop(writer);
}

async fn another_instances_grants_grant_nothing(backend: Backend) {
    use niso_operator::context::INSTANCE_LABEL;
    let mut fixture = Fixture::with_settings(backend, |mut settings| {
        settings.instance = Some("prod".into());
        settings
    })
    .await;
    let label = |instance: &str| Some([(INSTANCE_LABEL.to_owned(), instance.to_owned())].into());
    let mut staging = team(team_a_pulls_and_pushes());
    staging.metadata.labels = label("staging");
    fixture.set_namespaces(&[staging]);
    let mut asking = key("team-a", None, "pull:@team/*");
    asking.metadata.labels = label("prod");
    let message = forbidden(&mut fixture, &asking).await;
    assert!(message.contains("no grant of pull on @team"), "{message}");
    assert_eq!(keys(&fixture, false).await, 0);
}
