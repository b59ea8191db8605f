//! Tags: names a user gives to versions of a package (`stable`, `beta`).

use super::{LATEST, NameError, invalid, is_package_name_byte, shown, validated_name};

pub const MAX_TAG_LEN: usize = 64;

/// A tag: `[a-z][a-z0-9._-]{0,63}` that is not a SemVer version, and not `latest`, which the
/// registry maintains itself (it is a [`Reference`](super::Reference), never a stored tag).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    pub fn parse(s: &str) -> Result<Tag, NameError> {
        if s == LATEST {
            return Err(invalid(format!(
                "the tag \"{LATEST}\" is maintained by the registry and cannot be set"
            )));
        }
        let well_formed = match s.as_bytes() {
            [first, rest @ ..] => {
                s.len() <= MAX_TAG_LEN
                    && first.is_ascii_lowercase()
                    && rest.iter().all(|&b| is_package_name_byte(b))
            }
            [] => false,
        };
        if !well_formed {
            return Err(invalid(format!(
                "invalid tag {}: expected a lowercase letter followed by up to 63 lowercase \
                 letters, digits, '.', '_' or '-'",
                shown(s)
            )));
        }
        // A tag starting with a letter cannot be a version today; the check stays so that
        // loosening the character rule later cannot make tags and versions ambiguous.
        if semver::Version::parse(s).is_ok() {
            return Err(invalid(format!(
                "invalid tag {}: a tag cannot be a version number",
                shown(s)
            )));
        }
        Ok(Tag(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

validated_name!(Tag);

#[cfg(test)]
mod tests {
    use super::super::tests::message;
    use super::*;

    #[test]
    fn tags() {
        for ok in [
            "stable",
            "beta",
            "a",
            "lts-1.2",
            "next_major",
            "v1",
            &"a".repeat(64),
        ] {
            assert_eq!(Tag::parse(ok).unwrap().as_str(), ok);
        }
        for bad in [
            "",
            "1.0.0",
            "1stable",
            "Stable",
            "-x",
            "_x",
            "st able",
            "stäble",
            &"a".repeat(65),
        ] {
            assert!(Tag::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            message(Tag::parse("latest")),
            "the tag \"latest\" is maintained by the registry and cannot be set"
        );
        // Only "latest" is the registry's; the other path words are ordinary tags.
        assert!(Tag::parse("manifest").is_ok());
    }
}
