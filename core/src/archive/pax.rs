//! PAX extended header records (`x` entries), read strictly.
//!
//! A record is `<length> <keyword>=<value>\n`, the length counting the whole record. Python's
//! `tarfile` stops silently at the first record it cannot match and applies unknown keywords to
//! nothing; GNU tar warns and goes on; the tar crate reads only some keywords. So a record that is
//! malformed, repeated, or has a keyword whose meaning depends on the reader is refused.

use super::ArchiveError;

/// The records of one extended header that change what the entry is.
#[derive(Debug, Default)]
pub(super) struct PaxRecords {
    pub path: Option<Vec<u8>>,
    pub link_path: Option<Vec<u8>>,
    pub size: Option<u64>,
}

/// Keywords that only carry metadata every reader may apply or ignore without changing which
/// files are created where.
const METADATA_KEYWORDS: &[&str] = &[
    "uid",
    "gid",
    "uname",
    "gname",
    "mtime",
    "atime",
    "ctime",
    "comment",
    "SCHILY.fflags",
    "SCHILY.dev",
    "SCHILY.ino",
    "SCHILY.nlink",
    "LIBARCHIVE.creationtime",
];

/// Extended attributes and ACLs (written by bsdtar and GNU tar --xattrs).
const METADATA_PREFIXES: &[&str] = &["SCHILY.xattr.", "LIBARCHIVE.xattr.", "SCHILY.acl."];

pub(super) fn parse(data: &[u8]) -> Result<PaxRecords, ArchiveError> {
    let bad = |what: String| ArchiveError::Invalid(format!("PAX extended header: {what}"));
    let mut records = PaxRecords::default();
    let mut seen: Vec<&[u8]> = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let digits = rest.iter().take_while(|byte| byte.is_ascii_digit()).count();
        if digits == 0 || rest.get(digits) != Some(&b' ') || rest[0] == b'0' {
            return Err(bad("a record does not start with its length".into()));
        }
        let length: usize = std::str::from_utf8(&rest[..digits])
            .ok()
            .and_then(|text| text.parse().ok())
            .filter(|&length| length > digits + 1 && length <= rest.len())
            .ok_or_else(|| bad("a record's length is out of bounds".into()))?;
        let record = &rest[digits + 1..length];
        rest = &rest[length..];
        let Some((&b'\n', record)) = record.split_last() else {
            return Err(bad("a record does not end with a newline".into()));
        };
        let equals = record
            .iter()
            .position(|&byte| byte == b'=')
            .ok_or_else(|| bad("a record has no `=`".into()))?;
        let (keyword, value) = (&record[..equals], &record[equals + 1..]);
        let shown = String::from_utf8_lossy(keyword).into_owned();
        if seen.contains(&keyword) {
            return Err(bad(format!(
                "keyword `{shown}` appears twice (readers keep different ones)"
            )));
        }
        seen.push(keyword);
        if value.is_empty() {
            // POSIX reads an empty value as "remove the field"; readers do not all implement it.
            return Err(bad(format!("keyword `{shown}` has an empty value")));
        }
        match keyword {
            b"path" => records.path = Some(value.to_vec()),
            b"linkpath" => records.link_path = Some(value.to_vec()),
            b"size" => {
                let size = decimal(value).ok_or_else(|| {
                    bad(format!("size `{}` is not a number", value.escape_ascii()))
                })?;
                records.size = Some(size);
            }
            b"uid" | b"gid" => {
                decimal(value).ok_or_else(|| bad(format!("{shown} is not a number")))?;
            }
            b"mtime" | b"atime" | b"ctime" => {
                if !is_timestamp(value) {
                    return Err(bad(format!("{shown} is not a timestamp")));
                }
            }
            _ => {
                let known = std::str::from_utf8(keyword).is_ok_and(|keyword| {
                    METADATA_KEYWORDS.contains(&keyword)
                        || METADATA_PREFIXES
                            .iter()
                            .any(|prefix| keyword.starts_with(prefix))
                });
                if !known {
                    return Err(bad(format!(
                        "keyword `{}` is not supported (readers interpret it differently or not at all)",
                        keyword.escape_ascii()
                    )));
                }
            }
        }
    }
    Ok(records)
}

/// Decimal digits only, no sign, no leading zero unless the number is 0.
fn decimal(value: &[u8]) -> Option<u64> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if value.len() > 1 && value[0] == b'0' {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// `[-]digits[.digits]`, as GNU tar and Python both read it.
fn is_timestamp(value: &[u8]) -> bool {
    let value = value.strip_prefix(b"-").unwrap_or(value);
    let mut parts = value.splitn(2, |&byte| byte == b'.');
    let whole = parts.next().unwrap_or_default();
    let fraction = parts.next();
    !whole.is_empty()
        && whole.iter().all(u8::is_ascii_digit)
        && fraction.is_none_or(|digits| !digits.is_empty() && digits.iter().all(u8::is_ascii_digit))
}
