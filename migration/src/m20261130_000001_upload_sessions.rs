//! Upload sessions (dedup-aware, resumable pushes): what a client declared it will upload.
//! A session belongs to an `uploads` row, the holder of its chunk leases, and goes with it
//! (ON DELETE CASCADE): a commit retires the row, GC reaps it when its lease expires.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261130_000001_upload_sessions"
    }
}

fn name(identifier: &'static str) -> Alias {
    Alias::new(identifier)
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(name("upload_sessions"))
                    .col(big_integer(name("upload_id")).primary_key())
                    .col(big_integer(name("key_id")))
                    .col(big_integer(name("size")))
                    .col(string(name("checksum")))
                    // The declared chunk list as JSON `[["<hash>", size], …]`, in order; at
                    // most max_upload_bytes / min chunk size entries.
                    .col(text(name("chunks")))
                    .foreign_key(
                        ForeignKey::create()
                            .from(name("upload_sessions"), name("upload_id"))
                            .to(name("uploads"), name("id"))
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .take(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("upload_sessions_key")
                    .table(name("upload_sessions"))
                    .col(name("key_id"))
                    .col(name("checksum"))
                    .take(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(name("upload_sessions")).take())
            .await
    }
}
