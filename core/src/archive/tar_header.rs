//! One 512-byte tar header block, read strictly.
//!
//! Readers disagree about malformed headers (Python's `tarfile` reads numbers with `int(…, 8)`,
//! which takes `0o17`, `+17` and `1_7`; GNU tar takes base-256 and signed checksums; the ustar
//! `prefix` is joined by Python even in old-GNU headers, where GNU tar keeps other fields there).
//! This parser accepts only the forms every mainstream reader reads the same way and refuses the
//! rest; see the module doc of `archive` for the policy.

use super::ArchiveError;

pub(super) const BLOCK: usize = 512;

/// What a header's typeflag says the entry is. Every other typeflag is refused while parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Typeflag {
    /// `0`, NUL (old tar) or `7` (contiguous file, which every reader treats as regular).
    Regular,
    HardLink,
    Symlink,
    Directory,
    /// `x`: PAX extended header for the next entry.
    PaxExtended,
    /// `L`: GNU long name of the next entry.
    GnuLongName,
    /// `K`: GNU long link target of the next entry.
    GnuLongLink,
}

/// The fields of a header that decide what an entry is and where its data ends.
#[derive(Debug)]
pub(super) struct Header {
    pub typeflag: Typeflag,
    /// Name as written: the ustar prefix joined with the name field (NUL-terminated fields).
    pub name: Vec<u8>,
    pub link_name: Vec<u8>,
    pub size: u64,
    /// The ustar prefix was present (non-empty).
    pub has_prefix: bool,
}

/// Whether `block` is all zeros (an end-of-archive block).
pub(super) fn is_zero_block(block: &[u8; BLOCK]) -> bool {
    block.iter().all(|&byte| byte == 0)
}

/// Parses a non-zero header block found at `offset` in the tar stream.
pub(super) fn parse(block: &[u8; BLOCK], offset: u64) -> Result<Header, ArchiveError> {
    let bad = |what: &str| {
        ArchiveError::Invalid(format!(
            "not a valid tar archive: {what} (header at byte {offset})"
        ))
    };
    let recorded = octal(&block[148..156]).ok_or_else(|| bad("header checksum is malformed"))?;
    let computed: u64 = block
        .iter()
        .enumerate()
        .map(|(index, &byte)| {
            if (148..156).contains(&index) {
                u64::from(b' ')
            } else {
                u64::from(byte)
            }
        })
        .sum();
    // Only the unsigned sum of POSIX: GNU tar and Python also accept a signed sum, the tar crate
    // does not, so such a header means different things to different readers.
    if recorded != computed {
        return Err(bad("archive header checksum mismatch"));
    }

    let magic = &block[257..265];
    let gnu = match magic {
        b"ustar\x0000" => false,
        b"ustar  \0" => true,
        _ => {
            return Err(bad(
                "header has no ustar or GNU magic (pre-POSIX tar archives are not supported)",
            ));
        }
    };

    let typeflag = match block[156] {
        b'0' | b'\0' | b'7' => Typeflag::Regular,
        b'1' => Typeflag::HardLink,
        b'2' => Typeflag::Symlink,
        b'5' => Typeflag::Directory,
        b'x' => Typeflag::PaxExtended,
        b'L' => Typeflag::GnuLongName,
        b'K' => Typeflag::GnuLongLink,
        other => return Err(unsupported_type(other, block, gnu)),
    };

    // Numeric fields every reader parses (Python refuses the archive when one is malformed, GNU
    // tar may not): strict octal, so that all of them read the same numbers.
    for (range, what) in [
        (100..108, "mode"),
        (108..116, "uid"),
        (116..124, "gid"),
        (136..148, "mtime"),
    ] {
        numeric(&block[range]).ok_or_else(|| bad(&format!("the {what} field is not octal")))?;
    }
    for (range, what) in [(329..337, "devmajor"), (337..345, "devminor")] {
        numeric(&block[range]).ok_or_else(|| bad(&format!("the {what} field is not octal")))?;
    }
    if block[124] == 0x80 {
        // Base-256: what writers use from 8 GiB on, beyond any archive we accept.
        return Err(ArchiveError::TooLarge(format!(
            "an entry is 8 GiB or larger (header at byte {offset})"
        )));
    }
    let size = numeric(&block[124..136])
        .ok_or_else(|| bad("the size field is not octal (base-256 sizes are not supported)"))?;

    let prefix = field_text(&block[345..500]);
    if gnu && !block[345..500].iter().all(|&byte| byte == 0) {
        // GNU keeps atime, ctime and sparse maps there; Python's tarfile joins it to the name.
        return Err(bad(
            "an old-GNU header has data where ustar keeps its name prefix (read differently by GNU tar and Python)",
        ));
    }
    let mut name = Vec::new();
    if !prefix.is_empty() {
        name.extend_from_slice(prefix);
        name.push(b'/');
    }
    name.extend_from_slice(field_text(&block[0..100]));
    Ok(Header {
        typeflag,
        name,
        link_name: field_text(&block[157..257]).to_vec(),
        size,
        has_prefix: !prefix.is_empty(),
    })
}

