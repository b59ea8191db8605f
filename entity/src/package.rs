//! A package (`@ns/name`). `latest_version`, `description` and `updated_at` are denormalised from its
//! versions on every upload and delete so listings are one indexed read; a package whose
//! `latest_version` is None has no version left and is hidden.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "packages")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub namespace_id: i64,
    #[sea_orm(unique)]
    pub name: String,
    pub latest_version: Option<String>,
    pub description: Option<String>,
    pub updated_at: Option<DateTime>,
    pub download_count: i64,
    pub created_at: DateTime,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
