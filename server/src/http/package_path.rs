//! Parsing of `/v1/packages/…` paths. A package name is accepted both as two segments
//! (`@ns/pkg/…`) and percent-encoded as one (`%40ns%2Fpkg/…`), which a router cannot tell
//! apart after decoding, so the raw path is split here before decoding.

use percent_encoding::percent_decode_str;

use crate::http::error::Result;
use niso_registry::error::Error;
use niso_registry::names::PackageName;

/// What follows the package name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PackageRoute {
    /// `…/versions`
    Versions,
    /// `…/tags`
    Tags,
    /// `…/{version}/manifest`
    Manifest { version: String },
    /// `…/{version}/{arch}`
    Archive { version: String, arch: String },
    /// `…/{version}/{arch}/chunks`
    ChunkManifest { version: String, arch: String },
}

impl PackageRoute {
    /// The route template, for metrics and logs.
    pub fn template(&self) -> &'static str {
        match self {
            PackageRoute::Versions => "/v1/packages/{name}/versions",
            PackageRoute::Tags => "/v1/packages/{name}/tags",
            PackageRoute::Manifest { .. } => "/v1/packages/{name}/{version}/manifest",
            PackageRoute::Archive { .. } => "/v1/packages/{name}/{version}/{arch}",
            PackageRoute::ChunkManifest { .. } => "/v1/packages/{name}/{version}/{arch}/chunks",
        }
    }
}

fn decode(segment: &str) -> Result<String> {
    percent_decode_str(segment)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| Error::Invalid("the path is not valid UTF-8".into()).into())
}

/// Splits the part of the raw path after `/v1/packages/` into the package name and the route.
/// `None` when the path matches no package endpoint (a 404).
pub fn parse_package_path(raw: &str) -> Result<Option<(PackageName, PackageRoute)>> {
    let segments: Vec<&str> = raw.trim_end_matches('/').split('/').collect();
    let first = decode(segments[0])?;
    let (name, rest) = if first.contains('/') {
        (first, &segments[1..])
    } else if segments.len() >= 2 {
        (format!("{first}/{}", decode(segments[1])?), &segments[2..])
    } else {
        return Ok(None);
    };
    let rest: Vec<String> = rest.iter().map(|s| decode(s)).collect::<Result<_>>()?;
    let route = match rest.as_slice() {
        [word] if word == "versions" => PackageRoute::Versions,
        [word] if word == "tags" => PackageRoute::Tags,
        [version, word] if word == "manifest" => PackageRoute::Manifest {
            version: version.clone(),
        },
        [version, arch] => PackageRoute::Archive {
            version: version.clone(),
            arch: arch.clone(),
        },
        [version, arch, word] if word == "chunks" => PackageRoute::ChunkManifest {
            version: version.clone(),
            arch: arch.clone(),
        },
        _ => return Ok(None),
    };
    Ok(Some((PackageName::parse(&name)?, route)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> (String, PackageRoute) {
        let (name, route) = parse_package_path(raw).unwrap().unwrap();
        (name.to_string(), route)
    }

    #[test]
    fn both_name_forms_are_accepted() {
        let archive = PackageRoute::Archive {
            version: "1.0.0".into(),
            arch: "x86_64-linux".into(),
        };
        assert_eq!(
            parse("@alice/app/1.0.0/x86_64-linux"),
            ("@alice/app".into(), archive.clone())
        );
        assert_eq!(
            parse("%40alice%2Fapp/1.0.0/x86_64-linux"),
            ("@alice/app".into(), archive)
        );
        assert_eq!(parse("%40alice%2fapp/versions").1, PackageRoute::Versions);
        assert_eq!(parse("@alice/app/tags").1, PackageRoute::Tags);
    }

    #[test]
    fn routes() {
        assert_eq!(
            parse("@a/b/1.0.0/manifest").1,
            PackageRoute::Manifest {
                version: "1.0.0".into()
            }
        );
        assert_eq!(
            parse("@a/b/latest/x86_64").1,
            PackageRoute::Archive {
                version: "latest".into(),
                arch: "x86_64".into()
            }
        );
        assert_eq!(
            parse("@a/b/1.0.0/x86_64/chunks").1,
            PackageRoute::ChunkManifest {
                version: "1.0.0".into(),
                arch: "x86_64".into()
            }
        );
    }

    #[test]
    fn unknown_paths_and_bad_names() {
        assert!(parse_package_path("@a/b").unwrap().is_none());
        assert!(parse_package_path("@a/b/1/2/3/4").unwrap().is_none());
        assert!(parse_package_path("@a").unwrap().is_none());
        assert!(parse_package_path("@A/b/versions").is_err());
        assert!(parse_package_path("%40a%2Fb%2Fc/versions").is_err());
    }
}
