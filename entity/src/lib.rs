//! sea-orm entities of the niso registry: one module per table.
//!
//! The schema itself is owned by the `migration` crate; these types describe it for queries.
//! Timestamps are UTC `NaiveDateTime`s (the API prints them as `2026-04-10T12:00:00`).

pub mod api_key;
pub mod chunk;
pub mod gc_candidate;
pub mod identity_grant;
pub mod login_attempt;
pub mod minted_key;
pub mod namespace;
pub mod namespace_member;
pub mod package;
pub mod package_version;
pub mod tag;
pub mod upload;
pub mod upload_chunk;
pub mod upload_session;
pub mod user;
pub mod version_chunk;
