//! The running operator end to end: its controllers and leader election (as `niso-operator
//! run` wires them: a Lease, then `controllers::run_while_leader`) against an in-memory
//! Kubernetes API server (`api_server`) and a real registry on both backends (SQLite + files,
//! PostgreSQL + S3), served over HTTP by an in-process niso-server on the same storage. Every
//! request an operator makes is recorded and checked against the chart's RBAC (`rbac`): a
//! request the chart does not permit is refused (403), as a real API server would, and fails
//! the test.
//!
//! A scenario is a few lines: `Cluster::new(backend)`, `cluster.operator("a")`, create objects
//! with `cluster.create(...)`, wait with `cluster.condition(...)` / `eventually`, and end with
//! `cluster.finish(operators)` (stops them and checks RBAC).

mod api_server;
mod apikeys;
mod leader;
mod namespaces;
mod rbac;
mod releases;

use std::sync::Arc;
use std::time::Duration;

use kube::Resource;
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use kube_lease_manager::LeaseManagerBuilder;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use api_server::ApiServer;
use niso_operator::context::{Context, Settings};
use niso_operator::controllers::run_while_leader;
use niso_operator::metrics::Metrics;
use niso_test_support::{Backend, Storage, TestApp, test_settings};

pub const REGISTRY_URL: &str = "https://niso.example.com";
/// The Lease, as the chart names it (NISO_OPERATOR_LEASE_NAME's default).
pub const LEASE: &str = "niso-operator";
/// The test's own client (a cluster user, not the operator: not checked against the chart).
pub const USER: &str = "kubectl";
/// The Kubernetes namespace the chart's values name privileged (`operator.privilegedNamespaces`):
/// its ApiKeys may hold registry-wide scopes and act as a registry user.
pub const PRIVILEGED: &str = "apps";
/// How long a scenario waits for the operator to converge (a deadline, not an assertion).
const PATIENCE: Duration = Duration::from_secs(60);

/// Polls `check` until it returns `Some`, failing with `what` after a generous deadline.
pub async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One API server, one registry (served over HTTP), and the operators a test starts.
pub struct Cluster {
    pub api: ApiServer,
    pub app: TestApp,
    pub storage: Arc<Storage>,
}

/// A running operator replica: its own registry connection, Lease candidacy and controllers.
pub struct Operator {
    pub identity: String,
    pub metrics: Arc<Metrics>,
    leader: watch::Receiver<bool>,
    stop: watch::Sender<bool>,
    controllers: JoinHandle<()>,
    lease: JoinHandle<kube_lease_manager::Result<kube_lease_manager::LeaseManager>>,
}

impl Operator {
    pub fn is_leader(&self) -> bool {
        *self.leader.borrow()
    }

    /// What SIGTERM does: the controllers stop, then the Lease is released.
    pub async fn stop(self) {
        self.stop.send(true).expect("the controllers are running");
        tokio::time::timeout(PATIENCE, self.controllers)
            .await
            .expect("the controllers stop")
            .expect("the controllers did not panic");
        drop(self.leader);
        tokio::time::timeout(PATIENCE, self.lease)
            .await
            .expect("the Lease task ends")
            .expect("the Lease task did not panic")
            .expect("the Lease is released");
    }
}

impl Cluster {
    pub async fn new(backend: Backend) -> Cluster {
        let storage = Arc::new(Storage::new(backend).await);
        let app = TestApp::on_storage(storage.clone(), test_settings()).await;
        // The operators get what the chart grants them, as from a real API server: a refused
        // request is a 403 for them, and fails the test in `finish`.
        let rules = rbac::chart_rules();
        let api = ApiServer::new();
        api.authorize_with(Arc::new(|request: &api_server::Recorded| {
            request.user == USER || rules.permits(request)
        }));
        Cluster { api, app, storage }
    }

    /// Starts an operator replica named `identity` in the release namespace, with the
    /// chart's Lease.
    pub async fn operator(&self, identity: &str) -> Operator {
        self.operator_with(identity, LEASE, |_| {}).await
    }

    /// Starts an operator replica competing for `lease`, its settings changed by `configure`
    /// (another release is another Lease and its own settings).
    pub async fn operator_with(
        &self,
        identity: &str,
        lease: &str,
        configure: impl FnOnce(&mut Settings),
    ) -> Operator {
        let client = self.api.client(identity, rbac::RELEASE_NAMESPACE);
        let registry = self.storage.registry(test_settings()).await;
        let metrics = Arc::new(Metrics::new());
        let mut settings = Settings::new(REGISTRY_URL);
        settings.min_backoff = Duration::from_millis(200);
        settings.max_backoff = Duration::from_secs(2);
        settings.privileged_namespaces = vec![PRIVILEGED.to_owned()];
        configure(&mut settings);
        let lease = LeaseManagerBuilder::new(client.clone(), lease)
            .with_namespace(rbac::RELEASE_NAMESPACE)
            .with_identity(identity)
            .with_duration(3)
            .with_grace(1)
            .build()
            .await
            .expect("the Lease manager");
        let (leader, lease) = lease.watch().await;
        let ctx = Arc::new(Context::new(
            client,
            registry,
            metrics.clone(),
            settings,
            Some(identity.to_owned()),
        ));
        let (stop, stopped) = watch::channel(false);
        let controllers = tokio::spawn(run_while_leader(ctx, leader.clone(), stopped));
        Operator {
            identity: identity.to_owned(),
            metrics,
            leader,
            stop,
            controllers,
            lease,
        }
    }

