//! Database connections and migrations.
//!
//! One pool per process, bounded and with timeouts so a dead database turns into 503s rather
//! than hung requests. Migrations run under a PostgreSQL advisory lock so replicas starting
//! together do not race; SQLite is single-process and needs none.

use std::time::Duration;

use migration::{Migrator, MigratorTrait};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr};

use crate::config::redact_url;

/// An arbitrary constant identifying niso's migration lock among advisory locks.
const MIGRATION_LOCK_ID: i64 = 0x6e69_736f_6d69_6772; // "nisomigr"

pub async fn connect(url: &str, max_connections: u32) -> Result<DatabaseConnection, DbErr> {
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .max_connections(max_connections.max(1))
        .min_connections(0)
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(5))
        .idle_timeout(Duration::from_secs(300))
        .test_before_acquire(false)
        .sqlx_logging(false);
    if url.starts_with("sqlite:") {
        // WAL lets downloads read while an upload commits; the busy timeout turns short write
        // contention into waiting instead of SQLITE_BUSY errors.
        options.map_sqlx_sqlite_opts(|opts| {
            opts.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(30))
                .foreign_keys(true)
        });
    } else {
        options.statement_timeout(Duration::from_secs(60));
    }
    tracing::debug!(url = %redact_url(url), "connecting to the database");
    Database::connect(options).await
}

/// Brings the schema up to date. Safe to call from every replica at once.
pub async fn migrate(db: &DatabaseConnection) -> Result<(), DbErr> {
    match db.get_database_backend() {
        DbBackend::Postgres => {
            // Session-level advisory locks belong to one connection, so lock, migrate and
            // unlock on a dedicated connection (a transaction holds exactly one).
            let transaction = sea_orm::TransactionTrait::begin(db).await?;
            transaction
                .execute_unprepared(&format!(
                    "SELECT pg_advisory_xact_lock({MIGRATION_LOCK_ID})"
                ))
                .await?;
            Migrator::up(&transaction, None).await?;
            transaction.commit().await
        }
        _ => Migrator::up(db, None).await,
    }
}

/// Readiness: one round-trip.
pub async fn ping(db: &DatabaseConnection) -> Result<(), DbErr> {
    db.execute_unprepared("SELECT 1").await.map(|_| ())
}
