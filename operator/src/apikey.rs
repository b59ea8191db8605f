//! The `ApiKey` controller: a registry key (user-linked when `spec.user` is set) whose value
//! lives in a Secret owned by the resource (`api-key`, `registry-url`). A key's value cannot be
//! read back, so a changed scope, user or expiry, a key revoked in the registry or a lost
//! Secret rotates it: a new key is created, written, recorded in status, and only then are the
//! old one (and any orphan of a crash mid-rotation) revoked. Deletion revokes (finalizer).
//!
//! A key is minted only if its Kubernetes namespace is granted everything the scope asks
//! (`grant`); otherwise the resource is `Forbidden` and any key it held is revoked.
//!
//! The Secret records the id of the key it holds (annotation `niso.online/key-id`) and is read
//! fresh on every reconcile, while the resource may come from a stale cache: after a rotation,
//! the Secret's watch event can start a reconcile whose resource still shows the old (just
//! revoked) key id. The Secret's record wins then, so such a reconcile does not rotate again.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};

use niso_registry::auth::scope::ScopeSet;
use niso_registry::keys::CreatedKey;
use niso_registry::managed::ManagedKey;
use niso_registry::names::validate_username;

use crate::conditions::{self, RECONCILED};
use crate::context::{Context, MANAGER};
use crate::crd::{ApiKey, ApiKeyStatus};
use crate::error::{Error, Result};
use crate::grant::Requester;
use crate::reconciler::{Reconciled, fail, write_status};
use crate::renewal::Validity;
use crate::secret::{
    carries_template, delete_owned_secret, owned_by, recorded_key, secret_value, to_time,
    write_secret,
};

/// The `controller` label of this controller's metrics.
pub const CONTROLLER: &str = "apikey";
/// Secret data key holding the key.
pub const SECRET_KEY: &str = "api-key";
/// Secret data key holding the registry's URL.
pub const SECRET_URL: &str = "registry-url";
/// Annotation on the Secret: the registry id of the key it holds.
pub const KEY_ID_ANNOTATION: &str = "niso.online/key-id";
/// Label put on the Secrets the operator writes (the controller watches those).
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", MANAGER);

impl Reconciled for ApiKey {
    const CONTROLLER: &'static str = CONTROLLER;

    fn api(&self, ctx: &Context) -> Result<Api<Self>> {
        let namespace = self
            .namespace()
            .ok_or_else(|| Error::InvalidSpec("an ApiKey is namespaced".into()))?;
        Ok(Api::namespaced(ctx.client.clone(), &namespace))
    }

    fn conditions(status: &ApiKeyStatus) -> &[Condition] {
        &status.conditions
    }

    fn failed_status(&self, previous: &ApiKeyStatus, ready: Condition) -> ApiKeyStatus {
        ApiKeyStatus {
            conditions: vec![ready],
            observed_generation: self.metadata.generation,
            ..previous.clone()
        }
    }

    async fn apply(&self, ctx: &Context) -> Result<Action> {
        apply(self, ctx).await
    }

    async fn cleanup(&self, ctx: &Context) -> Result<Action> {
        cleanup(self, ctx).await
    }
}

/// The registry name of the keys made for this resource: readable, and unique thanks to the
/// uid (so a crash mid-rotation leaves no key that cannot be found again).
pub fn key_name(key: &ApiKey) -> String {
    let mut readable = format!(
        "k8s:{}/{}",
        key.namespace().unwrap_or_default(),
        key.name_any()
    );
    // Kubernetes names are ASCII; keep the whole name within the registry's 128 characters.
    readable.truncate(80);
    format!("{readable}#{}", key.uid().unwrap_or_default())
}

/// The Secret of a resource: `spec.secretName`, else metadata.name.
pub fn secret_name(key: &ApiKey) -> String {
    key.spec
        .secret_name
        .clone()
        .unwrap_or_else(|| key.name_any())
}

/// What the live key should look like.
struct Desired {
    scope_set: ScopeSet,
    scope: String,
    user: Option<String>,
    expires_at: Option<Time>,
    expiry: Option<chrono::NaiveDateTime>,
    /// With `duration`: how the key renews.
    validity: Option<Validity>,
    secret_name: String,
}

