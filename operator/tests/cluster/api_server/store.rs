//! The objects and their history: one revision counter for the whole server (every write gets
//! the next `resourceVersion`, as etcd gives them), uids, `generation` (bumped when anything
//! but metadata and status changes, for the kinds that have it), optimistic concurrency (a
//! write naming a stale `resourceVersion` is a 409), the `/status` split (writes to the main
//! resource keep the stored status; writes to `/status` change nothing else), finalizers
//! (deletion sets `deletionTimestamp`; the object goes when its last finalizer does; no new
//! finalizer once deleting), owner-reference cascade (dependents whose owners are all gone are
//! deleted, in turn honouring their finalizers) and a change history the watches read.
//! Writes that change nothing keep the object's `resourceVersion` and make no event.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use super::Part;

mod writes;
use super::apply::Managers;
use super::errors::ApiError;
use super::routing::{Kind, kind_of};
pub use writes::Writer;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeType {
    Added,
    Modified,
    Deleted,
}

/// One write, as watches see it.
#[derive(Debug, Clone)]
pub struct Change {
    pub revision: u64,
    pub resource: &'static str,
    pub namespace: String,
    pub change: ChangeType,
    pub object: Value,
    /// The object before a modification (a watch with a selector turns a modification that
    /// leaves or enters the selection into DELETED or ADDED).
    pub previous: Option<Value>,
}

