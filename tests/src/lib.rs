//! `niso-e2e` has no library code: its integration tests (`tests/*.rs`) start real
//! `niso-server` processes against real PostgreSQL and an S3 protocol server. See
//! `tests/support/mod.rs` for the process harness.
