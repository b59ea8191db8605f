//! The ApiKey reconciler: creation (finalizer, key, Secret, status, Event), idempotence,
//! rotation on a changed scope or a deleted Secret, revocation on deletion, invalid scopes and
//! unknown users (no partial change), expiry.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::controller::Action;
use sea_orm::{EntityTrait, PaginatorTrait};
use serde_json::Value;

use crate::common::Backend;
use crate::mock::{not_found, run_reconcile};
use crate::{
    Fixture, REGISTRY_URL, assert_adds_finalizer, assert_removes_finalizer, ready_of,
    with_finalizer, with_status,
};
use niso_operator::crd::{ApiKey, ApiKeySpec};

crate::for_each_backend!(
    creation_writes_the_key_into_an_owned_secret,
    a_changed_scope_rotates_the_key,
    a_stale_cache_does_not_rotate_twice,
    a_key_with_a_duration_renews_itself_before_it_ends,
    a_deleted_secret_rotates_the_key,
    deletion_revokes_the_key,
    an_invalid_scope_changes_nothing,
    an_unknown_user_is_reported,
    an_unlinked_key_with_an_expiry,
);

const PATH: &str = "/apis/niso.online/v1alpha1/namespaces/apps/apikeys/ci";
const STATUS_PATH: &str = "/apis/niso.online/v1alpha1/namespaces/apps/apikeys/ci/status";
const SECRET_PATH: &str = "/api/v1/namespaces/apps/secrets/ci-key";
const UID: &str = "0b1c2d3e-0000-4000-8000-00000000a001";

fn resource(user: Option<&str>, scope: &str) -> ApiKey {
    let mut key = ApiKey::new(
        "ci",
        ApiKeySpec {
            user: user.map(str::to_owned),
            scope: scope.into(),
            secret_name: Some("ci-key".into()),
            expires_at: None,
            duration: None,
            renew_before: None,
            secret_template: None,
        },
    );
    key.metadata.namespace = Some("apps".into());
    key.metadata.uid = Some(UID.into());
    key.metadata.generation = Some(1);
    key.metadata.resource_version = Some("1".into());
    key
}

fn json_of(key: &ApiKey) -> Value {
    serde_json::to_value(key).expect("JSON")
}

fn from_json(value: Value) -> ApiKey {
    serde_json::from_value(value).expect("an ApiKey")
}

/// What a Secret apply patch wrote: the Secret as the API now holds it, and its key.
fn written_secret(body: &Value) -> (Value, String) {
    let secret: Secret = serde_json::from_value(body.clone()).expect("a Secret");
    let data = secret.data.expect("data");
    let key = String::from_utf8(data["api-key"].0.clone()).expect("UTF-8");
    let url = String::from_utf8(data["registry-url"].0.clone()).expect("UTF-8");
    assert_eq!(url, REGISTRY_URL);
    let owners = secret.metadata.owner_references.expect("owner references");
    assert_eq!(owners.len(), 1);
    assert_eq!(owners[0].kind, "ApiKey");
    assert_eq!(owners[0].uid, UID);
    assert_eq!(owners[0].controller, Some(true));
    (body.clone(), key)
}

/// One reconcile that rotates the key: the Secret is read (`secret`, or missing), rewritten,
/// the status records the new key, and a `KeyRotated` Event whose note contains `note` is
/// published. Returns the Secret and status patches.
async fn expect_rotation(
    fixture: &mut Fixture,
    key: &ApiKey,
    secret: Option<&Value>,
    note: &str,
) -> (Value, Value) {
    let object = json_of(key);
    let mut secret_patch = Value::Null;
    let mut status_patch = Value::Null;
    run_reconcile(&mut fixture.api, &fixture.ctx, key, async |api| {
        match secret {
            Some(secret) => {
                api.expect("GET", SECRET_PATH, |_| (200, secret.clone()))
                    .await
            }
            None => {
                api.expect("GET", SECRET_PATH, |_| not_found("secret ci-key"))
                    .await
            }
        };
        secret_patch = api
            .expect("PATCH", SECRET_PATH, |seen| (200, seen.body.clone()))
            .await
            .body;
        status_patch = api
            .expect("PATCH", STATUS_PATH, |seen| {
                (200, with_status(&object, &seen.body))
            })
            .await
            .body;
        let event = api.expect_event("apps", "Normal", "KeyRotated").await;
        assert!(
            event.body["note"]
                .as_str()
                .unwrap_or_default()
                .contains(note),
            "{}",
            event.body
        );
    })
    .await
    .expect("rotated");
    (secret_patch, status_patch)
}

