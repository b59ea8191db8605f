//! What a download or a manifest request names: a version, a tag, or `latest`.

use super::{NameError, Tag, Version, invalid, shown};

/// The reference the registry keeps pointing at a package's latest version (for an arch: the
/// latest version that has it). Not a stored tag: it cannot be set.
pub const LATEST: &str = "latest";

/// A version reference in a URL (`…/{version}/{arch}`, `…/{version}/manifest`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reference {
    Latest,
    Version(Version),
    Tag(Tag),
}

impl Reference {
    /// `latest`, else a SemVer version, else a tag; anything else is refused here, before the
    /// database is asked.
    pub fn parse(s: &str) -> Result<Reference, NameError> {
        if s == LATEST {
            return Ok(Reference::Latest);
        }
        if let Ok(version) = Version::parse(s) {
            return Ok(Reference::Version(version));
        }
        Tag::parse(s).map(Reference::Tag).map_err(|_| {
            invalid(format!(
                "invalid version {}: expected a SemVer version, a tag or \"latest\"",
                shown(s)
            ))
        })
    }

    pub fn as_str(&self) -> &str {
        match self {
            Reference::Latest => LATEST,
            Reference::Version(version) => version.as_str(),
            Reference::Tag(tag) => tag.as_str(),
        }
    }
}

super::validated_name!(Reference);

#[cfg(test)]
mod tests {
    use super::super::tests::message;
    use super::*;

    #[test]
    fn references_are_latest_a_version_or_a_tag() {
        assert_eq!(Reference::parse("latest").unwrap(), Reference::Latest);
        assert!(matches!(
            Reference::parse("1.2.3-rc.1").unwrap(),
            Reference::Version(v) if v.as_str() == "1.2.3-rc.1"
        ));
        assert!(matches!(
            Reference::parse("stable").unwrap(),
            Reference::Tag(t) if t.as_str() == "stable"
        ));
        for bad in ["1.0", "-x", "Stable", "", "a b", &"a".repeat(65)] {
            let m = message(Reference::parse(bad));
            assert!(
                m.contains("expected a SemVer version, a tag or \"latest\""),
                "{m}"
            );
        }
        assert_eq!(Reference::parse("1.0.0").unwrap().to_string(), "1.0.0");
    }
}
