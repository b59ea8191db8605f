//! The Secret an ApiKey's value lives in: written with server-side apply (owned by the
//! ApiKey, with the `spec.secretTemplate` metadata under the operator's own label and the
//! `niso.online/key-id` record of the key it holds), read fresh on every reconcile, and what
//! that record proves when the cached resource is stale.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams};
use kube::{Resource, ResourceExt};

use crate::apikey::{KEY_ID_ANNOTATION, MANAGED_BY, SECRET_KEY, SECRET_URL, key_name};
use crate::context::{Context, MANAGER};
use crate::crd::{ApiKey, ApiKeyStatus};
use crate::error::{Error, Result};

/// The status the Secret tells of when it holds a live key of this resource other than the
/// one `cached` (the resource as the cache gave it) names: a rotation whose status write the
/// cache has not seen yet. None when the Secret agrees with `cached` or proves nothing (no
/// record, a revoked or foreign key, a value that is not that key's).
pub(crate) async fn recorded_key(
    key: &ApiKey,
    ctx: &Context,
    cached: &ApiKeyStatus,
    secret: Option<&Secret>,
    held: Option<&str>,
) -> Result<Option<ApiKeyStatus>> {
    let (Some(secret), Some(held)) = (secret, held) else {
        return Ok(None);
    };
    let Some(id) = secret
        .annotations()
        .get(KEY_ID_ANNOTATION)
        .and_then(|id| id.parse::<i64>().ok())
    else {
        return Ok(None);
    };
    if cached.key_id == Some(id) {
        return Ok(None);
    }
    let Some(live) = ctx.registry.managed_key(&ctx.authority, id).await? else {
        return Ok(None);
    };
    if live.revoked || live.name != key_name(key) || !held.starts_with(&live.prefix) {
        return Ok(None);
    }
    // A fixed expiry is what spec.expiresAt asked; a renewed key's end is only notAfter.
    let expires_at = match key.spec.duration {
        Some(_) => None,
        None => live.expires_at.map(to_time),
    };
    Ok(Some(ApiKeyStatus {
        key_id: Some(id),
        prefix: Some(live.prefix),
        scope: Some(live.scope),
        user: live.username,
        expires_at,
        not_after: live.expires_at.map(to_time),
        last_rotation_time: Some(to_time(live.created_at)),
        secret_name: Some(secret.name_any()),
        ..cached.clone()
    }))
}

/// A registry time (UTC, no zone) as a Kubernetes time, to the second.
pub(crate) fn to_time(at: chrono::NaiveDateTime) -> Time {
    Time(
        k8s_openapi::jiff::Timestamp::from_second(at.and_utc().timestamp())
            .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    )
}

/// Whether the Secret carries the labels and annotations of `spec.secretTemplate`.
pub(crate) fn carries_template(secret: &Secret, key: &ApiKey) -> bool {
    let Some(template) = &key.spec.secret_template else {
        return true;
    };
    let has_all = |wanted: &BTreeMap<String, String>, present: &BTreeMap<String, String>| {
        wanted
            .iter()
            .all(|(name, value)| present.get(name) == Some(value))
    };
    has_all(&template.labels, secret.labels())
        && has_all(&template.annotations, secret.annotations())
}

pub(crate) fn owned_by(secret: &Secret, key: &ApiKey) -> bool {
    let uid = key.uid();
    secret
        .owner_references()
        .iter()
        .any(|owner| Some(&owner.uid) == uid.as_ref() && owner.kind == ApiKey::kind(&()))
}

pub(crate) fn secret_value(secret: &Secret, field: &str) -> Option<String> {
    secret
        .data
        .as_ref()?
        .get(field)
        .and_then(|value| String::from_utf8(value.0.clone()).ok())
}

/// Creates or replaces the Secret (server-side apply), owned by the ApiKey, recording the id
/// of the key it holds.
pub(crate) async fn write_secret(
    key: &ApiKey,
    ctx: &Context,
    name: &str,
    value: &str,
    key_id: i64,
) -> Result<()> {
    let namespace = key.namespace().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let owner = key
        .controller_owner_ref(&())
        .ok_or_else(|| Error::InvalidSpec("the ApiKey has no uid yet".into()))?;
    // The template's metadata first, ours over it: the watch selects on our label, and the
    // key id is what a stale cache is checked against.
    let template = key.spec.secret_template.clone().unwrap_or_default();
    let mut labels = template.labels;
    labels.insert(MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned());
    let mut annotations = template.annotations;
    annotations.insert(KEY_ID_ANNOTATION.to_owned(), key_id.to_string());
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([
            (SECRET_KEY.to_owned(), ByteString(value.as_bytes().to_vec())),
            (
                SECRET_URL.to_owned(),
                ByteString(ctx.settings.registry_url.as_bytes().to_vec()),
            ),
        ])),
        ..Secret::default()
    };
    let mut body = serde_json::to_value(&secret)
        .map_err(|error| Error::InvalidSpec(format!("cannot serialise the Secret: {error}")))?;
    body["apiVersion"] = "v1".into();
    body["kind"] = "Secret".into();
    secrets
        .patch(
            name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(body),
        )
        .await?;
    Ok(())
}

pub(crate) async fn delete_owned_secret(key: &ApiKey, ctx: &Context, name: &str) -> Result<()> {
    let namespace = key.namespace().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    if let Some(secret) = secrets.get_opt(name).await?
        && owned_by(&secret, key)
    {
        match secrets.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(())
}