type Key = (&'static str, String, String);

struct Stored {
    object: Value,
    main: Managers,
    status: Managers,
}

#[derive(Default)]
pub struct Store {
    revision: u64,
    objects: BTreeMap<Key, Stored>,
    history: Vec<Change>,
    /// Changes at or before this revision are forgotten: a watch from there is 410 Gone.
    compacted: u64,
    next_uid: u64,
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn finalizers(object: &Value) -> BTreeSet<String> {
    object["metadata"]["finalizers"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|f| f.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn deleting(object: &Value) -> bool {
    object["metadata"].get("deletionTimestamp").is_some()
}

/// Everything but metadata and status: what `generation` counts changes of.
fn content(object: &Value) -> Value {
    let mut content = object.clone();
    if let Some(fields) = content.as_object_mut() {
        fields.remove("metadata");
        fields.remove("status");
    }
    content
}

fn metadata_mut(object: &mut Value) -> &mut serde_json::Map<String, Value> {
    if !object["metadata"].is_object() {
        object["metadata"] = json!({});
    }
    object["metadata"].as_object_mut().expect("an object")
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.'))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

impl Store {
    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn compacted(&self) -> u64 {
        self.compacted
    }

    /// Forgets the history so far (what etcd compaction does to old watches).
    pub fn compact(&mut self) {
        self.compacted = self.revision;
        self.history.clear();
    }

    /// The changes after `revision`.
    pub fn changes_after(&self, revision: u64) -> &[Change] {
        let start = self
            .history
            .partition_point(|change| change.revision <= revision);
        &self.history[start..]
    }

    fn key(kind: &Kind, namespace: Option<&str>, name: &str) -> Key {
        (
            kind.resource,
            namespace.unwrap_or_default().to_owned(),
            name.to_owned(),
        )
    }

    pub fn get(&self, kind: &Kind, namespace: Option<&str>, name: &str) -> Result<Value, ApiError> {
        self.objects
            .get(&Store::key(kind, namespace, name))
            .map(|stored| stored.object.clone())
            .ok_or_else(|| ApiError::not_found(&kind.qualified(), name))
    }

    /// The managers of one object's fields, for tests.
    pub fn managers(
        &self,
        kind: &Kind,
        namespace: Option<&str>,
        name: &str,
        part: Part,
    ) -> Option<Managers> {
        self.objects
            .get(&Store::key(kind, namespace, name))
            .map(|stored| match part {
                Part::Main => stored.main.clone(),
                Part::Status => stored.status.clone(),
            })
    }

    pub fn list(&self, kind: &Kind, namespace: Option<&str>) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|((resource, ns, _), _)| {
                *resource == kind.resource && namespace.is_none_or(|wanted| wanted == ns)
            })
            .map(|(_, stored)| stored.object.clone())
            .collect()
    }

    fn record(
        &mut self,
        kind: &Kind,
        namespace: &str,
        change: ChangeType,
        object: Value,
        previous: Option<Value>,
    ) {
        self.history.push(Change {
            revision: self.revision,
            resource: kind.resource,
            namespace: namespace.to_owned(),
            change,
            object,
            previous,
        });
    }

    pub fn create(
        &mut self,
        kind: &Kind,
        namespace: Option<&str>,
        body: Value,
        manager: &str,
    ) -> Result<Value, ApiError> {
        self.create_with(kind, namespace, body, |object, managers| {
            managers.record_update(&json!({}), object, manager, Part::Main);
            Ok(object.clone())
        })
    }

    fn create_with(
        &mut self,
        kind: &Kind,
        namespace: Option<&str>,
        mut object: Value,
        fill: impl FnOnce(&Value, &mut Managers) -> Result<Value, ApiError>,
    ) -> Result<Value, ApiError> {
        if !object.is_object() {
            return Err(ApiError::bad_request("the body must be an object"));
        }
        let name = match (
            object["metadata"]["name"].as_str(),
            object["metadata"]["generateName"].as_str(),
        ) {
            (Some(name), _) if !name.is_empty() => name.to_owned(),
            (_, Some(prefix)) => {
                self.next_uid += 1;
                format!("{prefix}{:05x}", self.next_uid)
            }
            _ => {
                return Err(ApiError::invalid(format!(
                    "{}: metadata.name: Required value",
                    kind.kind
                )));
            }
        };
        if !valid_name(&name) {
            return Err(ApiError::invalid(format!(
                "{} {name:?}: metadata.name: Invalid value: a lowercase RFC 1123 subdomain",
                kind.kind
            )));
        }
        if let Some(given) = object["metadata"]["namespace"].as_str()
            && Some(given) != namespace
            && kind.namespaced
        {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        let key = Store::key(kind, namespace, &name);
        if self.objects.contains_key(&key) {
            return Err(ApiError::already_exists(&kind.qualified(), &name));
        }
        self.next_uid += 1;
        self.revision += 1;
        object["apiVersion"] = kind.api_version().into();
        object["kind"] = kind.kind.into();
        let uid = format!("00000000-0000-4000-8000-{:012x}", self.next_uid);
        let revision = self.revision.to_string();
        let metadata = metadata_mut(&mut object);
        metadata.insert("name".into(), name.clone().into());
        match namespace {
            Some(namespace) if kind.namespaced => {
                metadata.insert("namespace".into(), namespace.into())
            }
            _ => metadata.remove("namespace"),
        };
        metadata.insert("uid".into(), uid.into());
        metadata.insert("resourceVersion".into(), revision.into());
        metadata.insert("creationTimestamp".into(), now().into());
        metadata.remove("deletionTimestamp");
        metadata.remove("managedFields");
        if kind.generation {
            metadata.insert("generation".into(), 1.into());
        }
        if kind.status_subresource
            && let Some(fields) = object.as_object_mut()
        {
            fields.remove("status");
        }
        let mut main = Managers::default();
        let object = fill(&object, &mut main)?;
        main.prune(&object, Part::Main);
        self.objects.insert(
            key,
            Stored {
                object: object.clone(),
                main,
                status: Managers::default(),
            },
        );
        self.record(
            kind,
            namespace.unwrap_or_default(),
            ChangeType::Added,
            object.clone(),
            None,
        );
        Ok(object)
    }

    pub fn delete(
        &mut self,
        kind: &Kind,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        let key = Store::key(kind, namespace, name);
        let old = self
            .objects
            .get(&key)
            .map(|stored| stored.object.clone())
            .ok_or_else(|| ApiError::not_found(&kind.qualified(), name))?;
        if deleting(&old) {
            return Ok(old);
        }
        self.revision += 1;
        let mut object = old.clone();
        metadata_mut(&mut object)
            .insert("resourceVersion".into(), self.revision.to_string().into());
        if finalizers(&old).is_empty() {
            self.objects.remove(&key);
            self.record(
                kind,
                namespace.unwrap_or_default(),
                ChangeType::Deleted,
                object.clone(),
                None,
            );
            self.cascade(&object);
        } else {
            let metadata = metadata_mut(&mut object);
            metadata.insert("deletionTimestamp".into(), now().into());
            metadata.insert("deletionGracePeriodSeconds".into(), 0.into());
            let stored = self.objects.get_mut(&key).expect("present");
            stored.object = object.clone();
            self.record(
                kind,
                namespace.unwrap_or_default(),
                ChangeType::Modified,
                object.clone(),
                Some(old),
            );
        }
        Ok(object)
    }

    /// Background deletion of the dependents of a removed owner: those whose owners are all
    /// gone are deleted (and, through `delete`, their own dependents in turn).
    fn cascade(&mut self, owner: &Value) {
        let Some(uid) = owner["metadata"]["uid"].as_str() else {
            return;
        };
        let live: BTreeSet<String> = self
            .objects
            .values()
            .filter_map(|stored| stored.object["metadata"]["uid"].as_str().map(str::to_owned))
            .collect();
        let orphans: Vec<Key> = self
            .objects
            .iter()
            .filter(|(_, stored)| {
                let owners = stored.object["metadata"]["ownerReferences"].as_array();
                owners.is_some_and(|owners| {
                    owners.iter().any(|o| o["uid"] == uid)
                        && owners
                            .iter()
                            .all(|o| o["uid"].as_str().is_none_or(|u| !live.contains(u)))
                })
            })
            .map(|(key, _)| key.clone())
            .collect();
        for (resource, namespace, name) in orphans {
            let kind = kind_of(resource).expect("stored kinds are known");
            let namespace = (!namespace.is_empty()).then_some(namespace);
            // Already deleting, or gone through an earlier cascade: nothing to do.
            let _ = self.delete(kind, namespace.as_deref(), &name);
        }
    }
}