/// The finalizer, then the key: returns the resource as the API holds it, the Secret, and
/// the key's value.
async fn create(fixture: &mut Fixture, key: ApiKey) -> (ApiKey, Value, String) {
    let object = json_of(&key);
    let action = run_reconcile(&mut fixture.api, &fixture.ctx, &key, async |api| {
        let seen = api
            .expect("PATCH", PATH, |_| (200, with_finalizer(&object)))
            .await;
        assert_adds_finalizer(&seen.body);
    })
    .await
    .expect("finalizer added");
    assert_eq!(action, Action::await_change());
    assert_eq!(
        live_keys(fixture).await,
        0,
        "no key before the finalizer is in place"
    );

    let key = from_json(with_finalizer(&object));
    let object = json_of(&key);
    let mut status_patch = Value::Null;
    let mut secret_patch = Value::Null;
    run_reconcile(&mut fixture.api, &fixture.ctx, &key, async |api| {
        api.expect("GET", SECRET_PATH, |_| not_found("secret ci-key"))
            .await;
        let seen = api
            .expect("PATCH", SECRET_PATH, |seen| (200, seen.body.clone()))
            .await;
        assert!(seen.query.contains("fieldManager=niso-operator"));
        secret_patch = seen.body;
        status_patch = api
            .expect("PATCH", STATUS_PATH, |seen| {
                (200, with_status(&object, &seen.body))
            })
            .await
            .body;
        api.expect_event("apps", "Normal", "KeyCreated").await;
    })
    .await
    .expect("key created");
    let (secret, value) = written_secret(&secret_patch);
    let (status, reason, message) = ready_of(&status_patch);
    assert_eq!((status.as_str(), reason.as_str()), ("True", "Reconciled"));
    let prefix = status_patch["status"]["prefix"].as_str().expect("prefix");
    assert!(value.starts_with(prefix));
    assert!(message.contains(prefix), "{message}");
    // The key's value never goes into status or Events.
    assert!(!status_patch.to_string().contains(&value));
    (
        from_json(with_status(&object, &status_patch)),
        secret,
        value,
    )
}

async fn live_keys(fixture: &Fixture) -> u64 {
    use sea_orm::{ColumnTrait, QueryFilter};
    entity::api_key::Entity::find()
        .filter(entity::api_key::Column::Name.starts_with("k8s:apps/ci#"))
        .filter(entity::api_key::Column::RevokedAt.is_null())
        .count(fixture.app.registry.database())
        .await
        .expect("count keys")
}

async fn creation_writes_the_key_into_an_owned_secret(backend: Backend) {
    let mut fixture = Fixture::new(backend).await;
    fixture.app.register("alice").await;
    let (key, secret, value) = create(
        &mut fixture,
        resource(Some("alice"), "push:@alice/*, pull:*"),
    )
    .await;
    let status = key.status.clone().expect("status");
    assert_eq!(status.scope.as_deref(), Some("pull:*,push:@alice/*"));
    assert_eq!(status.user.as_deref(), Some("alice"));
    assert_eq!(status.observed_generation, Some(1));

    // The key works, linked to alice, with the canonical scope.
    let principal = fixture
        .app
        .registry
        .authenticate(&value)
        .await
        .expect("key works");
    assert_eq!(principal.key_id, status.key_id.unwrap());
    assert_eq!(principal.user.expect("user-linked").username, "alice");
    assert_eq!(principal.scope.to_string(), "pull:*,push:@alice/*");
    fixture
        .app
        .publish(&value, "@alice/tool", "1.0.0", "x86_64-linux")
        .await;

    // The use shows in status (lastUsedAt, from the registry).
    let object = json_of(&key);
    let mut status_patch = Value::Null;
    run_reconcile(&mut fixture.api, &fixture.ctx, &key, async |api| {
        api.expect("GET", SECRET_PATH, |_| (200, secret.clone()))
            .await;
        status_patch = api
            .expect("PATCH", STATUS_PATH, |seen| {
                (200, with_status(&object, &seen.body))
            })
            .await
            .body;
    })
    .await
    .expect("use recorded");
    assert!(
        status_patch["status"]["lastUsedAt"].is_string(),
        "{status_patch}"
    );
    let key = from_json(with_status(&object, &status_patch));

    // Unchanged: one read of the Secret, no write.
    let action = run_reconcile(&mut fixture.api, &fixture.ctx, &key, async |api| {
        api.expect("GET", SECRET_PATH, |_| (200, secret.clone()))
            .await;
    })
    .await
    .expect("idempotent");
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));
    assert_eq!(live_keys(&fixture).await, 1);
}

