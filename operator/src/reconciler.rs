//! The reconcile plumbing both controllers share, around what is specific to each resource
//! (the [`Reconciled`] trait): the finalizer, the reconcile metrics, the per-object retry
//! backoff, the status write (skipped when nothing changed) and the failure report
//! (`Ready=False` with the error's reason, and a Warning Event when that is news).

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, Patch, PatchParams};
use kube::core::object::HasStatus;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::conditions;
use crate::context::{Context, FINALIZER, MANAGER, Responsibility};
use crate::error::{Error, Result};

/// A custom resource the operator reconciles: what differs between the two controllers.
pub trait Reconciled:
    Resource<DynamicType = ()>
    + HasStatus<Status: Clone + Default + Serialize + Send + Sync>
    + Clone
    + Debug
    + DeserializeOwned
    + Serialize
    + Send
    + Sync
    + 'static
{
    /// The `controller` label of this resource's metrics.
    const CONTROLLER: &'static str;

    /// The API the resource is read and written through (namespaced or cluster-wide).
    fn api(&self, ctx: &Context) -> Result<Api<Self>>;

    fn conditions(status: &Self::Status) -> &[Condition];

    /// The status that reports a failure: `ready` (a `Ready=False`) over what `previous` knew.
    fn failed_status(&self, previous: &Self::Status, ready: Condition) -> Self::Status;

    /// Converges the registry on the spec (the finalizer is in place).
    fn apply(&self, ctx: &Context) -> impl Future<Output = Result<Action>> + Send;

    /// Undoes what `apply` made, before the finalizer is removed.
    fn cleanup(&self, ctx: &Context) -> impl Future<Output = Result<Action>> + Send;
}

/// One reconcile: the finalizer first, then converge (or clean up when deleting); counted in
/// the metrics, and the object's backoff forgotten after a success.
pub async fn reconcile<K: Reconciled>(object: Arc<K>, ctx: Arc<Context>) -> Result<Action> {
    // Another operator's object (another registry instance, an unwatched namespace) is not
    // touched: no finalizer, no status, no metrics.
    match ctx.responsibility(object.meta().namespace.as_deref(), object.labels()) {
        Responsibility::Mine => {}
        Responsibility::OtherInstance | Responsibility::OtherNamespace => {
            return Ok(Action::await_change());
        }
        Responsibility::Unlabelled(note) => {
            ctx.event(
                &object.object_ref(&()),
                EventType::Normal,
                "NotManaged",
                "Ignore",
                note,
            )
            .await;
            return Ok(Action::await_change());
        }
    }
    let started = Instant::now();
    let api = object.api(&ctx)?;
    let result = finalizer(&api, FINALIZER, object.clone(), |event| async {
        match event {
            FinalizerEvent::Apply(object) => object.apply(&ctx).await,
            FinalizerEvent::Cleanup(object) => object.cleanup(&ctx).await,
        }
    })
    .await
    .map_err(|error| Error::Finalizer(Box::new(error)));
    ctx.metrics.reconciled(
        K::CONTROLLER,
        started.elapsed(),
        result.as_ref().err().map(Error::reason),
    );
    match &result {
        Ok(_) => ctx.succeeded(&backoff_key(object.as_ref())),
        Err(error) => tracing::warn!(
            kind = %K::kind(&()),
            namespace = %object.namespace().unwrap_or_default(),
            name = %object.name_any(),
            reason = error.reason(),
            %error,
            "not reconciled"
        ),
    }
    result
}

/// Retries with exponential backoff per object.
pub fn error_policy<K: Reconciled>(object: Arc<K>, _error: &Error, ctx: Arc<Context>) -> Action {
    ctx.backoff(&backoff_key(object.as_ref()))
}

fn backoff_key<K: Reconciled>(object: &K) -> String {
    match object.namespace() {
        Some(namespace) => format!("{}/{namespace}/{}", K::kind(&()), object.name_any()),
        None => format!("{}/{}", K::kind(&()), object.name_any()),
    }
}

/// Writes the status if it says something new; returns whether it wrote.
pub async fn write_status<K: Reconciled>(
    object: &K,
    ctx: &Context,
    previous: &K::Status,
    status: &K::Status,
) -> Result<bool> {
    let unchanged = object.status().is_some()
        && conditions::same(K::conditions(previous), K::conditions(status))
        && without_conditions(previous) == without_conditions(status);
    if unchanged {
        return Ok(false);
    }
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    object
        .api(ctx)?
        .patch_status(
            &object.name_any(),
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(patch),
        )
        .await?;
    Ok(true)
}

/// A status as JSON without its conditions: compared exactly, while conditions are compared
/// without their timestamps.
fn without_conditions(status: &impl Serialize) -> Option<serde_json::Value> {
    let mut value = serde_json::to_value(status).ok()?;
    if let Some(fields) = value.as_object_mut() {
        fields.remove("conditions");
    }
    Some(value)
}

/// Ends a reconcile with `error`: a failure of the Kubernetes API is only retried (status
/// could not be written either), and so is a wait for the grants to load (nothing is wrong
/// with the object); any other is reported in status and, when news, an Event.
pub async fn fail<K: Reconciled>(
    object: &K,
    ctx: &Context,
    previous: &K::Status,
    error: Error,
) -> Result<Action> {
    if !matches!(error, Error::Kube(_) | Error::GrantsNotLoaded(_)) {
        let ready = conditions::ready(
            false,
            error.reason(),
            error.public_message(),
            object.meta().generation,
            K::conditions(previous),
        );
        let status = object.failed_status(previous, ready);
        if write_status(object, ctx, previous, &status).await? {
            ctx.event(
                &object.object_ref(&()),
                EventType::Warning,
                error.reason(),
                "Reconcile",
                error.public_message(),
            )
            .await;
        }
    }
    Err(error)
}
