//! Leader election: two operator instances share one Lease (a scripted Lease API that behaves
//! like the apiserver for the calls kube-lease-manager makes: get, create, server-side apply
//! with conflicts, strategic merge); only the holder runs GC, and the other takes over once
//! the holder shuts down and releases the Lease.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use kube::Client;
use kube::client::Body;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::common::{Backend, Storage, test_settings};
use niso_operator::gc::{GcSettings, run_loop};
use niso_operator::metrics::Metrics;
use niso_registry::Registry;

crate::for_each_backend!(only_the_lease_holder_runs_gc);

const LEASE_PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/niso/leases";

/// One Lease object, shared by every client made from it.
#[derive(Clone, Default)]
struct FakeLeases {
    lease: Arc<Mutex<Option<Value>>>,
    version: Arc<Mutex<u64>>,
}

fn respond(status: u16, body: Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .body(Body::from(Bytes::from(serde_json::to_vec(&body).unwrap())))
        .unwrap()
}

fn status(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": reason, "reason": reason, "code": code})
}

impl FakeLeases {
    fn holder(&self) -> Option<String> {
        self.lease
            .lock()
            .unwrap()
            .as_ref()
            .and_then(|lease| lease["spec"]["holderIdentity"].as_str().map(str::to_owned))
    }

    fn client(&self) -> Client {
        let leases = self.clone();
        let service = tower::service_fn(move |request: Request<Body>| {
            let leases = leases.clone();
            async move { Ok::<_, Infallible>(leases.handle(request).await) }
        });
        Client::new(service, "niso")
    }

    async fn handle(&self, request: Request<Body>) -> Response<Body> {
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let content_type = request
            .headers()
            .get("content-type")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let bytes = request.into_body().collect_bytes().await.unwrap();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let mut lease = self.lease.lock().unwrap();
        let mut version = self.version.lock().unwrap();
        let named = format!("{LEASE_PATH}/niso-operator");
        match (method.as_str(), path.as_str()) {
            ("GET", p) if p == named => match lease.as_ref() {
                Some(lease) => respond(200, lease.clone()),
                None => respond(404, status(404, "NotFound")),
            },
            ("POST", LEASE_PATH) => {
                if lease.is_some() {
                    return respond(409, status(409, "AlreadyExists"));
                }
                let mut created = body;
                *version += 1;
                created["metadata"]["namespace"] = "niso".into();
                created["metadata"]["resourceVersion"] = version.to_string().into();
                created["spec"] = json!({});
                *lease = Some(created.clone());
                respond(201, created)
            }
            ("PATCH", p) if p == named => {
                let Some(current) = lease.as_mut() else {
                    return respond(404, status(404, "NotFound"));
                };
                let patch = &body["spec"];
                if content_type.starts_with("application/apply-patch") {
                    // Server-side apply without force: taking over a field another manager
                    // owns (the holder) is a conflict.
                    let holder = current["spec"]["holderIdentity"].as_str();
                    let wanted = patch["holderIdentity"].as_str();
                    if holder.is_some() && wanted.is_some() && holder != wanted {
                        return respond(409, status(409, "Conflict"));
                    }
                }
                let spec = current["spec"].as_object_mut().expect("spec object");
                for (field, value) in patch.as_object().cloned().unwrap_or_default() {
                    if value.is_null() {
                        spec.remove(&field);
                    } else {
                        spec.insert(field, value);
                    }
                }
                *version += 1;
                current["metadata"]["resourceVersion"] = version.to_string().into();
                respond(200, current.clone())
            }
            _ => respond(404, status(404, "NotFound")),
        }
    }
}

async fn manager(leases: &FakeLeases, identity: &str) -> LeaseManager {
    LeaseManagerBuilder::new(leases.client(), "niso-operator")
        .with_namespace("niso")
        .with_identity(identity)
        .with_duration(2)
        .with_grace(1)
        .build()
        .await
        .expect("lease manager")
}

struct Instance {
    metrics: Arc<Metrics>,
    stop: watch::Sender<bool>,
    gc: tokio::task::JoinHandle<()>,
    lease: tokio::task::JoinHandle<kube_lease_manager::Result<LeaseManager>>,
    leader: watch::Receiver<bool>,
}

async fn start(leases: &FakeLeases, identity: &str, registry: Arc<Registry>) -> Instance {
    let (leader, lease) = manager(leases, identity).await.watch().await;
    let metrics = Arc::new(Metrics::new());
    let (stop, stopped) = watch::channel(false);
    let gc = tokio::spawn(run_loop(
        registry,
        metrics.clone(),
        GcSettings {
            interval: Duration::from_millis(100),
            grace: Duration::ZERO,
            orphan_sweep_interval: Duration::ZERO,
        },
        leader.clone(),
        stopped,
    ));
    Instance {
        metrics,
        stop,
        gc,
        lease,
        leader,
    }
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..200 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// An orphan chunk: stored by an upload that was then abandoned.
async fn orphan(registry: &Registry, seed: u8) {
    let upload = registry
        .begin_upload("@nobody/orphan", "1.0.0", "x86_64")
        .await
        .unwrap();
    registry
        .store_chunk(upload.id, Bytes::from(vec![seed; 4096]))
        .await
        .unwrap();
    registry.release_upload(upload.id).await.unwrap();
}

async fn only_the_lease_holder_runs_gc(backend: Backend) {
    let storage = Storage::new(backend).await;
    // Two replicas of the operator on the same registry.
    let registry_a = storage.registry(test_settings()).await;
    let registry_b = storage.registry(test_settings()).await;
    orphan(&registry_a, 1).await;
    let leases = FakeLeases::default();

    let a = start(&leases, "operator-a", registry_a.clone()).await;
    eventually("a to hold the Lease", || *a.leader.borrow()).await;
    let b = start(&leases, "operator-b", registry_b.clone()).await;
    eventually("a few GC passes on a", || a.metrics.gc_runs_ok() >= 3).await;
    // Renewals keep the Lease with a for longer than its duration (2 s).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(leases.holder().as_deref(), Some("operator-a"));
    assert!(!*b.leader.borrow());
    assert_eq!(b.metrics.gc_runs_ok(), 0, "b does not hold the Lease");
    assert!(
        a.metrics.gc_chunks_deleted.get() >= 1,
        "a reclaimed the orphan"
    );

    // a shuts down: its GC loop stops, the Lease is released, b takes over.
    a.stop.send(true).unwrap();
    a.gc.await.unwrap();
    drop(a.leader);
    tokio::time::timeout(Duration::from_secs(10), a.lease)
        .await
        .expect("a releases the Lease")
        .unwrap()
        .expect("released");
    let runs_of_a = a.metrics.gc_runs_ok();
    eventually("b to hold the Lease", || *b.leader.borrow()).await;
    assert_eq!(leases.holder().as_deref(), Some("operator-b"));
    orphan(&registry_b, 2).await;
    eventually("GC passes on b", || {
        b.metrics.gc_runs_ok() >= 2 && b.metrics.gc_chunks_deleted.get() >= 1
    })
    .await;
    assert_eq!(a.metrics.gc_runs_ok(), runs_of_a, "a stopped");

    b.stop.send(true).unwrap();
    b.gc.await.unwrap();
    drop(b.leader);
    tokio::time::timeout(Duration::from_secs(10), b.lease)
        .await
        .expect("b releases the Lease")
        .unwrap()
        .expect("released");
    assert_eq!(leases.holder(), None, "released at shutdown");
}