async fn a_changed_scope_rotates_the_key(backend: Backend) {
    let mut fixture = Fixture::new(backend).await;
    fixture.app.register("alice").await;
    let (key, secret, old_value) = create(
        &mut fixture,
        resource(Some("alice"), "pull:*,push:@alice/*"),
    )
    .await;
    let old_id = key.status.as_ref().unwrap().key_id.unwrap();

    let mut changed = key.clone();
    changed.spec.scope = "pull:*".into();
    changed.metadata.generation = Some(2);
    let (secret_patch, status_patch) =
        expect_rotation(&mut fixture, &changed, Some(&secret), "scope changed").await;
    let (_, new_value) = written_secret(&secret_patch);
    assert_ne!(new_value, old_value);
    let new_id = status_patch["status"]["keyId"].as_i64().unwrap();
    assert_ne!(new_id, old_id);
    assert_eq!(status_patch["status"]["scope"], "pull:*");
    assert_eq!(status_patch["status"]["observedGeneration"], 2);
    // The old key is revoked, the new one has the new scope.
    assert!(matches!(
        fixture.app.registry.authenticate(&old_value).await,
        Err(niso_registry::Error::Unauthenticated(_))
    ));
    let principal = fixture.app.registry.authenticate(&new_value).await.unwrap();
    assert_eq!(principal.scope.to_string(), "pull:*");
    assert_eq!(live_keys(&fixture).await, 1);
}

/// After a rotation, the Secret's watch event starts a reconcile while the cache still holds
/// the resource with the old (now revoked) key id: that reconcile must not rotate again.
async fn a_stale_cache_does_not_rotate_twice(backend: Backend) {
    let mut fixture = Fixture::new(backend).await;
    let (key, secret, _) = create(&mut fixture, resource(None, "pull:*,push:@alice/*")).await;
    let old_id = key.status.as_ref().unwrap().key_id.unwrap();
    let mut changed = key.clone();
    changed.spec.scope = "pull:*".into();
    changed.metadata.generation = Some(2);
    let (secret_patch, status_patch) =
        expect_rotation(&mut fixture, &changed, Some(&secret), "").await;
    let (rotated_secret, value) = written_secret(&secret_patch);
    let new_id = status_patch["status"]["keyId"].as_i64().unwrap();
    assert_ne!(new_id, old_id);
    assert_eq!(
        rotated_secret["metadata"]["annotations"]["niso.online/key-id"],
        new_id.to_string(),
        "the Secret records the key it holds"
    );

    // The stale resource: the new spec, the old status (key id revoked by the rotation).
    assert_eq!(changed.status.as_ref().unwrap().key_id, Some(old_id));
    let object = json_of(&changed);
    let mut status_patch = Value::Null;
    run_reconcile(&mut fixture.api, &fixture.ctx, &changed, async |api| {
        api.expect("GET", SECRET_PATH, |_| (200, rotated_secret.clone()))
            .await;
        status_patch = api
            .expect("PATCH", STATUS_PATH, |seen| {
                (200, with_status(&object, &seen.body))
            })
            .await
            .body;
    })
    .await
    .expect("no second rotation");
    assert_eq!(status_patch["status"]["keyId"].as_i64(), Some(new_id));
    assert_eq!(status_patch["status"]["scope"], "pull:*");
    assert_eq!(ready_of(&status_patch).0, "True");
    let principal = fixture.app.registry.authenticate(&value).await.unwrap();
    assert_eq!(
        principal.key_id, new_id,
        "the key the workload read still works"
    );
    assert_eq!(live_keys(&fixture).await, 1);
}

