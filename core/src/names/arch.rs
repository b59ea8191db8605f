//! Architectures, the second half of what identifies an archive (`{version}/{arch}`).

use super::{NameError, invalid, is_lower_alnum, is_reserved_word, shown, validated_name};

pub const MAX_ARCH_LEN: usize = 64;

/// An architecture: `[a-z0-9_]+(-[a-z0-9_]+)*`, at most 64 characters, not a reserved word
/// (e.g. `x86_64-linux`, `aarch64-apple-darwin`, `any`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Arch(String);

impl Arch {
    pub fn parse(s: &str) -> Result<Arch, NameError> {
        let well_formed = s.len() <= MAX_ARCH_LEN
            && s.split('-').all(|part| {
                !part.is_empty() && part.bytes().all(|b| is_lower_alnum(b) || b == b'_')
            });
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
        Ok(Arch(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

validated_name!(Arch);

#[cfg(test)]
mod tests {
    use super::super::RESERVED_WORDS;
    use super::super::tests::message;
    use super::*;

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
            assert_eq!(Arch::parse(ok).unwrap().as_str(), ok);
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
            assert!(Arch::parse(bad).is_err(), "{bad}");
        }
        for word in RESERVED_WORDS {
            let m = message(Arch::parse(word));
            assert!(m.contains("reserved"), "{m}");
        }
    }
}
