//! API key material (DESIGN.md §5): generating new keys, hashing them for storage and lookup,
//! and recognising the key format. Nothing here touches the database; the plaintext of a key
//! exists only in the `NewApiKey` handed back once to whoever created it.

use std::fmt;

use rand::TryRngCore;
use rand::distr::{Alphanumeric, Distribution};
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};

/// Every key starts with this, so leaked keys are easy to spot (and to scan for).
pub const KEY_PREFIX: &str = "niso_";
/// 40 base62 characters carry about 238 bits of entropy.
pub const KEY_RANDOM_CHARS: usize = 40;
/// The shortest random part [`looks_like_key`] accepts, per the contract.
pub const MIN_KEY_RANDOM_CHARS: usize = 32;
/// Longer strings are refused before hashing so a bogus header costs nothing.
pub const MAX_KEY_LEN: usize = 128;
/// How much of the plaintext is kept for display (`niso_AbC1234`).
pub const DISPLAY_PREFIX_LEN: usize = 12;

/// A freshly generated key. `plaintext` is shown to the client once and never stored; `hash`
/// is what the database keeps; `prefix` lets people tell their keys apart in listings.
pub struct NewApiKey {
    pub plaintext: String,
    pub hash: String,
    pub prefix: String,
}

// Hand-written so that logging a `NewApiKey` (e.g. via `?` in a tracing span) can never leak it.
impl fmt::Debug for NewApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewApiKey")
            .field("plaintext", &"<redacted>")
            .field("hash", &self.hash)
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// Generates a new key: `niso_` followed by 40 base62 characters drawn from the operating
/// system's CSPRNG.
///
/// # Panics
/// If the operating system's random number generator fails, which leaves no safe way to mint
/// a key.
pub fn generate() -> NewApiKey {
    // OsRng rather than a userspace generator: key minting is rare, and drawing straight from
    // the OS leaves no generator state in this process that could be forked or leaked.
    let mut rng = OsRng.unwrap_err();
    let mut plaintext = String::with_capacity(KEY_PREFIX.len() + KEY_RANDOM_CHARS);
    plaintext.push_str(KEY_PREFIX);
    plaintext.extend(
        Alphanumeric
            .sample_iter(&mut rng)
            .take(KEY_RANDOM_CHARS)
            .map(char::from),
    );
    let hash = hash_key(&plaintext);
    let prefix = plaintext[..DISPLAY_PREFIX_LEN].to_owned();
    NewApiKey {
        plaintext,
        hash,
        prefix,
    }
}

/// The stored form of a key: lowercase hex SHA-256 of the full plaintext.
///
/// A fast unsalted hash is enough here, unlike for passwords: the key carries over 200 bits of
/// randomness, so there is nothing to brute-force, and a deterministic hash lets the key be
/// found by an indexed lookup.
pub fn hash_key(plaintext: &str) -> String {
    hex::encode(Sha256::digest(plaintext.as_bytes()))
}

/// Whether `s` has the shape of a niso key (`niso_[0-9A-Za-z]{32,}`, at most 128 characters).
/// Lets callers refuse garbage before touching the database.
pub fn looks_like_key(s: &str) -> bool {
    s.len() <= MAX_KEY_LEN
        && s.strip_prefix(KEY_PREFIX).is_some_and(|random| {
            random.len() >= MIN_KEY_RANDOM_CHARS
                && random.bytes().all(|b| b.is_ascii_alphanumeric())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_has_the_contract_shape() {
        let key = generate();
        assert!(key.plaintext.starts_with("niso_"));
        assert_eq!(key.plaintext.len(), 5 + 40);
        assert!(
            key.plaintext[5..]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric())
        );
        assert!(looks_like_key(&key.plaintext));
        assert_eq!(key.prefix.len(), 12);
        assert!(key.plaintext.starts_with(&key.prefix));
    }

    #[test]
    fn hash_is_lowercase_hex_sha256_of_the_plaintext() {
        let key = generate();
        assert_eq!(key.hash, hash_key(&key.plaintext));
        assert_eq!(key.hash.len(), 64);
        assert!(
            key.hash
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        );
        // Known vector: sha256("abc").
        assert_eq!(
            hash_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn keys_are_unique() {
        let a = generate();
        let b = generate();
        assert_ne!(a.plaintext, b.plaintext);
        assert_ne!(a.hash, b.hash);
    }

    #[test]
    fn generated_keys_use_the_whole_alphabet() {
        // With 40 * 200 draws from 62 symbols, missing a class entirely would mean a broken
        // sampler, not bad luck.
        let all: String = (0..200)
            .map(|_| generate().plaintext[5..].to_owned())
            .collect();
        assert!(all.bytes().any(|b| b.is_ascii_uppercase()));
        assert!(all.bytes().any(|b| b.is_ascii_lowercase()));
        assert!(all.bytes().any(|b| b.is_ascii_digit()));
    }

    #[test]
    fn debug_does_not_print_the_plaintext() {
        let key = generate();
        let shown = format!("{key:?}");
        assert!(!shown.contains(&key.plaintext), "{shown}");
        assert!(!shown.contains(&key.plaintext[12..]), "{shown}");
        assert!(shown.contains(&key.hash));
        assert!(shown.contains("redacted"));
    }

    #[test]
    fn recognises_key_shapes() {
        let a32 = "a".repeat(32);
        assert!(looks_like_key(&format!("niso_{a32}")));
        assert!(looks_like_key(&format!("niso_{}", "Z9".repeat(61)))); // 127 chars
        assert!(looks_like_key(&format!("niso_{}", "x".repeat(123)))); // exactly 128
        assert!(!looks_like_key(&format!("niso_{}", "x".repeat(124)))); // 129
        assert!(!looks_like_key(&format!("niso_{}", "a".repeat(31))));
        assert!(!looks_like_key(&format!("NISO_{a32}")));
        assert!(!looks_like_key(&format!("niso-{a32}")));
        assert!(!looks_like_key(&format!("niso_{a32}_")));
        assert!(!looks_like_key(&format!("niso_{a32}é")));
        assert!(!looks_like_key(&format!(" niso_{a32}")));
        assert!(!looks_like_key(""));
        assert!(!looks_like_key("niso_"));
    }
}
