//! niso-server: the registry's domain layer (`registry`), its HTTP API (`http`) and the pieces
//! both stand on. The `niso-server` binary (main.rs) and the operator use this library.

pub mod archive;
pub mod auth;
pub mod cli;
pub mod config;
pub mod db;
pub mod error;
pub mod http;
pub mod metrics;
pub mod names;
pub mod registry;
pub mod storage;
pub mod telemetry;

pub use error::{Error, Result};
