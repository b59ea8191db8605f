//! What a request asks for: the kinds this server serves, the path (`/api/v1/…` or
//! `/apis/{group}/{version}/…`, cluster-wide or `namespaces/{ns}/…`, an object name, a
//! subresource), the query (watch, resourceVersion, selectors, fieldManager, force, bookmarks,
//! timeout) and the RBAC verb (get, list, watch, create, update, patch, delete).

use std::time::Duration;

use super::Part;
use super::errors::ApiError;
use super::selectors::{FieldSelector, LabelSelector};

/// A served resource type.
#[derive(Debug, PartialEq, Eq)]
pub struct Kind {
    pub group: &'static str,
    pub version: &'static str,
    pub resource: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    /// A `/status` subresource splits status writes from the rest (custom resources with
    /// `subresources.status`).
    pub status_subresource: bool,
    /// `metadata.generation` counts changes to the content (custom resources).
    pub generation: bool,
}

impl Kind {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `apikeys.niso.online`, or `secrets` for the core group: how error messages name it.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.resource.to_owned()
        } else {
            format!("{}.{}", self.resource, self.group)
        }
    }
}

/// Every kind the operator touches (found by recording its requests); anything else is a
/// 404, as for a CRD that is not installed.
pub static KINDS: &[Kind] = &[
    Kind {
        group: "niso.online",
        version: "v1alpha1",
        resource: "registrynamespaces",
        kind: "RegistryNamespace",
        namespaced: false,
        status_subresource: true,
        generation: true,
    },
    Kind {
        group: "niso.online",
        version: "v1alpha1",
        resource: "apikeys",
        kind: "ApiKey",
        namespaced: true,
        status_subresource: true,
        generation: true,
    },
    Kind {
        group: "",
        version: "v1",
        resource: "secrets",
        kind: "Secret",
        namespaced: true,
        status_subresource: false,
        generation: false,
    },
    Kind {
        group: "events.k8s.io",
        version: "v1",
        resource: "events",
        kind: "Event",
        namespaced: true,
        status_subresource: false,
        generation: false,
    },
    Kind {
        group: "coordination.k8s.io",
        version: "v1",
        resource: "leases",
        kind: "Lease",
        namespaced: true,
        status_subresource: false,
        generation: false,
    },
];

pub fn kind_of(resource: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|kind| kind.resource == resource)
}

/// The kind an `apiVersion` + `kind` pair (an owner reference) names.
pub fn kind_named(api_version: &str, kind: &str) -> Option<&'static Kind> {
    KINDS
        .iter()
        .find(|candidate| candidate.kind == kind && candidate.api_version() == api_version)
}

#[derive(Debug)]
pub struct Route {
    pub kind: &'static Kind,
    /// `None` for a cluster-scoped kind, or a namespaced kind across all namespaces.
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub part: Part,
}

fn not_found() -> ApiError {
    ApiError::new(
        404,
        "NotFound",
        "the server could not find the requested resource",
    )
}

pub fn route(path: &str) -> Result<Route, ApiError> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Err(not_found()),
    };
    let (namespace, rest) = match rest {
        ["namespaces", namespace, rest @ ..] if !rest.is_empty() => (Some(*namespace), rest),
        rest => (None, rest),
    };
    let (resource, name, subresource) = match rest {
        [resource] => (*resource, None, None),
        [resource, name] => (*resource, Some(*name), None),
        [resource, name, subresource] => (*resource, Some(*name), Some(*subresource)),
        _ => return Err(not_found()),
    };
    let kind = KINDS
        .iter()
        .find(|kind| kind.group == group && kind.version == version && kind.resource == resource)
        .ok_or_else(not_found)?;
    if namespace.is_some() && !kind.namespaced {
        return Err(not_found());
    }
    let part = match subresource {
        None => Part::Main,
        Some("status") if kind.status_subresource => Part::Status,
        Some(_) => return Err(not_found()),
    };
    Ok(Route {
        kind,
        namespace: namespace.map(str::to_owned),
        name: name.map(str::to_owned),
        part,
    })
}