fn unsupported_type(typeflag: u8, block: &[u8; BLOCK], gnu: bool) -> ArchiveError {
    let prefix = if gnu {
        &[][..]
    } else {
        field_text(&block[345..500])
    };
    let mut shown = String::from_utf8_lossy(prefix).into_owned();
    if !shown.is_empty() {
        shown.push('/');
    }
    shown.push_str(&String::from_utf8_lossy(field_text(&block[0..100])));
    let message = match typeflag {
        b'3' | b'4' | b'6' => format!(
            "entry `{shown}` is a device or fifo; archives may hold only files, directories and links"
        ),
        b'S' => format!("entry `{shown}` is a sparse file, which is not supported"),
        b'g' => format!(
            "entry `{shown}` is a PAX global header, which readers apply differently; it is not supported"
        ),
        other => format!(
            "entry `{shown}` has an unsupported type `{}`",
            [other].escape_ascii()
        ),
    };
    ArchiveError::Invalid(message)
}

/// A NUL-terminated text field: the bytes before the first NUL (all of it when there is none).
fn field_text(field: &[u8]) -> &[u8] {
    let end = field
        .iter()
        .position(|&byte| byte == 0)
        .unwrap_or(field.len());
    &field[..end]
}

/// A numeric field: all NULs (0 to every reader) or strict octal.
fn numeric(field: &[u8]) -> Option<u64> {
    if field.iter().all(|&byte| byte == 0) {
        return Some(0);
    }
    octal(field)
}

/// Strict octal: optional leading spaces, at least one digit 0-7, then only NULs and spaces.
fn octal(field: &[u8]) -> Option<u64> {
    let start = field.iter().position(|&byte| byte != b' ')?;
    let digits = field[start..]
        .iter()
        .take_while(|byte| (b'0'..=b'7').contains(byte))
        .count();
    if digits == 0 {
        return None;
    }
    let rest = &field[start + digits..];
    if !rest.iter().all(|&byte| byte == 0 || byte == b' ') {
        return None;
    }
    field[start..start + digits]
        .iter()
        .try_fold(0u64, |value, &digit| {
            value.checked_mul(8)?.checked_add(u64::from(digit - b'0'))
        })
}

#[cfg(test)]
mod tests {
    use super::octal;

    #[test]
    fn octal_is_strict() {
        assert_eq!(octal(b"0000644\0"), Some(0o644));
        assert_eq!(octal(b"  644 \0"), Some(0o644));
        assert_eq!(octal(b"77777777777\0"), Some(0o77777777777));
        for bad in [
            &b"\0\0\0\0"[..],
            b"        ",
            b"0o17\0",
            b"+17\0",
            b"1_7\0",
            b"18\0",
            b"17\0x",
            b"\x80\0\0\0\0\0\0\x01",
        ] {
            assert_eq!(octal(bad), None, "{}", bad.escape_ascii());
        }
    }
}
