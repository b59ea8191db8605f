//! The operator's permissions as the chart grants them: the chart (charts/niso) is rendered
//! with Helm's engine (helm-python-sdk, in the virtual environment `cargo xtask test` makes and
//! names in `NISO_TEST_PYTHON`), the operator Deployment's ServiceAccount is found, and the
//! rules of every (Cluster)Role bound to it are collected: ClusterRoleBindings grant
//! everywhere, RoleBindings in their namespace. A request is permitted when one rule matches
//! its API group, resource (subresources as `resource/sub`, `*` and `*/sub` as Kubernetes
//! reads them), verb and, when the rule names resources, its name.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::OnceLock;

use serde::Deserialize;

use crate::api_server::Recorded;

/// The release the chart is rendered as.
pub const RELEASE: &str = "niso";
pub const RELEASE_NAMESPACE: &str = "registry";

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    #[serde(default)]
    api_groups: Vec<String>,
    #[serde(default)]
    resources: Vec<String>,
    #[serde(default)]
    verbs: Vec<String>,
    #[serde(default)]
    resource_names: Vec<String>,
}

impl Rule {
    fn permits(&self, request: &Recorded) -> bool {
        let group = self
            .api_groups
            .iter()
            .any(|group| group == "*" || *group == request.group);
        let resource = self.resources.iter().any(|resource| {
            resource == "*"
                || *resource == request.resource
                || resource.strip_prefix("*/").is_some_and(|sub| {
                    request
                        .resource
                        .split_once('/')
                        .is_some_and(|(_, wanted)| wanted == sub)
                })
        });
        let verb = self
            .verbs
            .iter()
            .any(|verb| verb == "*" || *verb == request.verb);
        let name = self.resource_names.is_empty()
            || request
                .name
                .as_ref()
                .is_some_and(|name| self.resource_names.contains(name));
        group && resource && verb && name
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rules {
    pub service_account: String,
    pub namespace: String,
    cluster: Vec<Rule>,
    namespaced: BTreeMap<String, Vec<Rule>>,
}

const SCRIPT: &str = r#"
import json, sys
import helm_python, yaml

chart, release, namespace = sys.argv[1:4]
files = helm_python.Chart.load(chart).render({}, name=release, namespace=namespace)
docs = []
for name, text in sorted(files.items()):
    if not name.endswith("NOTES.txt"):
        docs += [d for d in yaml.safe_load_all(text) if d]

def of_kind(kind):
    return [d for d in docs if d.get("kind") == kind]

operators = [d for d in of_kind("Deployment")
             if d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "operator"]
assert len(operators) == 1, [d["metadata"]["name"] for d in of_kind("Deployment")]
pod = operators[0]["spec"]["template"]["spec"]
account = pod.get("serviceAccountName", "default")
account_namespace = operators[0]["metadata"].get("namespace", namespace)

def binds(binding):
    return any(s.get("kind") == "ServiceAccount" and s.get("name") == account
               and s.get("namespace", binding["metadata"].get("namespace")) == account_namespace
               for s in binding.get("subjects") or [])

def rules(ref, binding_namespace):
    if ref["kind"] == "ClusterRole":
        roles = [r for r in of_kind("ClusterRole") if r["metadata"]["name"] == ref["name"]]
    else:
        roles = [r for r in of_kind("Role") if r["metadata"]["name"] == ref["name"]
                 and r["metadata"].get("namespace", namespace) == binding_namespace]
    assert len(roles) == 1, ("a binding names a missing role", ref)
    return roles[0].get("rules") or []

cluster, namespaced = [], {}
for binding in of_kind("ClusterRoleBinding"):
    if binds(binding):
        cluster += rules(binding["roleRef"], None)
for binding in of_kind("RoleBinding"):
    if binds(binding):
        ns = binding["metadata"].get("namespace", namespace)
        namespaced.setdefault(ns, []).extend(rules(binding["roleRef"], ns))
print(json.dumps({"serviceAccount": account, "namespace": account_namespace,
                  "cluster": cluster, "namespaced": namespaced}))
"#;

fn render() -> Rules {
    let python = std::env::var("NISO_TEST_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let chart = concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/niso");
    let output = Command::new(&python)
        .arg("-c")
        .arg(SCRIPT)
        .args([chart, RELEASE, RELEASE_NAMESPACE])
        .output()
        .unwrap_or_else(|error| {
            panic!("cannot run {python} ({error}): run the suite with `cargo xtask test`")
        });
    assert!(
        output.status.success(),
        "cannot render the chart's RBAC (run the suite with `cargo xtask test`, which installs \
         helm-python-sdk and names the interpreter in NISO_TEST_PYTHON):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the rendered rules")
}

/// The chart's rules for the operator, rendered once per test binary.
pub fn chart_rules() -> &'static Rules {
    static RULES: OnceLock<Rules> = OnceLock::new();
    RULES.get_or_init(render)
}

impl Rules {
    pub fn permits(&self, request: &Recorded) -> bool {
        let namespaced = request
            .namespace
            .as_ref()
            .and_then(|namespace| self.namespaced.get(namespace))
            .into_iter()
            .flatten();
        self.cluster
            .iter()
            .chain(namespaced)
            .any(|rule| rule.permits(request))
    }

    /// Fails with every request the chart does not permit.
    #[track_caller]
    pub fn assert_permit(&self, requests: &[Recorded]) {
        assert!(!requests.is_empty(), "no request was recorded");
        let refused: Vec<String> = requests
            .iter()
            .filter(|request| !self.permits(request))
            .map(ToString::to_string)
            .collect();
        assert!(
            refused.is_empty(),
            "the chart's RBAC for ServiceAccount {}/{} does not permit:\n  {}",
            self.namespace,
            self.service_account,
            refused.join("\n  ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(verb: &str, group: &str, resource: &str, namespace: Option<&str>) -> Recorded {
        Recorded {
            user: "operator".into(),
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
            namespace: namespace.map(str::to_owned),
            name: Some("x".into()),
            implied: false,
            status_dropped: false,
            refused: false,
        }
    }

    /// The checker refuses what the chart does not grant (and grants what it does), so a
    /// passing end-to-end test means something.
    #[test]
    fn the_chart_grants_what_the_operator_needs_and_nothing_else() {
        let rules = chart_rules();
        assert_eq!(rules.namespace, RELEASE_NAMESPACE);
        for allowed in [
            request("watch", "niso.online", "apikeys", None),
            request("patch", "niso.online", "registrynamespaces/status", None),
            request("update", "niso.online", "apikeys/finalizers", Some("apps")),
            request("patch", "", "secrets", Some("apps")),
            request("create", "events.k8s.io", "events", Some("apps")),
            request(
                "patch",
                "coordination.k8s.io",
                "leases",
                Some(RELEASE_NAMESPACE),
            ),
        ] {
            assert!(rules.permits(&allowed), "refused: {allowed}");
        }
        for refused in [
            request("delete", "niso.online", "apikeys", Some("apps")),
            request("update", "niso.online", "apikeys/status", Some("apps")),
            request("update", "", "secrets", Some("apps")),
            request("get", "", "configmaps", Some("apps")),
            request("create", "", "events", Some("apps")),
            request("patch", "coordination.k8s.io", "leases", Some("apps")),
        ] {
            assert!(!rules.permits(&refused), "permitted: {refused}");
        }
    }

    #[test]
    #[should_panic(expected = "does not permit")]
    fn one_request_outside_the_rules_fails_the_check() {
        chart_rules().assert_permit(&[
            request("watch", "niso.online", "apikeys", None),
            request("update", "", "secrets", Some("apps")),
        ]);
    }
}