fn desired(key: &ApiKey) -> Result<Desired> {
    let scope: ScopeSet =
        key.spec
            .scope
            .parse()
            .map_err(|error: niso_registry::auth::scope::ScopeError| {
                Error::InvalidScope(error.to_string())
            })?;
    if let Some(user) = &key.spec.user {
        validate_username(user).map_err(|error| Error::InvalidSpec(format!("user: {error}")))?;
    }
    let expiry = match &key.spec.expires_at {
        Some(time) => Some(
            chrono::DateTime::from_timestamp(time.0.as_second(), 0)
                .ok_or_else(|| Error::InvalidSpec("expiresAt is out of range".into()))?
                .naive_utc(),
        ),
        None => None,
    };
    Ok(Desired {
        scope: scope.to_string(),
        scope_set: scope,
        user: key.spec.user.clone(),
        expires_at: key.spec.expires_at.clone(),
        expiry,
        validity: Validity::of(&key.spec)?,
        secret_name: secret_name(key),
    })
}

/// What a successful reconcile leaves behind.
struct Outcome {
    status: ApiKeyStatus,
    /// A key made by this reconcile, and why.
    created: Option<(CreatedKey, String)>,
    /// A Secret of ours the key no longer lives in.
    stale_secret: Option<String>,
    /// When to look again.
    requeue: Duration,
}

async fn apply(key: &ApiKey, ctx: &Context) -> Result<Action> {
    let previous = key.status.clone().unwrap_or_default();
    match converge(key, ctx, &previous).await {
        Ok(outcome) => {
            write_status(key, ctx, &previous, &outcome.status).await?;
            ctx.metrics.key_expiry(
                &key.namespace().unwrap_or_default(),
                &key.name_any(),
                outcome.status.not_after.as_ref().map(|at| at.0.as_second()),
            );
            let reference = key.object_ref(&());
            if let Some((created, why)) = &outcome.created {
                // Recorded: now the old key (and any orphan of an interrupted rotation) goes.
                let revoked = ctx
                    .registry
                    .revoke_keys_named(&ctx.authority, &key_name(key), Some(created.id))
                    .await?;
                let (reason, action) = if revoked > 0 || previous.key_id.is_some() {
                    ("KeyRotated", "Rotate")
                } else {
                    ("KeyCreated", "Create")
                };
                ctx.event(
                    &reference,
                    EventType::Normal,
                    reason,
                    action,
                    format!(
                        "key {}… ({why}) written to Secret {}",
                        created.prefix,
                        outcome.status.secret_name.clone().unwrap_or_default()
                    ),
                )
                .await;
            }
            if let Some(stale) = &outcome.stale_secret {
                delete_owned_secret(key, ctx, stale).await?;
            }
            if let Some(ready) = conditions::find_ready(&outcome.status.conditions)
                && ready.status == "False"
                && conditions::find_ready(&previous.conditions)
                    .is_none_or(|before| before.reason != ready.reason)
            {
                ctx.event(
                    &reference,
                    EventType::Warning,
                    &ready.reason,
                    "Reconcile",
                    ready.message.clone(),
                )
                .await;
            }
            Ok(Action::requeue(outcome.requeue))
        }
        Err(error) => fail(key, ctx, &previous, error).await,
    }
}