#[derive(Debug, Default)]
pub struct Query {
    pub watch: bool,
    pub resource_version: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub field_manager: Option<String>,
    pub force: bool,
    pub bookmarks: bool,
    pub timeout: Option<Duration>,
    pub dry_run: bool,
}

pub fn query(text: &str) -> Result<Query, ApiError> {
    let mut query = Query::default();
    let flag = |value: &str| value == "true" || value == "1";
    for (name, value) in form_urlencoded::parse(text.as_bytes()) {
        match name.as_ref() {
            "watch" => query.watch = flag(&value),
            "resourceVersion" => query.resource_version = Some(value.into_owned()),
            "labelSelector" => {
                query.labels = LabelSelector::parse(&value).map_err(ApiError::bad_request)?
            }
            "fieldSelector" => {
                query.fields = FieldSelector::parse(&value).map_err(ApiError::bad_request)?
            }
            "fieldManager" => query.field_manager = Some(value.into_owned()),
            "force" => query.force = flag(&value),
            "allowWatchBookmarks" => query.bookmarks = flag(&value),
            "timeoutSeconds" => {
                let seconds: u64 = value.parse().map_err(|_| {
                    ApiError::bad_request(format!("invalid timeoutSeconds {value:?}"))
                })?;
                query.timeout = Some(Duration::from_secs(seconds));
            }
            "dryRun" => query.dry_run = true,
            // Paging and the like: every list is answered whole.
            _ => {}
        }
    }
    Ok(query)
}

/// The RBAC verb of a request.
pub fn verb(method: &str, route: &Route, query: &Query) -> Result<&'static str, ApiError> {
    Ok(match (method, route.name.is_some()) {
        ("GET", true) => "get",
        ("GET", false) if query.watch => "watch",
        ("GET", false) => "list",
        ("POST", false) => "create",
        ("PUT", true) => "update",
        ("PATCH", true) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => {
            return Err(ApiError::new(
                405,
                "MethodNotAllowed",
                format!("{method} is not supported here"),
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let route = route("/apis/niso.online/v1alpha1/namespaces/apps/apikeys/ci/status").unwrap();
        assert_eq!(route.kind.kind, "ApiKey");
        assert_eq!(route.namespace.as_deref(), Some("apps"));
        assert_eq!(route.name.as_deref(), Some("ci"));
        assert_eq!(route.part, Part::Status);
        let route = super::route("/apis/niso.online/v1alpha1/apikeys").unwrap();
        assert_eq!((route.namespace, route.name), (None, None));
        let route = super::route("/api/v1/namespaces/apps/secrets").unwrap();
        assert_eq!(route.kind.kind, "Secret");
        for missing in [
            "/api/v1/namespaces/apps/secrets/x/status",
            "/apis/niso.online/v1alpha1/namespaces/a/registrynamespaces/x",
            "/apis/niso.online/v1/apikeys",
            "/api/v1/configmaps",
            "/version",
        ] {
            assert_eq!(super::route(missing).unwrap_err().code, 404, "{missing}");
        }
    }

    #[test]
    fn queries() {
        let query = query(
            "watch=true&resourceVersion=12&labelSelector=app.kubernetes.io%2Fmanaged-by%3Dniso&allowWatchBookmarks=true&timeoutSeconds=290&fieldManager=op&force=true",
        )
        .unwrap();
        assert!(query.watch && query.force && query.bookmarks);
        assert_eq!(query.resource_version.as_deref(), Some("12"));
        assert_eq!(query.field_manager.as_deref(), Some("op"));
        assert_eq!(query.timeout, Some(Duration::from_secs(290)));
        assert_eq!(
            query.labels,
            LabelSelector::parse("app.kubernetes.io/managed-by=niso").unwrap()
        );
        assert_eq!(super::query("labelSelector=a+in+(b").unwrap_err().code, 400);
    }
}
