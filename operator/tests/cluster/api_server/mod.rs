//! An in-memory Kubernetes API server: a `tower::Service` that `kube::Client::new` talks to,
//! serving the kinds the operator uses (its two custom resources, Secrets, Events, Leases)
//! with the semantics its controllers, finalizers, status writes and leader election rely on.
//! Every request is recorded with the identity of the client that made it, so a test can
//! check them against the chart's RBAC; an authorizer can refuse them (403) and a kind can be
//! uninstalled (404), as with missing RBAC or CRDs. This module dispatches requests.
//!
//! - `routing`: kinds, paths, query, verbs;
//! - `audit`: the recorded requests, implied ones, 403 answers;
//! - `store`: objects, resourceVersion, generation, finalizers, cascade, history (`writes`:
//!   update, patch and apply, the status split);
//! - `patch`: JSON / merge / strategic patch bodies;
//! - `apply`: server-side apply and field managers;
//! - `watch`: streamed watches and resumption;
//! - `selectors`: label and field selectors;
//! - `errors`: `Status` bodies.

mod apply;
mod audit;
mod errors;
mod patch;
mod routing;
mod selectors;
mod store;
#[cfg(test)]
mod tests;
mod watch;

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use kube::client::Body;
use serde_json::{Value, json};

pub use apply::Managers;
pub use audit::{Authorizer, Recorded};
use audit::{carries_status, forbidden};
pub use errors::ApiError;
pub use routing::kind_of;

/// Which part of an object a write addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Main,
    Status,
}

pub struct Shared {
    store: Mutex<store::Store>,
    /// Bumped after every write: wakes the watches.
    changes: tokio::sync::watch::Sender<u64>,
    /// Bumped to end every open watch.
    epoch: AtomicU64,
    requests: Mutex<Vec<Recorded>>,
    /// When set, requests it refuses get 403 Forbidden, as RBAC would answer them.
    authorizer: Mutex<Option<Authorizer>>,
    /// Kinds answered with 404, as when their CRD is not installed.
    uninstalled: Mutex<BTreeSet<String>>,
}

impl Shared {
    fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    fn notify(&self) {
        self.changes.send_modify(|count| *count += 1);
    }
}

pub type ResponseBody = UnsyncBoxBody<Bytes, Infallible>;

#[derive(Clone)]
pub struct ApiServer {
    shared: Arc<Shared>,
}

impl Default for ApiServer {
    fn default() -> Self {
        ApiServer::new()
    }
}

fn respond(code: u16, body: &Value) -> Response<ResponseBody> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(body).expect("JSON"))).boxed_unsync())
        .expect("a response")
}

impl ApiServer {
    pub fn new() -> ApiServer {
        ApiServer {
            shared: Arc::new(Shared {
                store: Mutex::new(store::Store::default()),
                changes: tokio::sync::watch::channel(0).0,
                epoch: AtomicU64::new(0),
                requests: Mutex::new(Vec::new()),
                authorizer: Mutex::new(None),
                uninstalled: Mutex::new(BTreeSet::new()),
            }),
        }
    }

    /// A client acting as `user`, whose default namespace is `namespace`.
    pub fn client(&self, user: &str, namespace: &str) -> kube::Client {
        let server = self.clone();
        let user = user.to_owned();
        let service = tower::service_fn(move |request: Request<Body>| {
            let server = server.clone();
            let user = user.clone();
            async move { Ok::<_, Infallible>(server.handle(&user, request).await) }
        });
        kube::Client::new(service, namespace)
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().expect("requests lock").clone()
    }

    /// An object as stored (not recorded as a request).
    pub fn object(&self, resource: &str, namespace: Option<&str>, name: &str) -> Option<Value> {
        let kind = kind_of(resource)?;
        self.shared
            .store
            .lock()
            .expect("store lock")
            .get(kind, namespace, name)
            .ok()
    }

