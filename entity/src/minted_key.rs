//! An API key minted from an identity token: one row per grant it was minted from, with the
//! token's issuer and subject.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "minted_keys")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub key_id: i64,
    #[sea_orm(primary_key, auto_increment = false)]
    pub grant_id: i64,
    pub issuer: String,
    pub subject: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
