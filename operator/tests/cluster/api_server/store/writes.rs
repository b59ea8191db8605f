//! Writes over an existing object: PUT and PATCH (JSON, merge, strategic, server-side apply)
//! of the main resource or of `/status`, through one path that keeps the fields only the
//! server sets, splits status from the rest, bumps `generation`, checks the resourceVersion
//! precondition, skips writes that change nothing and removes a deleting object once its
//! last finalizer is gone.

use serde_json::{Value, json};

use super::super::Part;
use super::super::apply::Managers;
use super::super::errors::ApiError;
use super::super::patch::PatchBody;
use super::super::routing::Kind;
use super::{ChangeType, Store, Stored, content, deleting, finalizers, metadata_mut};

impl Store {
    /// PUT of the main resource or of `/status`.
    pub fn update(
        &mut self,
        kind: &Kind,
        namespace: Option<&str>,
        name: &str,
        body: Value,
        part: Part,
        manager: &str,
    ) -> Result<Value, ApiError> {
        if body["metadata"]["name"]
            .as_str()
            .is_some_and(|given| given != name)
        {
            return Err(ApiError::bad_request(
                "the name of the object does not match the name on the URL",
            ));
        }
        let stored = self.existing(kind, namespace, name)?;
        let mut managers = stored.1;
        let object = self.merge_part(kind, &stored.0, &body, part)?;
        managers
            .for_part(part)
            .record_update(&stored.0, &object, manager, part);
        self.commit(kind, namespace, name, &body, object, managers)
    }

    /// PATCH of the main resource or of `/status`; a server-side apply creates the object.
    pub fn patch(
        &mut self,
        kind: &Kind,
        namespace: Option<&str>,
        name: &str,
        patch: &PatchBody,
        part: Part,
        writer: Writer<'_>,
    ) -> Result<Value, ApiError> {
        let Writer { manager, force } = writer;
        let missing = !self
            .objects
            .contains_key(&Store::key(kind, namespace, name));
        if let PatchBody::Apply(config) = patch {
            if config["metadata"]["name"]
                .as_str()
                .is_some_and(|given| given != name)
            {
                return Err(ApiError::bad_request(
                    "the name of the object does not match the name on the URL",
                ));
            }
            if missing && part == Part::Main {
                let mut skeleton = json!({"metadata": {"name": name}});
                if let Some(namespace) = namespace {
                    skeleton["metadata"]["namespace"] = namespace.into();
                }
                return self.create_with(kind, namespace, skeleton, |object, managers| {
                    managers.apply(object, config, manager, force, Part::Main)
                });
            }
            let (old, mut managers) = self.existing(kind, namespace, name)?;
            let merged = managers
                .for_part(part)
                .apply(&old, config, manager, force, part)?;
            let object = self.merge_part(kind, &old, &merged, part)?;
            return self.commit(kind, namespace, name, config, object, managers);
        }
        let (old, mut managers) = self.existing(kind, namespace, name)?;
        let patched = patch.patched(&old)?;
        let object = self.merge_part(kind, &old, &patched, part)?;
        managers
            .for_part(part)
            .record_update(&old, &object, manager, part);
        // A patch that sets resourceVersion asks for it as a precondition.
        let precondition =
            if patched["metadata"]["resourceVersion"] != old["metadata"]["resourceVersion"] {
                patched.clone()
            } else {
                json!({})
            };
        self.commit(kind, namespace, name, &precondition, object, managers)
    }

