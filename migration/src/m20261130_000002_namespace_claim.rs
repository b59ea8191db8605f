//! Claims: the uid of the Kubernetes object (a `RegistryNamespace`) that manages a namespace,
//! so a second object naming the same namespace is refused instead of fighting the first.
//! NULL: no object claims it (created through the API, or released).

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261130_000002_namespace_claim"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Alias::new("namespaces"))
                    .add_column(ColumnDef::new(Alias::new("managed_by")).string().null())
                    .take(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Alias::new("namespaces"))
                    .drop_column(Alias::new("managed_by"))
                    .take(),
            )
            .await
    }
}
