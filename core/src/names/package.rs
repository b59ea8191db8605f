//! Full package names, `@namespace/name`.

use super::{NameError, invalid, is_package_name_byte, is_username, shown, validated_name};

pub const MAX_PACKAGE_SHORT_NAME_LEN: usize = 64;

/// A validated full package name, `@ns/pkg`.
///
/// Equality, hashing and ordering are those of the full string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PackageName {
    full: String,
    /// Byte index of the `/`; kept so the accessors need no re-parsing.
    slash: usize,
}

/// `[a-z0-9][a-z0-9._-]{0,63}`
fn is_package_short_name(s: &str) -> bool {
    match s.as_bytes() {
        [first, rest @ ..] => {
            s.len() <= MAX_PACKAGE_SHORT_NAME_LEN
                && (first.is_ascii_lowercase() || first.is_ascii_digit())
                && rest.iter().all(|&b| is_package_name_byte(b))
        }
        [] => false,
    }
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

validated_name!(PackageName);

#[cfg(test)]
mod tests {
    use super::*;

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
}