/// `duration` / `renewBefore`: the key lives `duration` and is replaced `renewBefore` ahead of
/// its end; status says when, the Secret carries the template's metadata, the end is a metric.
async fn a_key_with_a_duration_renews_itself_before_it_ends(backend: Backend) {
    use sea_orm::{ActiveModelTrait, Set};
    let mut fixture = Fixture::new(backend).await;
    let mut spec = resource(None, "pull:*");
    spec.spec.duration = Some("24h".into());
    spec.spec.renew_before = Some("8h".into());
    spec.spec.secret_template = Some(niso_operator::crd::SecretTemplate {
        labels: [("team".to_owned(), "platform".to_owned())].into(),
        annotations: [("reloader.stakater.com/match".to_owned(), "true".to_owned())].into(),
    });
    let started = chrono::Utc::now().timestamp();
    let (key, secret, value) = create(&mut fixture, spec).await;
    let status = key.status.clone().unwrap();
    let not_after = status.not_after.as_ref().expect("notAfter").0.as_second();
    assert!(
        (not_after - started - 24 * 3600).abs() <= 60,
        "lives 24h: {not_after}"
    );
    assert_eq!(
        status
            .renewal_time
            .as_ref()
            .expect("renewalTime")
            .0
            .as_second(),
        not_after - 8 * 3600
    );
    assert!(status.last_rotation_time.is_some());
    assert_eq!(
        status.expires_at, None,
        "expiresAt is the spec's fixed end only"
    );
    assert_eq!(secret["metadata"]["labels"]["team"], "platform");
    assert_eq!(
        secret["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "niso-operator"
    );
    assert_eq!(
        secret["metadata"]["annotations"]["reloader.stakater.com/match"],
        "true"
    );
    let metrics = fixture.ctx.metrics.render();
    let series = format!(
        "niso_operator_api_key_expiry_timestamp_seconds{{apikey=\"ci\",apikey_namespace=\"apps\"}} {not_after}"
    );
    assert!(
        metrics.contains(&series),
        "{series} missing from:\n{metrics}"
    );

    // Used, then reconciled before renewal is due: status shows the use, nothing rotates.
    fixture.app.registry.authenticate(&value).await.unwrap();
    let object = json_of(&key);
    let mut status_patch = Value::Null;
    let action = run_reconcile(&mut fixture.api, &fixture.ctx, &key, async |api| {
        api.expect("GET", SECRET_PATH, |_| (200, secret.clone()))
            .await;
        status_patch = api
            .expect("PATCH", STATUS_PATH, |seen| {
                (200, with_status(&object, &seen.body))
            })
            .await
            .body;
    })
    .await
    .expect("in place");
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));
    assert!(
        status_patch["status"]["lastUsedAt"].is_string(),
        "{status_patch}"
    );
    let key: ApiKey = from_json(with_status(&object, &status_patch));

    // 20 hours later (the key's times moved back): 4h are left, less than renewBefore.
    let id = status.key_id.unwrap();
    let now = chrono::Utc::now().naive_utc();
    let mut stored: entity::api_key::ActiveModel = entity::api_key::Entity::find_by_id(id)
        .one(fixture.app.registry.database())
        .await
        .unwrap()
        .unwrap()
        .into();
    stored.created_at = Set(now - chrono::TimeDelta::hours(20));
    stored.expires_at = Set(Some(now + chrono::TimeDelta::hours(4)));
    stored
        .update(fixture.app.registry.database())
        .await
        .unwrap();
    let (secret_patch, status_patch) =
        expect_rotation(&mut fixture, &key, Some(&secret), "renewal").await;
    let (_, renewed) = written_secret(&secret_patch);
    assert!(fixture.app.registry.authenticate(&value).await.is_err());
    let principal = fixture.app.registry.authenticate(&renewed).await.unwrap();
    assert_ne!(principal.key_id, id);
    let renewed_until = status_patch["status"]["notAfter"].as_str().unwrap();
    let renewed_until = renewed_until
        .parse::<k8s_openapi::jiff::Timestamp>()
        .unwrap()
        .as_second();
    assert!(
        (renewed_until - chrono::Utc::now().timestamp() - 24 * 3600).abs() <= 60,
        "a fresh 24h: {renewed_until}"
    );
    assert_eq!(live_keys(&fixture).await, 1);

    // Gone with the ApiKey: no series left behind.
    let key: ApiKey = from_json(with_status(&object, &status_patch));
    let key = deleting(&key);
    let object = json_of(&key);
    run_reconcile(&mut fixture.api, &fixture.ctx, &key, async |api| {
        api.expect_event("apps", "Normal", "KeyRevoked").await;
        api.expect("PATCH", PATH, |_| (200, crate::without_finalizer(&object)))
            .await;
    })
    .await
    .expect("revoked");
    assert!(
        !fixture
            .ctx
            .metrics
            .render()
            .contains("niso_operator_api_key_expiry_timestamp_seconds{")
    );
}

