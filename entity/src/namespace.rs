//! A namespace (`@name`): a user's own (`user`) or an organisation (`org`).
//! `managed` is set when a RegistryNamespace custom resource owns its members (the API then
//! refuses member changes); `managed_by` is the uid of the resource that claims the namespace.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "namespaces")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    #[sea_orm(unique)]
    pub name: String,
    pub ns_type: String,
    pub owner_id: i64,
    pub managed: bool,
    pub managed_by: Option<String>,
    pub created_at: DateTime,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
