//! The names' rules as OpenAPI schemas (feature `openapi`, used by the server's document), so
//! generated clients and schema-driven fuzzers produce names the registry accepts. Each
//! pattern restates a rule of this module in ECMA-262 regex syntax; the test below checks the
//! two agree on generated strings, so they cannot drift apart.
//!
//! `Username` and `Namespace` exist only here: the registry validates them with functions, and
//! the document needs a schema to point at.

use std::borrow::Cow;

use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{AnyOfBuilder, ObjectBuilder, Schema, Type};
use utoipa::{PartialSchema, ToSchema};

use super::{Arch, PackageName, Reference, Tag, Version};

pub const USERNAME_PATTERN: &str = "^[a-z0-9][a-z0-9-]{0,38}$";
pub const NAMESPACE_PATTERN: &str = "^@[a-z0-9][a-z0-9-]{0,38}$";
pub const PACKAGE_NAME_PATTERN: &str = "^@[a-z0-9][a-z0-9-]{0,38}/[a-z0-9][a-z0-9._-]{0,63}$";
/// The SemVer 2.0 grammar (semver.org), anchored.
pub const VERSION_PATTERN: &str = "^(0|[1-9][0-9]*)\\.(0|[1-9][0-9]*)\\.(0|[1-9][0-9]*)\
     (-((0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*)(\\.(0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*))*))?\
     (\\+([0-9a-zA-Z-]+(\\.[0-9a-zA-Z-]+)*))?$";
/// Without the reserved words, which the description names (no lookahead in every regex
/// dialect a client may use).
pub const ARCH_PATTERN: &str = "^[a-z0-9_]+(-[a-z0-9_]+)*$";
/// Without `latest`, which the description names.
pub const TAG_PATTERN: &str = "^[a-z][a-z0-9._-]{0,63}$";

fn string(pattern: &str, max_length: usize, description: &str, example: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(pattern))
        .max_length(Some(max_length))
        .description(Some(description))
        .examples([example])
        .into()
}

/// `impl ToSchema` with the type's own name as the component name.
macro_rules! named_schema {
    ($type:ty, $name:literal, $schema:expr) => {
        impl PartialSchema for $type {
            fn schema() -> RefOr<Schema> {
                $schema
            }
        }

        impl ToSchema for $type {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed($name)
            }
        }
    };
}

/// A username's schema (the registry checks usernames with `validate_username`).
pub struct Username;
/// A namespace's schema (`validate_namespace`).
pub struct Namespace;

named_schema!(
    Username,
    "Username",
    string(
        USERNAME_PATTERN,
        39,
        "1-39 lowercase letters, digits or '-', starting with a letter or digit",
        "alice"
    )
);
named_schema!(
    Namespace,
    "Namespace",
    string(
        NAMESPACE_PATTERN,
        40,
        "'@' followed by a username or organisation name",
        "@alice"
    )
);
named_schema!(
    PackageName,
    "PackageName",
    string(
        PACKAGE_NAME_PATTERN,
        105,
        "@namespace/name; in a URL path either as two segments or percent-encoded as one \
         (%40namespace%2Fname)",
        "@alice/my-app"
    )
);
named_schema!(
    Version,
    "Version",
    string(VERSION_PATTERN, 256, "a SemVer 2.0 version", "1.2.3-rc.1")
);
named_schema!(
    Arch,
    "Arch",
    string(
        ARCH_PATTERN,
        64,
        "lowercase letters, digits and '_' in '-'-separated parts; not manifest, chunks, \
         versions, tags or latest",
        "x86_64-linux"
    )
);
named_schema!(
    Tag,
    "Tag",
    string(
        TAG_PATTERN,
        64,
        "a lowercase letter, then up to 63 lowercase letters, digits, '.', '_' or '-'; not \
         latest, which the registry maintains",
        "stable"
    )
);
named_schema!(
    Reference,
    "Reference",
    AnyOfBuilder::new()
        .item(Version::schema())
        .item(Tag::schema())
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some([super::LATEST]))
        )
        .description(Some(
            "a version, a tag, or latest (the highest release, else the highest prerelease)"
        ))
        .into()
);

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use regex::Regex;

    use super::*;
    use crate::names::{validate_namespace, validate_username};

    /// Strings near the rules' edges: built from the characters the rules care about, of
    /// lengths around the limits, plus the hand-picked cases of each rule's unit test.
    fn candidates(seed: u64) -> Vec<String> {
        const ALPHABET: &[u8] = b"aAz09-_.@/+ \xc3\xa9";
        let mut random = StdRng::seed_from_u64(seed);
        let mut strings: Vec<String> = (0..20_000)
            .map(|_| {
                let length = match random.random_range(0..10) {
                    0 => random.random_range(36..110),
                    _ => random.random_range(0..12),
                };
                let bytes: Vec<u8> = (0..length)
                    .map(|_| ALPHABET[random.random_range(0..ALPHABET.len())])
                    .collect();
                String::from_utf8_lossy(&bytes).into_owned()
            })
            .collect();
        for shaped in [
            "1.2.3",
            "0.0.0",
            "1.0.0-rc.1",
            "1.0.0+b.5",
            "1.0.0-alpha+001",
            "01.0.0",
            "1.0",
            "1.0.0-",
            "1.0.0-01",
            "1.0.0-a..b",
            "@alice/app",
            "@a/b.",
            "@alice",
            "x86_64-linux",
            "a--b",
            "-a",
            "stable",
            "lts-1.2",
            "latest",
            "manifest",
        ] {
            strings.push(shaped.to_owned());
        }
        strings.push("a".repeat(39));
        strings.push("a".repeat(40));
        strings.push("a".repeat(64));
        strings.push("a".repeat(65));
        strings.push(format!("@{}/{}", "n".repeat(39), "p".repeat(64)));
        strings
    }

    fn agree(pattern: &str, max_length: usize, rule: impl Fn(&str) -> bool, exempt: &[&str]) {
        let regex = Regex::new(pattern).unwrap();
        for candidate in candidates(7) {
            if exempt.contains(&candidate.as_str()) {
                continue;
            }
            let by_schema = regex.is_match(&candidate) && candidate.chars().count() <= max_length;
            assert_eq!(
                by_schema,
                rule(&candidate),
                "{pattern} and the rule disagree on {candidate:?}"
            );
        }
    }

    #[test]
    fn the_patterns_say_what_the_rules_check() {
        agree(USERNAME_PATTERN, 39, |s| validate_username(s).is_ok(), &[]);
        agree(
            NAMESPACE_PATTERN,
            40,
            |s| validate_namespace(s).is_ok(),
            &[],
        );
        agree(
            PACKAGE_NAME_PATTERN,
            105,
            |s| PackageName::parse(s).is_ok(),
            &[],
        );
        agree(VERSION_PATTERN, 256, |s| Version::parse(s).is_ok(), &[]);
        // The reserved words and `latest` are named in the descriptions instead.
        agree(
            ARCH_PATTERN,
            64,
            |s| Arch::parse(s).is_ok(),
            &crate::names::RESERVED_WORDS,
        );
        agree(TAG_PATTERN, 64, |s| Tag::parse(s).is_ok(), &["latest"]);
    }
}