async fn a_deleted_secret_rotates_the_key(backend: Backend) {
    let mut fixture = Fixture::new(backend).await;
    let (key, _, old_value) = create(&mut fixture, resource(None, "pull:*")).await;
    let (secret_patch, _) = expect_rotation(&mut fixture, &key, None, "").await;
    let (_, new_value) = written_secret(&secret_patch);
    assert!(fixture.app.registry.authenticate(&old_value).await.is_err());
    let principal = fixture.app.registry.authenticate(&new_value).await.unwrap();
    assert!(principal.user.is_none(), "an unlinked key");
    assert_eq!(live_keys(&fixture).await, 1);
}

fn deleting(key: &ApiKey) -> ApiKey {
    let mut key = key.clone();
    key.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
    key
}

async fn deletion_revokes_the_key(backend: Backend) {
    let mut fixture = Fixture::new(backend).await;
    fixture.app.register("alice").await;
    let (key, _, value) = create(&mut fixture, resource(Some("alice"), "pull:*")).await;
    let key = deleting(&key);
    let object = json_of(&key);
    let action = run_reconcile(&mut fixture.api, &fixture.ctx, &key, async |api| {
        api.expect_event("apps", "Normal", "KeyRevoked").await;
        let seen = api
            .expect("PATCH", PATH, |_| (200, crate::without_finalizer(&object)))
            .await;
        assert_removes_finalizer(&seen.body);
    })
    .await
    .expect("revoked");
    assert_eq!(action, Action::await_change());
    assert!(matches!(
        fixture.app.registry.authenticate(&value).await,
        Err(niso_registry::Error::Unauthenticated(_))
    ));
    assert_eq!(live_keys(&fixture).await, 0);

    // Deleting again (the key already revoked) still succeeds, quietly.
    run_reconcile(&mut fixture.api, &fixture.ctx, &key, async |api| {
        api.expect("PATCH", PATH, |_| (200, crate::without_finalizer(&object)))
            .await;
    })
    .await
    .expect("nothing left to revoke");
}

async fn an_invalid_scope_changes_nothing(backend: Backend) {
    let mut fixture = Fixture::new(backend).await;
    fixture.app.register("alice").await;
    let (key, _, value) = create(&mut fixture, resource(Some("alice"), "pull:*")).await;

    // A scope the schema lets through but the registry refuses.
    let mut changed = key.clone();
    changed.spec.scope = "pull:@alice/x*y".into();
    changed.metadata.generation = Some(2);
    let object = json_of(&changed);
    let mut status_patch = Value::Null;
    let error = run_reconcile(&mut fixture.api, &fixture.ctx, &changed, async |api| {
        status_patch = api
            .expect("PATCH", STATUS_PATH, |seen| {
                (200, with_status(&object, &seen.body))
            })
            .await
            .body;
        api.expect_event("apps", "Warning", "InvalidScope").await;
    })
    .await
    .expect_err("invalid scope");
    assert_eq!(error.reason(), "InvalidScope");
    let (status, reason, _) = ready_of(&status_patch);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "InvalidScope")
    );
    // The live key is untouched: same id in status, still working, no other key made.
    assert_eq!(
        status_patch["status"]["keyId"].as_i64(),
        key.status.as_ref().unwrap().key_id
    );
    assert!(fixture.app.registry.authenticate(&value).await.is_ok());
    assert_eq!(live_keys(&fixture).await, 1);
    let metrics = fixture.ctx.metrics.render();
    assert!(
        metrics.contains(
            "niso_operator_reconcile_failures_total{controller=\"apikey\",reason=\"InvalidScope\"} 1"
        ),
        "{metrics}"
    );
}

