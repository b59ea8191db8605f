//! The OpenAPI document (`/v1/openapi.json`). Nothing here lists endpoints: each handler's
//! `#[utoipa::path]` declares its route, and the router (`mod.rs`) registers handlers through
//! utoipa-axum, so a route and its operation are one declaration and cannot disagree. Handler
//! doc comments become the operations' descriptions; the name types carry the patterns and
//! lengths the API enforces (`niso_core::names`).
//!
//! The document is pinned by a snapshot (`openapi.json` beside the crate's manifest): a change
//! to the API shows up as a diff in review. Set `NISO_UPDATE_OPENAPI_SNAPSHOT=1` to rewrite it.

use niso_registry::names::openapi::{Namespace, Username};
use niso_registry::names::{Arch, PackageName, Reference, Tag, Version};
use utoipa::OpenApi;

use super::extract::{Limit, Offset};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

/// The document's frame. The name and pagination schemas are listed because parameters refer
/// to them but, unlike bodies, do not register what they refer to.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "niso registry API",
        description = "Binary package registry: .niso archives per version and architecture."
    ),
    components(schemas(
        PackageName,
        Version,
        Arch,
        Tag,
        Reference,
        Username,
        Namespace,
        Limit,
        Offset
    ))
)]
pub struct ApiDocument;

/// The whole document: every route's operation, and the `api_key` bearer scheme.
pub fn document() -> utoipa::openapi::OpenApi {
    let (_, document) = super::api().split_for_parts();
    with_security(document)
}

/// Adds the security scheme the operations refer to.
pub fn with_security(mut document: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    let components = document.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "api_key",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("niso_…")
                .build(),
        ),
    );
    document
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::document;

    fn snapshot_path() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("openapi.json")
    }

    #[test]
    fn the_document_matches_its_snapshot() {
        let current = serde_json::to_string_pretty(&document()).unwrap() + "\n";
        let path = snapshot_path();
        if std::env::var_os("NISO_UPDATE_OPENAPI_SNAPSHOT").is_some() {
            std::fs::write(&path, &current).unwrap();
        }
        let snapshot = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            snapshot == current,
            "the OpenAPI document differs from {}; if the change is intended, rerun with \
             NISO_UPDATE_OPENAPI_SNAPSHOT=1 and review the diff",
            path.display()
        );
    }

    /// Every `$ref` names a schema the document has (a dangling one breaks generated clients).
    #[test]
    fn every_reference_resolves() {
        fn references(value: &serde_json::Value, found: &mut Vec<String>) {
            match value {
                serde_json::Value::Object(map) => {
                    for (key, inner) in map {
                        match (key.as_str(), inner) {
                            ("$ref", serde_json::Value::String(target)) => {
                                found.push(target.clone())
                            }
                            _ => references(inner, found),
                        }
                    }
                }
                serde_json::Value::Array(items) => {
                    items.iter().for_each(|item| references(item, found))
                }
                _ => {}
            }
        }
        let value = serde_json::to_value(document()).unwrap();
        let mut found = Vec::new();
        references(&value, &mut found);
        assert!(found.len() > 20, "{found:?}");
        for target in found {
            let name = target
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("unexpected reference {target}"));
            assert!(
                value["components"]["schemas"].get(name).is_some(),
                "{target} does not resolve"
            );
        }
    }

    #[test]
    fn every_operation_says_what_it_does() {
        let document = document();
        for (path, item) in &document.paths.paths {
            for (method, operation) in [
                ("get", &item.get),
                ("put", &item.put),
                ("post", &item.post),
                ("patch", &item.patch),
                ("delete", &item.delete),
            ] {
                if let Some(operation) = operation {
                    let described = operation.description.as_deref().unwrap_or_default();
                    let summary = operation.summary.as_deref().unwrap_or_default();
                    assert!(
                        !described.is_empty() || !summary.is_empty(),
                        "{method} {path} has no description"
                    );
                }
            }
        }
    }

    #[test]
    fn package_paths_carry_the_name_rules() {
        let text = serde_json::to_string(&document()).unwrap();
        for component in [
            "PackageName",
            "Version",
            "Arch",
            "Tag",
            "Reference",
            "Username",
        ] {
            assert!(
                text.contains(&format!("\"#/components/schemas/{component}\"")),
                "{component} is never referenced"
            );
        }
        let value = serde_json::to_value(document()).unwrap();
        let arch = &value["components"]["schemas"]["Arch"];
        assert_eq!(arch["maxLength"], 64, "{arch}");
        assert!(arch["pattern"].as_str().is_some(), "{arch}");
    }
}