    /// The field managers of an object.
    pub fn managers(
        &self,
        resource: &str,
        namespace: Option<&str>,
        name: &str,
        part: Part,
    ) -> Option<Managers> {
        let kind = kind_of(resource)?;
        self.shared
            .store
            .lock()
            .expect("store lock")
            .managers(kind, namespace, name, part)
    }

    /// The objects of a kind (not recorded as a request).
    pub fn objects(&self, resource: &str) -> Vec<Value> {
        let kind = kind_of(resource).expect("a served kind");
        self.shared
            .store
            .lock()
            .expect("store lock")
            .list(kind, None)
    }

    /// Ends every open watch (clients resume from their last resourceVersion).
    pub fn close_watches(&self) {
        self.shared.epoch.fetch_add(1, Ordering::SeqCst);
        self.shared.notify();
    }

    /// Forgets the history: watches resuming from before now get 410 Gone.
    pub fn compact(&self) {
        self.shared.store.lock().expect("store lock").compact();
        self.close_watches();
    }

    async fn handle(&self, user: &str, request: Request<Body>) -> Response<ResponseBody> {
        let method = request.method().to_string();
        let path = request.uri().path().to_owned();
        let query = request.uri().query().unwrap_or_default().to_owned();
        let content_type = request
            .headers()
            .get("content-type")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = match request.into_body().collect_bytes().await {
            Ok(body) => body,
            Err(error) => return respond(400, &ApiError::bad_request(error.to_string()).status()),
        };
        let response = match self.serve(user, &method, &path, &query, &content_type, &body) {
            Ok(response) => response,
            Err(error) => respond(error.code, &error.status()),
        };
        // NISO_TEST_API_LOG=1 traces the conversation when a scenario does not converge.
        if std::env::var_os("NISO_TEST_API_LOG").is_some() {
            eprintln!(
                "api: {user} {method} {path}?{query} -> {} {}",
                response.status().as_u16(),
                String::from_utf8_lossy(&body)
                    .chars()
                    .take(300)
                    .collect::<String>()
            );
        }
        response
    }

    /// Records a request, then asks the authorizer (if any).
    fn authorize(&self, mut recorded: Recorded) -> Result<(), ApiError> {
        let authorizer = self.shared.authorizer.lock().expect("lock").clone();
        let allowed = authorizer.is_none_or(|authorizer| authorizer(&recorded));
        recorded.refused = !allowed;
        let refusal = (!allowed).then(|| forbidden(&recorded));
        self.shared
            .requests
            .lock()
            .expect("requests lock")
            .push(recorded);
        refusal.map_or(Ok(()), Err)
    }

    /// From now on, requests `authorizer` refuses get 403 Forbidden.
    pub fn authorize_with(&self, authorizer: Authorizer) {
        *self.shared.authorizer.lock().expect("lock") = Some(authorizer);
    }

    /// From now on, requests for `resource` get 404, as when its CRD is not installed.
    pub fn uninstall(&self, resource: &str) {
        assert!(kind_of(resource).is_some(), "not a served kind: {resource}");
        self.shared
            .uninstalled
            .lock()
            .expect("lock")
            .insert(resource.to_owned());
        self.close_watches();
    }

