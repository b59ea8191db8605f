//! What every reconcile shares: the Kubernetes client, the registry, the Event recorder, the
//! metrics, the settings, and the per-object failure counts behind the retry backoff.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures::FutureExt;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store};

use niso_registry::Registry;
use niso_registry::permissions::SystemAuthority;

use crate::crd::RegistryNamespace;
use crate::grant::Grants;
use crate::http::Readiness;
use crate::metrics::Metrics;

/// The field manager of every write, and the Event reporter.
pub const MANAGER: &str = "niso-operator";
/// The finalizer on both kinds of resource.
pub const FINALIZER: &str = "niso.online/cleanup";

#[derive(Debug, Clone)]
pub struct Settings {
    /// Written into each ApiKey's Secret as `registry-url`.
    pub registry_url: String,
    /// How often a healthy object is reconciled again (drift in the registry is not watched).
    pub resync: Duration,
    /// First retry delay after a failure; doubles per consecutive failure, up to `max_backoff`.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// Kubernetes namespaces whose ApiKeys may hold registry-wide scopes or act as a registry
    /// user (`NISO_OPERATOR_PRIVILEGED_NAMESPACES`).
    pub privileged_namespaces: Vec<String>,
    /// The registry instance this operator serves (`NISO_OPERATOR_INSTANCE`): when set, only
    /// objects labelled `niso.online/instance=<it>` are reconciled; others are left alone (an
    /// Event says so on those without the label). None: every object.
    pub instance: Option<String>,
    /// Kubernetes namespaces whose ApiKeys this operator watches
    /// (`NISO_OPERATOR_WATCH_NAMESPACES`); empty: all.
    pub watch_namespaces: Vec<String>,
    /// The issuer of this cluster's ServiceAccount tokens (`NISO_OPERATOR_CLUSTER_ISSUER`):
    /// the grants mirrored for keyless access name it (`workload_grants.rs`).
    pub cluster_issuer: String,
}

/// Kubernetes' default ServiceAccount token issuer (`--service-account-issuer`).
pub const DEFAULT_CLUSTER_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// The label naming the registry instance an object belongs to.
pub const INSTANCE_LABEL: &str = "niso.online/instance";

/// Whether an object is this operator's to reconcile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Responsibility {
    Mine,
    /// Labelled for another instance: its operator reconciles it.
    OtherInstance,
    /// In a namespace this operator does not watch.
    OtherNamespace,
    /// No instance label while this operator serves a named instance.
    Unlabelled(String),
}

impl Settings {
    pub fn new(registry_url: impl Into<String>) -> Settings {
        Settings {
            registry_url: registry_url.into(),
            resync: Duration::from_secs(300),
            min_backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(300),
            privileged_namespaces: Vec::new(),
            instance: None,
            watch_namespaces: Vec::new(),
            cluster_issuer: DEFAULT_CLUSTER_ISSUER.to_owned(),
        }
    }
}

pub struct Context {
    pub client: Client,
    pub registry: Arc<Registry>,
    /// The operator acts on the registry as its root of trust: its custom resources are the
    /// source of truth for the namespaces and keys it manages.
    pub authority: SystemAuthority,
    pub metrics: Arc<Metrics>,
    pub settings: Settings,
    /// What `/ready` reports: fed by the controllers' watch results.
    pub readiness: Arc<Readiness>,
    reporter: Reporter,
    backoff: Backoff,
    /// The RegistryNamespaces as the controller's cache holds them: the grants. Replaced each
    /// time the controllers start; not ready (no grant is known) until its first full list.
    namespaces: RwLock<Store<RegistryNamespace>>,
}

/// Per-object exponential backoff: the first retry after `min`, doubling per consecutive
/// failure up to `max`, forgotten after a success.
pub struct Backoff {
    min: Duration,
    max: Duration,
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// The delay before retrying `key`, counting one more failure.
    pub fn next(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock().expect("backoff lock");
        let count = failures.entry(key.to_owned()).or_insert(0);
        *count = count.saturating_add(1);
        let factor = 2u32.saturating_pow((*count - 1).min(16));
        self.min.saturating_mul(factor).min(self.max)
    }

    pub fn reset(&self, key: &str) {
        self.failures.lock().expect("backoff lock").remove(key);
    }
}

