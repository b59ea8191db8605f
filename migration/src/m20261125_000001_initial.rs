//! The initial schema: accounts, namespaces, keys, packages, versions, chunks, leases, tags and
//! the shared login rate-limit counters.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261125_000001_initial"
    }
}

fn name(identifier: &'static str) -> Alias {
    Alias::new(identifier)
}

fn foreign_key(
    from_table: &'static str,
    from_column: &'static str,
    to_table: &'static str,
    on_delete: ForeignKeyAction,
) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .from(name(from_table), name(from_column))
        .to(name(to_table), name("id"))
        .on_delete(on_delete)
        .take()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(name("users"))
                    .col(big_pk_auto(name("id")))
                    .col(string_uniq(name("username")))
                    .col(string(name("email")))
                    .col(string_null(name("display_name")))
                    .col(string(name("password_hash")))
                    .col(boolean(name("verified")).default(false))
                    .col(date_time(name("created_at")))
                    .take(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(name("namespaces"))
                    .col(big_pk_auto(name("id")))
                    .col(string_uniq(name("name")))
                    .col(string(name("ns_type")))
                    .col(big_integer(name("owner_id")))
                    .col(boolean(name("managed")).default(false))
                    .col(date_time(name("created_at")))
                    .foreign_key(&mut foreign_key(
                        "namespaces",
                        "owner_id",
                        "users",
                        ForeignKeyAction::Restrict,
                    ))
                    .take(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(name("namespace_members"))
                    .col(big_integer(name("namespace_id")))
                    .col(big_integer(name("user_id")))
                    .col(string(name("role")))
                    .col(date_time(name("created_at")))
                    .primary_key(
                        Index::create()
                            .col(name("namespace_id"))
                            .col(name("user_id")),
                    )
                    .foreign_key(&mut foreign_key(
                        "namespace_members",
                        "namespace_id",
                        "namespaces",
                        ForeignKeyAction::Cascade,
                    ))
                    .foreign_key(&mut foreign_key(
                        "namespace_members",
                        "user_id",
                        "users",
                        ForeignKeyAction::Cascade,
                    ))
                    .take(),
            )
            .await?;
        create_index(
            manager,
            "namespace_members_user",
            "namespace_members",
            &["user_id"],
        )
        .await?;

        manager
            .create_table(
                Table::create()
                    .table(name("api_keys"))
                    .col(big_pk_auto(name("id")))
                    .col(big_integer_null(name("user_id")))
                    .col(string(name("name")))
                    .col(string(name("scope")))
                    .col(string_uniq(name("key_hash")))
                    .col(string(name("prefix")))
                    .col(date_time(name("created_at")))
                    .col(date_time_null(name("last_used_at")))
                    .col(date_time_null(name("expires_at")))
                    .col(date_time_null(name("revoked_at")))
                    .foreign_key(&mut foreign_key(
                        "api_keys",
                        "user_id",
                        "users",
                        ForeignKeyAction::Cascade,
                    ))
                    .take(),
            )
            .await?;
        create_index(manager, "api_keys_user", "api_keys", &["user_id"]).await?;

        manager
            .create_table(
                Table::create()
                    .table(name("packages"))
                    .col(big_pk_auto(name("id")))
                    .col(big_integer(name("namespace_id")))
                    .col(string_uniq(name("name")))
                    .col(string_null(name("latest_version")))
                    .col(text_null(name("description")))
                    .col(date_time_null(name("updated_at")))
                    .col(big_integer(name("download_count")).default(0))
                    .col(date_time(name("created_at")))
                    .foreign_key(&mut foreign_key(
                        "packages",
                        "namespace_id",
                        "namespaces",
                        ForeignKeyAction::Restrict,
                    ))
                    .take(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(name("package_versions"))
                    .col(big_pk_auto(name("id")))
                    .col(big_integer(name("package_id")))
                    .col(string(name("version")))
                    .col(string(name("arch")))
                    .col(big_integer(name("size")))
                    .col(string(name("checksum")))
                    .col(text(name("manifest")))
                    .col(text_null(name("description")))
                    .col(string_null(name("license")))
                    .col(date_time(name("uploaded_at")))
                    .col(big_integer(name("download_count")).default(0))
                    .foreign_key(&mut foreign_key(
                        "package_versions",
                        "package_id",
                        "packages",
                        ForeignKeyAction::Restrict,
                    ))
                    .take(),
            )
            .await?;
        // Versions are immutable: this index is what turns a concurrent second upload of the
        // same version+arch into a 409, whichever replica it came through.
        create_unique_index(
            manager,
            "package_versions_identity",
            "package_versions",
            &["package_id", "version", "arch"],
        )
        .await?;

        manager
            .create_table(
                Table::create()
                    .table(name("chunks"))
                    .col(big_pk_auto(name("id")))
                    .col(string(name("hash")))
                    .col(string_uniq(name("object_key")))
                    .col(big_integer(name("size")))
                    .col(big_integer(name("stored_size")))
                    .col(string(name("compression")))
                    .col(string(name("state")))
                    .col(big_integer(name("lease_version")).default(0))
                    .col(date_time(name("created_at")))
                    .take(),
            )
            .await?;
        // At most one live row per content hash, so concurrent uploads of the same new chunk
        // converge on one stored copy; rows being deleted by GC do not count.
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE UNIQUE INDEX chunks_live_hash ON chunks (hash) WHERE state = 'live'",
            )
            .await?;
        create_index(
            manager,
            "chunks_state_created",
            "chunks",
            &["state", "created_at"],
        )
        .await?;

        manager
            .create_table(
                Table::create()
                    .table(name("version_chunks"))
                    .col(big_integer(name("version_id")))
                    .col(integer(name("position")))
                    .col(big_integer(name("chunk_id")))
                    .col(big_integer(name("byte_offset")))
                    .col(big_integer(name("size")))
                    .primary_key(
                        Index::create()
                            .col(name("version_id"))
                            .col(name("position")),
                    )
                    .foreign_key(&mut foreign_key(
                        "version_chunks",
                        "version_id",
                        "package_versions",
                        ForeignKeyAction::Cascade,
                    ))
                    .foreign_key(&mut foreign_key(
                        "version_chunks",
                        "chunk_id",
                        "chunks",
                        ForeignKeyAction::Restrict,
                    ))
                    .take(),
            )
            .await?;
        create_index(
            manager,
            "version_chunks_chunk",
            "version_chunks",
            &["chunk_id"],
        )
        .await?;

        manager
            .create_table(
                Table::create()
                    .table(name("uploads"))
                    .col(big_pk_auto(name("id")))
                    .col(string(name("package_name")))
                    .col(string(name("version")))
                    .col(string(name("arch")))
                    .col(date_time(name("started_at")))
                    .col(date_time(name("expires_at")))
                    .take(),
            )
            .await?;
        create_index(manager, "uploads_expires", "uploads", &["expires_at"]).await?;

        manager
            .create_table(
                Table::create()
                    .table(name("upload_chunks"))
                    .col(big_integer(name("upload_id")))
                    .col(big_integer(name("chunk_id")))
                    .primary_key(Index::create().col(name("upload_id")).col(name("chunk_id")))
                    .foreign_key(&mut foreign_key(
                        "upload_chunks",
                        "upload_id",
                        "uploads",
                        ForeignKeyAction::Cascade,
                    ))
                    .foreign_key(&mut foreign_key(
                        "upload_chunks",
                        "chunk_id",
                        "chunks",
                        ForeignKeyAction::Restrict,
                    ))
                    .take(),
            )
            .await?;
        create_index(
            manager,
            "upload_chunks_chunk",
            "upload_chunks",
            &["chunk_id"],
        )
        .await?;

        manager
            .create_table(
                Table::create()
                    .table(name("tags"))
                    .col(big_integer(name("package_id")))
                    .col(string(name("tag")))
                    .col(string(name("version")))
                    .col(date_time(name("updated_at")))
                    .primary_key(Index::create().col(name("package_id")).col(name("tag")))
                    .foreign_key(&mut foreign_key(
                        "tags",
                        "package_id",
                        "packages",
                        ForeignKeyAction::Cascade,
                    ))
                    .take(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(name("login_attempts"))
                    .col(string(name("bucket")).primary_key())
                    .col(date_time(name("window_start")))
                    .col(integer(name("failures")))
                    .take(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            "login_attempts",
            "tags",
            "upload_chunks",
            "uploads",
            "version_chunks",
            "chunks",
            "package_versions",
            "packages",
            "api_keys",
            "namespace_members",
            "namespaces",
            "users",
        ] {
            manager
                .drop_table(Table::drop().table(name(table)).take())
                .await?;
        }
        Ok(())
    }
}

async fn create_index(
    manager: &SchemaManager<'_>,
    index: &'static str,
    table: &'static str,
    columns: &[&'static str],
) -> Result<(), DbErr> {
    let mut statement = Index::create().name(index).table(name(table)).take();
    for column in columns {
        statement.col(name(column));
    }
    manager.create_index(statement).await
}

async fn create_unique_index(
    manager: &SchemaManager<'_>,
    index: &'static str,
    table: &'static str,
    columns: &[&'static str],
) -> Result<(), DbErr> {
    let mut statement = Index::create()
        .name(index)
        .table(name(table))
        .unique()
        .take();
    for column in columns {
        statement.col(name(column));
    }
    manager.create_index(statement).await
}
