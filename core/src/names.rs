//! Validation of every name in the registry (DESIGN.md §3): usernames, namespaces, package
//! names, versions, archs, tags, e-mail addresses and passwords, plus the choice of a package's
//! "latest" version. The HTTP handlers, the domain layer and the operator all validate through
//! this module so the rules live in exactly one place.
//!
//! The checks are hand-written byte tests rather than regexes: every rule is ASCII-only, and a
//! non-ASCII UTF-8 byte is always >= 0x80, so it can never slip through an ASCII comparison.

use std::fmt;
use std::str::FromStr;

use semver::Version;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A name that breaks the registry's rules. The message is meant for the client (HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("{0}")]
    Invalid(String),
}

/// Path words that the URL scheme gives a meaning of their own, so no version or arch may be
/// spelled like one (`…/{version}/manifest`, `…/{version}/{arch}/chunks`, `…/latest/{arch}`).
pub const RESERVED_WORDS: [&str; 5] = ["manifest", "chunks", "versions", "tags", "latest"];

/// The tag the registry keeps pointing at a package's latest version.
pub const LATEST_TAG: &str = "latest";

pub const MAX_USERNAME_LEN: usize = 39;
pub const MAX_PACKAGE_SHORT_NAME_LEN: usize = 64;
pub const MAX_ARCH_LEN: usize = 64;
pub const MAX_TAG_LEN: usize = 64;
pub const MAX_EMAIL_LEN: usize = 254;
pub const MIN_PASSWORD_CHARS: usize = 8;
pub const MAX_PASSWORD_BYTES: usize = 1024;

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

/// `[a-z0-9][a-z0-9._-]{0,63}`
fn is_package_short_name(s: &str) -> bool {
    match s.as_bytes() {
        [first, rest @ ..] => {
            s.len() <= MAX_PACKAGE_SHORT_NAME_LEN
                && is_lower_alnum(*first)
                && rest.iter().all(|&b| is_package_name_byte(b))
        }
        [] => false,
    }
}

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

/// A validated full package name, `@ns/pkg`.
///
/// Equality, hashing and ordering are those of the full string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PackageName {
    full: String,
    /// Byte index of the `/`; kept so the accessors need no re-parsing.
    slash: usize,
}

impl PackageName {
    pub fn parse(s: &str) -> Result<PackageName, NameError> {
        let slash = s
            .split_once('/')
            .filter(|(ns, short)| {
                ns.strip_prefix('@').is_some_and(is_username) && is_package_short_name(short)
            })
            .map(|(ns, _)| ns.len());
        let Some(slash) = slash else {
            return Err(invalid(format!(
                "invalid package name {}: expected @namespace/name with lowercase letters, \
                 digits, '.', '_' or '-' (namespace: up to 39 characters, no '.' or '_'; \
                 name: up to 64 characters; both starting with a letter or digit)",
                shown(s)
            )));
        };
        Ok(PackageName {
            full: s.to_owned(),
            slash,
        })
    }

    /// The namespace including its `@`, e.g. `@alice`.
    pub fn namespace(&self) -> &str {
        &self.full[..self.slash]
    }

    /// The part after the `/`, e.g. `my-app`.
    pub fn short_name(&self) -> &str {
        &self.full[self.slash + 1..]
    }

    /// The full name, e.g. `@alice/my-app`.
    pub fn as_str(&self) -> &str {
        &self.full
    }

    pub fn into_string(self) -> String {
        self.full
    }
}

impl fmt::Display for PackageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

impl FromStr for PackageName {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PackageName::parse(s)
    }
}

impl AsRef<str> for PackageName {
    fn as_ref(&self) -> &str {
        &self.full
    }
}

impl Serialize for PackageName {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.full)
    }
}

// Deserialising through `parse` means a `PackageName` field in a request body or a manifest can
// never hold an invalid name.
impl<'de> Deserialize<'de> for PackageName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        PackageName::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A SemVer 2.0 version, parsed strictly: `1.0` and `v1.0.0` are refused, build metadata is
/// allowed. The reserved words can never parse as versions.
pub fn parse_version(s: &str) -> Result<Version, NameError> {
    Version::parse(s).map_err(|e| {
        invalid(format!(
            "invalid version {}: expected a SemVer 2.0 version such as 1.2.3 or 1.2.3-rc.1 ({e})",
            shown(s)
        ))
    })
}

/// An architecture: `[a-z0-9_]+(-[a-z0-9_]+)*`, at most 64 characters, not a reserved word.
pub fn validate_arch(s: &str) -> Result<(), NameError> {
    let well_formed = s.len() <= MAX_ARCH_LEN
        && s.split('-')
            .all(|part| !part.is_empty() && part.bytes().all(|b| is_lower_alnum(b) || b == b'_'));
    if !well_formed {
        return Err(invalid(format!(
            "invalid arch {}: expected at most 64 lowercase letters, digits and '_' in \
             '-'-separated parts, e.g. x86_64-linux",
            shown(s)
        )));
    }
    if is_reserved_word(s) {
        return Err(invalid(format!(
            "invalid arch {}: reserved word (manifest, chunks, versions, tags and latest \
             have a meaning of their own in URLs)",
            shown(s)
        )));
    }
    Ok(())
}

