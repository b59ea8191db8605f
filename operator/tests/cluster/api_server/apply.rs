//! Server-side apply and field ownership, simplified but with the semantics writers rely on:
//! - every write records which field manager set which fields: an apply owns exactly the
//!   fields of its configuration; an update or patch takes the fields it changed;
//! - an apply that would change a field another manager owns is a 409 `Conflict` naming the
//!   manager and the field, unless forced (then the field moves to the applier);
//! - a field the applier owned before and no longer lists is removed, unless another manager
//!   owns it too;
//! - a field removed from the object is no longer owned by anyone.
//!
//! Simplifications: fields are the leaves of the JSON tree (objects are descended, every list
//! is atomic — Kubernetes merges `finalizers`, `ownerReferences` and list-map fields by key),
//! ownership is kept beside the object instead of in `metadata.managedFields`, and managers of
//! the main resource and of `/status` are tracked apart (as Kubernetes does by subresource).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use super::Part;
use super::errors::ApiError;

pub type FieldPath = Vec<String>;

/// Fields the server sets, owned by nobody.
fn tracked(path: &[String], part: Part) -> bool {
    let first = path.first().map(String::as_str);
    match part {
        Part::Status => first == Some("status"),
        Part::Main => match first {
            None | Some("apiVersion" | "kind" | "status") => false,
            Some("metadata") => !matches!(
                path.get(1).map(String::as_str),
                Some(
                    "name"
                        | "namespace"
                        | "uid"
                        | "resourceVersion"
                        | "generation"
                        | "creationTimestamp"
                        | "deletionTimestamp"
                        | "deletionGracePeriodSeconds"
                        | "managedFields"
                )
            ),
            Some(_) => true,
        },
    }
}

fn collect(value: &Value, prefix: &mut FieldPath, part: Part, out: &mut BTreeSet<FieldPath>) {
    match value {
        Value::Object(fields) if !fields.is_empty() => {
            for (name, child) in fields {
                prefix.push(name.clone());
                collect(child, prefix, part, out);
                prefix.pop();
            }
        }
        _ => {
            if tracked(prefix, part) {
                out.insert(prefix.clone());
            }
        }
    }
}

/// The tracked leaves of `value`.
pub fn fields(value: &Value, part: Part) -> BTreeSet<FieldPath> {
    let mut out = BTreeSet::new();
    collect(value, &mut Vec::new(), part, &mut out);
    out
}

pub fn get<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(value, |value, name| value.get(name))
}

fn set(value: &mut Value, path: &[String], leaf: Value) {
    let mut current = value;
    for name in &path[..path.len() - 1] {
        if !current.get(name).is_some_and(Value::is_object) {
            current[name.as_str()] = Value::Object(Map::new());
        }
        current = current.get_mut(name).expect("just made");
    }
    current[path[path.len() - 1].as_str()] = leaf;
}

fn remove(value: &mut Value, path: &[String]) {
    let mut current = value;
    for name in &path[..path.len() - 1] {
        match current.get_mut(name) {
            Some(next) => current = next,
            None => return,
        }
    }
    if let Some(fields) = current.as_object_mut() {
        fields.remove(&path[path.len() - 1]);
    }
}

fn dotted(path: &FieldPath) -> String {
    path.iter().map(|name| format!(".{name}")).collect()
}

/// Who owns which fields of one object, for one part (main resource or `/status`).
#[derive(Debug, Clone, Default)]
pub struct Managers(BTreeMap<String, BTreeSet<FieldPath>>);

impl Managers {
    /// The managers owning `path` (dotted, e.g. `spec.holderIdentity`).
    pub fn owners(&self, path: &str) -> Vec<String> {
        let path: FieldPath = path.split('.').map(str::to_owned).collect();
        self.0
            .iter()
            .filter(|(_, owned)| owned.contains(&path))
            .map(|(manager, _)| manager.clone())
            .collect()
    }