    /// The test's own client.
    pub fn user(&self) -> kube::Client {
        self.api.client(USER, "default")
    }

    /// Creates `object` as the test's user (in `namespace` for a namespaced kind).
    pub async fn create<K>(&self, namespace: Option<&str>, object: &K) -> K
    where
        K: Resource<DynamicType = ()> + Serialize + DeserializeOwned,
    {
        let resource = ApiResource::erase::<K>(&());
        let api: Api<DynamicObject> = match namespace {
            Some(namespace) => Api::namespaced_with(self.user(), namespace, &resource),
            None => Api::all_with(self.user(), &resource),
        };
        let object: DynamicObject =
            serde_json::from_value(serde_json::to_value(object).expect("JSON")).expect("an object");
        let created = api
            .create(&PostParams::default(), &object)
            .await
            .expect("created");
        serde_json::from_value(serde_json::to_value(created).expect("JSON")).expect("the kind")
    }

    /// Polls `check` like [`eventually`], failing at once when the chart's RBAC refused an
    /// operator's request (the operator would retry forever).
    pub async fn wait<T>(&self, what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
        eventually(what, async || {
            let refused: Vec<String> = self
                .operator_requests()
                .iter()
                .filter(|request| request.refused)
                .map(ToString::to_string)
                .collect();
            assert!(
                refused.is_empty(),
                "the chart's RBAC refused (waiting for {what}):\n  {}",
                refused.join("\n  ")
            );
            check().await
        })
        .await
    }

    /// The Ready condition of an object: (status, reason, message).
    pub fn ready(
        &self,
        resource: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<(String, String, String)> {
        let object = self.api.object(resource, namespace, name)?;
        let condition = object["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|condition| condition["type"] == "Ready")?
            .clone();
        let text = |field: &str| condition[field].as_str().unwrap_or_default().to_owned();
        Some((text("status"), text("reason"), text("message")))
    }

    /// Waits until the Ready condition of an object has `status` (`"True"`/`"False"`) for its
    /// current generation; returns the object.
    pub async fn condition(
        &self,
        resource: &str,
        namespace: Option<&str>,
        name: &str,
        status: &str,
    ) -> Value {
        self.wait(&format!("{resource} {name} Ready={status}"), async || {
            let object = self.api.object(resource, namespace, name)?;
            let ready = self.ready(resource, namespace, name)?;
            let current =
                object["status"]["observedGeneration"] == object["metadata"]["generation"];
            (ready.0 == status && current).then_some(object)
        })
        .await
    }

    /// Waits until an object is gone from the API.
    pub async fn gone(&self, resource: &str, namespace: Option<&str>, name: &str) {
        self.wait(&format!("{resource} {name} to be gone"), async || {
            self.api
                .object(resource, namespace, name)
                .is_none()
                .then_some(())
        })
        .await
    }

    /// The Events in `namespace` about the object `name`, as (type, reason).
    pub fn events(&self, namespace: &str, name: &str) -> Vec<(String, String)> {
        self.api
            .objects("events")
            .into_iter()
            .filter(|event| {
                event["metadata"]["namespace"] == namespace && event["regarding"]["name"] == name
            })
            .map(|event| {
                let text = |field: &str| event[field].as_str().unwrap_or_default().to_owned();
                (text("type"), text("reason"))
            })
            .collect()
    }

    /// The requests the operators made (everything but the test's own).
    pub fn operator_requests(&self) -> Vec<api_server::Recorded> {
        self.api
            .requests()
            .into_iter()
            .filter(|request| request.user != USER)
            .collect()
    }

    /// Stops the operators, then fails on any request of theirs the chart does not permit,
    /// and on any status they sent to a main resource (status goes through `/status`).
    pub async fn finish(&self, operators: Vec<Operator>) {
        for operator in operators {
            operator.stop().await;
        }
        let requests = self.operator_requests();
        rbac::chart_rules().assert_permit(&requests);
        let misdirected: Vec<String> = requests
            .iter()
            .filter(|request| request.status_dropped)
            .map(ToString::to_string)
            .collect();
        assert!(
            misdirected.is_empty(),
            "status sent to the main resource (dropped): {misdirected:?}"
        );
    }
}