/// A tag: `[a-z][a-z0-9._-]{0,63}` that is not a SemVer version, and not `latest`, which the
/// registry maintains itself.
pub fn validate_tag(s: &str) -> Result<(), NameError> {
    if s == LATEST_TAG {
        return Err(invalid(format!(
            "the tag \"{LATEST_TAG}\" is maintained by the registry and cannot be set"
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
    // A tag starting with a letter cannot be a version today; the check stays so that loosening
    // the character rule later cannot make tags and versions ambiguous.
    if Version::parse(s).is_ok() {
        return Err(invalid(format!(
            "invalid tag {}: a tag cannot be a version number",
            shown(s)
        )));
    }
    Ok(())
}

/// A pragmatic e-mail check: at most 254 characters, no whitespace or control characters,
/// exactly one `@`, a non-empty local part and a dotted domain without empty labels.
/// Deliverability is not our business; catching obvious typos is.
pub fn validate_email(s: &str) -> Result<(), NameError> {
    // The address itself is not echoed: it is personal data and error messages may get logged.
    let problem = if s.is_empty() {
        Some("it is empty")
    } else if s.chars().count() > MAX_EMAIL_LEN {
        Some("it is longer than 254 characters")
    } else if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("it contains whitespace or control characters")
    } else {
        match s.split_once('@') {
            None => Some("it has no '@'"),
            Some((_, domain)) if domain.contains('@') => Some("it has more than one '@'"),
            Some(("", _)) => Some("the part before '@' is empty"),
            Some((_, domain)) if !domain.contains('.') || domain.split('.').any(str::is_empty) => {
                Some("the domain must have dot-separated, non-empty parts, e.g. example.com")
            }
            Some(_) => None,
        }
    };
    match problem {
        None => Ok(()),
        Some(why) => Err(invalid(format!("invalid email address: {why}"))),
    }
}

/// A password: at least 8 characters (Unicode scalar values, not bytes) and at most 1024 bytes,
/// the upper bound keeping an attacker from making us hash megabytes.
pub fn validate_password(s: &str) -> Result<(), NameError> {
    // The byte bound is checked first so counting characters is always cheap.
    if s.len() > MAX_PASSWORD_BYTES {
        return Err(invalid(format!(
            "invalid password: it must be at most {MAX_PASSWORD_BYTES} bytes long"
        )));
    }
    if s.chars().count() < MIN_PASSWORD_CHARS {
        return Err(invalid(format!(
            "invalid password: it must be at least {MIN_PASSWORD_CHARS} characters long"
        )));
    }
    Ok(())
}

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
        if v.pre.is_empty() {
            best_release = Some(higher(best_release, v));
        } else {
            best_prerelease = Some(higher(best_prerelease, v));
        }
    }
    best_release.or(best_prerelease)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(r: Result<(), NameError>) -> String {
        match r {
            Err(NameError::Invalid(m)) => m,
            Ok(()) => panic!("expected an error"),
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
    fn package_names() {
        let p = PackageName::parse("@alice/my-app").unwrap();
        assert_eq!(p.namespace(), "@alice");
        assert_eq!(p.short_name(), "my-app");
        assert_eq!(p.as_str(), "@alice/my-app");
        assert_eq!(p.to_string(), "@alice/my-app");
        assert_eq!("@alice/my-app".parse::<PackageName>().unwrap(), p);

        let long = format!("@{}/{}", "n".repeat(39), "p".repeat(64));
        assert!(PackageName::parse(&long).is_ok());
        for ok in ["@a/b", "@a-1/x.y_z-0", "@0/0", "@a/b.", "@a/b__"] {
            assert!(PackageName::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "@alice",
            "alice/app",
            "@alice/",
            "@/app",
            "@alice/App",
            "@al_ice/app",
            "@alice/.app",
            "@alice/-app",
            "@alice/_app",
            "@alice/a/b",
            "@alice//b",
            "@alice/a b",
            "@alice/á",
            "@@alice/app",
            &format!("@{}/p", "n".repeat(40)),
            &format!("@n/{}", "p".repeat(65)),
        ] {
            assert!(PackageName::parse(bad).is_err(), "{bad}");
        }
        let m = PackageName::parse("@Bad/x").unwrap_err().to_string();
        assert!(
            m.starts_with(
                "invalid package name \"@Bad/x\": expected @namespace/name with lowercase \
                 letters, digits, '.', '_' or '-'"
            ),
            "{m}"
        );
    }

    #[test]
    fn package_name_serde_validates() {
        let p: PackageName = serde_json::from_str("\"@alice/app\"").unwrap();
        assert_eq!(p.as_str(), "@alice/app");
        assert_eq!(serde_json::to_string(&p).unwrap(), "\"@alice/app\"");
        assert!(serde_json::from_str::<PackageName>("\"@Alice/app\"").is_err());
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
            assert!(parse_version(ok).is_ok(), "{ok}");
        }
        assert_eq!(parse_version("1.2.3").unwrap(), Version::new(1, 2, 3));
        for bad in [
            "", "1", "1.0", "v1.0.0", "01.0.0", "1.0.0 ", " 1.0.0", "1.0.0-", "x",
        ] {
            assert!(parse_version(bad).is_err(), "{bad}");
        }
        for word in RESERVED_WORDS {
            assert!(parse_version(word).is_err(), "{word}");
        }
        let m = parse_version("1.0").unwrap_err().to_string();
        assert!(m.starts_with("invalid version \"1.0\""), "{m}");
    }

    #[test]
    fn archs() {
        for ok in [
            "x86_64-linux",
            "aarch64-apple-darwin",
            "any",
            "_",
            "a_b-c_d",
            &"a".repeat(64),
        ] {
            assert!(validate_arch(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-linux",
            "linux-",
            "x86--linux",
            "X86",
            "x86.64",
            "x86 64",
            &"a".repeat(65),
        ] {
            assert!(validate_arch(bad).is_err(), "{bad}");
        }
        for word in RESERVED_WORDS {
            let m = message(validate_arch(word));
            assert!(m.contains("reserved"), "{m}");
        }
    }

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
            assert!(validate_tag(ok).is_ok(), "{ok}");
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
            assert!(validate_tag(bad).is_err(), "{bad}");
        }
        assert_eq!(
            message(validate_tag("latest")),
            "the tag \"latest\" is maintained by the registry and cannot be set"
        );
        // Only "latest" is the registry's; the other path words are ordinary tags.
        assert!(validate_tag("manifest").is_ok());
    }

    #[test]
    fn emails() {
        for ok in [
            "a@b.co",
            "alice+niso@example.com",
            "x.y@sub.example.org",
            "ü@exämple.de",
        ] {
            assert!(validate_email(ok).is_ok(), "{ok}");
        }
        let too_long = format!("{}@example.com", "a".repeat(243));
        assert_eq!(too_long.len(), 255);
        for bad in [
            "",
            "alice",
            "alice@",
            "@example.com",
            "alice@localhost",
            "a@b@c.com",
            "alice@example.",
            "alice@.example.com",
            "alice@example..com",
            "al ice@example.com",
            "alice@example.com\n",
            &too_long,
        ] {
            assert!(validate_email(bad).is_err(), "{bad:?}");
        }
        assert!(validate_email(&too_long[1..]).is_ok());
        let m = message(validate_email("secret-person"));
        assert!(!m.contains("secret-person"), "{m}");
    }

    #[test]
    fn passwords() {
        assert!(validate_password("12345678").is_ok());
        assert!(validate_password("1234567").is_err());
        assert!(validate_password("").is_err());
        // Eight characters but sixteen bytes: characters count.
        assert!(validate_password("éééééééé").is_ok());
        assert!(validate_password("ééééééé").is_err());
        assert!(validate_password(&"a".repeat(1024)).is_ok());
        assert!(validate_password(&"a".repeat(1025)).is_err());
        // 513 two-byte characters exceed the byte bound.
        assert!(validate_password(&"é".repeat(513)).is_err());
        let m = message(validate_password("hunter2"));
        assert!(!m.contains("hunter2"), "{m}");
    }

    fn vs(list: &[&str]) -> Vec<Version> {
        list.iter().map(|s| Version::parse(s).unwrap()).collect()
    }

    #[test]
    fn latest_prefers_highest_release() {
        let v = vs(&["1.9.0", "1.10.0", "1.2.0", "2.0.0-rc.1"]);
        assert_eq!(latest_version(&v).unwrap().to_string(), "1.10.0");
    }

    #[test]
    fn latest_falls_back_to_highest_prerelease() {
        let v = vs(&["1.0.0-alpha", "1.0.0-rc.1", "1.0.0-beta.11", "0.9.0-rc.2"]);
        assert_eq!(latest_version(&v).unwrap().to_string(), "1.0.0-rc.1");
        let v = vs(&["1.0.0-alpha.2", "1.0.0-alpha.10"]);
        assert_eq!(latest_version(&v).unwrap().to_string(), "1.0.0-alpha.10");
    }

    #[test]
    fn latest_release_beats_newer_prerelease() {
        let v = vs(&["3.0.0-alpha", "0.1.0"]);
        assert_eq!(latest_version(&v).unwrap().to_string(), "0.1.0");
    }

    #[test]
    fn latest_ignores_build_metadata_for_precedence() {
        let v = vs(&["1.0.0+zzz", "1.1.0+aaa", "1.0.5"]);
        assert_eq!(latest_version(&v).unwrap().to_string(), "1.1.0+aaa");
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