async fn an_unknown_user_is_reported(backend: Backend) {
    let mut fixture = Fixture::new(backend).await;
    let mut key = resource(Some("ghost"), "pull:*");
    key.metadata.finalizers = Some(vec![niso_operator::context::FINALIZER.into()]);
    let object = json_of(&key);
    let mut status_patch = Value::Null;
    let error = run_reconcile(&mut fixture.api, &fixture.ctx, &key, async |api| {
        api.expect("GET", SECRET_PATH, |_| not_found("secret ci-key"))
            .await;
        status_patch = api
            .expect("PATCH", STATUS_PATH, |seen| {
                (200, with_status(&object, &seen.body))
            })
            .await
            .body;
        api.expect_event("apps", "Warning", "UserNotFound").await;
    })
    .await
    .expect_err("no such user");
    assert_eq!(error.reason(), "UserNotFound");
    assert_eq!(ready_of(&status_patch).1, "UserNotFound");
    assert!(status_patch["status"]["keyId"].is_null());
    assert_eq!(live_keys(&fixture).await, 0);
}

async fn an_unlinked_key_with_an_expiry(backend: Backend) {
    let mut fixture = Fixture::new(backend).await;
    let expires =
        k8s_openapi::jiff::Timestamp::now() + k8s_openapi::jiff::SignedDuration::from_secs(3600);
    let expires = k8s_openapi::jiff::Timestamp::from_second(expires.as_second()).unwrap();
    let mut key = resource(None, "admin:*");
    key.spec.expires_at = Some(Time(expires));
    let (key, secret, value) = create(&mut fixture, key).await;
    let principal = fixture.app.registry.authenticate(&value).await.unwrap();
    assert!(principal.scope.has_admin());
    assert_eq!(
        key.status.as_ref().unwrap().not_after,
        Some(Time(expires)),
        "notAfter is the fixed expiry"
    );
    // Requeued before the resync when the key expires sooner... (an hour is later than the
    // resync, so the resync wins here). The use is recorded in status.
    let object = json_of(&key);
    let action = run_reconcile(&mut fixture.api, &fixture.ctx, &key, async |api| {
        api.expect("GET", SECRET_PATH, |_| (200, secret.clone()))
            .await;
        api.expect("PATCH", STATUS_PATH, |seen| {
            (200, with_status(&object, &seen.body))
        })
        .await;
    })
    .await
    .unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));

    // Moving the expiry into the past: no key is issued for it, and status says so.
    let mut expired = key.clone();
    expired.spec.expires_at = Some(Time(
        k8s_openapi::jiff::Timestamp::from_second(expires.as_second() - 7200).unwrap(),
    ));
    expired.metadata.generation = Some(2);
    let object = json_of(&expired);
    let mut status_patch = Value::Null;
    run_reconcile(&mut fixture.api, &fixture.ctx, &expired, async |api| {
        api.expect("GET", SECRET_PATH, |_| (200, secret.clone()))
            .await;
        status_patch = api
            .expect("PATCH", STATUS_PATH, |seen| {
                (200, with_status(&object, &seen.body))
            })
            .await
            .body;
        api.expect_event("apps", "Warning", "Expired").await;
    })
    .await
    .expect("reported");
    assert_eq!(ready_of(&status_patch).1, "Expired");
    assert!(status_patch["status"]["keyId"].is_null());
    assert_eq!(
        live_keys(&fixture).await,
        0,
        "the live key went with the expiry"
    );
    assert!(fixture.app.registry.authenticate(&value).await.is_err());

    // Reconciled again: nothing to do, nothing written.
    let expired = from_json(with_status(&object, &status_patch));
    run_reconcile(&mut fixture.api, &fixture.ctx, &expired, async |api| {
        api.expect("GET", SECRET_PATH, |_| (200, secret.clone()))
            .await;
    })
    .await
    .expect("still expired");
}
