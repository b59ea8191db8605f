//! Every name in the registry (DESIGN.md §3) as a validated type: usernames and namespaces,
//! [`PackageName`], [`Version`], [`Arch`], [`Tag`] and the [`Reference`] a download names
//! (a version, a tag or `latest`). A value of one of these types has passed its rule, so code
//! that holds one never checks again; the server parses path segments and bodies into them at
//! the edge, and the client uses the same rules before it sends anything.
//!
//! The checks are hand-written byte tests rather than regexes: every rule is ASCII-only, and a
//! non-ASCII UTF-8 byte is always >= 0x80, so it can never slip through an ASCII comparison.
//! The OpenAPI patterns (`openapi.rs`, feature `openapi`) describe the same rules, and a test
//! holds the two together.

mod arch;
#[cfg(feature = "openapi")]
pub mod openapi;
mod package;
mod reference;
mod tag;
mod version;

pub use arch::Arch;
pub use package::PackageName;
pub use reference::{LATEST, Reference};
pub use tag::Tag;
pub use version::{Version, latest_version};

/// A name that breaks the registry's rules. The message is meant for the client (HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("{0}")]
    Invalid(String),
}

/// Path words that the URL scheme gives a meaning of their own, so no version or arch may be
/// spelled like one (`…/{version}/manifest`, `…/{version}/{arch}/chunks`, `…/latest/{arch}`).
pub const RESERVED_WORDS: [&str; 5] = ["manifest", "chunks", "versions", "tags", "latest"];

pub const MAX_USERNAME_LEN: usize = 39;

/// Whether `s` is one of [`RESERVED_WORDS`].
pub fn is_reserved_word(s: &str) -> bool {
    RESERVED_WORDS.contains(&s)
}

/// Quotes client input for an error message. Debug formatting escapes quotes and control
/// characters, and the cut keeps a megabyte of garbage from being echoed back (or logged).
pub fn shown(s: &str) -> String {
    const MAX_SHOWN_CHARS: usize = 80;
    match s.char_indices().nth(MAX_SHOWN_CHARS) {
        Some((cut, _)) => format!("{:?}…", &s[..cut]),
        None => format!("{s:?}"),
    }
}

fn invalid(message: String) -> NameError {
    NameError::Invalid(message)
}

fn is_lower_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// `[a-z0-9][a-z0-9-]{0,38}`
fn is_username(s: &str) -> bool {
    match s.as_bytes() {
        [first, rest @ ..] => {
            s.len() <= MAX_USERNAME_LEN
                && is_lower_alnum(*first)
                && rest.iter().all(|&b| is_lower_alnum(b) || b == b'-')
        }
        [] => false,
    }
}

/// The bytes of a package's short name and of a tag after their first character.
fn is_package_name_byte(b: u8) -> bool {
    is_lower_alnum(b) || matches!(b, b'.' | b'_' | b'-')
}

/// Whether `c` may appear anywhere in a full package name (`@ns/pkg`). Scope prefixes such as
/// `@alice/my-*` are checked against this set.
pub fn is_package_name_char(c: char) -> bool {
    c.is_ascii() && (is_package_name_byte(c as u8) || c == '@' || c == '/')
}

/// A username: `[a-z0-9][a-z0-9-]{0,38}`.
pub fn validate_username(s: &str) -> Result<(), NameError> {
    if is_username(s) {
        Ok(())
    } else {
        Err(invalid(format!(
            "invalid username {}: expected 1-39 lowercase letters, digits or '-', \
             starting with a letter or digit",
            shown(s)
        )))
    }
}

/// A namespace: `@` followed by a valid username (users and orgs share one name space).
pub fn validate_namespace(s: &str) -> Result<(), NameError> {
    match s.strip_prefix('@') {
        Some(rest) if is_username(rest) => Ok(()),
        _ => Err(invalid(format!(
            "invalid namespace {}: expected '@' followed by 1-39 lowercase letters, digits or '-', \
             starting with a letter or digit",
            shown(s)
        ))),
    }
}

/// The traits every validated name has, from its `parse` and its text: `Display`, `FromStr`,
/// `AsRef<str>`, and serde through `parse`, so a field of the type in a request body or a
/// manifest can never hold an invalid value.
macro_rules! validated_name {
    ($type:ty) => {
        impl std::fmt::Display for $type {
            fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $type {
            type Err = $crate::names::NameError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                <$type>::parse(s)
            }
        }

        impl AsRef<str> for $type {
            fn as_ref(&self) -> &str {
                self.as_str()
            }
        }

        impl serde::Serialize for $type {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $type {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                <$type>::parse(&text).map_err(serde::de::Error::custom)
            }
        }
    };
}
use validated_name;

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn message<T: std::fmt::Debug>(r: Result<T, NameError>) -> String {
        match r {
            Err(NameError::Invalid(m)) => m,
            Ok(value) => panic!("expected an error, got {value:?}"),
        }
    }

    #[test]
    fn usernames() {
        for ok in ["a", "alice", "a-b", "0", "9lives", "a--", &"a".repeat(39)] {
            assert!(validate_username(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "Alice",
            "al_ice",
            "al.ice",
            "@alice",
            "alicé",
            " alice",
            &"a".repeat(40),
        ] {
            assert!(validate_username(bad).is_err(), "{bad}");
        }
        let m = message(validate_username("Bad"));
        assert!(m.contains("invalid username \"Bad\""), "{m}");
    }

    #[test]
    fn namespaces() {
        assert!(validate_namespace("@alice").is_ok());
        assert!(validate_namespace(&format!("@{}", "a".repeat(39))).is_ok());
        for bad in [
            "alice",
            "@",
            "@@alice",
            "@-a",
            "@Alice",
            "@a/b",
            &format!("@{}", "a".repeat(40)),
        ] {
            assert!(validate_namespace(bad).is_err(), "{bad}");
        }
        assert!(message(validate_namespace("bob")).starts_with("invalid namespace \"bob\""));
    }

    #[test]
    fn error_messages_escape_and_truncate_input() {
        let m = message(validate_username("a\"b\n"));
        assert!(m.contains(r#""a\"b\n""#), "{m}");
        let huge = "x".repeat(10_000);
        let m = message(validate_username(&format!("-{huge}")));
        assert!(m.len() < 300, "{}", m.len());
        assert!(m.contains('…'));
    }
}