impl Context {
    pub fn new(
        client: Client,
        registry: Arc<Registry>,
        metrics: Arc<Metrics>,
        settings: Settings,
        instance: Option<String>,
    ) -> Context {
        let backoff = Backoff::new(settings.min_backoff, settings.max_backoff);
        Context {
            client,
            registry,
            authority: SystemAuthority::root_of_trust(MANAGER),
            metrics,
            settings,
            readiness: Arc::new(Readiness::new()),
            reporter: Reporter {
                controller: MANAGER.into(),
                instance,
            },
            backoff,
            namespaces: RwLock::new(reflector::store().0),
        }
    }

    /// Whether the object (its namespace, None when cluster-scoped, and labels) is this
    /// operator's to reconcile.
    pub fn responsibility(
        &self,
        namespace: Option<&str>,
        labels: &std::collections::BTreeMap<String, String>,
    ) -> Responsibility {
        if let Some(namespace) = namespace
            && !self.settings.watch_namespaces.is_empty()
            && !self
                .settings
                .watch_namespaces
                .iter()
                .any(|watched| watched == namespace)
        {
            return Responsibility::OtherNamespace;
        }
        let Some(instance) = &self.settings.instance else {
            return Responsibility::Mine;
        };
        match labels.get(INSTANCE_LABEL) {
            Some(label) if label == instance => Responsibility::Mine,
            Some(_) => Responsibility::OtherInstance,
            None => Responsibility::Unlabelled(format!(
                "left alone: no {INSTANCE_LABEL} label, and this operator serves the registry \
                 instance {instance} (label the object {INSTANCE_LABEL}={instance} to have it \
                 reconciled)"
            )),
        }
    }

    /// Uses `store` (the RegistryNamespace controller's cache) for the grants.
    pub fn use_namespace_store(&self, store: Store<RegistryNamespace>) {
        *self.namespaces.write().expect("store lock") = store;
    }

    /// The grants in force, or None while the RegistryNamespace cache has not been listed
    /// once: deciding on an empty cache would refuse (and revoke) keys that are granted.
    pub fn grants(&self) -> Option<Grants> {
        let store = self.namespaces.read().expect("store lock").clone();
        if !matches!(store.wait_until_ready().now_or_never(), Some(Ok(()))) {
            return None;
        }
        // Only this operator's RegistryNamespaces grant anything: another instance's grants
        // are about another registry.
        let resources: Vec<_> = store
            .state()
            .into_iter()
            .filter(|resource| {
                self.responsibility(None, &resource.metadata.labels.clone().unwrap_or_default())
                    == Responsibility::Mine
            })
            .collect();
        Some(Grants::from_resources(
            &resources,
            &self.settings.privileged_namespaces,
        ))
    }

    /// Publishes an Event; a failure to do so is logged, never fatal. Each Event is new: the
    /// recorder's series would repeat the first note of a reason (members added: x) for later
    /// ones (members removed: y), and reconciles publish only on change anyway.
    pub async fn event(
        &self,
        reference: &ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(truncate(note, 1000)),
            action: action.into(),
            secondary: None,
        };
        let recorder = Recorder::new(self.client.clone(), self.reporter.clone());
        if let Err(error) = recorder.publish(&event, reference).await {
            tracing::warn!(%error, reason, "cannot publish event");
        }
    }

    /// Exponential backoff for the object `key` after a failed reconcile.
    pub fn backoff(&self, key: &str) -> Action {
        Action::requeue(self.backoff.next(key))
    }

    /// Forgets the failures of `key` after a successful reconcile.
    pub fn succeeded(&self, key: &str) {
        self.backoff.reset(key);
    }
}

fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_per_object_and_resets() {
        let backoff = Backoff::new(Duration::from_secs(5), Duration::from_secs(300));
        let seconds: Vec<u64> = (0..9).map(|_| backoff.next("a").as_secs()).collect();
        assert_eq!(seconds, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(backoff.next("b").as_secs(), 5, "per object");
        backoff.reset("a");
        assert_eq!(backoff.next("a").as_secs(), 5);
    }

    #[test]
    fn notes_are_cut_on_a_character_boundary() {
        let text = "é".repeat(600);
        let cut = truncate(text, 1001);
        assert_eq!(cut.len(), 1000);
    }
}
