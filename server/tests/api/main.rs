//! API tests over real HTTP, each run on both backends (embedded SQLite + files, and
//! PostgreSQL + S3). One test binary, one module per endpoint group.

#[path = "../common/mod.rs"]
mod common;

mod auth;
mod chunks;
mod namespaces;
mod packages;
mod stalled_uploads;
mod system;
mod tags;
