//! An upload in progress. Its row is the lease holder for every chunk in `upload_chunks`; it expires
//! unless renewed, so a crashed pod cannot pin chunks forever.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "uploads")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub package_name: String,
    pub version: String,
    pub arch: String,
    pub started_at: DateTime,
    pub expires_at: DateTime,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
