//! niso-core: the rules every niso program shares — the server, the operator and the client.
//!
//! - `names`: package, namespace and user names, versions, architectures, tags and references,
//!   each a validated type;
//! - `archive`: the `.niso` format (a tar, optionally gzip or zstd, with `manifest.toml`) and the
//!   strict validator that accepts only what real unpackers read the same way;
//! - `chunking`: content-defined chunking, whose parameters every party must agree on for
//!   deduplication to work;
//! - `pack`: reproducible archives built from a directory.
//!
//! It links no database driver, HTTP server or object-store client, so the client stays small.

pub mod archive;
pub mod chunking;
pub mod names;
pub mod pack;
