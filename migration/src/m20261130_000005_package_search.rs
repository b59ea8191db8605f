//! The package search index (issue 15): `GET /v1/packages?q=` is a case-insensitive substring
//! match on the package name, which a B-tree cannot serve, so without this it scanned every name.
//!
//! - PostgreSQL: a GIN index of the name's trigrams (`pg_trgm`), which PostgreSQL uses for the
//!   same `LIKE '%…%'` the query already sends. `pg_trgm` is a trusted extension since
//!   PostgreSQL 13: the database owner (or any role with CREATE on the database) may create it.
//!   A role that may not makes this migration fail with a message saying what to run, rather
//!   than leave search unindexed without anyone noticing.
//! - SQLite: an FTS5 table with the `trigram` tokenizer (SQLite 3.34+; the bundled one has it)
//!   over `packages.name`, as an external-content table (it stores only the index, the name
//!   stays in `packages`), kept current by triggers on `packages` and filled here from the
//!   rows that exist. The query (`registry/src/packages.rs`) narrows with `MATCH` and decides
//!   with the same `LIKE` as before, so results do not depend on the tokenizer's details.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261130_000005_package_search"
    }
}

/// SQLite: the index, its backfill and the triggers that keep it equal to `packages`.
const SQLITE_UP: &[&str] = &[
    "CREATE VIRTUAL TABLE package_search USING fts5(name, content = 'packages', \
     content_rowid = 'id', tokenize = 'trigram')",
    "INSERT INTO package_search (package_search) VALUES ('rebuild')",
    "CREATE TRIGGER package_search_insert AFTER INSERT ON packages BEGIN \
     INSERT INTO package_search (rowid, name) VALUES (new.id, new.name); END",
    // An external-content index is told what it indexed for a row, so the delete names the
    // old values.
    "CREATE TRIGGER package_search_delete AFTER DELETE ON packages BEGIN \
     INSERT INTO package_search (package_search, rowid, name) VALUES ('delete', old.id, old.name); \
     END",
    // Only a change of name concerns the index (ids are never rewritten). Not `UPDATE OF id`:
    // `lock_package` writes `id = id` to take the row lock, and a trigger on that statement
    // made it touch the FTS5 table, which under concurrent writers failed with SQLITE_BUSY
    // at once instead of waiting (`gc` binary, random interleavings).
    "CREATE TRIGGER package_search_update AFTER UPDATE OF name ON packages \
     WHEN old.name IS NOT new.name BEGIN \
     INSERT INTO package_search (package_search, rowid, name) VALUES ('delete', old.id, old.name); \
     INSERT INTO package_search (rowid, name) VALUES (new.id, new.name); END",
];

const SQLITE_DOWN: &[&str] = &[
    "DROP TRIGGER IF EXISTS package_search_update",
    "DROP TRIGGER IF EXISTS package_search_delete",
    "DROP TRIGGER IF EXISTS package_search_insert",
    "DROP TABLE IF EXISTS package_search",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let connection = manager.get_connection();
        match manager.get_database_backend() {
            DbBackend::Postgres => {
                connection
                    .execute_unprepared("CREATE EXTENSION IF NOT EXISTS pg_trgm")
                    .await
                    .map_err(|error| {
                        DbErr::Migration(format!(
                            "package search needs the PostgreSQL extension pg_trgm, and creating \
                             it failed: {error}. pg_trgm ships with PostgreSQL (contrib) and is \
                             trusted since PostgreSQL 13: run `CREATE EXTENSION pg_trgm;` in \
                             this database as its owner or a superuser (or grant niso's role \
                             CREATE on the database), then start niso again"
                        ))
                    })?;
                // Without `fastupdate`, a name inserted goes into the index at once. With it
                // (the default), new names wait in a pending list that every search reads
                // linearly until (auto)vacuum merges it: measured on 10,000 names inserted
                // after the index, a search took 2.5 ms instead of 0.15 ms, and the planner,
                // pricing that list in, chose a full scan. Packages are created rarely.
                connection
                    .execute_unprepared(
                        "CREATE INDEX packages_name_trigrams ON packages \
                         USING gin (name gin_trgm_ops) WITH (fastupdate = off)",
                    )
                    .await?;
            }
            DbBackend::Sqlite => {
                for statement in SQLITE_UP {
                    connection
                        .execute_unprepared(statement)
                        .await
                        .map_err(|error| {
                            DbErr::Migration(format!(
                                "creating the package search index (FTS5, trigram tokenizer, \
                                 SQLite 3.34+) failed: {error}"
                            ))
                        })?;
                }
            }
            backend => {
                return Err(DbErr::Migration(format!(
                    "unsupported database backend {backend:?}"
                )));
            }
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let connection = manager.get_connection();
        match manager.get_database_backend() {
            // The extension stays: other schemas in the database may use it.
            DbBackend::Postgres => {
                connection
                    .execute_unprepared("DROP INDEX IF EXISTS packages_name_trigrams")
                    .await?;
            }
            DbBackend::Sqlite => {
                for statement in SQLITE_DOWN {
                    connection.execute_unprepared(statement).await?;
                }
            }
            _ => {}
        }
        Ok(())
    }
}
