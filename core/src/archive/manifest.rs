//! The root `manifest.toml` of an archive: its `[package]` table, parsed from the text shipped.

use serde::Deserialize;

use super::ArchiveError;

/// The `[package]` table of an archive's `manifest.toml`.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    pub description: Option<String>,
    pub license: Option<String>,
    pub arch: Option<String>,
    /// the manifest.toml text exactly as shipped
    pub raw: String,
}

#[derive(Deserialize)]
struct ManifestDocument {
    package: PackageTable,
}

#[derive(Deserialize)]
struct PackageTable {
    name: String,
    version: String,
    description: Option<String>,
    license: Option<String>,
    arch: Option<String>,
}

/// Parses the manifest's bytes (already bounded by `ArchiveLimits::max_manifest_bytes`).
pub(super) fn parse_manifest(bytes: Vec<u8>) -> Result<Manifest, ArchiveError> {
    let raw = String::from_utf8(bytes)
        .map_err(|_| ArchiveError::Invalid("manifest.toml is not valid UTF-8".into()))?;
    let document: ManifestDocument = toml::from_str(&raw).map_err(|error| {
        ArchiveError::Invalid(format!(
            "manifest.toml is invalid: {}",
            error.to_string().trim_end()
        ))
    })?;
    let package = document.package;
    Ok(Manifest {
        name: package.name,
        version: package.version,
        description: package.description,
        license: package.license,
        arch: package.arch,
        raw,
    })
}
