//! The patch types of `PATCH` requests, chosen by Content-Type: JSON patch (RFC 6902, `test`
//! included, through the json-patch crate), JSON merge patch (RFC 7386), strategic merge patch
//! (treated as a merge patch: lists are replaced whole — a simplification that suits the
//! Lease and metadata patches kube-lease-manager and kube make), and server-side apply (its
//! body only; the field ownership is in `apply.rs`).

use serde_json::Value;

use super::errors::ApiError;

#[derive(Debug, Clone)]
pub enum PatchBody {
    Json(json_patch::Patch),
    Merge(Value),
    Strategic(Value),
    Apply(Value),
}

impl PatchBody {
    pub fn parse(content_type: &str, body: &[u8]) -> Result<PatchBody, ApiError> {
        let media = content_type.split(';').next().unwrap_or_default().trim();
        let json = || -> Result<Value, ApiError> {
            serde_json::from_slice(body)
                .map_err(|error| ApiError::bad_request(format!("invalid patch body: {error}")))
        };
        match media {
            "application/json-patch+json" => serde_json::from_slice(body)
                .map(PatchBody::Json)
                .map_err(|error| ApiError::bad_request(format!("invalid JSON patch: {error}"))),
            "application/merge-patch+json" => json().map(PatchBody::Merge),
            "application/strategic-merge-patch+json" => json().map(PatchBody::Strategic),
            // Apply bodies are YAML; kube sends JSON, which is YAML too.
            "application/apply-patch+yaml" => serde_json::from_slice(body)
                .or_else(|_| serde_yaml::from_slice(body))
                .map(PatchBody::Apply)
                .map_err(|error| ApiError::bad_request(format!("invalid apply body: {error}"))),
            other => Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml; got {other:?}"
                ),
            )),
        }
    }

    /// Applies a JSON, merge or strategic patch to a copy of `object`.
    pub fn patched(&self, object: &Value) -> Result<Value, ApiError> {
        let mut result = object.clone();
        match self {
            PatchBody::Json(patch) => {
                for operation in &patch.0 {
                    // Kubernetes' JSON patch (evanphx/json-patch) passes a `test` for null on
                    // a missing path, where RFC 6902 fails it; kube's finalizer helper relies
                    // on that for objects without finalizers.
                    if let json_patch::PatchOperation::Test(test) = operation
                        && test.value.is_null()
                        && result.pointer(test.path.as_str()).is_none()
                    {
                        continue;
                    }
                    json_patch::patch(&mut result, std::slice::from_ref(operation)).map_err(
                        |error| {
                            ApiError::invalid(format!("the JSON patch cannot be applied: {error}"))
                        },
                    )?;
                }
            }
            PatchBody::Merge(patch) | PatchBody::Strategic(patch) => {
                if !patch.is_object() {
                    return Err(ApiError::bad_request("a merge patch must be an object"));
                }
                json_patch::merge(&mut result, patch)
            }
            PatchBody::Apply(_) => unreachable!("apply is handled by the field managers"),
        }
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(content_type: &str, body: Value) -> PatchBody {
        PatchBody::parse(content_type, body.to_string().as_bytes()).expect("a patch")
    }

    #[test]
    fn a_failed_test_operation_is_unprocessable_and_changes_nothing() {
        let object = json!({"metadata": {"finalizers": ["a"]}});
        let patch = parse(
            "application/json-patch+json",
            json!([
                {"op": "test", "path": "/metadata/finalizers", "value": ["b"]},
                {"op": "add", "path": "/metadata/finalizers/-", "value": "c"}
            ]),
        );
        let error = patch.patched(&object).unwrap_err();
        assert_eq!(error.code, 422, "{error:?}");
        let patch = parse(
            "application/json-patch+json",
            json!([
                {"op": "test", "path": "/metadata/finalizers", "value": ["a"]},
                {"op": "add", "path": "/metadata/finalizers/-", "value": "c"}
            ]),
        );
        assert_eq!(
            patch.patched(&object).unwrap(),
            json!({"metadata": {"finalizers": ["a", "c"]}})
        );
    }

    #[test]
    fn a_test_for_null_passes_on_a_missing_path_as_in_kubernetes() {
        let object = json!({"metadata": {"name": "a"}});
        let patch = parse(
            "application/json-patch+json",
            json!([
                {"op": "test", "path": "/metadata/finalizers", "value": null},
                {"op": "add", "path": "/metadata/finalizers", "value": ["f"]}
            ]),
        );
        let patched = patch.patched(&object).unwrap();
        assert_eq!(patched["metadata"]["finalizers"], json!(["f"]));
        // Once present, the same test fails: the patch is atomic.
        assert_eq!(patch.patched(&patched).unwrap_err().code, 422);
    }

    #[test]
    fn merge_patches_remove_nulls_and_replace_lists() {
        let object = json!({"spec": {"a": 1, "b": [1, 2], "c": {"d": 1}}});
        for content_type in [
            "application/merge-patch+json",
            "application/strategic-merge-patch+json; charset=utf-8",
        ] {
            let patch = parse(
                content_type,
                json!({"spec": {"a": null, "b": [3], "c": {"e": 2}}}),
            );
            assert_eq!(
                patch.patched(&object).unwrap(),
                json!({"spec": {"b": [3], "c": {"d": 1, "e": 2}}})
            );
        }
    }

    #[test]
    fn unknown_media_types_and_bad_bodies_are_refused() {
        let error = PatchBody::parse("text/plain", b"{}").unwrap_err();
        assert_eq!(error.code, 415);
        let error = PatchBody::parse("application/merge-patch+json", b"{").unwrap_err();
        assert_eq!(error.code, 400);
        let apply = PatchBody::parse("application/apply-patch+yaml", b"spec:\n  a: 1\n").unwrap();
        assert!(matches!(apply, PatchBody::Apply(body) if body == json!({"spec": {"a": 1}})));
    }
}
