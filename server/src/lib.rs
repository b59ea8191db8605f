//! niso-server: the registry's HTTP API (`http`), its command line (`cli`) and its telemetry.
//! The domain — what a request may do and how it is stored — is `niso-registry`; this crate
//! turns requests into calls to it and its errors into responses.

pub mod cli;
pub mod http;
pub mod telemetry;
