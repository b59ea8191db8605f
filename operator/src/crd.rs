//! The custom resources, group `niso.online`, version `v1alpha1` (DESIGN.md §7). The CRD YAML
//! under `crds/` is generated from these types (`niso-operator crd`); a test keeps it in sync.
//!
//! The schema validates what it can express (name patterns, the scope syntax, the role and
//! policy enums, unique members, immutable name and owner); the reconcilers check the rest and
//! report it in status.

// kube's `printcolumn(name = …, type_ = …)` repeats keys across columns, which clippy mistakes
// for duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of every niso resource.
pub const GROUP: &str = "niso.online";

/// `[a-z0-9][a-z0-9-]{0,38}`: a username (DESIGN.md §3).
pub const USERNAME_PATTERN: &str = "^[a-z0-9][a-z0-9-]{0,38}$";
/// `@` + a username: a namespace.
pub const NAMESPACE_PATTERN: &str = "^@[a-z0-9][a-z0-9-]{0,38}$";
/// A Kubernetes namespace or ServiceAccount name (DNS label).
pub const DNS_LABEL_PATTERN: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// A Kubernetes Secret name (DNS subdomain).
pub const SECRET_NAME_PATTERN: &str =
    "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// One scope item: `action:pattern`, pattern `*`, a package name or a prefix ending in `*`.
const SCOPE_ITEM: &str = "\\s*(pull|push|delete|admin):(\\*|@[a-z0-9._@/-]*\\*|@[a-z0-9][a-z0-9-]{0,38}/[a-z0-9][a-z0-9._-]{0,63})\\s*";

/// A comma-separated list of scope items (the registry parses it again, authoritatively).
pub fn scope_pattern() -> String {
    format!("^{SCOPE_ITEM}(,{SCOPE_ITEM})*$")
}

/// An organisation namespace in the registry whose members are declared here.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "niso.online",
    version = "v1alpha1",
    kind = "RegistryNamespace",
    plural = "registrynamespaces",
    shortname = "rns",
    category = "niso",
    status = "RegistryNamespaceStatus",
    derive = "PartialEq",
    doc = "An organisation namespace of the niso registry, its owner and its members",
    printcolumn(
        name = "Registry-Name",
        type_ = "string",
        json_path = ".status.registryName"
    ),
    printcolumn(name = "Owner", type_ = "string", json_path = ".spec.owner"),
    printcolumn(name = "Members", type_ = "integer", json_path = ".status.memberCount"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!has(self.members) || self.members.all(m, m.username != self.owner)",
        "message": "the owner is a member already; do not list it in members"
    },
    {
        "rule": "has(self.name) == has(oldSelf.name) && (!has(self.name) || self.name == oldSelf.name)",
        "message": "name is immutable"
    },
    {
        "rule": "self.owner == oldSelf.owner",
        "message": "owner is immutable"
    }
]))]
pub struct RegistryNamespaceSpec {
    /// The registry namespace, `@` + 1-39 lowercase letters, digits or '-'. Defaults to `@` +
    /// metadata.name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = NAMESPACE_PATTERN), length(max = 40))]
    pub name: Option<String>,
    /// Username of the owner (set at creation).
    #[schemars(regex(pattern = USERNAME_PATTERN), length(max = 39))]
    pub owner: String,
    /// Members besides the owner. With `membersPolicy: Merge` (default) these are added or
    /// given their role and everyone else is left alone (members are also managed through
    /// the API); with `Exact` the registry is made to match this list exactly (and the API
    /// refuses member changes).
    #[serde(default)]
    #[schemars(
        length(max = 1000),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["username"])
    )]
    pub members: Vec<MemberSpec>,
    /// `Merge` (default): the listed members are ensured, others are kept. `Exact`: members
    /// not listed are removed.
    #[serde(default)]
    pub members_policy: MembersPolicy,
    /// Take over a namespace that already exists in the registry and that no resource manages
    /// (made through the API). Without it such a namespace is left alone and this resource
    /// reports `AdoptionRequired`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub adopt: bool,
    /// Which Kubernetes namespaces may hold `ApiKey`s for this registry namespace, with which
    /// actions. An `ApiKey` whose scope asks for more than its namespace is granted gets no key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub grants: Vec<GrantSpec>,
    /// What happens in the registry when this resource is deleted: `Retain` (default) gives the
    /// namespace back to the API, `Delete` removes it if it has no packages.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberSpec {
    #[schemars(regex(pattern = USERNAME_PATTERN), length(max = 39))]
    pub username: String,
    pub role: MemberRole,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum MemberRole {
    Admin,
    Member,
}

