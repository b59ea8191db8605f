//! The GC candidate queue (issue 15): GC reads the chunks that may have become garbage instead of
//! scanning every chunk. A chunk becomes garbage only when its last lease (`upload_chunks`) or
//! its last reference (`version_chunks`) goes, so triggers on those two tables enqueue its id,
//! in the deleting transaction, whatever deletes the row: release, commit, version deletion, or
//! an `ON DELETE CASCADE` (GC reaping an expired upload, any future cascade). Being in the
//! database, they also cover replicas still running the previous release during a rolling
//! upgrade. `registry/src/gc.rs` explains why the queue can only affect liveness.
//!
//! * PostgreSQL: statement-level triggers with transition tables, so a statement deleting many
//!   rows enqueues each distinct chunk once. A deleted reference is enqueued unconditionally: a
//!   "still referenced elsewhere?" test would be a write skew under READ COMMITTED (two
//!   transactions deleting the last two references of a chunk would each see the other's and
//!   both skip it). A deleted lease is enqueued only when no version references the chunk: if
//!   one does, its deletion enqueues the chunk later, and a concurrent deletion of it, invisible
//!   here, enqueues it itself.
//! * SQLite (transactions are serializable, so no write skew): row-level triggers, each
//!   enqueueing only when the row was the chunk's last reference, or a lease of an unreferenced
//!   chunk.
//!
//! The queue starts with every chunk that is unreferenced and unleased today. The triggers are
//! created first: on PostgreSQL, creating them locks both tables against writes until this
//! transaction commits, so a lease released meanwhile is either seen by the backfill or fires a
//! trigger.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;
use sea_orm_migration::sea_orm::DbBackend;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261130_000010_gc_candidates"
    }
}

fn name(identifier: &'static str) -> Alias {
    Alias::new(identifier)
}

const POSTGRES_UP: &[&str] = &[
    "CREATE FUNCTION gc_enqueue_unreferenced() RETURNS trigger LANGUAGE plpgsql AS $$
     BEGIN
         INSERT INTO gc_candidates (chunk_id, since)
         SELECT gone.chunk_id, now() AT TIME ZONE 'UTC'
         FROM (SELECT DISTINCT chunk_id FROM gone_references) AS gone;
         RETURN NULL;
     END $$",
    "CREATE TRIGGER gc_enqueue_unreferenced AFTER DELETE ON version_chunks
     REFERENCING OLD TABLE AS gone_references
     FOR EACH STATEMENT EXECUTE PROCEDURE gc_enqueue_unreferenced()",
    "CREATE FUNCTION gc_enqueue_unleased() RETURNS trigger LANGUAGE plpgsql AS $$
     BEGIN
         INSERT INTO gc_candidates (chunk_id, since)
         SELECT gone.chunk_id, now() AT TIME ZONE 'UTC'
         FROM (SELECT DISTINCT chunk_id FROM gone_leases) AS gone
         WHERE NOT EXISTS
             (SELECT 1 FROM version_chunks WHERE version_chunks.chunk_id = gone.chunk_id);
         RETURN NULL;
     END $$",
    "CREATE TRIGGER gc_enqueue_unleased AFTER DELETE ON upload_chunks
     REFERENCING OLD TABLE AS gone_leases
     FOR EACH STATEMENT EXECUTE PROCEDURE gc_enqueue_unleased()",
];

const POSTGRES_DOWN: &[&str] = &[
    "DROP TRIGGER gc_enqueue_unleased ON upload_chunks",
    "DROP FUNCTION gc_enqueue_unleased()",
    "DROP TRIGGER gc_enqueue_unreferenced ON version_chunks",
    "DROP FUNCTION gc_enqueue_unreferenced()",
];

const SQLITE_NOW: &str = "strftime('%Y-%m-%d %H:%M:%f', 'now')";

fn sqlite_up() -> Vec<String> {
    vec![
        format!(
            "CREATE TRIGGER gc_enqueue_unreferenced AFTER DELETE ON version_chunks FOR EACH ROW
             WHEN NOT EXISTS (SELECT 1 FROM version_chunks WHERE chunk_id = OLD.chunk_id)
             BEGIN
                 INSERT INTO gc_candidates (chunk_id, since) VALUES (OLD.chunk_id, {SQLITE_NOW});
             END"
        ),
        format!(
            "CREATE TRIGGER gc_enqueue_unleased AFTER DELETE ON upload_chunks FOR EACH ROW
             WHEN NOT EXISTS (SELECT 1 FROM version_chunks WHERE chunk_id = OLD.chunk_id)
             BEGIN
                 INSERT INTO gc_candidates (chunk_id, since) VALUES (OLD.chunk_id, {SQLITE_NOW});
             END"
        ),
    ]
}

const SQLITE_DOWN: &[&str] = &[
    "DROP TRIGGER gc_enqueue_unleased",
    "DROP TRIGGER gc_enqueue_unreferenced",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(name("gc_candidates"))
                    .col(big_pk_auto(name("id")))
                    // No foreign key: GC deletes chunk rows without touching the queue, and
                    // drops a candidate whose chunk is gone when it meets it.
                    .col(big_integer(name("chunk_id")))
                    .col(date_time(name("since")))
                    .take(),
            )
            .await?;
        let connection = manager.get_connection();
        let backend = manager.get_database_backend();
        let now = match backend {
            DbBackend::Postgres => {
                for statement in POSTGRES_UP {
                    connection.execute_unprepared(statement).await?;
                }
                "now() AT TIME ZONE 'UTC'".to_owned()
            }
            _ => {
                for statement in sqlite_up() {
                    connection.execute_unprepared(&statement).await?;
                }
                SQLITE_NOW.to_owned()
            }
        };
        connection
            .execute_unprepared(&format!(
                "INSERT INTO gc_candidates (chunk_id, since)
                 SELECT id, {now} FROM chunks
                 WHERE state = 'live'
                 AND NOT EXISTS (SELECT 1 FROM version_chunks WHERE version_chunks.chunk_id = chunks.id)
                 AND NOT EXISTS (SELECT 1 FROM upload_chunks WHERE upload_chunks.chunk_id = chunks.id)"
            ))
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let connection = manager.get_connection();
        let statements: &[&str] = match manager.get_database_backend() {
            DbBackend::Postgres => POSTGRES_DOWN,
            _ => SQLITE_DOWN,
        };
        for statement in statements {
            connection.execute_unprepared(statement).await?;
        }
        manager
            .drop_table(Table::drop().table(name("gc_candidates")).take())
            .await
    }
}
