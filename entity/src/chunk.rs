//! A stored content-defined chunk. `object_key` is unique per stored object (never the bare hash) so
//! GC can never delete an object a concurrent upload is writing. `state` is `live` or `deleting`;
//! `lease_version` is bumped by every upload that leases the chunk, which makes GC's conditional
//! delete-mark conflict with a concurrent lease (see the GC protocol in ARCHITECTURE.md).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "chunks")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub hash: String,
    #[sea_orm(unique)]
    pub object_key: String,
    pub size: i64,
    pub stored_size: i64,
    pub compression: String,
    pub state: String,
    pub lease_version: i64,
    pub created_at: DateTime,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