    fn serve(
        &self,
        user: &str,
        method: &str,
        path: &str,
        query: &str,
        content_type: &str,
        body: &[u8],
    ) -> Result<Response<ResponseBody>, ApiError> {
        let route = routing::route(path)?;
        let query = routing::query(query)?;
        let verb = routing::verb(method, &route, &query)?;
        let kind = route.kind;
        self.authorize(Recorded {
            user: user.to_owned(),
            verb: verb.to_owned(),
            group: kind.group.to_owned(),
            resource: match route.part {
                Part::Main => kind.resource.to_owned(),
                Part::Status => format!("{}/status", kind.resource),
            },
            namespace: route.namespace.clone(),
            name: route.name.clone(),
            implied: false,
            status_dropped: kind.status_subresource
                && route.part == Part::Main
                && matches!(verb, "create" | "update" | "patch")
                && carries_status(body),
            refused: false,
        })?;
        if self
            .shared
            .uninstalled
            .lock()
            .expect("lock")
            .contains(kind.resource)
        {
            return Err(ApiError::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ));
        }
        if query.dry_run {
            return Err(ApiError::bad_request(
                "dryRun is not supported by this test server",
            ));
        }
        let namespace = route.namespace.as_deref();
        if kind.namespaced && namespace.is_none() && !matches!(verb, "list" | "watch") {
            return Err(ApiError::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ));
        }
        let name = route.name.as_deref().unwrap_or_default();
        let json = || -> Result<Value, ApiError> {
            serde_json::from_slice(body)
                .map_err(|error| ApiError::bad_request(format!("invalid body: {error}")))
        };
        let manager = query
            .field_manager
            .clone()
            .unwrap_or_else(|| user.to_owned());
        if matches!(verb, "create" | "update" | "patch") {
            self.record_implied(user, namespace, body)?;
        }
        let (code, object) = match verb {
            "get" => (200, self.lock().get(kind, namespace, name)?),
            "list" => {
                let store = self.lock();
                let mut items = store.list(kind, namespace);
                items.retain(|item| query.labels.matches(item) && query.fields.matches(item));
                let list = json!({
                    "apiVersion": kind.api_version(),
                    "kind": format!("{}List", kind.kind),
                    "metadata": {"resourceVersion": store.revision().to_string()},
                    "items": items,
                });
                (200, list)
            }
            "watch" => {
                let since = match query.resource_version.as_deref() {
                    None | Some("") => None,
                    Some(text) => Some(text.parse().map_err(|_| {
                        ApiError::bad_request(format!("invalid resourceVersion {text:?}"))
                    })?),
                };
                let request = watch::WatchRequest {
                    kind,
                    namespace: route.namespace.clone(),
                    labels: query.labels,
                    fields: query.fields,
                    since,
                    bookmarks: query.bookmarks,
                    timeout: query.timeout.unwrap_or(Duration::from_secs(1800)),
                };
                let stream = watch::stream(self.shared.clone(), request);
                return Ok(Response::builder()
                    .status(200)
                    .header("content-type", "application/json")
                    .body(StreamBody::new(stream).boxed_unsync())
                    .expect("a response"));
            }
            "create" => {
                if route.part != Part::Main {
                    return Err(ApiError::new(
                        405,
                        "MethodNotAllowed",
                        "create on a subresource",
                    ));
                }
                let created = self.lock().create(kind, namespace, json()?, &manager)?;
                (201, created)
            }
            "update" => (
                200,
                self.lock()
                    .update(kind, namespace, name, json()?, route.part, &manager)?,
            ),
            "patch" => {
                let patch = patch::PatchBody::parse(content_type, body)?;
                if matches!(patch, patch::PatchBody::Apply(_)) && query.field_manager.is_none() {
                    return Err(ApiError::bad_request(
                        "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
                    ));
                }
                let mut store = self.lock();
                let existed = store.get(kind, namespace, name).is_ok();
                let writer = store::Writer {
                    manager: &manager,
                    force: query.force,
                };
                let object = store.patch(kind, namespace, name, &patch, route.part, writer)?;
                (if existed { 200 } else { 201 }, object)
            }
            "delete" => (200, self.lock().delete(kind, namespace, name)?),
            _ => {
                return Err(ApiError::new(
                    405,
                    "MethodNotAllowed",
                    format!("{verb} is not supported by this test server"),
                ));
            }
        };
        if verb != "get" && verb != "list" {
            self.shared.notify();
        }
        Ok(respond(code, &object))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, store::Store> {
        self.shared.store.lock().expect("store lock")
    }

    /// Records (and authorizes) what admission checks on behalf of a write.
    fn record_implied(
        &self,
        user: &str,
        namespace: Option<&str>,
        body: &[u8],
    ) -> Result<(), ApiError> {
        for implied in audit::implied(user, namespace, body) {
            self.authorize(implied)?;
        }
        Ok(())
    }
}