async fn converge(key: &ApiKey, ctx: &Context, cached: &ApiKeyStatus) -> Result<Outcome> {
    let desired = desired(key)?;
    let registry = &ctx.registry;
    let namespace = key.namespace().unwrap_or_default();
    let grants = ctx.grants().ok_or_else(|| {
        Error::GrantsNotLoaded(
            "the RegistryNamespaces holding the grants are not loaded yet; retrying".into(),
        )
    })?;
    if let Err(missing) = grants.authorize(
        &Requester::namespace(&namespace),
        &desired.scope_set,
        desired.user.as_deref(),
    ) {
        // Whatever this resource was granted before is withdrawn: its key stops working.
        let revoked = registry
            .revoke_keys_named(&ctx.authority, &key_name(key), None)
            .await?;
        if revoked > 0 {
            tracing::info!(
                namespace = %namespace,
                name = %key.name_any(),
                "revoked the key of an ApiKey that is no longer granted its scope"
            );
        }
        return Err(Error::Forbidden(format!("{missing}; no key is issued")));
    }
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let now = chrono::Utc::now().naive_utc();
    let expired = desired.expiry.is_some_and(|at| at <= now);

    // Read fresh (never from a cache): what the Secret holds is the truth about the live key.
    let secret = secrets.get_opt(&desired.secret_name).await?;
    if let Some(secret) = &secret
        && !owned_by(secret, key)
    {
        return Err(Error::InvalidSpec(format!(
            "Secret {} exists and is not owned by this ApiKey; choose another secretName",
            desired.secret_name
        )));
    }
    let held = secret
        .as_ref()
        .and_then(|secret| secret_value(secret, SECRET_KEY));
    let recorded = recorded_key(key, ctx, cached, secret.as_ref(), held.as_deref()).await?;
    let previous = recorded.as_ref().unwrap_or(cached);

    // Why the live key (if any) cannot stay.
    let mut rotate: Option<&str> = None;
    let mut live: Option<ManagedKey> = None;
    match previous.key_id {
        None => rotate = Some("new"),
        Some(id) => match registry.managed_key(&ctx.authority, id).await? {
            None => rotate = Some("the key is gone from the registry"),
            Some(found) if found.revoked => rotate = Some("the key was revoked in the registry"),
            Some(found) => live = Some(found),
        },
    }
    // The registry's record of the live key (not status, which a stale cache may show) says
    // whether its lifetime is the one asked for, and when it is due for renewal.
    let renewal = match (&desired.validity, live.as_ref()) {
        (Some(validity), Some(live)) => match live.expires_at {
            Some(not_after) => {
                let lifetime = not_after - live.created_at;
                if (lifetime - validity.duration).abs() > chrono::TimeDelta::minutes(1) {
                    rotate = rotate.or(Some("duration changed"));
                }
                Some(validity.renewal_time(not_after))
            }
            None => {
                rotate = rotate.or(Some("duration set"));
                None
            }
        },
        (None, Some(live)) if desired.expiry.is_none() && live.expires_at.is_some() => {
            rotate = rotate.or(Some("expiry removed"));
            None
        }
        _ => None,
    };
    if rotate.is_none() && renewal.is_some_and(|at| at <= now) {
        rotate = Some("renewal");
    }
    if rotate.is_none() {
        if previous.scope.as_deref() != Some(desired.scope.as_str()) {
            rotate = Some("scope changed");
        } else if previous.user != desired.user {
            rotate = Some("user changed");
        } else if previous.expires_at != desired.expires_at {
            rotate = Some("expiry changed");
        } else if previous.secret_name.as_deref() != Some(desired.secret_name.as_str()) {
            rotate = Some("secretName changed");
        }
    }

    if rotate.is_none() {
        let prefix = previous.prefix.as_deref().unwrap_or("\u{0}");
        match &held {
            None => rotate = Some("the Secret was deleted"),
            Some(value) if !value.starts_with(prefix) => {
                rotate = Some("the Secret does not hold the key")
            }
            Some(_) => {}
        }
    }
    let stale_secret = previous
        .secret_name
        .clone()
        .filter(|old| *old != desired.secret_name);

    let until = |at: chrono::NaiveDateTime| {
        (at - now)
            .to_std()
            .unwrap_or_default()
            .saturating_add(Duration::from_secs(1))
    };
    let mut requeue = match desired.expiry {
        Some(at) if !expired => ctx.settings.resync.min(until(at)),
        _ => ctx.settings.resync,
    };
    if let Some(at) = renewal {
        requeue = requeue.min(until(at));
    }

    let Some(why) = rotate else {
        // The key is live and in place; keep the Secret's URL current.
        let value = held.expect("a key in place is held by the Secret");
        let secret_current = secret.as_ref().is_some_and(|secret| {
            secret_value(secret, SECRET_URL).as_deref() == Some(ctx.settings.registry_url.as_str())
                && carries_template(secret, key)
        });
        if !secret_current {
            let id = previous.key_id.expect("a key in place has an id");
            write_secret(key, ctx, &desired.secret_name, &value, id).await?;
        }
        let ready = if expired {
            conditions::ready(
                false,
                "Expired",
                format!("the key expired at {}", format_time(&desired.expires_at)),
                key.metadata.generation,
                &previous.conditions,
            )
        } else {
            ready_condition(key, previous, &desired.secret_name)
        };
        let live = live.as_ref();
        return Ok(Outcome {
            status: ApiKeyStatus {
                conditions: vec![ready],
                observed_generation: key.metadata.generation,
                not_after: live.and_then(|live| live.expires_at).map(to_time),
                renewal_time: renewal.map(to_time),
                last_used_at: live.and_then(|live| live.last_used_at).map(to_time),
                ..previous.clone()
            },
            created: None,
            stale_secret: None,
            requeue,
        });
    };

    if expired {
        // A key that would be born expired is not made, and the one that was live goes: the
        // resource asks for no working key after expiresAt.
        registry
            .revoke_keys_named(&ctx.authority, &key_name(key), None)
            .await?;
        return Ok(Outcome {
            status: ApiKeyStatus {
                key_id: None,
                prefix: None,
                not_after: None,
                renewal_time: None,
                last_used_at: None,
                scope: Some(desired.scope.clone()),
                user: desired.user.clone(),
                expires_at: desired.expires_at.clone(),
                conditions: vec![conditions::ready(
                    false,
                    "Expired",
                    format!(
                        "expiresAt {} has passed; no key is issued",
                        format_time(&desired.expires_at)
                    ),
                    key.metadata.generation,
                    &previous.conditions,
                )],
                observed_generation: key.metadata.generation,
                ..previous.clone()
            },
            created: None,
            stale_secret: None,
            requeue,
        });
    }

    let not_after = desired
        .expiry
        .or_else(|| desired.validity.map(|validity| validity.not_after(now)));
    let created = match registry
        .create_key_by_authority(
            &ctx.authority,
            desired.user.as_deref(),
            &key_name(key),
            &desired.scope,
            not_after,
        )
        .await
    {
        Ok(created) => created,
        Err(niso_registry::Error::NotFound(message)) => {
            return Err(Error::UserNotFound(format!(
                "{message}; retrying until the user is registered"
            )));
        }
        Err(niso_registry::Error::Invalid(message)) => return Err(Error::InvalidScope(message)),
        Err(error) => return Err(error.into()),
    };
    if let Err(error) = write_secret(
        key,
        ctx,
        &desired.secret_name,
        &created.plaintext,
        created.id,
    )
    .await
    {
        // Nobody will ever see this key: take it back before reporting the failure.
        if let Err(revoke_error) = registry
            .revoke_key_by_authority(&ctx.authority, created.id)
            .await
        {
            tracing::warn!(error = %revoke_error, key_id = created.id, "cannot revoke unused key");
        }
        return Err(error);
    }
    let status = ApiKeyStatus {
        key_id: Some(created.id),
        prefix: Some(created.prefix.clone()),
        scope: Some(desired.scope.clone()),
        user: desired.user.clone(),
        expires_at: desired.expires_at.clone(),
        secret_name: Some(desired.secret_name.clone()),
        not_after: not_after.map(to_time),
        renewal_time: desired
            .validity
            .zip(not_after)
            .map(|(validity, not_after)| to_time(validity.renewal_time(not_after))),
        last_rotation_time: Some(to_time(now)),
        last_used_at: None,
        conditions: vec![],
        observed_generation: key.metadata.generation,
    };
    let status = ApiKeyStatus {
        conditions: vec![ready_condition(key, &status, &desired.secret_name)],
        ..status
    };
    Ok(Outcome {
        status,
        created: Some((created, why.to_owned())),
        stale_secret,
        requeue,
    })
}

