//! kube's scripted mock API (`tower_test::mock::pair`, as kube-rs/controller-rs does): each
//! test says which requests the reconciler must make, in order, and what the API answers.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use kube::Client;
use kube::client::Body;
use kube::runtime::controller::Action;
use niso_operator::context::Context;
use niso_operator::reconciler::{Reconciled, reconcile};
use serde_json::{Value, json};
use tower_test::mock::Handle;

/// A request the reconciler made.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: String,
    pub body: Value,
}

pub struct MockApi {
    handle: Handle<Request<Body>, Response<Body>>,
}

/// A client on a scripted API.
pub fn client() -> (Client, MockApi) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, "default"), MockApi { handle })
}

pub fn not_found(what: &str) -> (u16, Value) {
    (
        404,
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("{what} not found"), "reason": "NotFound", "code": 404
        }),
    )
}

impl MockApi {
    /// The next request must be `method path`; it is answered with `respond(request)`.
    pub async fn expect(
        &mut self,
        method: &str,
        path: &str,
        respond: impl FnOnce(&Seen) -> (u16, Value),
    ) -> Seen {
        let (request, send) =
            tokio::time::timeout(Duration::from_secs(20), self.handle.next_request())
                .await
                .unwrap_or_else(|_| panic!("no request came; expected {method} {path}"))
                .unwrap_or_else(|| panic!("the client is gone; expected {method} {path}"));
        let seen = Seen {
            method: request.method().to_string(),
            path: request.uri().path().to_owned(),
            query: request.uri().query().unwrap_or_default().to_owned(),
            body: {
                let bytes = request
                    .into_body()
                    .collect_bytes()
                    .await
                    .expect("request body");
                if bytes.is_empty() {
                    Value::Null
                } else {
                    serde_json::from_slice(&bytes).expect("a JSON request body")
                }
            },
        };
        assert_eq!(
            (seen.method.as_str(), seen.path.as_str()),
            (method, path),
            "unexpected request; body: {}",
            seen.body
        );
        let (status, body) = respond(&seen);
        send.send_response(
            Response::builder()
                .status(status)
                .body(Body::from(serde_json::to_vec(&body).expect("JSON")))
                .expect("response"),
        );
        seen
    }

    /// The next request must publish an Event (a POST, or a PATCH of a repeated one) with this
    /// reason and type in `namespace`.
    pub async fn expect_event(&mut self, namespace: &str, type_: &str, reason: &str) -> Seen {
        let (request, send) =
            tokio::time::timeout(Duration::from_secs(20), self.handle.next_request())
                .await
                .unwrap_or_else(|_| panic!("no request came; expected the {reason} Event"))
                .unwrap_or_else(|| panic!("the client is gone; expected the {reason} Event"));
        let method = request.method().to_string();
        let path = request.uri().path().to_owned();
        let bytes = request
            .into_body()
            .collect_bytes()
            .await
            .expect("request body");
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let events = format!("/apis/events.k8s.io/v1/namespaces/{namespace}/events");
        assert!(
            (method == "POST" && path == events)
                || (method == "PATCH" && path.starts_with(&format!("{events}/"))),
            "expected the {reason} Event, got {method} {path}: {body}"
        );
        assert_eq!(body["reason"], reason, "Event: {body}");
        assert_eq!(body["type"], type_, "Event: {body}");
        send.send_response(
            Response::builder()
                .status(if method == "POST" { 201 } else { 200 })
                .body(Body::from(bytes))
                .expect("response"),
        );
        Seen {
            method,
            path,
            query: String::new(),
            body,
        }
    }
}

/// Runs `reconcile` while `script` answers its requests; fails if the reconcile makes a
/// request the script does not expect (it would wait forever for an answer) or the script
/// expects one that never comes.
pub async fn run<T, R>(api: &mut MockApi, reconcile: R, script: impl AsyncFnOnce(&mut MockApi)) -> T
where
    R: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let task = tokio::spawn(reconcile);
    script(api).await;
    match tokio::time::timeout(Duration::from_secs(30), task).await {
        Ok(result) => result.expect("the reconcile panicked"),
        Err(_) => {
            let unexpected =
                tokio::time::timeout(Duration::from_millis(100), api.handle.next_request())
                    .await
                    .ok()
                    .flatten()
                    .map(|(request, _)| format!("{} {}", request.method(), request.uri()));
            panic!("the reconcile did not finish; unexpected request: {unexpected:?}");
        }
    }
}

/// Runs a reconcile that must not touch the API at all.
/// One reconcile of `object` through the controllers' shared wrapper, with `script` playing
/// the API server's side.
pub async fn run_reconcile<K: Reconciled>(
    api: &mut MockApi,
    ctx: &Arc<Context>,
    object: &K,
    script: impl AsyncFnOnce(&mut MockApi),
) -> Result<Action, niso_operator::Error> {
    run(
        api,
        reconcile(Arc::new(object.clone()), ctx.clone()),
        script,
    )
    .await
}

pub async fn run_silent<T, R>(api: &mut MockApi, reconcile: R) -> T
where
    R: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    run(api, reconcile, async |_| {}).await
}
