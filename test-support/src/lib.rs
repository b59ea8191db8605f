//! The test harness of niso, shared as a dev-dependency by every crate that tests against a
//! real registry: niso-server's integration and end-to-end tests, the operator's tests and the
//! benchmark. One module per concern:
//!
//! - [`app`]: a registry served in-process over real HTTP on either backend ([`TestApp`]), the
//!   test settings and the [`for_each_backend!`] macro;
//! - [`process`]: `niso-server` binaries run as child processes ([`process::Server`]) and their
//!   subcommands, with a production backing of their own;
//! - [`http_client`]: the one HTTP test client both of them speak through;
//! - [`postgres`], [`s3`]: a throwaway PostgreSQL cluster and an in-process S3 protocol server;
//! - [`archives`]: builders of `.niso` archives and deterministic test data (the
//!   `niso-test-archives` crate, which niso-core's unit tests use as well);
//! - [`scratch`]: free ports and per-process scratch directories;
//! - [`injected_store`]: the real object store with hooks around its calls, for fault
//!   injection and for counting what the registry asks of it.

pub mod app;
pub mod http_client;
pub mod injected_store;
pub mod oidc;
pub mod postgres;
pub mod process;
pub mod s3;
pub mod scratch;

pub use niso_test_archives as archives;

pub use app::{Backend, Storage, TestApp, small_chunk_settings, test_authority, test_settings};
pub use http_client::{HttpClient, assert_error, assert_timestamp, stalled_request};
pub use scratch::free_port;
