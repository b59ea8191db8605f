//! An upload session: the chunk list and checksum a client declared before sending the chunks
//! the registry lacks. Owned by the key that opened it; lives as long as its `uploads` row.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "upload_sessions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub upload_id: i64,
    pub key_id: i64,
    pub size: i64,
    pub checksum: String,
    /// JSON `[["<sha256>", size], …]` in archive order.
    #[sea_orm(column_type = "Text")]
    pub chunks: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
