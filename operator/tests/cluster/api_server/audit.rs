//! What RBAC sees of each request: the recorded requests (verb, group, resource with its
//! subresource, namespace, name and the client's identity), those admission implies, the
//! `Forbidden` answer to a refused one, and whether a write sent status to a main resource.

use std::sync::Arc;

use serde_json::Value;

use super::errors::ApiError;
use super::routing;

/// One request, as RBAC sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// The client's identity (`ApiServer::client`).
    pub user: String,
    pub verb: String,
    pub group: String,
    /// `apikeys`, or `apikeys/status` for a subresource.
    pub resource: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
    /// Not sent by the client: what admission checks on its behalf (owner references that
    /// block their owner's deletion need `update` on the owner's `finalizers`).
    pub implied: bool,
    /// A write to the main resource of a kind with a `/status` subresource that carried a
    /// status (which the server drops, as Kubernetes does).
    pub status_dropped: bool,
    /// Refused by the authorizer (403).
    pub refused: bool,
}

/// Whether a write body (object, merge/apply patch or JSON patch) touches `status`.
pub fn carries_status(body: &[u8]) -> bool {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(fields)) => fields.contains_key("status"),
        Ok(Value::Array(operations)) => operations.iter().any(|operation| {
            ["path", "from"].iter().any(|field| {
                operation[*field]
                    .as_str()
                    .is_some_and(|path| path == "/status" || path.starts_with("/status/"))
            })
        }),
        _ => false,
    }
}

impl std::fmt::Display for Recorded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} {}{} in {} name {}{}",
            self.user,
            self.verb,
            if self.group.is_empty() { "core/" } else { "" },
            if self.group.is_empty() {
                self.resource.clone()
            } else {
                format!("{}.{}", self.resource, self.group)
            },
            self.namespace.as_deref().unwrap_or("(cluster)"),
            self.name.as_deref().unwrap_or("(all)"),
            if self.implied {
                " (implied by admission)"
            } else {
                ""
            },
        )
    }
}

/// Decides whether a request is allowed (e.g. `rbac::Rules::permits`).
pub type Authorizer = Arc<dyn Fn(&Recorded) -> bool + Send + Sync>;

pub fn forbidden(request: &Recorded) -> ApiError {
    ApiError::new(
        403,
        "Forbidden",
        format!(
            "{} \"{}\" is forbidden: User \"{}\" cannot {} resource \"{}\" in API group \"{}\" {}",
            request.resource,
            request.name.as_deref().unwrap_or_default(),
            request.user,
            request.verb,
            request.resource,
            request.group,
            match &request.namespace {
                Some(namespace) => format!("in the namespace \"{namespace}\""),
                None => "at the cluster scope".to_owned(),
            }
        ),
    )
}

/// What admission checks for owner references that block their owner's deletion: `update`
/// on the owner's `finalizers` subresource.
pub fn implied(user: &str, namespace: Option<&str>, body: &[u8]) -> Vec<Recorded> {
    let Ok(body) = serde_json::from_slice::<Value>(body) else {
        return Vec::new();
    };
    let Some(owners) = body["metadata"]["ownerReferences"].as_array() else {
        return Vec::new();
    };
    owners
        .iter()
        .filter(|owner| owner["blockOwnerDeletion"] == true)
        .map(|owner| {
            let api_version = owner["apiVersion"].as_str().unwrap_or_default();
            let kind = routing::kind_named(api_version, owner["kind"].as_str().unwrap_or_default());
            Recorded {
                user: user.to_owned(),
                verb: "update".into(),
                group: api_version
                    .rsplit_once('/')
                    .map(|(group, _)| group)
                    .unwrap_or_default()
                    .to_owned(),
                resource: format!(
                    "{}/finalizers",
                    kind.map(|kind| kind.resource).unwrap_or("unknown")
                ),
                namespace: kind
                    .filter(|kind| kind.namespaced)
                    .and(namespace)
                    .map(str::to_owned),
                name: owner["name"].as_str().map(str::to_owned),
                implied: true,
                status_dropped: false,
                refused: false,
            }
        })
        .collect()
}
