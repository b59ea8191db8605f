//! Versions (SemVer 2.0) and which of a package's versions `latest` means.

use std::cmp::Ordering;
use std::hash::{Hash, Hasher};

use super::{NameError, invalid, shown, validated_name};

/// A SemVer 2.0 version, parsed strictly: `1.0` and `v1.0.0` are refused, build metadata is
/// allowed. The reserved words can never parse as versions.
///
/// Equality and ordering are SemVer's total order (build metadata included, so `1.0.0+a` and
/// `1.0.0+b` are different versions); precedence, which ignores build metadata, is
/// [`Version::cmp_precedence`].
#[derive(Debug, Clone)]
pub struct Version {
    text: String,
    parsed: semver::Version,
}

impl Version {
    pub fn parse(s: &str) -> Result<Version, NameError> {
        let parsed = semver::Version::parse(s).map_err(|e| {
            invalid(format!(
                "invalid version {}: expected a SemVer 2.0 version such as 1.2.3 or 1.2.3-rc.1 \
                 ({e})",
                shown(s)
            ))
        })?;
        Ok(Version {
            text: s.to_owned(),
            parsed,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn into_string(self) -> String {
        self.text
    }

    /// Whether this is a prerelease (`1.0.0-rc.1`).
    pub fn is_prerelease(&self) -> bool {
        !self.parsed.pre.is_empty()
    }

    /// SemVer precedence: build metadata is ignored.
    pub fn cmp_precedence(&self, other: &Version) -> Ordering {
        self.parsed.cmp_precedence(&other.parsed)
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.parsed == other.parsed
    }
}

impl Eq for Version {}

impl Hash for Version {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.parsed.hash(state);
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        self.parsed.cmp(&other.parsed)
    }
}

validated_name!(Version);

/// The version a package's `latest` means: the highest non-prerelease version by SemVer
/// precedence, or the highest prerelease when there are only prereleases. `None` when empty.
///
/// Precedence ignores build metadata, so `1.0.0+a` and `1.0.0+b` tie; the tie is broken by the
/// full ordering so the answer does not depend on the order the versions come in.
pub fn latest_version<'a, I>(versions: I) -> Option<&'a Version>
where
    I: IntoIterator<Item = &'a Version>,
{
    fn higher<'a>(best: Option<&'a Version>, candidate: &'a Version) -> &'a Version {
        match best {
            Some(best)
                if candidate
                    .cmp_precedence(best)
                    .then_with(|| candidate.cmp(best))
                    .is_le() =>
            {
                best
            }
            _ => candidate,
        }
    }

    let mut best_release = None;
    let mut best_prerelease = None;
    for v in versions {
        if v.is_prerelease() {
            best_prerelease = Some(higher(best_prerelease, v));
        } else {
            best_release = Some(higher(best_release, v));
        }
    }
    best_release.or(best_prerelease)
}

#[cfg(test)]
mod tests {
    use super::super::RESERVED_WORDS;
    use super::*;

    #[test]
    fn versions() {
        for ok in [
            "1.0.0",
            "0.0.0",
            "1.10.0",
            "1.0.0-rc.1",
            "1.0.0+build.5",
            "1.0.0-alpha+001",
        ] {
            assert_eq!(Version::parse(ok).unwrap().as_str(), ok);
        }
        for bad in [
            "", "1", "1.0", "v1.0.0", "01.0.0", "1.0.0 ", " 1.0.0", "1.0.0-", "x",
        ] {
            assert!(Version::parse(bad).is_err(), "{bad}");
        }
        for word in RESERVED_WORDS {
            assert!(Version::parse(word).is_err(), "{word}");
        }
        let m = Version::parse("1.0").unwrap_err().to_string();
        assert!(m.starts_with("invalid version \"1.0\""), "{m}");
    }

    #[test]
    fn build_metadata_makes_a_different_version_of_equal_precedence() {
        let a = Version::parse("1.0.0+a").unwrap();
        let b = Version::parse("1.0.0+b").unwrap();
        assert_ne!(a, b);
        assert_eq!(a.cmp_precedence(&b), Ordering::Equal);
    }

    fn vs(list: &[&str]) -> Vec<Version> {
        list.iter().map(|s| Version::parse(s).unwrap()).collect()
    }

    #[test]
    fn latest_prefers_highest_release() {
        let v = vs(&["1.9.0", "1.10.0", "1.2.0", "2.0.0-rc.1"]);
        assert_eq!(latest_version(&v).unwrap().as_str(), "1.10.0");
    }

    #[test]
    fn latest_falls_back_to_highest_prerelease() {
        let v = vs(&["1.0.0-alpha", "1.0.0-rc.1", "1.0.0-beta.11", "0.9.0-rc.2"]);
        assert_eq!(latest_version(&v).unwrap().as_str(), "1.0.0-rc.1");
        let v = vs(&["1.0.0-alpha.2", "1.0.0-alpha.10"]);
        assert_eq!(latest_version(&v).unwrap().as_str(), "1.0.0-alpha.10");
    }

    #[test]
    fn latest_release_beats_newer_prerelease() {
        let v = vs(&["3.0.0-alpha", "0.1.0"]);
        assert_eq!(latest_version(&v).unwrap().as_str(), "0.1.0");
    }

    #[test]
    fn latest_ignores_build_metadata_for_precedence() {
        let v = vs(&["1.0.0+zzz", "1.1.0+aaa", "1.0.5"]);
        assert_eq!(latest_version(&v).unwrap().as_str(), "1.1.0+aaa");
        // A precedence tie gives the same answer whatever the input order.
        let a = vs(&["1.0.0+b", "1.0.0+a"]);
        let b = vs(&["1.0.0+a", "1.0.0+b"]);
        assert_eq!(latest_version(&a), latest_version(&b));
    }

    #[test]
    fn latest_of_nothing_is_none() {
        assert_eq!(latest_version(&Vec::new()), None);
    }
}