fn ready_condition(key: &ApiKey, status: &ApiKeyStatus, secret_name: &str) -> Condition {
    let previous = key
        .status
        .as_ref()
        .map(|status| status.conditions.as_slice())
        .unwrap_or_default();
    conditions::ready(
        true,
        RECONCILED,
        format!(
            "key {}… is in Secret {secret_name}",
            status.prefix.as_deref().unwrap_or_default()
        ),
        key.metadata.generation,
        previous,
    )
}

fn format_time(time: &Option<Time>) -> String {
    time.as_ref()
        .map(|time| time.0.to_string())
        .unwrap_or_default()
}

async fn cleanup(key: &ApiKey, ctx: &Context) -> Result<Action> {
    let registry = &ctx.registry;
    ctx.metrics
        .key_expiry(&key.namespace().unwrap_or_default(), &key.name_any(), None);
    let mut revoked = registry
        .revoke_keys_named(&ctx.authority, &key_name(key), None)
        .await?;
    if let Some(id) = key.status.as_ref().and_then(|status| status.key_id)
        && let Some(live) = registry.managed_key(&ctx.authority, id).await?
        && !live.revoked
    {
        registry.revoke_key_by_authority(&ctx.authority, id).await?;
        revoked += 1;
    }
    if revoked > 0 {
        ctx.event(
            &key.object_ref(&()),
            EventType::Normal,
            "KeyRevoked",
            "Revoke",
            format!("revoked the registry key of {}", key.name_any()),
        )
        .await;
    }
    // The Secret goes with the ApiKey (owner reference).
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::ApiKeySpec;

    #[test]
    fn key_names_fit_the_registry_and_stay_unique() {
        let mut key = ApiKey::new(
            &"a".repeat(253),
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
        key.metadata.namespace = Some("n".repeat(63));
        key.metadata.uid = Some("0b1c2d3e-0000-4000-8000-00000000a001".into());
        let name = key_name(&key);
        assert!(name.len() <= 128, "{}", name.len());
        assert!(name.ends_with("#0b1c2d3e-0000-4000-8000-00000000a001"));
        assert_eq!(secret_name(&key), "a".repeat(253));
    }
}
