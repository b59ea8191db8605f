//! The controllers while this replica holds the Lease: the RegistryNamespace controller (its
//! cache also holds the grants), one ApiKey controller for the cluster or per watched
//! namespace (owning the Secrets, and woken by changed grants), their watch results fed to
//! `/ready`, and a graceful stop when the Lease is lost or at shutdown.

use std::sync::Arc;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{Controller, watcher};
use tokio::sync::watch;

use crate::apikey;
use crate::context::Context;
use crate::crd::{ApiKey, RegistryNamespace};
use crate::reconciler::{error_policy, reconcile};

/// Runs both controllers whenever this replica holds the Lease, stopping them (gracefully)
/// when it loses it or at shutdown.
pub async fn run_while_leader(
    ctx: Arc<Context>,
    mut leader: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            result = leader.wait_for(|leading| *leading) => if result.is_err() { break },
            _ = shutdown.wait_for(|stop| *stop) => break,
        }
        tracing::info!("holding the Lease: starting the controllers");
        ctx.metrics.leader.set(1);
        ctx.readiness
            .start_leading(&[crate::namespace::CONTROLLER, apikey::CONTROLLER]);
        let (stop_namespaces, namespaces_stopped) = futures::channel::oneshot::channel::<()>();
        let (stop_keys, keys_stopped) = futures::channel::oneshot::channel::<()>();
        let controllers = run_controllers(
            ctx.clone(),
            async move {
                let _ = namespaces_stopped.await;
            },
            async move {
                let _ = keys_stopped.await;
            },
        );
        let mut leader_watch = leader.clone();
        let mut shutdown_watch = shutdown.clone();
        let stop = async move {
            tokio::select! {
                _ = leader_watch.wait_for(|leading| !*leading) => {}
                _ = shutdown_watch.wait_for(|stop| *stop) => {}
            }
            let _ = stop_namespaces.send(());
            let _ = stop_keys.send(());
        };
        tokio::join!(controllers, stop);
        ctx.metrics.leader.set(0);
        ctx.readiness.stop_leading();
        tracing::info!("controllers stopped");
        if *shutdown.borrow() {
            break;
        }
    }
}

/// Feeds one controller's results to `/ready` and the log: a watch error (missing CRD, RBAC
/// that forbids list or watch, an API server that went away) at warn; any reconcile, failed
/// or not, proves the watch works again. Reconcile failures are logged by the reconciler.
fn report<T>(
    ctx: &Context,
    controller: &'static str,
    result: std::result::Result<T, kube::runtime::controller::Error<crate::Error, watcher::Error>>,
) {
    use kube::runtime::controller::Error as ControllerError;
    match result {
        Err(ControllerError::QueueError(error)) => {
            tracing::warn!(controller, %error, "cannot list or watch; retrying");
            ctx.readiness.failing(controller, error.to_string());
        }
        Err(ControllerError::ObjectNotFound(_)) => {}
        Ok(_) | Err(_) => ctx.readiness.working(controller),
    }
}

/// Marks `controller` working once `store` has listed.
async fn ready_when_listed<K>(ctx: Arc<Context>, controller: &'static str, store: Store<K>)
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    if store.wait_until_ready().await.is_ok() {
        ctx.readiness.working(controller);
    }
}

async fn run_controllers(
    ctx: Arc<Context>,
    stop_namespaces: impl std::future::Future<Output = ()> + Send + Sync + 'static,
    stop_keys: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let namespaces = Controller::new(
        Api::<RegistryNamespace>::all(client.clone()),
        watcher::Config::default(),
    );
    // The ApiKey controller decides on grants from this cache (it is not ready, and no key is
    // decided on, until the first list is in).
    let namespace_store = namespaces.store();
    ctx.use_namespace_store(namespace_store.clone());
    let namespaces_ctx = ctx.clone();
    let namespaces = namespaces
        .graceful_shutdown_on(stop_namespaces)
        .run(reconcile, error_policy, ctx.clone())
        .for_each(move |result| {
            report(&namespaces_ctx, crate::namespace::CONTROLLER, result);
            futures::future::ready(())
        });
    let namespaces_listed =
        ready_when_listed(ctx.clone(), crate::namespace::CONTROLLER, namespace_store);

    // One ApiKey controller over the whole cluster, or one per watched namespace (so the
    // operator needs rights only there).
    let scopes: Vec<Option<String>> = if ctx.settings.watch_namespaces.is_empty() {
        vec![None]
    } else {
        ctx.settings
            .watch_namespaces
            .iter()
            .cloned()
            .map(Some)
            .collect()
    };
    let stop_keys = stop_keys.shared();
    let secrets_selector = format!("{}={}", apikey::MANAGED_BY.0, apikey::MANAGED_BY.1);
    let mut keys = Vec::new();
    let mut keys_listed = Vec::new();
    for scope in scopes {
        let (api_keys, secrets) = match &scope {
            None => (
                Api::<ApiKey>::all(client.clone()),
                Api::<Secret>::all(client.clone()),
            ),
            Some(namespace) => (
                Api::<ApiKey>::namespaced(client.clone(), namespace),
                Api::<Secret>::namespaced(client.clone(), namespace),
            ),
        };
        let controller = Controller::new(api_keys, watcher::Config::default());
        let key_store = controller.store();
        keys_listed.push(ready_when_listed(
            ctx.clone(),
            apikey::CONTROLLER,
            key_store.clone(),
        ));
        // A changed grant is decided on at once (a withdrawn one revokes), not at the next
        // resync: every ApiKey whose scope names the registry namespace is looked at again.
        let controller = controller
            .owns(
                secrets,
                watcher::Config::default().labels(&secrets_selector),
            )
            .watches(
                Api::<RegistryNamespace>::all(client.clone()),
                watcher::Config::default(),
                move |resource| {
                    let prefix = crate::namespace::registry_name(&resource)
                        .map(|name| format!("{name}/"))
                        .ok();
                    key_store
                        .state()
                        .into_iter()
                        .filter(|key| {
                            prefix
                                .as_ref()
                                .is_some_and(|prefix| key.spec.scope.contains(prefix.as_str()))
                        })
                        .map(|key| ObjectRef::from_obj(key.as_ref()))
                        .collect::<Vec<_>>()
                },
            );
        let keys_ctx = ctx.clone();
        keys.push(
            controller
                .graceful_shutdown_on(stop_keys.clone())
                .run(reconcile, error_policy, ctx.clone())
                .for_each(move |result| {
                    report(&keys_ctx, apikey::CONTROLLER, result);
                    futures::future::ready(())
                }),
        );
    }
    // The readiness waits end with their controllers (a dropped store is never ready).
    tokio::join!(
        namespaces,
        namespaces_listed,
        futures::future::join_all(keys),
        futures::future::join_all(keys_listed),
    );
}