    fn existing(
        &self,
        kind: &Kind,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<(Value, PartManagers), ApiError> {
        let stored = self
            .objects
            .get(&Store::key(kind, namespace, name))
            .ok_or_else(|| ApiError::not_found(&kind.qualified(), name))?;
        Ok((
            stored.object.clone(),
            PartManagers {
                main: stored.main.clone(),
                status: stored.status.clone(),
            },
        ))
    }

    /// The object a write of `part` makes from `old` and the written `candidate`: the status
    /// split and the fields only the server sets.
    fn merge_part(
        &self,
        kind: &Kind,
        old: &Value,
        candidate: &Value,
        part: Part,
    ) -> Result<Value, ApiError> {
        if !candidate.is_object() {
            return Err(ApiError::bad_request("the body must be an object"));
        }
        let mut object = match part {
            Part::Main => {
                let mut object = candidate.clone();
                if kind.status_subresource {
                    match old.get("status") {
                        Some(status) => object["status"] = status.clone(),
                        None => {
                            object.as_object_mut().expect("object").remove("status");
                        }
                    }
                }
                object
            }
            Part::Status => {
                let mut object = old.clone();
                match candidate.get("status") {
                    Some(status) => object["status"] = status.clone(),
                    None => {
                        object.as_object_mut().expect("object").remove("status");
                    }
                }
                object
            }
        };
        object["apiVersion"] = kind.api_version().into();
        object["kind"] = kind.kind.into();
        let metadata = metadata_mut(&mut object);
        for field in [
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "resourceVersion",
        ] {
            match old["metadata"].get(field) {
                Some(value) => metadata.insert(field.into(), value.clone()),
                None => metadata.remove(field),
            };
        }
        metadata.remove("managedFields");
        if deleting(old) && !finalizers(&object).is_subset(&finalizers(old)) {
            return Err(ApiError::invalid(format!(
                "{} \"{}\": metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted",
                kind.kind,
                old["metadata"]["name"].as_str().unwrap_or_default()
            )));
        }
        if kind.generation && content(&object) != content(old) {
            let generation = old["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
            metadata_mut(&mut object).insert("generation".into(), generation.into());
        }
        Ok(object)
    }

    /// Stores `object` over the current one: checks the precondition in `request`, skips a
    /// write that changes nothing, removes a deleting object whose last finalizer is gone.
    fn commit(
        &mut self,
        kind: &Kind,
        namespace: Option<&str>,
        name: &str,
        request: &Value,
        mut object: Value,
        mut managers: PartManagers,
    ) -> Result<Value, ApiError> {
        let key = Store::key(kind, namespace, name);
        let old = self
            .objects
            .get(&key)
            .expect("checked by the caller")
            .object
            .clone();
        if let Some(wanted) = request["metadata"]["resourceVersion"].as_str()
            && !wanted.is_empty()
            && Some(wanted) != old["metadata"]["resourceVersion"].as_str()
        {
            return Err(ApiError::stale(&kind.qualified(), name));
        }
        managers.main.prune(&object, Part::Main);
        managers.status.prune(&object, Part::Status);
        if object == old {
            let stored = self.objects.get_mut(&key).expect("present");
            stored.main = managers.main;
            stored.status = managers.status;
            return Ok(old);
        }
        self.revision += 1;
        metadata_mut(&mut object)
            .insert("resourceVersion".into(), self.revision.to_string().into());
        if deleting(&object) && finalizers(&object).is_empty() {
            self.objects.remove(&key);
            self.record(
                kind,
                namespace.unwrap_or_default(),
                ChangeType::Deleted,
                object.clone(),
                None,
            );
            self.cascade(&object);
            return Ok(object);
        }
        self.objects.insert(
            key,
            Stored {
                object: object.clone(),
                main: managers.main,
                status: managers.status,
            },
        );
        self.record(
            kind,
            namespace.unwrap_or_default(),
            ChangeType::Modified,
            object.clone(),
            Some(old),
        );
        Ok(object)
    }
}

/// Who patches: the field manager, and whether an apply takes conflicting fields over.
#[derive(Debug, Clone, Copy)]
pub struct Writer<'a> {
    pub manager: &'a str,
    pub force: bool,
}

/// The field managers of both parts of one object, during a write.
pub struct PartManagers {
    main: Managers,
    status: Managers,
}

impl PartManagers {
    fn for_part(&mut self, part: Part) -> &mut Managers {
        match part {
            Part::Main => &mut self.main,
            Part::Status => &mut self.status,
        }
    }
}
