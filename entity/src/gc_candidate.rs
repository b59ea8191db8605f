//! A chunk that may have become garbage: written by database triggers when one of its leases
//! (`upload_chunks`) or references (`version_chunks`) is deleted, read and removed by GC. The
//! queue only decides what GC looks at; GC re-checks every candidate before deleting anything.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "gc_candidates")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub chunk_id: i64,
    /// When the lease or reference went (UTC).
    pub since: DateTime,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
