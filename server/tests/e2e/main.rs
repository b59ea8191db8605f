//! End-to-end tests: real `niso-server` processes (the binary cargo builds for this target) on
//! real SQLite, PostgreSQL and an S3 protocol server — replicas, SIGKILL, PostgreSQL and S3
//! outages, the command line, and one client that cannot starve the others. One module per
//! subject; the process harness is `niso_test_support::process`.

mod cli;
mod faults;
mod load;
mod replicas;

use niso_test_support::process::ServerBinary;

/// The binary under test, built by cargo before this target runs.
pub const NISO_SERVER: ServerBinary = ServerBinary::new(env!("CARGO_BIN_EXE_niso-server"));

/// How many migrations the database at `database_url` records as applied (each exactly once,
/// whoever ran them).
pub async fn applied_migrations(database_url: &str) -> usize {
    use sea_orm::{ConnectionTrait, Statement};
    let db = sea_orm::Database::connect(database_url)
        .await
        .expect("connect");
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT version FROM seaql_migrations",
        ))
        .await
        .expect("read seaql_migrations");
    db.close().await.ok();
    rows.len()
}