/// Kubernetes namespaces (and optionally ServiceAccounts in them) granted actions on the
/// packages of a registry namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GrantSpec {
    /// Kubernetes namespaces.
    #[schemars(length(min = 1, max = 100), inner(regex(pattern = DNS_LABEL_PATTERN), length(max = 63)))]
    pub namespaces: Vec<String>,
    /// When set, only these ServiceAccounts of those namespaces (for keyless workload access);
    /// such a grant gives `ApiKey`s nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100), inner(regex(pattern = DNS_LABEL_PATTERN), length(max = 63)))]
    pub service_accounts: Vec<String>,
    /// `pull`, `push`, `delete`, `admin` (admin implies the others).
    #[schemars(length(min = 1, max = 4))]
    pub actions: Vec<GrantAction>,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum GrantAction {
    Pull,
    Push,
    Delete,
    Admin,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum MembersPolicy {
    #[default]
    Merge,
    Exact,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    #[default]
    Retain,
    Delete,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegistryNamespaceStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The registry namespace this resource manages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_name: Option<String>,
    /// Members in the registry, the owner included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_count: Option<i64>,
}

/// An API key of the registry, written into a Secret next to this resource.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "niso.online",
    version = "v1alpha1",
    kind = "ApiKey",
    plural = "apikeys",
    shortname = "nak",
    category = "niso",
    namespaced,
    status = "ApiKeyStatus",
    derive = "PartialEq",
    doc = "An API key of the niso registry, its value kept in a Secret",
    printcolumn(name = "User", type_ = "string", json_path = ".spec.user"),
    printcolumn(name = "Scope", type_ = "string", json_path = ".spec.scope"),
    printcolumn(name = "Secret", type_ = "string", json_path = ".status.secretName"),
    printcolumn(name = "Expires", type_ = "date", json_path = ".status.notAfter"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!(has(self.duration) && has(self.expiresAt))",
        "message": "set either expiresAt (a fixed end) or duration (renewed), not both"
    },
    {
        "rule": "!has(self.renewBefore) || has(self.duration)",
        "message": "renewBefore needs duration"
    }
]))]
pub struct ApiKeySpec {
    /// Link the key to this user: it then acts with the user's memberships, restricted by its
    /// scope. Without it, the key is authorised by its scope alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = USERNAME_PATTERN), length(max = 39))]
    pub user: Option<String>,
    /// Comma-separated `action:pattern` items, e.g. `pull:*,push:@team/*`. Changing it rotates the
    /// key.
    #[schemars(regex(pattern = scope_pattern()), length(max = 4096))]
    pub scope: String,
    /// The Secret (in this namespace) that receives `api-key` and `registry-url`. Defaults to
    /// metadata.name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = SECRET_NAME_PATTERN), length(max = 253))]
    pub secret_name: Option<String>,
    /// When the key stops working. Changing it rotates the key. Not with `duration`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,
    /// How long each key lives (a Go duration of hours, minutes, seconds: `2160h`, at least
    /// 1h); it is replaced `renewBefore` ahead of its end, so the Secret always holds a
    /// working key. Changing it rotates the key. Not with `expiresAt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = 32))]
    pub duration: Option<String>,
    /// How long before its end a key is replaced; defaults to a third of `duration`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = 32))]
    pub renew_before: Option<String>,
    /// Labels and annotations for the Secret (e.g. for Reloader or Argo CD). The operator's
    /// own (`app.kubernetes.io/managed-by`, `niso.online/key-id`) take precedence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_template: Option<SecretTemplate>,
}

/// A Go duration of hours, minutes and seconds.
pub const DURATION_PATTERN: &str = "^([0-9]{1,9}(h|m|s))+$";

/// Metadata copied onto an ApiKey's Secret.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretTemplate {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyStatus {
    /// Id of the live key in the registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<i64>,
    /// The key's first characters, to tell it apart in listings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// The canonical scope the live key was created with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// The user the live key is linked to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The expiry the live key was created with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,
    /// The Secret holding the live key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// When the live key stops working (none: never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<Time>,
    /// When the live key is replaced (with `duration`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewal_time: Option<Time>,
    /// When the live key was minted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotation_time: Option<Time>,
    /// When the registry last saw the live key used (as of the last reconcile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// The CRDs as YAML documents, one per resource: `(file name, YAML)`.
pub fn crd_documents() -> Vec<(&'static str, String)> {
    vec![
        (
            "registrynamespaces.niso.online.yaml",
            to_yaml(&RegistryNamespace::crd()),
        ),
        ("apikeys.niso.online.yaml", to_yaml(&ApiKey::crd())),
    ]
}

fn to_yaml<T: Serialize>(value: &T) -> String {
    let yaml = serde_yaml::to_string(value).expect("a CRD serialises to YAML");
    format!(
        "# Generated by `niso-operator crd` from operator/src/crd.rs; do not edit.\n---\n{yaml}"
    )
}

/// All CRDs as one multi-document YAML stream (what `niso-operator crd` prints).
pub fn crds_yaml() -> String {
    crd_documents()
        .into_iter()
        .map(|(_, yaml)| yaml)
        .collect::<Vec<_>>()
        .join("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_wire_names() {
        let rns: RegistryNamespace = serde_json::from_value(serde_json::json!({
            "apiVersion": "niso.online/v1alpha1",
            "kind": "RegistryNamespace",
            "metadata": {"name": "team"},
            "spec": {"owner": "alice", "members": [{"username": "bob", "role": "admin"}]}
        }))
        .unwrap();
        assert_eq!(rns.spec.deletion_policy, DeletionPolicy::Retain);
        assert_eq!(rns.spec.members[0].role, MemberRole::Admin);
        let value = serde_json::to_value(&rns.spec).unwrap();
        assert_eq!(value["deletionPolicy"], "Retain");
        assert_eq!(value["members"][0]["role"], "admin");
        assert!(
            serde_json::from_value::<MemberSpec>(
                serde_json::json!({"username": "x", "role": "owner"})
            )
            .is_err()
        );
    }

    #[test]
    fn the_stream_holds_both_crds() {
        let yaml = crds_yaml();
        assert!(yaml.contains("name: registrynamespaces.niso.online"));
        assert!(yaml.contains("name: apikeys.niso.online"));
        assert_eq!(yaml.matches("\n---\n").count(), 2);
    }
}
