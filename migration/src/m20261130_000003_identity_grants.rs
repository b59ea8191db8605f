//! Keyless access (issue 14): the grants that say which workload identity may do what in which
//! registry namespace, and which API keys were minted from which grants (so that removing a
//! grant revokes the keys it produced).

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261130_000003_identity_grants"
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
                    .table(name("identity_grants"))
                    .col(big_pk_auto(name("id")))
                    // Who holds the grant: e.g. the UID of the Kubernetes object it mirrors.
                    .col(string(name("owner")))
                    .col(string(name("issuer")))
                    .col(string_null(name("kubernetes_namespace")))
                    .col(string_null(name("service_account")))
                    // A JSON object of exact claim matches, `{}` when none.
                    .col(text(name("claims")))
                    .col(string(name("registry_namespace")))
                    // Comma-separated actions in canonical order, e.g. `pull,push`.
                    .col(string(name("actions")))
                    .col(date_time(name("created_at")))
                    .take(),
            )
            .await?;
        for (index, column) in [
            ("identity_grants_owner", "owner"),
            ("identity_grants_issuer", "issuer"),
        ] {
            manager
                .create_index(
                    Index::create()
                        .name(index)
                        .table(name("identity_grants"))
                        .col(name(column))
                        .take(),
                )
                .await?;
        }
        manager
            .create_table(
                Table::create()
                    .table(name("minted_keys"))
                    .col(big_integer(name("key_id")))
                    .col(big_integer(name("grant_id")))
                    .col(string(name("issuer")))
                    .col(string(name("subject")))
                    .primary_key(Index::create().col(name("key_id")).col(name("grant_id")))
                    .foreign_key(
                        &mut ForeignKey::create()
                            .from(name("minted_keys"), name("key_id"))
                            .to(name("api_keys"), name("id"))
                            .on_delete(ForeignKeyAction::Cascade)
                            .take(),
                    )
                    .take(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("minted_keys_grant")
                    .table(name("minted_keys"))
                    .col(name("grant_id"))
                    .take(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in ["minted_keys", "identity_grants"] {
            manager
                .drop_table(Table::drop().table(name(table)).take())
                .await?;
        }
        Ok(())
    }
}
