//! API tests over real HTTP, each run on both backends (embedded SQLite + files, and
//! PostgreSQL + S3). One test binary, one module per endpoint group.

mod auth;
mod body_limits;
mod chunk_cache;
mod chunks;
mod client_address;
mod keyless;
mod namespaces;
mod packages;
mod pagination;
mod permissions;
mod read_ahead;
mod search;
mod stalled_uploads;
mod system;
mod tags;
mod upload_governance;