    /// Applies `config` as `manager` to `object`; returns the merged object.
    pub fn apply(
        &mut self,
        object: &Value,
        config: &Value,
        manager: &str,
        force: bool,
        part: Part,
    ) -> Result<Value, ApiError> {
        let wanted = fields(config, part);
        let mut conflicts = Vec::new();
        for path in &wanted {
            let unchanged = get(object, path) == get(config, path);
            for (other, owned) in &self.0 {
                if other != manager && owned.contains(path) && !unchanged {
                    conflicts.push(format!("conflict with \"{other}\": {}", dotted(path)));
                }
            }
        }
        if !conflicts.is_empty() && !force {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!(
                    "Apply failed with {} conflict{}: {}",
                    conflicts.len(),
                    if conflicts.len() == 1 { "" } else { "s" },
                    conflicts.join(", ")
                ),
            ));
        }
        let mut result = object.clone();
        let previously = self.0.remove(manager).unwrap_or_default();
        for path in previously.difference(&wanted) {
            if !self.0.values().any(|owned| owned.contains(path)) {
                remove(&mut result, path);
            }
        }
        for path in &wanted {
            let unchanged = get(object, path) == get(config, path);
            if !unchanged {
                // Forced (or unowned): the field changes hands.
                for owned in self.0.values_mut() {
                    owned.remove(path);
                }
            }
            set(
                &mut result,
                path,
                get(config, path).cloned().unwrap_or(Value::Null),
            );
        }
        self.0.insert(manager.to_owned(), wanted);
        Ok(result)
    }

    /// Records a non-apply write: `manager` takes the fields that changed; fields gone from
    /// the object are dropped from everyone.
    pub fn record_update(&mut self, old: &Value, new: &Value, manager: &str, part: Part) {
        let present = fields(new, part);
        let changed: BTreeSet<FieldPath> = present
            .iter()
            .filter(|path| get(old, path) != get(new, path))
            .cloned()
            .collect();
        for owned in self.0.values_mut() {
            owned.retain(|path| present.contains(path) && !changed.contains(path));
        }
        if !changed.is_empty() {
            self.0
                .entry(manager.to_owned())
                .or_default()
                .extend(changed);
        }
        self.0.retain(|_, owned| !owned.is_empty());
    }

    /// Drops fields gone from `object` (after an apply's own removals).
    pub fn prune(&mut self, object: &Value, part: Part) {
        let present = fields(object, part);
        for owned in self.0.values_mut() {
            owned.retain(|path| present.contains(path));
        }
        self.0.retain(|_, owned| !owned.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_apply_over_another_managers_field_conflicts_unless_forced() {
        let mut managers = Managers::default();
        let lease = json!({"metadata": {"name": "l"}, "spec": {}});
        let lease = managers
            .apply(
                &lease,
                &json!({"spec": {"holderIdentity": "a", "renewTime": "1"}}),
                "a",
                false,
                Part::Main,
            )
            .unwrap();
        assert_eq!(managers.owners("spec.holderIdentity"), ["a"]);

        let error = managers
            .apply(
                &lease,
                &json!({"spec": {"holderIdentity": "b"}}),
                "b",
                false,
                Part::Main,
            )
            .unwrap_err();
        assert_eq!((error.code, error.reason), (409, "Conflict"));
        assert!(
            error
                .message
                .contains("conflict with \"a\": .spec.holderIdentity"),
            "{}",
            error.message
        );

        // The same value is shared ownership, not a conflict.
        let shared = managers
            .apply(
                &lease,
                &json!({"spec": {"holderIdentity": "a"}}),
                "c",
                false,
                Part::Main,
            )
            .unwrap();
        assert_eq!(shared, lease);
        assert_eq!(managers.owners("spec.holderIdentity"), ["a", "c"]);

        let forced = managers
            .apply(
                &lease,
                &json!({"spec": {"holderIdentity": "b"}}),
                "b",
                true,
                Part::Main,
            )
            .unwrap();
        assert_eq!(forced["spec"]["holderIdentity"], "b");
        assert_eq!(managers.owners("spec.holderIdentity"), ["b"]);
        assert_eq!(managers.owners("spec.renewTime"), ["a"]);
    }

    #[test]
    fn fields_an_applier_drops_are_removed_unless_someone_else_owns_them() {
        let mut managers = Managers::default();
        let object = json!({"metadata": {"name": "s"}});
        let object = managers
            .apply(
                &object,
                &json!({"data": {"x": "1", "y": "2"}, "type": "Opaque"}),
                "op",
                false,
                Part::Main,
            )
            .unwrap();
        let before = object.clone();
        let object = json!({"metadata": {"name": "s"}, "data": {"x": "1", "y": "2", "z": "3"}, "type": "Opaque"});
        managers.record_update(&before, &object, "kubectl", Part::Main);
        assert_eq!(managers.owners("data.z"), ["kubectl"]);
        let object = managers
            .apply(
                &object,
                &json!({"data": {"x": "1"}}),
                "op",
                false,
                Part::Main,
            )
            .unwrap();
        assert_eq!(
            object["data"],
            json!({"x": "1", "z": "3"}),
            "y dropped, z kept"
        );
        assert!(object.get("type").is_none());
    }

    #[test]
    fn an_update_takes_the_fields_it_changes_and_server_fields_are_nobodys() {
        let mut managers = Managers::default();
        let old = json!({"metadata": {"name": "a", "resourceVersion": "1"}, "spec": {"a": 1}});
        let new = json!({"metadata": {"name": "a", "resourceVersion": "2", "labels": {"x": "y"}}, "spec": {"a": 2}});
        managers.record_update(&old, &new, "editor", Part::Main);
        assert_eq!(managers.owners("spec.a"), ["editor"]);
        assert_eq!(managers.owners("metadata.labels.x"), ["editor"]);
        assert!(managers.owners("metadata.resourceVersion").is_empty());
        let error = managers
            .apply(&new, &json!({"spec": {"a": 3}}), "op", false, Part::Main)
            .unwrap_err();
        assert!(error.message.contains("\"editor\": .spec.a"));
    }

    #[test]
    fn status_fields_are_tracked_apart() {
        let fields = fields(&json!({"spec": {"a": 1}, "status": {"b": 2}}), Part::Status);
        assert_eq!(
            fields.into_iter().collect::<Vec<_>>(),
            [vec!["status".to_owned(), "b".to_owned()]]
        );
    }
}
