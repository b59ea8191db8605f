//! Instance scoping: an operator serving a named registry instance reconciles only objects
//! labelled for it, leaves those of another instance alone without a word, and says so in an
//! Event on unlabelled ones; an operator limited to some namespaces ignores ApiKeys elsewhere.

use std::sync::Arc;

use kube::runtime::controller::Action;

use crate::common::Backend;
use crate::mock::{self};
use crate::namespaces::{json_of, resource};
use crate::{Fixture, assert_adds_finalizer, with_finalizer};
use niso_operator::context::INSTANCE_LABEL;
use niso_operator::crd::{ApiKey, ApiKeySpec, DeletionPolicy};
use niso_operator::reconciler::reconcile;

crate::for_each_backend!(
    objects_of_another_instance_are_left_alone,
    api_keys_outside_the_watched_namespaces_are_left_alone,
);

async fn objects_of_another_instance_are_left_alone(backend: Backend) {
    let mut fixture = Fixture::with_settings(backend, |mut settings| {
        settings.instance = Some("prod".into());
        settings
    })
    .await;
    fixture.app.register("alice").await;
    let mut rns = resource("alice", &[], DeletionPolicy::Delete);

    // Unlabelled: an Event says why nothing happens; no finalizer, no status.
    let event = mock::run(
        &mut fixture.api,
        reconcile(Arc::new(rns.clone()), fixture.ctx.clone()),
        async |api| {
            let event = api.expect_event("default", "Normal", "NotManaged").await;
            let note = event.body["note"].as_str().unwrap_or_default().to_owned();
            assert!(note.contains("niso.online/instance=prod"), "{note}");
        },
    )
    .await
    .expect("left alone");
    assert_eq!(event, Action::await_change());

    // Another instance's: not a single request.
    rns.metadata.labels = Some([(INSTANCE_LABEL.to_owned(), "staging".to_owned())].into());
    let action = mock::run_silent(
        &mut fixture.api,
        reconcile(Arc::new(rns.clone()), fixture.ctx.clone()),
    )
    .await
    .expect("left alone");
    assert_eq!(action, Action::await_change());
    assert!(fixture.app.registry.namespace_view("@team").await.is_err());
    assert!(
        !fixture
            .ctx
            .metrics
            .render()
            .contains("niso_operator_reconciles_total{"),
        "ignored objects are not counted as reconciles"
    );

    // Its own: reconciled (the finalizer first).
    rns.metadata.labels = Some([(INSTANCE_LABEL.to_owned(), "prod".to_owned())].into());
    let object = json_of(&rns);
    mock::run(
        &mut fixture.api,
        reconcile(Arc::new(rns.clone()), fixture.ctx.clone()),
        async |api| {
            let seen = api
                .expect(
                    "PATCH",
                    "/apis/niso.online/v1alpha1/registrynamespaces/team",
                    |_| (200, with_finalizer(&object)),
                )
                .await;
            assert_adds_finalizer(&seen.body);
        },
    )
    .await
    .expect("finalizer added");
}

async fn api_keys_outside_the_watched_namespaces_are_left_alone(backend: Backend) {
    let mut fixture = Fixture::with_settings(backend, |mut settings| {
        settings.watch_namespaces = vec!["team-a".into()];
        settings
    })
    .await;
    let mut key = ApiKey::new(
        "ci",
        ApiKeySpec {
            user: None,
            scope: "pull:*".into(),
            secret_name: None,
            expires_at: None,
            duration: None,
            renew_before: None,
            secret_template: None,
        },
    );
    key.metadata.namespace = Some("team-b".into());
    key.metadata.uid = Some("0b1c2d3e-0000-4000-8000-00000000c001".into());
    let action = mock::run_silent(
        &mut fixture.api,
        reconcile(Arc::new(key), fixture.ctx.clone()),
    )
    .await
    .expect("left alone");
    assert_eq!(action, Action::await_change());
}
